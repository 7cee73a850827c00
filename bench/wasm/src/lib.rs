//! A minimal JS surface over qplay-core for benchmarking under Node: load a model (FP32, or
//! quantized and run by the integer engine), run it.

use qplay_core::exec::int8::Int8Executor;
use qplay_core::passes::bn_fold::fold_batch_norms;
use qplay_core::quant::{QuantSim, QuantSimConfig};
use qplay_core::{load_model, Executor, Limits, Tensor};
use wasm_bindgen::prelude::*;

enum Engine {
    Fp32(Executor),
    Int8(Box<Int8Executor>),
}

#[wasm_bindgen]
pub struct Session {
    engine: Engine,
}

fn js(e: qplay_core::Error) -> JsError {
    JsError::new(&e.to_string())
}

fn tensor(data: &[f32], shape: &[u32]) -> Result<Tensor, JsError> {
    Tensor::f32(shape.iter().map(|&d| d as usize).collect(), data.to_vec()).map_err(js)
}

#[wasm_bindgen]
impl Session {
    /// Loads an ONNX model from its bytes for FP32 execution.
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: &[u8]) -> Result<Session, JsError> {
        let (g, _) = load_model(bytes, &Limits::default()).map_err(js)?;
        Ok(Session { engine: Engine::Fp32(Executor::new(g, Limits::default()).map_err(js)?) })
    }

    /// Loads a model, folds BN (and equalizes it with `dfq`), calibrates W8A8 min-max encodings on
    /// `calib` (samples along axis 0, one batch each) and prepares the integer engine.
    pub fn int8(bytes: &[u8], calib: &[f32], calib_shape: &[u32], per_channel: bool, dfq: bool) -> Result<Session, JsError> {
        let (g, _) = load_model(bytes, &Limits::default()).map_err(js)?;
        let g = if dfq { qplay_core::passes::cle::equalize_with(g, qplay_core::passes::cle::CleMode::Preserving).0 } else { fold_batch_norms(g).0 };
        let mut sim = QuantSim::new(g, QuantSimConfig { weight_bits: 8, act_bits: 8, per_channel, ..Default::default() }).map_err(js)?;
        let n = *calib_shape.first().ok_or_else(|| JsError::new("empty calibration shape"))? as usize;
        let per = calib.len() / n.max(1);
        let mut one = calib_shape.to_vec();
        one[0] = 1;
        let samples = (0..n).map(|i| tensor(&calib[i * per..(i + 1) * per], &one)).collect::<Result<Vec<_>, _>>()?;
        sim.calibrate(&samples).map_err(js)?;
        Ok(Session { engine: Engine::Int8(Box::new(Int8Executor::new(&sim).map_err(js)?)) })
    }

    /// Runs the model on one f32 input of the given shape; returns the first output's data.
    pub fn run(&mut self, input: &[f32], shape: &[u32]) -> Result<Vec<f32>, JsError> {
        let x = tensor(input, shape)?;
        let y = match &mut self.engine {
            Engine::Fp32(e) => e.run(vec![x]),
            Engine::Int8(e) => e.run(vec![x]),
        }
        .map_err(js)?;
        Ok(y.into_iter().next().map(|t| t.to_f32_vec()).unwrap_or_default())
    }
}

/// Bytes of wasm linear memory in use (the high-water mark: wasm memory never shrinks).
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen]
pub fn memory_bytes() -> f64 {
    (core::arch::wasm32::memory_size(0) * 65536) as f64
}

/// Runs the INT8 GEMM kernel `reps` times on a `p x m x k` problem (fixed pseudo-random data);
/// time it from JS: MACs = reps * p * m * k. Returns a checksum so the work cannot be skipped.
#[wasm_bindgen]
pub fn int8_gemm(p: usize, m: usize, k: usize, reps: usize) -> i32 {
    use qplay_core::kernels::int8::{dot_gemm_packed, padded, PackedWeights};
    let kp = padded(k);
    let x: Vec<i16> = (0..p * kp).map(|i| ((i * 37) % 511) as i16 - 255).collect();
    let w: Vec<i16> = (0..m * kp).map(|i| ((i * 91) % 255) as i16 - 127).collect();
    let packed = PackedWeights::new(m, kp, &w);
    let mut out = vec![0i32; p * m];
    let mut sum = 0i32;
    for _ in 0..reps {
        dot_gemm_packed(p, &x, &packed, &mut out);
        sum = sum.wrapping_add(out[out.len() / 2]);
    }
    sum
}

/// The SIMD128 ceiling for this kernel's inner step: `reps` rounds of 12 independent
/// `i32x4.dot_i16x8_s` + `i32x4.add` chains on registers (8 MACs each), no memory traffic.
/// MACs = reps * 12 * 8.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen]
pub fn int8_peak(reps: usize) -> i32 {
    use core::arch::wasm32::*;
    let b = i16x8_splat(3);
    let c = i32x4_splat(1);
    let mut acc: [v128; 12] = core::array::from_fn(|i| i32x4_splat(i as i32));
    for _ in 0..reps {
        for a in acc.iter_mut() {
            *a = i32x4_add(i32x4_dot_i16x8(*a, b), c);
        }
    }
    acc.iter().fold(0i32, |s, v| s.wrapping_add(i32x4_extract_lane::<0>(*v)))
}

/// The relaxed-SIMD ceiling (the build with the `relaxed` feature): `reps` rounds of 12
/// independent `i32x4.relaxed_dot_i8x16_i7x16_add_s` chains on registers (16 MACs each).
/// MACs = reps * 12 * 16. (The GEMM splits activations into two 7-bit planes: two of these per 16
/// products, so at most half this ceiling.)
#[cfg(all(target_arch = "wasm32", feature = "relaxed"))]
#[wasm_bindgen]
pub fn int8_peak_relaxed(reps: usize) -> i32 {
    // SAFETY: this build is only loaded where the engine validates relaxed SIMD.
    unsafe { peak_relaxed(reps) }
}

#[cfg(all(target_arch = "wasm32", feature = "relaxed"))]
#[target_feature(enable = "relaxed-simd")]
unsafe fn peak_relaxed(reps: usize) -> i32 {
    use core::arch::wasm32::*;
    let b = i8x16_splat(3);
    let mut acc: [v128; 12] = core::array::from_fn(|i| i32x4_splat(i as i32));
    for _ in 0..reps {
        for a in acc.iter_mut() {
            *a = i32x4_relaxed_dot_i8x16_i7x16_add(*a, b, *a);
        }
    }
    acc.iter().fold(0i32, |s, v| s.wrapping_add(i32x4_extract_lane::<0>(*v)))
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance)]
    fn now() -> f64;
}

#[wasm_bindgen]
impl Session {
    /// Milliseconds per op (FP32) or step kind (INT8) over one run, as "op: ms" lines, slowest first.
    pub fn profile(&mut self, input: &[f32], shape: &[u32]) -> Result<String, JsError> {
        let e = match &mut self.engine {
            Engine::Int8(e) => {
                let v = e.profile(vec![tensor(input, shape)?], &now).map_err(js)?;
                return Ok(v.iter().map(|(k, ms)| format!("{k}: {ms:.2} ms")).collect::<Vec<_>>().join("\n"));
            }
            Engine::Fp32(e) => e,
        };
        let g = e.graph();
        let label = |n: &qplay_core::graph::Node| -> String {
            match &n.op {
                qplay_core::graph::Op::Conv { group, window } => {
                    let k = n.inputs.get(1).copied().flatten().and_then(|w| g.consts[w].as_ref()).map(|t| t.shape()[2]).unwrap_or(0);
                    format!("Conv {}{}x{} s{}", if *group > 1 { "dw " } else { "" }, k, k, window.strides[0])
                }
                _ => n.op_type.clone(),
            }
        };
        let producer: std::collections::HashMap<usize, String> = g.nodes.iter().flat_map(|n| n.outputs.iter().map(move |&o| (o, label(n)))).collect();
        let mut by: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
        let mut last = now();
        e.run_with_hook(vec![tensor(input, shape)?], &mut |id, _| {
            let t = now();
            if let Some(op) = producer.get(&id) {
                *by.entry(op.clone()).or_default() += t - last;
            }
            last = t;
            Ok(())
        })
        .map_err(js)?;
        let mut v: Vec<(String, f64)> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(v.iter().map(|(k, ms)| format!("{k}: {ms:.2} ms")).collect::<Vec<_>>().join("\n"))
    }
}

/// Times the passes the same way natively (bench/wasm/examples/passes.rs) and in wasm
/// ([`passes`]): DFQ on `lite0` (BN fold + equalization, both modes; median of 5, the model
/// already loaded), AdaRound on `digits` (W4A8 per channel, `iterations` per layer, the first
/// 256 digits in 8 batches of 32), and AdaRound on `lite0` (W4A8 per channel, BN folded,
/// `iterations` per layer, `lite0_calib` stacked [N, 3, 224, 224], one sample per batch as the
/// CLI batches a fixed-batch model) with its cost in FP32 Lite0 inferences timed in the same run
/// (median of 10). `clock` returns milliseconds. Returns one JSON object.
pub fn passes_bench(lite0: &[u8], digits: &[u8], calib: &[f32], lite0_calib: &[f32], iterations: usize, clock: &dyn Fn() -> f64) -> Result<String, String> {
    use qplay_core::passes::adaround::{adaround, AdaroundConfig};
    use qplay_core::passes::cle::{equalize_with, CleMode};
    let e = |e: qplay_core::Error| e.to_string();
    let (g, _) = load_model(lite0, &Limits::default()).map_err(e)?;
    let mut dfq = serde_json::Map::new();
    for (label, mode) in [("qplay", CleMode::Preserving), ("aimet", CleMode::Aimet)] {
        let mut ms: Vec<f64> = (0..5)
            .map(|_| {
                let g = g.clone();
                let t0 = clock();
                std::hint::black_box(equalize_with(g, mode));
                clock() - t0
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        dfq.insert(label.into(), ms[2].into());
    }
    let (g, _) = load_model(digits, &Limits::default()).map_err(e)?;
    let mut sim = QuantSim::new(fold_batch_norms(g).0, QuantSimConfig { weight_bits: 4, act_bits: 8, per_channel: true, ..Default::default() }).map_err(e)?;
    let batches = calib.chunks(32 * 64).take(8).map(|c| Tensor::f32(vec![c.len() / 64, 1, 8, 8], c.to_vec())).collect::<Result<Vec<_>, _>>().map_err(e)?;
    let mut starts: Vec<f64> = Vec::new();
    let t0 = clock();
    let report = adaround(&mut sim, &batches, &AdaroundConfig { iterations, ..Default::default() }, &mut |p| {
        if starts.len() <= p.layer {
            starts.push(clock());
        }
        true
    })
    .map_err(e)?;
    let total = clock() - t0;
    let per_layer = total / report.layers.len().max(1) as f64;

    let (g, _) = load_model(lite0, &Limits::default()).map_err(e)?;
    let samples = lite0_samples(lite0_calib).map_err(e)?;
    let first = samples.first().ok_or("no Lite0 calibration samples")?.clone();
    let mut fp = Executor::new(g.clone(), Limits::default()).map_err(e)?;
    let mut ms: Vec<f64> = (0..11)
        .map(|_| {
            let t0 = clock();
            fp.run(vec![first.clone()]).map(|y| std::hint::black_box(y)).map_err(e)?;
            Ok(clock() - t0)
        })
        .collect::<Result<_, String>>()?;
    ms.remove(0);
    ms.sort_by(f64::total_cmp);
    let inference_ms = ms[ms.len() / 2];
    let mut sim = QuantSim::new(fold_batch_norms(g).0, QuantSimConfig { weight_bits: 4, act_bits: 8, per_channel: true, ..Default::default() }).map_err(e)?;
    let t0 = clock();
    adaround(&mut sim, &samples, &AdaroundConfig { iterations, ..Default::default() }, &mut |_| true).map_err(e)?;
    let lite0_ms = clock() - t0;
    Ok(serde_json::json!({
        "adaround_lite0": {
            "pass": "adaround_lite0_w4a8_pc",
            "iterations": iterations,
            "samples": samples.len(),
            "seconds": lite0_ms / 1e3,
            "fp32_inference_ms": inference_ms,
            "cost_in_inferences": lite0_ms / inference_ms,
        },
        "dfq_lite0_ms": dfq,
        "adaround_digits": {
            "iterations": iterations,
            "layers": report.layers.len(),
            "total_s": total / 1e3,
            "s_per_1000_iterations_per_layer": per_layer / 1e3 * 1000.0 / iterations as f64,
        },
    })
    .to_string())
}

/// [`passes_bench`] in wasm, timed with `performance.now()`.
#[wasm_bindgen]
pub fn passes(lite0: &[u8], digits: &[u8], calib: &[f32], lite0_calib: &[f32], iterations: usize) -> Result<String, JsError> {
    passes_bench(lite0, digits, calib, lite0_calib, iterations, &now).map_err(|e| JsError::new(&e))
}

/// Lite0 samples stacked as [N, 3, 224, 224], one tensor of batch 1 each.
fn lite0_samples(d: &[f32]) -> Result<Vec<Tensor>, qplay_core::Error> {
    d.chunks(3 * 224 * 224).map(|c| Tensor::f32(vec![1, 3, 224, 224], c.to_vec())).collect()
}

/// `lite0` loaded, its calibration samples, and an evaluator by SQNR against its FP32 outputs on
/// `eval` (both stacked as [N, 3, 224, 224]).
fn lite0_sets(lite0: &[u8], calib: &[f32], eval: &[f32]) -> Result<(qplay_core::graph::Graph, Vec<Tensor>, qplay_core::eval::Evaluator), qplay_core::Error> {
    let (g, _) = load_model(lite0, &Limits::default())?;
    let eval = qplay_core::eval::Evaluator::against_model(&g, lite0_samples(eval)?, Limits::default())?;
    Ok((g, lite0_samples(calib)?, eval))
}

/// Times the full greedy sensitivity pass of `qplay compress` (every layer at each of AIMET's 9
/// candidates, scored by pooled SQNR against the original on `eval` ([N, 3, 224, 224], the 10
/// photos), channel pruning refitted on `calib` (the 40 calibration samples)), then AIMET's
/// selection at 0.75 of the MACs, without refinement, for spatial SVD and channel pruning on
/// `lite0`. The same function runs natively (bench/wasm/examples/compress.rs) and in wasm
/// ([`compress`]). Returns one JSON object: seconds and evaluations per method.
pub fn compress_bench(lite0: &[u8], calib: &[f32], eval: &[f32], clock: &dyn Fn() -> f64) -> Result<String, String> {
    use qplay_core::search::compress::{compress, CompressConfig, Method};
    let e = |e: qplay_core::Error| e.to_string();
    let (g, calib, eval) = lite0_sets(lite0, calib, eval).map_err(e)?;
    let shapes = qplay_core::cost::infer_shapes(&g, &[vec![1, 3, 224, 224]], &Limits::default()).map_err(e)?;
    let mut out = serde_json::Map::new();
    for method in [Method::SpatialSvd, Method::ChannelPruning] {
        let cfg = CompressConfig { refine_steps: Some(0), skip: vec!["/_conv_stem/Conv".into()], ..CompressConfig::new(method, 0.75) };
        let t0 = clock();
        let (_, r) = compress(&g, &shapes, &cfg, &eval, &calib, &mut |_, _, _| true).map_err(e)?;
        out.insert(method.name().into(), serde_json::json!({"seconds": (clock() - t0) / 1e3, "evaluations": r.evaluations, "layers": r.table.layers.len(), "macs_ratio": r.macs_ratio, "score_db": r.score}));
    }
    Ok(serde_json::Value::Object(out).to_string())
}

/// [`compress_bench`] in wasm, timed with `performance.now()`.
#[wasm_bindgen]
pub fn compress(lite0: &[u8], calib: &[f32], eval: &[f32]) -> Result<String, JsError> {
    compress_bench(lite0, calib, eval, &now).map_err(|e| JsError::new(&e))
}

/// Times W4A8 per-channel quantization-aware training of `lite0` (min-max start, distilled from
/// itself by MSE on the logits) on `calib` (the 40 calibration samples, [N, 3, 224, 224]) for
/// `epochs` epochs at batch 2, lr 1e-4 — the settings of the README's figure. The same function
/// runs natively (bench/wasm/examples/train.rs) and in wasm ([`train`]). Returns one JSON object.
pub fn train_bench(lite0: &[u8], calib: &[f32], epochs: usize, clock: &dyn Fn() -> f64) -> Result<String, String> {
    use qplay_core::train::{qat::qat_net, train, Data, Distill, TrainConfig};
    let e = |e: qplay_core::Error| e.to_string();
    let (g, _) = load_model(lite0, &Limits::default()).map_err(e)?;
    let samples = lite0_samples(calib).map_err(e)?;
    let mut teacher = Vec::new();
    let mut exec = qplay_core::Executor::new(g.clone(), Limits::default()).map_err(e)?;
    for s in &samples {
        teacher.extend(exec.run(vec![s.clone()]).map_err(e)?[0].to_f32_vec());
    }
    let t0 = clock();
    let config = QuantSimConfig { weight_bits: 4, act_bits: 8, per_channel: true, ..Default::default() };
    let mut net = qat_net(g, &config, &samples, None, true, false, Limits::default()).map_err(e)?;
    let setup = clock() - t0;
    let data = Data { x: calib, sample_shape: &[3, 224, 224], labels: None, teacher: Some(&teacher) };
    let cfg = TrainConfig { epochs, batch: 2, lr: 1e-4, distill: Distill::Mse, ..Default::default() };
    let t1 = clock();
    let report = train(&mut net, &data, &cfg, None, &mut |_| true).map_err(e)?;
    let seconds = (clock() - t1) / 1e3;
    Ok(serde_json::json!({
        "pass": "qat_lite0_w4a8_pc",
        "samples": data.len(),
        "epochs": report.epochs.len(),
        "setup_s": setup / 1e3,
        "seconds": seconds,
        "s_per_epoch": seconds / report.epochs.len().max(1) as f64,
        "final_loss": report.final_loss(),
    })
    .to_string())
}

/// [`train_bench`] in wasm, timed with `performance.now()`.
#[wasm_bindgen]
pub fn train(lite0: &[u8], calib: &[f32], epochs: usize) -> Result<String, JsError> {
    train_bench(lite0, calib, epochs, &now).map_err(|e| JsError::new(&e))
}

/// The configuration the mixed-precision benchmark searches and times in: qplay mode,
/// per-channel weights (the bit-widths come from the encodings).
fn mixed_config() -> QuantSimConfig {
    QuantSimConfig { per_channel: true, ..Default::default() }
}

/// The mixed-precision search of the latency benchmark (bench/run --mixed; native only):
/// candidates W4A8, W8A8 and W8A16 on `lite0` (BN folded), calibrated on `calib`, scored by the
/// outputs' SQNR against FP32 on `eval` (both [N, 3, 224, 224]), lookahead 1. Returns JSON
/// `{"seconds", "evaluations", "points": [{"label", "relative_bops", "score_db", "encodings"}]}`:
/// uniform W8A8 and W4A8, and the curve's best points at 1.25, 0.75 and 0.5 relative BOPs.
pub fn mixed_points(lite0: &[u8], calib: &[f32], eval: &[f32], threads: usize, clock: &dyn Fn() -> f64) -> Result<String, String> {
    use qplay_core::quant::amp::{self, Candidate, Setup, Space, Target};
    let e = |e: qplay_core::Error| e.to_string();
    let (g, calib, eval) = lite0_sets(lite0, calib, eval).map_err(e)?;
    let (tg, _) = fold_batch_norms(g);
    let t0 = clock();
    let cands: Vec<Candidate> = ["w4a8", "w8a8", "w8a16"].iter().map(|c| Candidate::parse(c)).collect::<Result<_, _>>().map_err(e)?;
    let space = Space::new(&Setup { graph: &tg, config: &mixed_config(), calib: &calib, limits: Limits::default(), adaround: None }, &cands, &mut |_, _| true).map_err(e)?;
    let result = amp::run(&space, &eval, &eval, 1, threads, &|_, _| true).map_err(e)?;
    let seconds = (clock() - t0) / 1e3;
    let mut points = Vec::new();
    let mut add = |label: String, choice: &[usize], bops: f64, score: f64| -> Result<(), String> {
        let sim = space.sim(choice).map_err(e)?;
        points.push(serde_json::json!({"label": label, "relative_bops": bops, "score_db": score, "encodings": sim.to_aimet_json()}));
        Ok(())
    };
    for (c, name) in [(1, "uniform W8A8"), (0, "uniform W4A8")] {
        let u = &result.uniform[c];
        add(name.into(), &u.choice, u.relative_bops, u.score)?;
    }
    for target in [1.25, 0.75, 0.5] {
        let p = amp::choose(&result.pareto, Target::Bops(target)).map_err(e)?;
        add(format!("mixed <= {target} BOPs"), &p.choice, p.relative_bops, p.score)?;
    }
    Ok(serde_json::json!({"seconds": seconds, "evaluations": result.evaluations, "points": points}).to_string())
}

/// The integer engine of `lite0` (BN folded) at the encodings `encodings` (AIMET JSON, as
/// [`mixed_points`] writes them), timed on `input` ([1, 3, 224, 224]): one warm-up, then `runs`
/// runs. The same function runs natively and in wasm ([`mixed_latency`]). Returns JSON
/// `{"median_ms", "p90_ms", "top1", "weight_bytes", "integer_steps", "float_steps"}`.
pub fn mixed_time(lite0: &[u8], encodings: &str, input: &[f32], runs: usize, clock: &dyn Fn() -> f64) -> Result<String, String> {
    let e = |e: qplay_core::Error| e.to_string();
    let (g, _) = load_model(lite0, &Limits::default()).map_err(e)?;
    let mut sim = QuantSim::new(fold_batch_norms(g).0, mixed_config()).map_err(e)?;
    sim.import_aimet_json(encodings).map_err(e)?;
    let mut exec = Int8Executor::new(&sim).map_err(e)?;
    let x = Tensor::f32(vec![1, 3, 224, 224], input.to_vec()).map_err(e)?;
    let first = exec.run(vec![x.clone()]).map_err(e)?.remove(0).to_f32_vec();
    let top1 = first.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = clock();
        exec.run(vec![x.clone()]).map_err(e)?;
        times.push(clock() - t);
    }
    times.sort_by(f64::total_cmp);
    let (ints, floats) = exec.integer_steps();
    Ok(serde_json::json!({
        "median_ms": times[times.len() / 2],
        "p90_ms": times[(times.len() * 9 / 10).min(times.len() - 1)],
        "top1": top1,
        "weight_bytes": exec.weight_bytes(),
        "integer_steps": ints,
        "float_steps": floats,
    })
    .to_string())
}

/// [`mixed_time`] in wasm, timed with `performance.now()`.
#[wasm_bindgen]
pub fn mixed_latency(lite0: &[u8], encodings: &str, input: &[f32], runs: usize) -> Result<String, JsError> {
    mixed_time(lite0, encodings, input, runs, &now).map_err(|e| JsError::new(&e))
}

/// Helpers of the native examples (bench/wasm/examples), which panic with the file's name.
#[cfg(not(target_arch = "wasm32"))]
pub mod native {
    /// The bytes of the file at `path`.
    pub fn read(path: &str) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The data of the .npy file at `path`, as f32.
    pub fn npy(path: &str) -> Vec<f32> {
        qplay_core::npy::read_npy(&read(path), 1 << 26).unwrap_or_else(|e| panic!("{path}: {e}")).to_f32_vec()
    }

    /// A clock in milliseconds from now.
    pub fn clock() -> impl Fn() -> f64 {
        let start = std::time::Instant::now();
        move || start.elapsed().as_secs_f64() * 1e3
    }
}
