// Finishes trunk's build for static hosting (run by scripts/build-site.sh):
//   node scripts/site/finish.mjs OUT_DIR            index.html, start.js, sw.js, _headers
//   node scripts/site/finish.mjs OUT_DIR --report   the site's size, raw and as brotli
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";

const [out, flag] = process.argv.slice(2);
if (!out || !fs.existsSync(path.join(out, "index.html"))) throw new Error(`usage: finish.mjs OUT_DIR [--report] (no index.html in ${out})`);

// Scripts, workers, fetches and connections only from the site itself; wasm may compile; no
// inline script. Styles allow inline attributes (the page sets element styles); images allow
// data: and blob: URLs (photos and plots made in the page).
export const CSP = [
  "default-src 'self'", "script-src 'self' 'wasm-unsafe-eval'", "worker-src 'self'", "connect-src 'self'",
  "img-src 'self' data: blob:", "style-src 'self' 'unsafe-inline'", "object-src 'none'", "base-uri 'self'", "form-action 'none'",
].join("; ");

// Every file of the build, relative to it, in a stable order.
function files(dir, rel = "") {
  return fs.readdirSync(path.join(dir, rel), { withFileTypes: true })
    .sort((a, b) => a.name.localeCompare(b.name))
    .flatMap((e) => (e.isDirectory() ? files(dir, path.posix.join(rel, e.name)) : [path.posix.join(rel, e.name)]));
}

const precompressed = (f) => f.endsWith(".br") || f.endsWith(".gz");

if (flag === "--report") {
  let raw = 0, br = 0;
  for (const f of files(out).filter((f) => !precompressed(f))) {
    const n = fs.statSync(path.join(out, f)).size;
    raw += n;
    br += fs.existsSync(path.join(out, `${f}.br`)) ? Math.min(n, fs.statSync(path.join(out, `${f}.br`)).size) : n;
  }
  const mb = (n) => (n / 1e6).toFixed(1);
  console.log(`site: ${mb(raw)} MB in ${out} (${mb(br)} MB where the host serves the .br files)`);
  process.exit(0);
}

const sha384 = (f) => crypto.createHash("sha384").update(fs.readFileSync(path.join(out, f))).digest("base64");

// index.html: trunk's inline start-up script becomes start.js (which also registers the service
// worker), the policy goes first in <head>, and the integrity hashes follow wasm-opt's changes.
let html = fs.readFileSync(path.join(out, "index.html"), "utf8");
const inline = html.match(/<script type="module">([\s\S]*?)<\/script>/);
if (!inline) throw new Error("index.html: trunk's start-up script was not found");
const register = `
// Offline after the first visit: sw.js caches every file of this build.
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("./sw.js").catch((e) => console.warn(\`qplay: no offline copy (\${e.message})\`));
}
`;
fs.writeFileSync(path.join(out, "start.js"), `${inline[1].trim()}\n${register}`);
html = html.replace(inline[0], '<script type="module" src="./start.js"></script>');
html = html.replace('<meta charset="utf-8" />', `<meta charset="utf-8" />\n    <meta http-equiv="Content-Security-Policy" content="${CSP}" />`);
html = html.replace(/href="\.\/([^"]+)"([^>]*?)integrity="sha384-[^"]+"/g, (_, f, mid) => `href="./${f}"${mid}integrity="sha384-${sha384(f)}"`);
if (!html.includes("Content-Security-Policy")) throw new Error("index.html: no <meta charset> to put the policy after");
fs.writeFileSync(path.join(out, "index.html"), html);

// The headers for hosts that read a _headers file (Netlify, Cloudflare Pages); README lists
// them for the others.
fs.writeFileSync(path.join(out, "_headers"), `/*\n  Content-Security-Policy: ${CSP}\n  Cross-Origin-Opener-Policy: same-origin\n  Cross-Origin-Embedder-Policy: require-corp\n`);

// sw.js: precaches every file (the models, photos and every wasm file, both builds of the worker included) under a name
// versioned by their contents, serves the site's own GET requests from that cache first, and
// deletes older versions once a new build takes over.
const cached = files(out).filter((f) => !precompressed(f) && f !== "_headers" && f !== "sw.js");
const hash = crypto.createHash("sha256");
for (const f of cached) hash.update(f).update(fs.readFileSync(path.join(out, f)));
const version = hash.digest("hex").slice(0, 16);
fs.writeFileSync(path.join(out, "sw.js"), `// qplay's service worker (written by scripts/site/finish.mjs): the site works offline once visited.
const CACHE = "qplay-${version}";
const FILES = ${JSON.stringify(["./", ...cached.map((f) => `./${f}`)], null, 0)};
self.addEventListener("install", (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(FILES)).then(() => self.skipWaiting()));
});
self.addEventListener("activate", (e) => {
  e.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith("qplay-") && k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});
self.addEventListener("fetch", (e) => {
  const req = e.request;
  if (req.method !== "GET" || new URL(req.url).origin !== self.location.origin) return;
  e.respondWith(caches.open(CACHE).then(async (c) => (await c.match(req, { ignoreSearch: true })) ?? fetch(req)));
});
`);
console.log(`finished ${out}: start.js, a Content-Security-Policy, sw.js (${cached.length} files, version ${version}), _headers`);
