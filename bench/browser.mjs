// `bench/run --browser [--json] [--runs N]`: EfficientNet-Lite0 in one headless Chromium page
// (Debian's), single thread: qplay FP32 and INT8 (W8A8 per-channel, the integer engine) and
// onnxruntime-web FP32 and INT8 (its own QDQ model), round-robin, with top-1 checked on every
// engine; qplay INT8's relaxed-SIMD build too where Chromium validates it (its output must equal
// the SIMD128 build's bit for bit); then the INT8 GEMM micro-benchmark of both builds. The page is cross-origin isolated (the server sends
// COOP/COEP), which also gives a finer clock; a second page times onnxruntime-web's multi-thread
// path beside qplay INT8 (single thread), for reference.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { serve } from "../tests/e2e/serve.mjs";
import { launch } from "../tests/e2e/browser.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const json = args.includes("--json");
const runs = Number(opt("--runs", 20));
const model = "efficientnet_lite0";
const isolated = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };

const srv = await serve(root, isolated);
const browser = await launch();
let rows, gemm, version, threads;
try {
  version = browser.version();
  const page = async () => {
    const p = await browser.newPage();
    p.setDefaultTimeout(600_000);
    p.on("pageerror", (e) => console.error(`page error: ${e.message}`));
    await p.goto(`${srv.url}bench/browser.html`);
    await p.waitForFunction(() => window.benchReady === true);
    if (!(await p.evaluate(() => crossOriginIsolated))) throw new Error("the benchmark page is not cross-origin isolated");
    return p;
  };
  const p1 = await page();
  rows = await p1.evaluate((o) => window.runBench(o), { model, runs, threads: 1 });
  gemm = await p1.evaluate(() => window.runGemm());
  await p1.close();
  const p2 = await page();
  threads = await p2.evaluate(() => Math.min(4, navigator.hardwareConcurrency));
  if (threads > 1) rows.push(...(await p2.evaluate((o) => window.runBench(o), { model, runs, threads })).filter((r) => r.engine.includes("-mt")));
  await p2.close();
} finally {
  await browser.close();
  srv.server.close();
}

if (json) {
  for (const r of rows) console.log(JSON.stringify(r));
  console.log(JSON.stringify({ bench: "int8-gemm-chromium", ...gemm.simd128 }));
  if (gemm.relaxed) console.log(JSON.stringify({ bench: "int8-gemm-relaxed-chromium", ...gemm.relaxed }));
} else {
  console.log(`${model} in headless Chromium ${version} (batch 1, single thread, ${runs} runs after 3 warm-up, round-robin; INT8 = W8A8 per-channel)`);
  console.log("engine                          median ms    p90 ms   top-1 vs FP32 reference");
  for (const r of rows) console.log(`${r.engine.padEnd(30)} ${r.median_ms.toFixed(2).padStart(9)} ${r.p90_ms.toFixed(2).padStart(9)}   ${r.top1_ok ? "same" : "differs"}`);
  const by = Object.fromEntries(rows.map((r) => [r.engine, r]));
  const ratio = (a, b) => (by[a].median_ms / by[b].median_ms).toFixed(2);
  const ortBest = by["ortweb-fp32-chromium"].median_ms < by["ortweb-int8-chromium"].median_ms ? "ortweb-fp32-chromium" : "ortweb-int8-chromium";
  console.log(`qplay INT8 vs qplay FP32: ${ratio("qplay-fp32-chromium", "qplay-int8-chromium")}x faster`);
  console.log(`qplay INT8 vs onnxruntime-web's faster single-thread path (${ortBest}): ${ratio(ortBest, "qplay-int8-chromium")}x faster`);
  console.log(`qplay FP32 vs onnxruntime-web FP32: ${ratio("ortweb-fp32-chromium", "qplay-fp32-chromium")}x faster`);
  if (by["ortweb-fp32-mt-chromium"]) console.log(`(the -mt rows: onnxruntime-web with ${threads} threads, timed in a second page beside qplay INT8 on one thread)`);
  if (by["qplay-int8-relaxed-chromium"]) console.log(`qplay INT8, relaxed-SIMD build, vs onnxruntime-web's faster single-thread path: ${ratio(ortBest, "qplay-int8-relaxed-chromium")}x faster; vs the SIMD128 build: ${ratio("qplay-int8-chromium", "qplay-int8-relaxed-chromium")}x`);
  const gemmRows = (g) => g.shapes.forEach((s) => console.log(`  ${s.p}x${s.m}x${s.k}: ${s.gmacs.toFixed(2)} GMAC/s = ${(100 * s.of_peak).toFixed(0)} % of the ceiling`));
  console.log(`\nINT8 GEMM in Chromium (wasm SIMD128, i32x4.dot_i16x8_s): measured ceiling ${gemm.simd128.peak_gmacs.toFixed(2)} GMAC/s`);
  gemmRows(gemm.simd128);
  if (gemm.relaxed) {
    console.log(`INT8 GEMM, relaxed-SIMD build (i32x4.relaxed_dot_i8x16_i7x16_add_s, 16 MACs each; the kernel needs two per 16 products): measured ceiling ${gemm.relaxed.peak_gmacs.toFixed(2)} GMAC/s`);
    gemmRows(gemm.relaxed);
  } else {
    console.log("(this Chromium does not validate relaxed SIMD: no relaxed rows)");
  }
}
if (rows.some((r) => !r.top1_ok && r.engine.includes("fp32"))) { console.error("an FP32 top-1 differs from onnxruntime's reference"); process.exit(1); }
if (rows.some((r) => r.identical_to_simd128 === false)) { console.error("the relaxed-SIMD build's INT8 output differs from the SIMD128 build's"); process.exit(1); }
