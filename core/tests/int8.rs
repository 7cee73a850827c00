//! The integer engine against the float simulation of the same encodings: top-1 identical and every output
//! element within one quantization step of the logits encoding. Native and wasm32.

use qplay_core::exec::int8::Int8Executor;
use qplay_core::npy::read_npy;
use qplay_core::passes::bn_fold::fold_batch_norms;
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

fn check(model: &[u8], flat: bool, config: QuantSimConfig) {
    let (g, _) = load_model(model, &Limits::default()).unwrap();
    let (g, _) = fold_batch_norms(g);
    let mut sim = QuantSim::new(g, config.clone()).unwrap();
    sim.calibrate(&[digits(TRAIN_X, 256, flat)]).unwrap();
    let step = sim.to_aimet_json()["activation_encodings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "logits")
        .unwrap()["scale"][0]
        .as_f64()
        .unwrap() as f32;
    let x = digits(TEST_X, 450, flat);
    // The float simulation (quantize-dequantize around float arithmetic) as the reference: in
    // qplay mode `executor()` is the integer engine itself.
    let ys = sim.float_executor().unwrap().run(vec![x.clone()]).unwrap().remove(0).to_f32_vec();
    let mut int = Int8Executor::new(&sim).unwrap();
    let (ints, floats) = int.integer_steps();
    assert!(ints > 0, "some steps run in integers");
    let yi = int.run(vec![x]).unwrap().remove(0).to_f32_vec();
    let mut off_by_one = 0;
    for (a, b) in ys.iter().zip(&yi) {
        let d = ((a - b) / step).abs();
        assert!(d <= 1.0 + 1e-3, "{config:?}: sim {a} vs int {b} differ by {d} steps");
        if d > 0.5 {
            off_by_one += 1;
        }
    }
    let mut top1_diff = 0;
    for (r1, r2) in ys.chunks(10).zip(yi.chunks(10)) {
        if argmax(r1) != argmax(r2) {
            top1_diff += 1;
        }
    }
    println!("{config:?}: {ints} integer / {floats} float steps, {off_by_one} of {} elements one step apart, {top1_diff} top-1 differences", ys.len());
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
    let (g, _) = load_model(MOBILENET, &Limits::default()).unwrap();
    let (g, _) = fold_batch_norms(g);
    let mut sim = QuantSim::new(g, QuantSimConfig::default()).unwrap();
    sim.calibrate(&[digits(TRAIN_X, 256, false)]).unwrap();
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

#[test]
fn more_than_8_bits_is_refused() {
    let (g, _) = load_model(MLP, &Limits::default()).unwrap();
    let mut sim = QuantSim::new(g, QuantSimConfig { weight_bits: 16, act_bits: 8, per_channel: false, ..Default::default() }).unwrap();
    sim.calibrate(&[digits(TRAIN_X, 16, true)]).unwrap();
    assert!(Int8Executor::new(&sim).unwrap_err().to_string().contains("at most 8-bit"));
}
