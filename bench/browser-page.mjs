// The browser half of `bench/run --browser`: loaded by bench/browser.html from a server rooted at
// the repository, it times qplay's wasm (wasm-bindgen's web target, built into target/bench-web)
// and onnxruntime-web (wasm backend, SIMD) on the same input, round-robin, in this page.
import init, { Session, int8_gemm, int8_peak } from "/target/bench-web/qplay_bench_wasm.js";
import * as ort from "/tests/e2e/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { MODELS, parseNpy, argmax, stats, roundRobin, gemmBench } from "./common.mjs";

const ready = init();

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
    [`ortweb-fp32${mt}-chromium`, ortRun(os)],
    [`ortweb-int8${mt}-chromium`, ortRun(oq)],
  ];
  const rows = (await roundRobin(engines, runs)).map(({ engine, times, output }) => {
    const s = stats(times);
    return { model, engine, median_ms: +s.median_ms.toFixed(3), p90_ms: +s.p90_ms.toFixed(3), runs, top1_ok: argmax(output) === refTop1 };
  });
  sess.free();
  isess.free();
  return rows;
}

window.runBench = runBench;
window.runGemm = async () => (await ready, gemmBench(int8_gemm, int8_peak));
window.benchReady = true;
