// qplay's worker loader: every compute and helper worker starts here and loads one of two builds
// of the same Rust worker: SIMD128 (./worker.js), or relaxed SIMD (./relaxed/worker.js), whose INT8
// GEMM uses i32x4.relaxed_dot_i8x16_i7x16_add_s. Both give bit-identical results. The relaxed
// build is chosen where the engine accepts relaxed opcodes (WebAssembly.validate; Safari rejects
// them, Node 20 needs a flag) and computes the dot product with a true 8-bit dot instruction
// (ARM sdot, x86 AVX-VNNI-INT8): there it does 16 products per instruction. Elsewhere (the x86
// lowering through pmaddubsw) it is slower than SIMD128, which is kept.
// `?simd=relaxed` or `?simd=baseline` (from the page's #simd=…) forces a build.
(() => {
  // One function: lane 0 of relaxed_dot(i8 -128 x16, 0xFF x16, 0). The spec leaves a top bit
  // set in the second operand to the engine: read as signed (-1) the answer is 512 (a true
  // signed 8-bit dot); read as unsigned it is -130560 (VNNI) or, with pmaddubsw's saturation, -65536.
  const c = (b) => [0xfd, 0x0c, ...new Array(16).fill(b)];
  const body = [0x00, ...c(0x80), ...c(0xff), ...c(0x00), 0xfd, 0x93, 0x02, 0xfd, 0x1b, 0x00, 0x0b];
  const probe = new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: () -> i32
    0x03, 0x02, 0x01, 0x00, // one function of that type
    0x07, 0x05, 0x01, 0x01, 0x66, 0x00, 0x00, // exported as "f"
    0x0a, body.length + 2, 0x01, body.length, ...body,
  ]);
  let valid = false;
  let answer = null;
  try {
    valid = WebAssembly.validate(probe);
    if (valid) answer = new WebAssembly.Instance(new WebAssembly.Module(probe)).exports.f();
  } catch (e) {
    valid = false;
  }
  const asked = new URLSearchParams(self.location.search).get("simd");
  const relaxed = valid && (asked === "relaxed" || (asked !== "baseline" && answer === 512));
  self.qplaySimd = { valid, answer, relaxed };
  const dir = relaxed ? "./relaxed/" : "./";
  importScripts(`${dir}worker.js`);
  wasm_bindgen(`${dir}worker_bg.wasm`);
})();
