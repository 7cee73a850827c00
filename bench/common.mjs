// What the Node benchmark (bench.mjs) and the browser one (browser-page.mjs) share: .npy
// parsing, top-1, medians, and the round-robin timing loop. No Node or DOM APIs here.

// The benchmarked models: files relative to the repository's root; INT8 calibrates on the first
// `calibRows` samples of `calib`.
export const MODELS = {
  efficientnet_lite0: {
    model: "assets/models/efficientnet_lite0.onnx", input: "tests/reference/efficientnet_lite0/chelsea.input.npy",
    ref: "tests/reference/efficientnet_lite0/chelsea.logits.npy", batch: 1, calib: "tests/aimet/efficientnet_lite0/calib40.npy", calibRows: 40,
  },
  digits_mobilenet: {
    model: "assets/models/digits_mobilenet.onnx", input: "tests/reference/digits_mobilenet.input_first32.npy",
    ref: "tests/reference/digits_mobilenet.logits_first32.npy", batch: 1, calib: "assets/data/digits_train_x.npy", calibRows: 256,
  },
};

// A float32 .npy file's shape and data, from its bytes (an ArrayBuffer or a Node Buffer).
export function parseNpy(bytes, name = "an .npy file") {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const view = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  const hlen = view.getUint16(8, true);
  const header = new TextDecoder("latin1").decode(u8.subarray(10, 10 + hlen));
  if (!header.includes("'<f4'")) throw new Error(`${name}: expected float32`);
  const shape = header.match(/\(([^)]*)\)/)[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const data = new Float32Array(u8.buffer.slice(u8.byteOffset + 10 + hlen, u8.byteOffset + u8.byteLength));
  return { shape, data };
}

export function argmax(a) {
  return a.reduce((bi, v, i) => (v > a[bi] ? i : bi), 0);
}

export function stats(times) {
  const s = [...times].sort((a, b) => a - b);
  return { median_ms: s[Math.floor(s.length / 2)], p90_ms: s[Math.min(s.length - 1, Math.floor(s.length * 0.9))] };
}

// Times `engines` ([name, async () => output]) round-robin: each round runs every engine once,
// starting one further along, so that a slow patch of a shared machine hits them all alike and
// the ratios stay fair. Three warm-up rounds first. Returns per engine its times and last output.
export async function roundRobin(engines, runs, now = () => performance.now()) {
  const times = engines.map(() => []);
  const outs = [];
  for (let i = 0; i < 3; i++) for (const [k, [, fn]] of engines.entries()) outs[k] = await fn();
  for (let r = 0; r < runs; r++) {
    for (let j = 0; j < engines.length; j++) {
      const k = (r + j) % engines.length;
      const t0 = now();
      outs[k] = await engines[k][1]();
      times[k].push(now() - t0);
    }
  }
  return engines.map(([name], k) => ({ engine: name, times: times[k], output: outs[k] }));
}

// GMAC/s of `fn` doing `macs` multiply-accumulates: the median of five runs after a warm-up.
export function gmacs(fn, macs, now = () => performance.now()) {
  fn();
  const t = [];
  for (let i = 0; i < 5; i++) {
    const t0 = now();
    fn();
    t.push(now() - t0);
  }
  t.sort((a, b) => a - b);
  return macs / (t[2] / 1e3) / 1e9;
}

// The INT8 GEMM micro-benchmark at EfficientNet-Lite0's 1x1 shapes ([pixels, outputs, K, reps]),
// against the measured ceiling of the SIMD128 dot-product step.
export const GEMM_SHAPES = [[256, 256, 512, 4], [3136, 96, 24, 2], [784, 240, 40, 4], [49, 1152, 192, 8]];
// `peakMacs`: the MACs of one round of the ceiling loop (12 dot instructions).
export function gemmBench(int8_gemm, int8_peak, peakMacs = 96) {
  const peakReps = 20_000_000;
  const peak = gmacs(() => int8_peak(peakReps), peakReps * peakMacs);
  const shapes = GEMM_SHAPES.map(([p, m, k, reps]) => {
    const g = gmacs(() => int8_gemm(p, m, k, reps), reps * p * m * Math.ceil(k / 8) * 8);
    return { p, m, k, gmacs: +g.toFixed(2), of_peak: +(g / peak).toFixed(3) };
  });
  return { peak_gmacs: +peak.toFixed(2), shapes };
}
