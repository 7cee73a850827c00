//! The integer engine against the float simulation of the same encodings: top-1 identical and every output
//! element within one quantization step of the logits encoding. Native and wasm32.

use qplay_core::exec::int8::Int8Executor;
use qplay_core::npy::read_npy;
use qplay_core::passes::bn_fold::fold_batch_norms;
use qplay_core::quant::amp::{Candidate, Setup, Space};
use qplay_core::quant::{QuantSim, QuantSimConfig};
use qplay_core::{load_model, Limits, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

thread_local! {
    /// Bytes this thread has asked the allocator for.
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards to the system allocator; the counter is a thread-local Cell (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + layout.size()));
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + layout.size()));
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + new_size.saturating_sub(layout.size())));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const MOBILENET: &[u8] = include_bytes!("../../assets/models/digits_mobilenet.onnx");
const MLP: &[u8] = include_bytes!("../../assets/models/digits_mlp.onnx");
const TRAIN_X: &[u8] = include_bytes!("../../assets/data/digits_train_x.npy");
const TEST_X: &[u8] = include_bytes!("../../assets/data/digits_test_x.npy");

fn digits(bytes: &[u8], rows: usize, flat: bool) -> Tensor {
    let d = read_npy(bytes, 1 << 24).unwrap().to_f32_vec()[..rows * 64].to_vec();
    Tensor::f32(if flat { vec![rows, 64] } else { vec![rows, 1, 8, 8] }, d).unwrap()
}

fn argmax(r: &[f32]) -> usize {
    r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0
}

fn calibrated(model: &[u8], flat: bool, config: QuantSimConfig) -> QuantSim {
    let (g, _) = load_model(model, &Limits::default()).unwrap();
    let (g, _) = fold_batch_norms(g);
    let mut sim = QuantSim::new(g, config).unwrap();
    sim.calibrate(&[digits(TRAIN_X, 256, flat)]).unwrap();
    sim
}

fn check(model: &[u8], flat: bool, config: QuantSimConfig) {
    check_sim(&calibrated(model, flat, config.clone()), flat, &format!("{config:?}"), 16);
}

/// Mixed precision: groups alternately at the two candidates `pair` (and the other way round).
fn check_mixed(model: &[u8], flat: bool, pair: [&str; 2]) {
    let (g, _) = load_model(model, &Limits::default()).unwrap();
    let (g, _) = fold_batch_norms(g);
    let config = QuantSimConfig { per_channel: true, ..Default::default() };
    let calib = [digits(TRAIN_X, 256, flat)];
    let cands: Vec<Candidate> = pair.iter().map(|c| Candidate::parse(c).unwrap()).collect();
    let space = Space::new(&Setup { graph: &g, config: &config, calib: &calib, limits: Limits::default(), adaround: None }, &cands, &mut |_, _| true).unwrap();
    for first in 0..2 {
        let choice: Vec<usize> = (0..space.groups.len()).map(|i| (i + first) % 2).collect();
        let sim = space.sim(&choice).unwrap();
        let widths: std::collections::BTreeSet<u8> = sim.acts.iter().filter_map(|a| a.encoding.map(|e| e.bw)).chain(sim.params.iter().flat_map(|p| p.encodings.iter().map(|e| e.bw))).collect();
        assert!(widths.len() >= 2, "{pair:?}: the choice mixes bit-widths ({widths:?})");
        check_sim(&sim, flat, &format!("{pair:?} from group {first}"), 8);
    }
}

/// The integer engine against the float simulation: every output within one step of the
/// logits' grid, or, with `coarse` bits, of that grid coarsened to `coarse` bits over the same
/// range (a mixed model: a one-step difference in an 8-bit layer reaches 16-bit logits as
/// many of their fine steps); top-1 identical.
fn check_sim(sim: &QuantSim, flat: bool, config: &str, coarse: u32) {
    let enc = sim.to_aimet_json()["activation_encodings"].as_array().unwrap().iter().find(|e| e["name"] == "logits").unwrap().clone();
    let (fine, bw) = (enc["scale"][0].as_f64().unwrap(), enc["bw"].as_u64().unwrap() as u32);
    let step = (fine * ((1u64 << bw) - 1) as f64 / ((1u64 << coarse.min(bw)) - 1) as f64) as f32;
    let x = digits(TEST_X, 450, flat);
    // The float simulation (quantize-dequantize around float arithmetic) as the reference: in
    // qplay mode `executor()` is the integer engine itself.
    let ys = sim.float_executor().unwrap().run(vec![x.clone()]).unwrap().remove(0).to_f32_vec();
    let mut int = Int8Executor::new(sim).unwrap();
    let (ints, floats) = int.integer_steps();
    assert!(ints > 0, "some steps run in integers");
    let yi = int.run(vec![x]).unwrap().remove(0).to_f32_vec();
    let (mut off_by_one, mut most) = (0, 0f32);
    for (a, b) in ys.iter().zip(&yi) {
        let d = ((a - b) / step).abs();
        // One step, plus the f32 rounding of values that are many fine steps from zero.
        let slack = 1e-3 + 8.0 * f32::EPSILON * a.abs().max(b.abs()) / step;
        assert!(d <= 1.0 + slack, "{config}: sim {a} vs int {b} differ by {d} steps");
        if d > 0.5 {
            off_by_one += 1;
        }
        most = most.max(((a - b) as f64 / fine).abs() as f32);
    }
    let mut top1_diff = 0;
    for (r1, r2) in ys.chunks(10).zip(yi.chunks(10)) {
        if argmax(r1) != argmax(r2) {
            top1_diff += 1;
        }
    }
    println!("{config}: {ints} integer / {floats} float steps, {off_by_one} of {} elements one {coarse}-bit step apart (at most {most:.1} steps of the {bw}-bit logits), {top1_diff} top-1 differences", ys.len());
    assert_eq!(top1_diff, 0, "top-1 identical on the 450 test digits");
}

#[test]
fn mobilenet_int8_matches_simulation() {
    check(MOBILENET, false, QuantSimConfig { weight_bits: 8, act_bits: 8, per_channel: false, ..Default::default() });
    check(MOBILENET, false, QuantSimConfig { weight_bits: 8, act_bits: 8, per_channel: true, ..Default::default() });
    check(MOBILENET, false, QuantSimConfig { weight_bits: 4, act_bits: 8, per_channel: true, ..Default::default() });
    // AIMET's placement: depthwise outputs quantized before their activation.
    check(MOBILENET, false, QuantSimConfig { weight_bits: 8, act_bits: 8, per_channel: false, mode: qplay_core::quant::Mode::Aimet, ..Default::default() });
}

#[test]
fn mlp_int8_matches_simulation() {
    check(MLP, true, QuantSimConfig { weight_bits: 8, act_bits: 8, per_channel: false, ..Default::default() });
    check(MLP, true, QuantSimConfig { weight_bits: 8, act_bits: 8, per_channel: true, ..Default::default() });
}

/// After the first inference the engine reuses its activation buffers: a later inference asks
/// the allocator for a small part of what the first did (what is left: the quantized input, the
/// float steps (Flatten here), the outputs and small per-call scratch).
#[test]
fn repeated_inference_reuses_activation_buffers() {
    let sim = calibrated(MOBILENET, false, QuantSimConfig::default());
    let mut int = Int8Executor::new(&sim).unwrap();
    let x = digits(TEST_X, 450, false);
    let mut run = || {
        let x = x.clone();
        let before = ALLOCATED.with(Cell::get);
        let y = int.run(vec![x]).unwrap();
        (ALLOCATED.with(Cell::get) - before, y[0].to_f32_vec())
    };
    let (first, y1) = run();
    let (_, y2) = run();
    let (third, y3) = run();
    let steps = int.profile(vec![x.clone()], &|| ALLOCATED.with(Cell::get) as f64).unwrap();
    println!("bytes allocated by an inference of 450 digits: first {first}, third {third}; by step: {steps:?}");
    assert!(y1 == y2 && y2 == y3, "reused buffers change nothing");
    assert!(third * 5 < first, "first {first} bytes, third {third}");
}

/// 4-bit weights of a GEMM take half a byte each, a quarter of the 8-bit engine's i16 (the MLP
/// is all Gemm; the padded row lengths are the same at both widths).
#[test]
fn four_bit_weights_are_stored_packed() {
    let bytes = |w| Int8Executor::new(&calibrated(MLP, true, QuantSimConfig { weight_bits: w, ..Default::default() })).unwrap().weight_bytes();
    let (w8, w4) = (bytes(8), bytes(4));
    println!("MLP integer weights: W8 {w8} bytes, W4 {w4} bytes");
    // (The relaxed-SIMD build also keeps a copy of every weight in one byte.)
    #[cfg(all(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"), not(feature = "relaxed")))]
    assert_eq!(w4 * 4, w8);
}

/// Wider than 8 bits (the wide path: i32 activations, planes of 9 bits), uniform.
#[test]
fn sixteen_bits_match_simulation() {
    for (w, a) in [(8, 16), (16, 16), (16, 8)] {
        check(MOBILENET, false, QuantSimConfig { weight_bits: w, act_bits: a, per_channel: true, ..Default::default() });
        check(MLP, true, QuantSimConfig { weight_bits: w, act_bits: a, per_channel: false, ..Default::default() });
    }
}

/// Per-layer bit-widths: W4A8 next to W8A16 and W16A16 next to W8A8, layer by layer, so that
/// every requantization between widths occurs.
#[test]
fn mixed_precision_matches_simulation() {
    check_mixed(MOBILENET, false, ["w4a8", "w8a16"]);
    check_mixed(MOBILENET, false, ["w16a16", "w8a8"]);
    check_mixed(MLP, true, ["w4a8", "w8a16"]);
}
