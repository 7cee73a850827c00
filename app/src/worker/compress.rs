//! The worker's compression job: the greedy search of `qplay compress` on the loaded model, then
//! both models timed here, FP32 and INT8.

use super::data::{digits_test, input_rank};
use super::{now, pool, post};
use crate::protocol::{CompressLayer, CompressResult, CompressSettings, InputKind, Prediction, Request, Response};
use js_sys::{Array, Float32Array, Uint8Array};
use wasm_bindgen::JsCast;
use qplay_core::eval::{Evaluator, ScoreKind, Target};
use qplay_core::exec::int8::Int8Executor;
use qplay_core::quant::{QuantSim, QuantSimConfig};
use qplay_core::search::compress::{compress_scored, sensitivity_rows, sensitivity_size, CompressConfig, Method};
use qplay_core::timing::median_ms;
use qplay_core::{Executor, Graph, Limits, Tensor};

/// FP32 and INT8 (W8A8, BN folded, calibrated on `calib`) medians of `g` on `x`.
fn latency(g: &Graph, x: &Tensor, calib: &[Tensor], limits: &Limits) -> Result<(f64, f64), String> {
    let mut fp = Executor::new(g.clone(), limits.clone()).map_err(|e| e.to_string())?;
    let fp32 = median_ms(&mut || fp.run(vec![x.clone()]).map(|_| ()), &now, 7).map_err(|e| e.to_string())?;
    let mut sim = QuantSim::new(qplay_core::passes::bn_fold::fold_batch_norms(g.clone()).0, QuantSimConfig::default()).map_err(|e| e.to_string())?;
    sim.calibrate(calib).map_err(|e| e.to_string())?;
    let mut int8 = Int8Executor::new(&sim).map_err(|e| e.to_string())?;
    let int8_ms = median_ms(&mut || int8.run(vec![x.clone()]).map(|_| ()), &now, 7).map_err(|e| e.to_string())?;
    Ok((fp32, int8_ms))
}

/// How the page scores a model: digits by accuracy on the test split, others by the SQNR of
/// their outputs on `probe` against `g`'s.
pub(super) fn evaluator(g: &Graph, kind: &InputKind, probe: &[Tensor], limits: &Limits) -> Result<Evaluator, String> {
    Ok(match kind {
        InputKind::Digits => {
            let (batches, labels) = digits_test(input_rank(g))?;
            Evaluator { batches, target: Target::Labels(labels), limits: limits.clone() }
        }
        _ => Evaluator::against_model(g, probe.to_vec(), limits.clone()).map_err(|e| e.to_string())?,
    })
}

/// What a compression of `g` works with: the evaluator, one input item, the value shapes and the
/// settings in the core's terms. The same in this worker and in its helpers.
struct Setup {
    eval: Evaluator,
    x: Tensor,
    shapes: Vec<Option<Vec<usize>>>,
    cfg: CompressConfig,
}

fn setup(g: &Graph, kind: &InputKind, settings: &CompressSettings, samples: &[Tensor], probe: &[Tensor], limits: &Limits) -> Result<Setup, String> {
    let method = match settings.method.as_str() {
        "spatial-svd" => Method::SpatialSvd,
        "weight-svd" => Method::WeightSvd,
        "channel-pruning" => Method::ChannelPruning,
        other => return Err(format!("unknown compression method '{other}'")),
    };
    let eval = evaluator(g, kind, probe, limits)?;
    let x = samples.first().ok_or("no calibration samples")?.first_item().map_err(|e| e.to_string())?;
    let shapes = qplay_core::cost::infer_shapes(g, &[x.shape().to_vec()], limits).map_err(|e| e.to_string())?;
    let cfg = CompressConfig { candidates: settings.candidates.clamp(2, 100) as usize, ..CompressConfig::new(method, settings.target) };
    Ok(Setup { eval, x, shapes, cfg })
}

/// A helper's share of the sensitivity table: the model, samples and photos in `payload`
/// (see `Request::HelpCompress`).
pub(super) fn help(settings: &CompressSettings, kind: &InputKind, rows: (usize, usize), shapes: &[Vec<usize>], probe_shapes: &[Vec<usize>], payload: &Array) -> Result<Vec<Vec<f64>>, String> {
    let bytes = payload.get(1).dyn_into::<Uint8Array>().map_err(|_| "no model was sent")?.to_vec();
    let floats = |i: u32, what: &str| payload.get(i).dyn_into::<Float32Array>().map(|a| a.to_vec()).map_err(|_| format!("no {what} were sent"));
    let samples = pool::unpack(&floats(2, "calibration samples")?, shapes)?;
    let probe = pool::unpack(&floats(3, "evaluation photos")?, probe_shapes)?;
    let limits = Limits::default();
    let (g, _) = qplay_core::load_model(&bytes, &limits).map_err(|e| e.to_string())?;
    let s = setup(&g, kind, settings, &samples, &probe, &limits)?;
    sensitivity_rows(&g, &s.shapes, &s.cfg, &s.eval, &samples, rows.0..rows.1, &mut |_, _, _| true).map_err(|e| e.to_string())
}

/// Runs the compression of `g` (input kind `kind`) with `samples` for reconstruction and INT8
/// calibration and `probe` as the photos scored against the original (digits: the test split).
/// The sensitivity table of the SVD methods, rows of independent evaluations, is shared with
/// the pool's helpers.
pub(super) async fn run(job: u32, g: &Graph, kind: &InputKind, settings: &CompressSettings, samples: &[Tensor], probe: &[Tensor]) -> Result<(Graph, CompressResult), String> {
    let limits = Limits::default();
    let t0 = now();
    let Setup { eval, x, shapes, cfg } = setup(g, kind, settings, samples, probe, &limits)?;
    let method = cfg.method;
    let mut progress = |stage: &str, done, total| {
        let stage = match stage {
            "sensitivity" => "Scoring each layer at each ratio",
            "tilts" => "Leaning the uniform ratio by sensitivity (each model refitted)",
            _ => "Refining the choice",
        };
        post(&Response::Progress { job, stage: stage.into(), done, total });
        true
    };
    let n = sensitivity_size(g, &shapes, &cfg, &eval, samples).map_err(|e| e.to_string())?;
    // Channel pruning stays on this worker: most of a row's cost is its group's least-squares
    // statistics, which the search needs again afterwards (a helper would have to send them
    // back, megabytes per group).
    let (rows, workers) = if pool::workers() > 1 && n > 1 && cfg.method != Method::ChannelPruning {
        // Packed once; each helper gets its own copy of the buffers (posting transfers them).
        let model = pool::model_bytes(g)?;
        let (data, sample_shapes) = pool::pack(samples);
        let (photos, probe_shapes) = pool::pack(probe);
        let request = |task: u32, rows: (usize, usize)| -> Result<(Array, Array), String> {
            let req = Request::HelpCompress { job: task, settings: settings.clone(), kind: kind.clone(), rows, shapes: sample_shapes.clone(), probe_shapes: probe_shapes.clone() };
            let (bytes, data, photos) = (Uint8Array::new(&model), Float32Array::new(&data), Float32Array::new(&photos));
            let msg = Array::of4(&serde_wasm_bindgen::to_value(&req).map_err(|e| e.to_string())?, &bytes, &data, &photos);
            Ok((msg, Array::of3(&bytes.buffer(), &data.buffer(), &photos.buffer())))
        };
        // Progress counts this worker's rows, scaled to the table.
        let (total, scale) = (n * cfg.candidates.saturating_sub(1).max(1), pool::workers());
        let (rows, w) = pool::share_rows(n, &request, &mut |range, mine| {
            let mut report = |_: &str, done: usize, _: usize| {
                if mine {
                    post(&Response::Progress { job, stage: "Scoring each layer at each ratio".into(), done: (done * scale).min(total), total });
                }
                true
            };
            sensitivity_rows(g, &shapes, &cfg, &eval, samples, range, &mut report).map_err(|e| e.to_string())
        })
        .await?;
        (Some(rows), w)
    } else {
        (None, 1)
    };
    let (out, report) = compress_scored(g, &shapes, &cfg, &eval, samples, rows, &mut progress).map_err(|e| e.to_string())?;
    post(&Response::Progress { job, stage: "Timing both models (FP32 and INT8)".into(), done: 0, total: 2 });
    let calib = &samples[..samples.len().min(4)];
    let before = latency(g, &x, calib, &limits)?;
    post(&Response::Progress { job, stage: "Timing both models (FP32 and INT8)".into(), done: 1, total: 2 });
    let after = latency(&out, &x, calib, &limits)?;
    // Scored against the original's outputs, the evaluator already holds them.
    let y0 = match &eval.target {
        Target::Reference(r) => r.clone(),
        Target::Labels(_) => eval.outputs(g).map_err(|e| e.to_string())?,
    };
    let y1 = eval.outputs(&out).map_err(|e| e.to_string())?;
    let side = SideBySide::new(g.outputs.first().and_then(|&o| shapes[o].as_ref()).map(Vec::as_slice), kind, &eval, &y0, &y1);
    let layers = report
        .layers
        .iter()
        .zip(&report.table.scores)
        .map(|(l, scores)| CompressLayer { name: l.name.clone(), ratio: l.ratio, kept: l.kept, of: l.of, macs_before: l.macs_before, macs_after: l.macs_after, scores: scores.clone() })
        .collect();
    let result = CompressResult {
        method: method.name().into(),
        target: settings.target,
        unit: match report.score_kind {
            ScoreKind::AccuracyPct => "%".into(),
            ScoreKind::SqnrDb => "dB".into(),
        },
        baseline: report.baseline_score,
        score: report.score,
        selection_score: report.selection_score,
        macs_before: report.macs_before,
        macs_after: report.macs_after,
        params_before: report.params_before,
        params_after: report.params_after,
        ratios: report.table.ratios.clone(),
        layers,
        trials: report.refine.iter().chain(report.uniform.iter().flat_map(|u| &u.refine)).map(|s| (s.model_ratio, s.score, s.kept)).collect(),
        uniform: report.uniform.as_ref().map(|u| (u.macs_ratio, u.score)),
        selection_ratio: report.selection.model_ratio,
        evaluations: report.evaluations,
        eval_samples: eval.batches.iter().map(|b| b.shape()[0]).sum(),
        points: report.points,
        seconds: (now() - t0) / 1e3,
        workers,
        fp32_ms: (before.0, after.0),
        int8_ms: (before.1, after.1),
        top1_agreement: side.top1_agreement,
        compare: side.compare,
        class_accuracy: side.class_accuracy,
    };
    Ok((out, result))
}

/// Two models' outputs on the evaluation samples, for the page to show side by side.
pub(super) struct SideBySide {
    /// A classifier's top 3 on each evaluation photo (up to 8).
    pub compare: Vec<(Vec<Prediction>, Vec<Prediction>)>,
    /// Digits: accuracy in % per class.
    pub class_accuracy: Vec<(f64, f64)>,
    pub top1_agreement: f64,
}

impl SideBySide {
    /// `y0` and `y1`: both models' outputs (of shape `out_shape` per sample) on `eval`'s samples.
    pub fn new(out_shape: Option<&[usize]>, kind: &InputKind, eval: &Evaluator, y0: &[f32], y1: &[f32]) -> SideBySide {
        let k = out_shape.and_then(|s| s.last().copied()).unwrap_or(1).max(1);
        // A classifier's outputs ([1, classes]) side by side; maps are compared by the SQNR only.
        let classifier = out_shape.is_some_and(|s| s.len() == 2) && k > 1;
        let compare = if classifier && matches!(kind, InputKind::Image { .. }) {
            y0.chunks(k).zip(y1.chunks(k)).take(8).map(|(a, b)| (super::top_k(a, 3), super::top_k(b, 3))).collect()
        } else {
            Vec::new()
        };
        let class_accuracy = match &eval.target {
            Target::Labels(labels) if classifier => per_class_accuracy(y0, y1, labels, k),
            _ => Vec::new(),
        };
        SideBySide { compare, class_accuracy, top1_agreement: qplay_core::metrics::top1_agreement(y0, y1, k) }
    }
}

/// Accuracy in % per class of both models' outputs (rows of `k`) against `labels`.
fn per_class_accuracy(y0: &[f32], y1: &[f32], labels: &[i64], k: usize) -> Vec<(f64, f64)> {
    let argmax = |r: &[f32]| qplay_core::metrics::argmax(r) as i64;
    let mut counts = vec![(0usize, 0usize, 0usize); k];
    for ((a, b), &l) in y0.chunks(k).zip(y1.chunks(k)).zip(labels) {
        if let Some(c) = usize::try_from(l).ok().and_then(|l| counts.get_mut(l)) {
            c.0 += 1;
            c.1 += usize::from(argmax(a) == l);
            c.2 += usize::from(argmax(b) == l);
        }
    }
    counts.iter().map(|&(n, a, b)| if n == 0 { (0.0, 0.0) } else { (100.0 * a as f64 / n as f64, 100.0 * b as f64 / n as f64) }).collect()
}
