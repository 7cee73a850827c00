// The benchmark driver (see bench/run). Times each engine on the same input in one process run,
// checks each engine's top-1 against onnxruntime's reference logits, prints a table with ratios
// (or JSON lines with --json).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { MODELS, parseNpy, argmax, stats, roundRobin, gemmBench } from "./common.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, "tests/e2e/package.json"));
const ort = require("onnxruntime-web");
const { Session, memory_bytes, int8_gemm, int8_peak, passes, compress, train, mixed_latency } = require(path.join(root, "target/bench-wasm/qplay_bench_wasm.js"));

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const json = args.includes("--json");
const runs = Number(opt("--runs", 20));
const only = opt("--model", null);

// --passes: DFQ on EfficientNet-Lite0, AdaRound on digits_mobilenet and on EfficientNet-Lite0 (W4A8
// per channel, with its cost in FP32 Lite0 inferences timed in the same process), and one epoch of
// W4A8 QAT of EfficientNet-Lite0 (its cost in the FP32 inferences of the AdaRound run's side), by
// the same Rust function natively and in wasm, with the ratio.
if (args.includes("--passes")) {
  const iters = opt("--iterations", "1000");
  const files = ["assets/models/efficientnet_lite0.onnx", "assets/models/digits_mobilenet.onnx"];
  const lite0Calib = "tests/aimet/efficientnet_lite0/calib40.npy";
  const native = JSON.parse(execFileSync(path.join(root, "target/release/examples/passes"), [...files, "assets/data/digits_train_x.npy", lite0Calib, iters], { cwd: root }).toString());
  const calib = readNpy("assets/data/digits_train_x.npy").data.slice(0, 256 * 64);
  const wasm = JSON.parse(passes(fs.readFileSync(path.join(root, files[0])), fs.readFileSync(path.join(root, files[1])), calib, readNpy(lite0Calib).data, Number(iters)));
  // One QAT epoch (40 samples, batch 2), counted in the FP32 inferences timed above on each side.
  const qat = {
    native: JSON.parse(execFileSync(path.join(root, "target/release/examples/train"), [files[0], lite0Calib, "1"], { cwd: root }).toString()),
    wasm: JSON.parse(train(fs.readFileSync(path.join(root, files[0])), readNpy(lite0Calib).data, 1)),
  };
  for (const [side, r] of [["native", native], ["wasm", wasm]]) {
    const ms = r.adaround_lite0.fp32_inference_ms;
    r.qat_epoch_lite0 = { pass: "qat_epoch_lite0_w4a8_pc", epochs: 1, samples: qat[side].samples, seconds: qat[side].s_per_epoch, fp32_inference_ms: ms, cost_in_inferences: qat[side].s_per_epoch * 1e3 / ms };
  }
  if (json) {
    console.log(JSON.stringify({ bench: "passes", native, wasm }));
    for (const [side, r] of [["native", native], ["wasm", wasm]]) {
      const a = r.adaround_lite0;
      console.log(JSON.stringify({ pass: a.pass, side, iterations: a.iterations, seconds: a.seconds, fp32_inference_ms: a.fp32_inference_ms, cost_in_inferences: a.cost_in_inferences }));
      const q = r.qat_epoch_lite0;
      console.log(JSON.stringify({ pass: q.pass, side, epochs: q.epochs, seconds: q.seconds, fp32_inference_ms: q.fp32_inference_ms, cost_in_inferences: q.cost_in_inferences }));
    }
  } else {
    console.log("pass                                          native        wasm   wasm/native");
    for (const mode of ["qplay", "aimet"]) {
      const [n, w] = [native.dfq_lite0_ms[mode], wasm.dfq_lite0_ms[mode]];
      console.log(`DFQ on EfficientNet-Lite0 (${mode} mode)`.padEnd(40) + `${n.toFixed(1).padStart(9)} ms ${w.toFixed(1).padStart(8)} ms ${(w / n).toFixed(2).padStart(8)}x`);
    }
    const [n, w] = [native.adaround_digits, wasm.adaround_digits];
    console.log(`AdaRound digits W4A8, s per 1000 it per layer`.padEnd(40) + `${n.s_per_1000_iterations_per_layer.toFixed(3).padStart(9)} s  ${w.s_per_1000_iterations_per_layer.toFixed(3).padStart(8)} s  ${(w.total_s / n.total_s).toFixed(2).padStart(8)}x`);
    const [a, b] = [native.adaround_lite0, wasm.adaround_lite0];
    console.log(`AdaRound Lite0 W4A8 pc, s in all`.padEnd(40) + `${a.seconds.toFixed(1).padStart(9)} s  ${b.seconds.toFixed(1).padStart(8)} s  ${(b.seconds / a.seconds).toFixed(2).padStart(8)}x`);
    console.log(`  one FP32 Lite0 inference`.padEnd(40) + `${a.fp32_inference_ms.toFixed(1).padStart(9)} ms ${b.fp32_inference_ms.toFixed(1).padStart(8)} ms`);
    console.log(`  cost in FP32 inferences (bar: 3,000)`.padEnd(40) + `${a.cost_in_inferences.toFixed(0).padStart(9)}    ${b.cost_in_inferences.toFixed(0).padStart(8)}`);
    const [qn, qw] = [native.qat_epoch_lite0, wasm.qat_epoch_lite0];
    console.log(`QAT Lite0 W4A8 pc, s per epoch`.padEnd(40) + `${qn.seconds.toFixed(1).padStart(9)} s  ${qw.seconds.toFixed(1).padStart(8)} s  ${(qw.seconds / qn.seconds).toFixed(2).padStart(8)}x`);
    console.log(`  cost in FP32 inferences`.padEnd(40) + `${qn.cost_in_inferences.toFixed(0).padStart(9)}    ${qw.cost_in_inferences.toFixed(0).padStart(8)}`);
    console.log(`(AdaRound: digits ${n.layers} layers x ${iters} iterations, batches of 32 digits; Lite0 ${a.samples} samples, one per iteration; QAT: one epoch of the ${qn.samples} samples, batch 2, distilled from FP32; DFQ: median of 5, model already loaded)`);
  }
  process.exit(0);
}

// --train: W4A8 per-channel QAT of EfficientNet-Lite0 on the 40 calibration samples (distilled
// from itself), timed by the same Rust function natively and in wasm, with each side's peak memory
// (native: the process's peak resident set; wasm: linear memory, which never shrinks).
if (args.includes("--train")) {
  const epochs = opt("--epochs", "1");
  const files = ["assets/models/efficientnet_lite0.onnx", "tests/aimet/efficientnet_lite0/calib40.npy"];
  const native = JSON.parse(execFileSync(path.join(root, "target/release/examples/train"), [...files, epochs], { cwd: root }).toString());
  const before = memory_bytes();
  const wasm = JSON.parse(train(fs.readFileSync(path.join(root, files[0])), readNpy(files[1]).data, Number(epochs)));
  wasm.peak_memory_mb = memory_bytes() / 2 ** 20;
  wasm.memory_before_mb = before / 2 ** 20;
  if (json) {
    console.log(JSON.stringify({ bench: "train", native, wasm }));
  } else {
    console.log("pass                                          native        wasm   wasm/native");
    console.log(`QAT Lite0 W4A8 pc, s per epoch (${native.samples} samples)`.padEnd(40) + `${native.s_per_epoch.toFixed(1).padStart(9)} s  ${wasm.s_per_epoch.toFixed(1).padStart(8)} s  ${(wasm.s_per_epoch / native.s_per_epoch).toFixed(2).padStart(8)}x`);
    console.log(`peak memory`.padEnd(40) + `${native.peak_memory_mb.toFixed(0).padStart(8)} MB ${wasm.peak_memory_mb.toFixed(0).padStart(7)} MB`);
    console.log(`(batch 2, one sample's tape at a time; ${epochs} epoch(s); native memory is the whole process's, wasm the module's linear memory)`);
  }
  process.exit(0);
}

// --compress: the full greedy sensitivity pass of `qplay compress` on EfficientNet-Lite0 (spatial
// SVD and channel pruning, AIMET's 10 candidates, SQNR on the 10 photos, pruning refitted on the 40
// calibration samples), timed by the same Rust function natively and in wasm, next to AIMET 2.42's
// wall time for its eval-score table on the same model (tests/aimet/compression).
if (args.includes("--compress")) {
  const { evalX, evalFile } = lite0Photos();
  const calibFile = "tests/aimet/efficientnet_lite0/calib40.npy";
  const native = JSON.parse(execFileSync(path.join(root, "target/release/examples/compress"), ["assets/models/efficientnet_lite0.onnx", calibFile, evalFile], { cwd: root, maxBuffer: 1 << 20 }).toString());
  const wasm = JSON.parse(compress(fs.readFileSync(path.join(root, "assets/models/efficientnet_lite0.onnx")), readNpy(calibFile).data, evalX));
  const aimetDir = path.join(root, "tests/aimet/compression/efficientnet_lite0");
  const wall = (f, key) => { const j = JSON.parse(fs.readFileSync(path.join(aimetDir, f), "utf8")); return j.stages.reduce((s, st) => s + (st[key] ?? 0), 0); };
  // AIMET's channel-pruning table on Lite0 was computed in two chunks of 297.3 s and 291.3 s
  // (tests/aimet/compression/README.md, "eval-dict chunk" rows; no JSON of their own).
  const aimet = { "spatial-svd": wall("ssvd_t0.75.json", "eval_dict_s"), "channel-pruning": 297.3 + 291.3 };
  if (json) {
    console.log(JSON.stringify({ bench: "compress", native, wasm, aimet_eval_dict_s: aimet }));
  } else {
    console.log("greedy sensitivity pass, EfficientNet-Lite0     native       wasm  wasm/native   AIMET 2.42 (torch)");
    for (const m of ["spatial-svd", "channel-pruning"]) {
      const [n, w] = [native[m], wasm[m]];
      console.log(`${m} (${n.evaluations} evaluations)`.padEnd(46) + `${n.seconds.toFixed(1).padStart(7)} s ${w.seconds.toFixed(1).padStart(8)} s ${(w.seconds / n.seconds).toFixed(2).padStart(9)}x ${aimet[m].toFixed(1).padStart(12)} s`);
    }
    console.log("(10 candidates, SQNR on the 10 photos, pruning refitted on 40 samples; AIMET: its eval-score table, shared figures, a different loaded 2-core machine)");
  }
  process.exit(0);
}

// --mixed: the integer engine's latency on EfficientNet-Lite0 at uniform W8A8 and W4A8 and at
// the mixed points the search chooses for 1.25, 0.75 and 0.5 relative BOPs (candidates W4A8,
// W8A8, W8A16, per-channel; searched natively once, by SQNR on the 10 photos), each timed by the
// same Rust function natively and in wasm on the same photo, with the top-1 of every run.
if (args.includes("--mixed")) {
  const { evalFile } = lite0Photos();
  const lite0 = "assets/models/efficientnet_lite0.onnx";
  const input = "tests/reference/efficientnet_lite0/chelsea.input.npy";
  const refTop1 = argmax(readNpy("tests/reference/efficientnet_lite0/chelsea.logits.npy").data);
  const found = JSON.parse(execFileSync(path.join(root, "target/release/examples/mixed"), [lite0, "tests/aimet/efficientnet_lite0/calib40.npy", evalFile, input, String(runs)], { cwd: root, maxBuffer: 1 << 28 }).toString());
  fs.writeFileSync(path.join(root, "target/bench/mixed_points.json"), JSON.stringify(found));
  const bytes = fs.readFileSync(path.join(root, lite0));
  const x = readNpy(input).data;
  for (const p of found.points) p.wasm = JSON.parse(mixed_latency(bytes, JSON.stringify(p.encodings), x, runs));
  const base = found.points[0];
  if (json) {
    for (const p of found.points) {
      console.log(JSON.stringify({ bench: "mixed", model: "efficientnet_lite0", point: p.label, relative_bops: p.relative_bops, score_db: p.score_db, native: p.native, wasm: p.wasm, top1_ok: p.native.top1 === refTop1 && p.wasm.top1 === refTop1 }));
    }
  } else {
    console.log(`integer engine, EfficientNet-Lite0 (search: ${found.evaluations} evaluations in ${found.seconds.toFixed(0)} s natively)`);
    console.log("point                     rel. BOPs  SQNR dB   weights    native    vs W8A8      wasm    vs W8A8  top-1 vs FP32");
    for (const p of found.points) {
      const [n, w] = [p.native, p.wasm];
      const ok = n.top1 === refTop1 && w.top1 === refTop1 ? "same" : n.top1 === w.top1 ? "other" : "DIFFERENT";
      console.log(`${p.label.padEnd(24)} ${p.relative_bops.toFixed(3).padStart(9)} ${p.score_db.toFixed(2).padStart(8)} ${(n.weight_bytes / 2 ** 20).toFixed(2).padStart(7)} MB ${n.median_ms.toFixed(2).padStart(7)} ms ${(base.native.median_ms / n.median_ms).toFixed(2).padStart(7)}x ${w.median_ms.toFixed(2).padStart(7)} ms ${(base.wasm.median_ms / w.median_ms).toFixed(2).padStart(7)}x  ${ok}`);
    }
    console.log(`(median of ${runs} runs after a warm-up, single thread; weights: the engine's integer weights, 4-bit ones packed two per byte;`);
    console.log(" top-1: \"same\" as FP32's, \"other\" where the point's error changes the class (native and wasm agree), \"DIFFERENT\" if they do not)");
  }
  process.exit(0);
}

// The 10 Lite0 photos stacked [10, 3, 224, 224], and the .npy file written with them.
function lite0Photos() {
  const photos = fs.readdirSync(path.join(root, "tests/reference/efficientnet_lite0")).filter((f) => f.endsWith(".input.npy")).sort();
  const stack = photos.map((f) => readNpy(`tests/reference/efficientnet_lite0/${f}`).data);
  const evalX = new Float32Array(stack.reduce((n, a) => n + a.length, 0));
  stack.reduce((o, a) => (evalX.set(a, o), o + a.length), 0);
  const evalFile = path.join(root, "target/bench/lite0_eval10.npy");
  fs.mkdirSync(path.dirname(evalFile), { recursive: true });
  const header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${photos.length}, 3, 224, 224), }`.padEnd(118) + "\n";
  const pre = Buffer.alloc(10);
  Buffer.from("\x93NUMPY", "latin1").copy(pre);
  pre[6] = 1; pre[7] = 0; pre.writeUInt16LE(header.length, 8);
  fs.writeFileSync(evalFile, Buffer.concat([pre, Buffer.from(header, "latin1"), Buffer.from(evalX.buffer)]));
  return { evalX, evalFile };
}

function readNpy(file) {
  return parseNpy(fs.readFileSync(path.join(root, file)), file);
}

async function benchModel(name, m) {
  const full = readNpy(m.input);
  const per = full.data.length / full.shape[0];
  const shape = [m.batch, ...full.shape.slice(1)];
  const x = full.data.slice(0, per * m.batch);
  const ref = readNpy(m.ref);
  const refTop1 = argmax(ref.data.slice(0, ref.data.length / ref.shape[0]));
  const bytes = fs.readFileSync(path.join(root, m.model));
  const rows = [];

  // The four wasm engines, timed round-robin (one run of each per round) so that a slow patch of
  // this shared machine hits them all alike and the ratios stay fair.
  const sess = new Session(bytes);
  const cal = readNpy(m.calib);
  const calRows = m.calibRows;
  const calShape = [calRows, ...cal.shape.slice(1)];
  const calData = cal.data.slice(0, (cal.data.length / cal.shape[0]) * calRows);
  // W8A8 per-channel, min-max encodings from the AIMET calibration set, integer engine.
  const isess = Session.int8(bytes, calData, Uint32Array.from(calShape), true, false);
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.simd = true;
  const os = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  const qbytes = fs.readFileSync(path.join(root, "target/bench", `${name}.int8.onnx`));
  const oq = await ort.InferenceSession.create(qbytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  const engines = [
    ["qplay-fp32-wasm", () => sess.run(x, Uint32Array.from(shape))],
    ["qplay-int8-wasm", () => isess.run(x, Uint32Array.from(shape))],
    ["ortweb-fp32", async () => (await os.run({ [os.inputNames[0]]: new ort.Tensor("float32", x, shape) }))[os.outputNames[0]].data],
    ["ortweb-int8", async () => (await oq.run({ [oq.inputNames[0]]: new ort.Tensor("float32", x, shape) }))[oq.outputNames[0]].data],
  ];
  for (const { engine, times, output } of await roundRobin(engines, runs)) {
    rows.push({ engine, ...stats(times), top1_ok: argmax(output) === refTop1, ...(engine.startsWith("qplay") ? { mem_mb: memory_bytes() / 1e6 } : {}) });
  }

  const tmp = path.join(root, "target", `bench-input-${name}.npy`);
  writeNpy(tmp, x, shape);
  const qplay = (args) => JSON.parse(execFileSync(path.join(root, "target/release/qplay"), args, { cwd: root }).toString().trim().split("\n").pop());
  const nat = qplay(["bench", m.model, "--input", tmp, "--runs", String(runs), "--json"]);
  rows.push({ engine: "qplay-fp32-native", median_ms: nat.median_ms, p90_ms: nat.p90_ms, top1_ok: nat.top1 === refTop1 });
  const calTmp = path.join(root, "target", `bench-calib-${name}.npy`);
  writeNpy(calTmp, calData, calShape);
  const enc = path.join(root, "target", `bench-${name}.encodings.json`);
  execFileSync(path.join(root, "target/release/qplay"), ["quantize", m.model, "--calib", calTmp, "--per-channel", "--encodings", enc], { cwd: root });
  const nati = qplay(["bench", m.model, "--input", tmp, "--encodings", enc, "--int8", "--runs", String(runs), "--json"]);
  rows.push({ engine: "qplay-int8-native", median_ms: nati.median_ms, p90_ms: nati.p90_ms, top1_ok: nati.top1 === refTop1 });
  return rows.map((r) => ({
    model: name, engine: r.engine, median_ms: +r.median_ms.toFixed(3), p90_ms: +r.p90_ms.toFixed(3), runs, top1_ok: r.top1_ok,
    ...(r.mem_mb ? { wasm_memory_mb: +r.mem_mb.toFixed(1) } : {}),
  }));
}

function writeNpy(file, data, shape) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(", ")}${shape.length === 1 ? "," : ""}), }`;
  while ((10 + header.length + 1) % 64) header += " ";
  header += "\n";
  const pre = Buffer.alloc(10);
  Buffer.from("\x93NUMPY", "latin1").copy(pre);
  pre[6] = 1; pre[7] = 0; pre.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, "latin1"), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

const all = [];
for (const [name, m] of Object.entries(MODELS)) {
  if (only && only !== name) continue;
  const rows = await benchModel(name, m);
  all.push(...rows);
  if (json) { for (const r of rows) console.log(JSON.stringify(r)); continue; }
  const by = Object.fromEntries(rows.map((r) => [r.engine, r]));
  console.log(`\n${name} (batch 1, single thread, ${runs} runs after 3 warm-up, wasm engines round-robin; INT8 = W8A8 per-channel)`);
  console.log("engine               median ms    p90 ms   top-1 vs FP32 reference   wasm memory");
  for (const r of rows) console.log(`${r.engine.padEnd(20)} ${r.median_ms.toFixed(2).padStart(9)} ${r.p90_ms.toFixed(2).padStart(9)}   ${(r.top1_ok ? "same" : "differs").padEnd(24)}  ${r.wasm_memory_mb ? r.wasm_memory_mb + " MB" : ""}`);
  const ratio = (a, b) => (by[a].median_ms / by[b].median_ms).toFixed(2);
  const ortBest = by["ortweb-fp32"].median_ms < by["ortweb-int8"].median_ms ? "ortweb-fp32" : "ortweb-int8";
  console.log(`qplay INT8 wasm vs qplay FP32 wasm: ${ratio("qplay-fp32-wasm", "qplay-int8-wasm")}x faster`);
  console.log(`qplay INT8 wasm vs onnxruntime-web's faster path (${ortBest}): ${ratio(ortBest, "qplay-int8-wasm")}x faster`);
  console.log(`qplay FP32 wasm vs onnxruntime-web FP32: ${ratio("ortweb-fp32", "qplay-fp32-wasm")}x faster; onnxruntime-web INT8 vs its FP32: ${ratio("ortweb-fp32", "ortweb-int8")}x faster`);
  console.log("(ratios above 1: the first engine is faster; INT8 top-1 may legitimately differ from FP32)");
}
// INT8 GEMM micro-benchmark against the measured SIMD128 ceiling of its inner step.
if (!only || only === "gemm") {
  const g = gemmBench(int8_gemm, int8_peak);
  if (json) {
    console.log(JSON.stringify({ bench: "int8-gemm-wasm", ...g }));
  } else {
    console.log(`\nINT8 GEMM (wasm SIMD128, i32x4.dot_i16x8_s): measured ceiling ${g.peak_gmacs.toFixed(2)} GMAC/s`);
    for (const s of g.shapes) console.log(`  ${s.p}x${s.m}x${s.k}: ${s.gmacs.toFixed(2)} GMAC/s = ${(100 * s.of_peak).toFixed(0)} % of the ceiling (K padded to a multiple of 8)`);
  }
}

if (all.some((r) => !r.top1_ok && r.engine.includes("fp32"))) { console.error("an FP32 top-1 differs from onnxruntime's reference"); process.exit(1); }
