// `bench/run --workers [--rounds N] [--json]`: the playground's pool of workers in headless
// Chromium (Debian's), on the built page (dist/): EfficientNet-Lite0 calibrated on all its
// calibration samples (the 10 bundled photos and their mirror images) (W8A8 per-channel, the page's calibration step) with 1 worker and with 2,
// alternating, N rounds each; the encodings of the two must be identical. Prints the medians and
// their ratio.
import path from "node:path";
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import { serve } from "../tests/e2e/serve.mjs";
import { launch } from "../tests/e2e/browser.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const dist = path.join(root, "dist");
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const json = args.includes("--json");
const rounds = Number(opt("--rounds", 3));
if (!fs.existsSync(path.join(dist, "index.html"))) throw new Error("dist/ is missing: run trunk build --release first");

const srv = await serve(dist);
const browser = await launch();
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

// One page per pool size, kept across rounds: its helpers stay warm, as in a user's session.
async function openPage(workers) {
  const p = await browser.newPage();
  p.setDefaultTimeout(600_000);
  if (process.env.POOL_DEBUG) p.on("console", (m) => console.log(`[${workers}] ${m.text()}`));
  p.on("pageerror", (e) => console.error(`page error (${workers} workers): ${e.message}`));
  await p.goto(`${srv.url}#workers=${workers}&model=efficientnet_lite0&w=8&a=8&pc=1&dfq=0&bc=0&ada=0&aimet=0&cm=0&cs=minmax&n=0`);
  await p.locator('[data-testid="model-name"]:has-text("EfficientNet-Lite0")').waitFor();
  if (process.env.NO_SPIN) await p.addStyleTag({ content: ".spinner { animation: none !important; }" });
  return p;
}

async function calibrate(p) {
  const before = await p.locator('[data-testid="calibration-time"]').count() ? await p.textContent('[data-testid="calibration-time"]') : null;
  await p.click('[data-testid="quantize"]');
  await p.waitForFunction((b) => {
    const e = document.querySelector('[data-testid="calibration-time"]');
    return e && e.textContent !== b && !document.querySelector('[data-testid="progress"]');
  }, before);
  const text = await p.textContent('[data-testid="calibration-time"]');
  const m = text.match(/Calibration: ([\d.]+) s on (\d+) worker/);
  if (!m) throw new Error(`unreadable calibration time: ${text}`);
  const href = await p.getAttribute('[data-testid="download-encodings"]', "href");
  const summary = await p.textContent('[data-testid="quant-summary"]');
  return { seconds: Number(m[1]), workers: Number(m[2]), encodings: decodeURIComponent(href.slice(href.indexOf(",") + 1)), summary };
}

let result, used;
try {
  const pages = { 1: await openPage(1), 2: await openPage(2) };
  const times = { 1: [], 2: [] };
  const enc = {};
  for (let r = 0; r < rounds; r++) {
    for (const n of [1, 2]) {
      const c = await calibrate(pages[n]);
      if (c.workers !== n) throw new Error(`asked for ${n} workers, the page used ${c.workers}`);
      const samples = Number((c.summary.match(/from (\d+) calibration samples/) ?? [])[1]);
      if (!(samples >= 20)) throw new Error(`calibrated on fewer than 20 samples: ${c.summary}`);
      used = samples;
      times[n].push(c.seconds);
      if (enc[n] && enc[n] !== c.encodings) throw new Error(`${n} workers: the encodings changed between rounds`);
      enc[n] = c.encodings;
    }
  }
  const identical = enc[1] === enc[2];
  result = { bench: "pool-lite0-calibration-chromium", samples: used, rounds, one_worker_s: median(times[1]), two_workers_s: median(times[2]), identical };
  result.speedup = result.one_worker_s / result.two_workers_s;
  result.cores = await pages[1].evaluate(() => navigator.hardwareConcurrency);
  result.runs = times;
} finally {
  await browser.close();
  srv.server.close();
}

if (json) {
  console.log(JSON.stringify(result));
} else {
  console.log(`EfficientNet-Lite0 calibration (${result.samples} samples, W8A8 per-channel) in the page, headless Chromium, ${result.cores} cores, median of ${rounds} rounds:`);
  console.log(`  1 worker:  ${result.one_worker_s.toFixed(2)} s   (${result.runs[1].map((t) => t.toFixed(2)).join(", ")})`);
  console.log(`  2 workers: ${result.two_workers_s.toFixed(2)} s   (${result.runs[2].map((t) => t.toFixed(2)).join(", ")})`);
  console.log(`  speed-up ${result.speedup.toFixed(2)}x; encodings ${result.identical ? "identical" : "DIFFER"}`);
}
if (!result.identical) process.exit(1);
