// The browser half of `bench/run --browser`: loaded by bench/browser.html from a server rooted at
// the repository, it times qplay's wasm (wasm-bindgen's web target, built into target/bench-web)
// and onnxruntime-web (wasm backend, SIMD) on the same input, round-robin, in this page; and the
// relaxed-SIMD build (target/bench-web-relaxed) where the browser validates it.
import init, { Session, int8_gemm, int8_peak } from "/target/bench-web/qplay_bench_wasm.js";
import * as ort from "/tests/e2e/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { MODELS, parseNpy, argmax, stats, roundRobin, gemmBench } from "./common.mjs";

const ready = init();
// The relaxed build, or null where relaxed SIMD is missing (its module would not compile).
const relaxed = (async () => {
  const r = await fetch("/target/bench-web-relaxed/qplay_bench_wasm_bg.wasm");
  if (!WebAssembly.validate(new Uint8Array(await r.arrayBuffer()))) return null;
  const m = await import("/target/bench-web-relaxed/qplay_bench_wasm.js");
  await m.default();
  return m;
})();

async function bytes(file) {
  const r = await fetch(`/${file}`);
  if (!r.ok) throw new Error(`${file}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

const npy = async (file) => parseNpy(await bytes(file), file);

// Times one model. `threads` is onnxruntime-web's thread count (set once per page: its wasm
// instance is created on first use). With more than one, only qplay INT8 (the anchor of the
// ratios) and onnxruntime-web's two models run, and their names end in "-mt".
async function runBench({ model, runs, threads }) {
  await ready;
  const m = MODELS[model];
  if (!m) throw new Error(`unknown model ${model}`);
  const full = await npy(m.input);
  const per = full.data.length / full.shape[0];
  const shape = [m.batch, ...full.shape.slice(1)];
  const x = full.data.slice(0, per * m.batch);
  const ref = await npy(m.ref);
  const refTop1 = argmax(ref.data.slice(0, ref.data.length / ref.shape[0]));
  const onnx = await bytes(m.model);
  const cal = await npy(m.calib);
  const calShape = [m.calibRows, ...cal.shape.slice(1)];
  const calData = cal.data.slice(0, (cal.data.length / cal.shape[0]) * m.calibRows);
  const sess = new Session(onnx);
  const isess = Session.int8(onnx, calData, Uint32Array.from(calShape), true, false);
  const rx = await relaxed;
  const rsess = rx && threads === 1 ? rx.Session.int8(onnx, calData, Uint32Array.from(calShape), true, false) : null;
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.simd = true;
  ort.env.wasm.wasmPaths = "/tests/e2e/node_modules/onnxruntime-web/dist/";
  const opts = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
  const os = await ort.InferenceSession.create(onnx, opts);
  const oq = await ort.InferenceSession.create(await bytes(`target/bench/${model}.int8.onnx`), opts);
  const ortRun = (s) => async () => (await s.run({ [s.inputNames[0]]: new ort.Tensor("float32", x, shape) }))[s.outputNames[0]].data;
  const mt = threads > 1 ? "-mt" : "";
  const engines = [
    ...(mt ? [] : [["qplay-fp32-chromium", () => sess.run(x, Uint32Array.from(shape))]]),
    ["qplay-int8-chromium", () => isess.run(x, Uint32Array.from(shape))],
    ...(rsess ? [["qplay-int8-relaxed-chromium", () => rsess.run(x, Uint32Array.from(shape))]] : []),
    [`ortweb-fp32${mt}-chromium`, ortRun(os)],
    [`ortweb-int8${mt}-chromium`, ortRun(oq)],
  ];
  const timed = await roundRobin(engines, runs);
  const int8 = timed.find((t) => t.engine === "qplay-int8-chromium").output;
  const rows = timed.map(({ engine, times, output }) => {
    const s = stats(times);
    const row = { model, engine, median_ms: +s.median_ms.toFixed(3), p90_ms: +s.p90_ms.toFixed(3), runs, top1_ok: argmax(output) === refTop1 };
    // The two builds must agree bit for bit.
    if (engine === "qplay-int8-relaxed-chromium") row.identical_to_simd128 = output.length === int8.length && output.every((v, i) => Object.is(v, int8[i]));
    return row;
  });
  sess.free();
  isess.free();
  rsess?.free();
  return rows;
}

window.runBench = runBench;
window.runGemm = async () => {
  await ready;
  const rx = await relaxed;
  return { simd128: gemmBench(int8_gemm, int8_peak), relaxed: rx ? gemmBench(rx.int8_gemm, rx.int8_peak_relaxed, 192) : null };
};
window.benchReady = true;
