// `bench/run --workers [--rounds N] [--json]`: the playground's pool of workers in headless
// Chromium (Debian's), on the built page (dist/), one page with 1 worker and one with 2, used in
// turn, N rounds each:
// - EfficientNet-Lite0 calibrated on all its calibration samples (the 10 bundled photos and their
//   mirror images; W8A8 per-channel): the page's own calibration time, and its encodings, which
//   must be identical with 1 and 2 workers;
// - digits MobileNet (W8A8 per-channel) on the 450 test digits, FP32 and INT8: the page's own
//   times, and its accuracies and output SQNR, which must be identical.
// Prints the medians and their ratios (the machine is shared: the ratios of one run compare).
// With --compress, also once per pool size (a minute or two each): EfficientNet-Lite0 compressed by
// weight SVD to 0.75 of its MACs over 4 candidates, whose sensitivity table the pool shares:
// the page's own time, and the table and choices, which must be identical.
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
const rounds = Number(opt("--rounds", 5));
if (!fs.existsSync(path.join(dist, "index.html"))) throw new Error("dist/ is missing: run trunk build --release first");

const srv = await serve(dist);
const browser = await launch();
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const recipe = "w=8&a=8&pc=1&dfq=0&bc=0&ada=0&aimet=0&cm=0&cs=minmax&n=0";

// One page per pool size, kept across rounds: its helpers stay warm, as in a user's session.
async function openPage(workers, model, label) {
  const p = await browser.newPage();
  p.setDefaultTimeout(600_000);
  p.on("pageerror", (e) => console.error(`page error (${workers} workers): ${e.message}`));
  await p.goto(`${srv.url}#workers=${workers}&model=${model}&${recipe}`);
  await p.locator(`[data-testid="model-name"]:has-text("${label}")`).waitFor();
  return p;
}

// Resolves when the button's job is over (it is disabled while the job runs).
async function clickAndWait(p, testid) {
  await p.bringToFront();
  await p.evaluate((id) => {
    const b = document.querySelector(`[data-testid="${id}"]`);
    window.__jobDone = false;
    window.__jobWatch = new MutationObserver(() => { if (!b.disabled) window.__jobDone = true; });
    window.__jobWatch.observe(b, { attributes: true, attributeFilter: ["disabled"] });
  }, testid);
  await p.click(`[data-testid="${testid}"]`);
  await p.waitForFunction(() => window.__jobDone);
  await p.evaluate(() => window.__jobWatch.disconnect());
}

async function calibrate(p) {
  await clickAndWait(p, "quantize");
  const text = await p.textContent('[data-testid="calibration-time"]');
  const m = text.match(/Calibration: ([\d.]+) s on (\d+) worker/);
  if (!m) throw new Error(`unreadable calibration time: ${text}`);
  const href = await p.getAttribute('[data-testid="download-encodings"]', "href");
  const summary = await p.textContent('[data-testid="quant-summary"]');
  return { seconds: Number(m[1]), workers: Number(m[2]), samples: Number((summary.match(/from (\d+) calibration samples/) ?? [])[1]), encodings: decodeURIComponent(href.slice(href.indexOf(",") + 1)) };
}

async function evalDigits(p) {
  await clickAndWait(p, "eval-digits");
  const fp32 = await p.textContent(".top1");
  const int8 = await p.locator('[data-testid="int8-accuracy"]').locator("..").textContent();
  const ms = (t) => Number(t.match(/in ([\d.]+) ms/)[1]);
  return { fp32_ms: ms(fp32), int8_ms: ms(int8), figures: `${fp32.replace(/in [\d.]+ ms/, "")} | ${int8.replace(/in [\d.]+ ms/, "")}` };
}

// Runs `f` on both pages in turn for `rounds` rounds; checks the pool size and that `same` (the
// results) never changes, across rounds and pool sizes.
async function alternate(pages, f, same) {
  const runs = { 1: [], 2: [] };
  let ref;
  for (let r = 0; r < rounds; r++) {
    for (const n of [1, 2]) {
      const x = await f(pages[n]);
      runs[n].push(x);
      if (ref !== undefined && same(x) !== ref) throw new Error(`results differ (${n} workers, round ${r + 1})`);
      ref = same(x);
    }
  }
  return runs;
}

// The page's compression of its model (settings as in the header); the page's time, the
// heatmap's cells and the choices.
async function compressOnce(p) {
  await p.selectOption('[data-testid="compress-method"]', "weight-svd");
  await p.fill('[data-testid="compress-target"]', "0.75");
  await p.selectOption('[data-testid="compress-candidates"]', "4");
  await clickAndWait(p, "compress-run");
  const text = await p.textContent('[data-testid="compress-summary"]');
  const m = text.match(/in (\d+) s on (\d+) worker/);
  if (!m) throw new Error(`unreadable compression summary: ${text}`);
  const cells = await p.locator('[data-testid="heat-cell"]').evaluateAll((cs) => cs.map((c) => `${c.dataset.layer}@${c.dataset.ratio}=${c.dataset.score}${c.dataset.chosen}`));
  const choices = await p.locator('[data-testid="compress-layer"]').evaluateAll((rs) => rs.map((r) => r.textContent));
  return { seconds: Number(m[1]), workers: Number(m[2]), same: JSON.stringify([cells, choices, text.replace(/in \d+ s on \d+ workers?/, "")]) };
}

const out = [];
try {
  if (args.includes("--compress")) {
    const runs = {};
    for (const n of [1, 2]) {
      const p = await openPage(n, "efficientnet_lite0", "EfficientNet-Lite0");
      runs[n] = await compressOnce(p);
      await p.close();
      if (runs[n].workers !== n) throw new Error(`asked for ${n} workers, the page used ${runs[n].workers}`);
    }
    if (runs[1].same !== runs[2].same) throw new Error("the compression differs between 1 and 2 workers");
    out.compress = { bench: "pool-lite0-compress-chromium", one_worker_s: runs[1].seconds, two_workers_s: runs[2].seconds, speedup: runs[1].seconds / runs[2].seconds, identical: true, runs: 1 };
  }
  const lite = { 1: await openPage(1, "efficientnet_lite0", "EfficientNet-Lite0"), 2: await openPage(2, "efficientnet_lite0", "EfficientNet-Lite0") };
  const cal = await alternate(lite, calibrate, (c) => c.encodings);
  for (const n of [1, 2]) if (cal[n].some((c) => c.workers !== n)) throw new Error(`asked for ${n} workers, the page used ${cal[n].map((c) => c.workers)}`);
  await lite[1].close(); await lite[2].close();
  const t = (n) => median(cal[n].map((c) => c.seconds));
  out.push({ bench: "pool-lite0-calibration-chromium", samples: cal[1][0].samples, one_worker_s: t(1), two_workers_s: t(2), speedup: t(1) / t(2), identical: true, runs: rounds });

  const dig = { 1: await openPage(1, "digits_mobilenet", "Digits MobileNet"), 2: await openPage(2, "digits_mobilenet", "Digits MobileNet") };
  for (const n of [1, 2]) await clickAndWait(dig[n], "quantize");
  const ev = await alternate(dig, evalDigits, (e) => e.figures);
  for (const kind of ["fp32", "int8"]) {
    const m = (n) => median(ev[n].map((e) => e[`${kind}_ms`]));
    out.push({ bench: `pool-digits-eval-${kind}-chromium`, samples: 450, one_worker_ms: m(1), two_workers_ms: m(2), speedup: m(1) / m(2), identical: true, runs: rounds });
  }
  out.cores = await dig[1].evaluate(() => navigator.hardwareConcurrency);
} finally {
  await browser.close();
  srv.server.close();
}

if (json) {
  for (const r of out) console.log(JSON.stringify(r));
  if (out.compress) console.log(JSON.stringify(out.compress));
} else {
  console.log(`The page's pool of workers, 1 against 2, headless Chromium on ${out.cores} cores, medians of ${rounds} rounds (results identical in every round):`);
  const [c, f, i] = out;
  console.log(`  EfficientNet-Lite0 calibration, ${c.samples} samples: ${c.one_worker_s.toFixed(2)} s -> ${c.two_workers_s.toFixed(2)} s, ${c.speedup.toFixed(2)}x`);
  console.log(`  digits test set (450), FP32: ${f.one_worker_ms.toFixed(1)} ms -> ${f.two_workers_ms.toFixed(1)} ms, ${f.speedup.toFixed(2)}x`);
  console.log(`  digits test set (450), INT8: ${i.one_worker_ms.toFixed(1)} ms -> ${i.two_workers_ms.toFixed(1)} ms, ${i.speedup.toFixed(2)}x`);
  const k = out.compress;
  if (k) console.log(`  EfficientNet-Lite0 weight SVD to 0.75 (4 candidates; one run each, the whole job): ${k.one_worker_s} s -> ${k.two_workers_s} s, ${k.speedup.toFixed(2)}x`);
}
