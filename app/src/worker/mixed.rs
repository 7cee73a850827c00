//! The worker's mixed-precision job: the Pareto curve of `qplay mixed-precision` on the loaded
//! model, then any point of it applied (the current quantization) and timed here against FP32.

use super::compress::{evaluator, SideBySide};
use super::{now, post};
use crate::protocol::{InputKind, MixedApplied, MixedPoint, MixedResult, MixedSettings, Response};
use qplay_core::eval::{Evaluator, ScoreKind};
use qplay_core::passes::adaround::AdaroundConfig;
use qplay_core::quant::amp::{self, Candidate, Point, Setup, Space, Target};
use qplay_core::quant::{QuantSim, QuantSimConfig};
use qplay_core::timing::median_ms;
use qplay_core::{Executor, Graph, Limits, Tensor};

/// A finished search, kept to apply its points.
pub(super) struct Search {
    space: Space,
    pareto: Vec<Point>,
    eval: Evaluator,
    /// FP32's outputs on the evaluation samples, and one sample to time with.
    fp32_outputs: Vec<f32>,
    sample: Tensor,
}

fn point(p: &Point, layers: &[(String, u64)]) -> MixedPoint {
    MixedPoint {
        relative_bops: p.relative_bops,
        score: p.score,
        weight_bytes: p.weight_bytes,
        latency_ms: p.latency_ms.unwrap_or(f64::NAN),
        bits: layers.iter().map(|(name, _)| p.bits.get(name).map_or((32, 32), |b| (b[0], b[1]))).collect(),
    }
}

/// Searches the bit-widths of `g` (BN folded first) calibrated on `samples`, scored on `probe`
/// (digits: the test split).
pub(super) fn run(job: u32, g: &Graph, kind: &InputKind, settings: &MixedSettings, samples: &[Tensor], probe: &[Tensor]) -> Result<(Search, MixedResult), String> {
    let t0 = now();
    let limits = Limits::default();
    let candidates = settings.candidates.iter().map(|s| Candidate::parse(s)).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    if !(settings.budget.is_finite() && settings.budget >= 0.0) {
        return Err(format!("the budget {} is not a non-negative number", settings.budget));
    }
    let eval = evaluator(g, kind, probe, &limits)?;
    let sensitivity_eval = Evaluator::against_model(g, eval.batches.clone(), limits.clone()).map_err(|e| e.to_string())?;
    let fp32_score = match eval.kind() {
        ScoreKind::AccuracyPct => Some(eval.score(g).map_err(|e| e.to_string())?),
        ScoreKind::SqnrDb => None,
    };
    let folded = qplay_core::passes::bn_fold::fold_batch_norms(g.clone()).0;
    let config = QuantSimConfig { per_channel: settings.per_channel, ..Default::default() };
    let adaround = (settings.adaround_iterations > 0).then(|| AdaroundConfig { iterations: settings.adaround_iterations as usize, ..Default::default() });
    let stage = if adaround.is_some() { "Calibrating each candidate (AdaRound below 8 weight bits)" } else { "Calibrating each candidate" };
    let space = Space::new(&Setup { graph: &folded, config: &config, calib: samples, limits: limits.clone(), adaround }, &candidates, &mut |done, total| {
        post(&Response::Progress { job, stage: stage.into(), done, total });
        true
    })
    .map_err(|e| e.to_string())?;
    // One thread: the pool of workers is issue #22's.
    let mut result = amp::run(&space, &eval, &sensitivity_eval, settings.lookahead.clamp(1, 64) as usize, 1, &|done, total| {
        post(&Response::Progress { job, stage: "Measuring bit-width choices (phase 1, then the curve)".into(), done, total });
        true
    })
    .map_err(|e| e.to_string())?;
    let sample = samples.first().ok_or("no calibration samples")?.first_item().map_err(|e| e.to_string())?;
    let table = space
        .latency_table(&sample, amp::LATENCY_TIMINGS, &now, &mut |done, total| {
            post(&Response::Progress { job, stage: "Timing each candidate's layers in this browser".into(), done, total });
            true
        })
        .map_err(|e| e.to_string())?;
    for points in [&mut result.pareto, &mut result.visited, &mut result.uniform] {
        table.annotate(points);
    }
    let target = match settings.objective.as_str() {
        "bops" => Target::Bops(settings.budget),
        "size" => Target::Bytes((settings.budget * 1e6) as u64),
        "drop" => Target::MaxDrop { drop: settings.budget, baseline: fp32_score.unwrap_or(result.visited[0].score) },
        "latency" => Target::LatencyMs(settings.budget),
        other => return Err(format!("unknown objective '{other}' (bops, drop, size or latency)")),
    };
    // The part of a budget the curve's points leave unused, spent group by group.
    if let Some(within) = target.within(&space, Some(&table)) {
        amp::fill(&space, &eval, &mut result, &*within, settings.lookahead.clamp(1, 64) as usize, &|n| {
            post(&Response::Progress { job, stage: "Spending the rest of the budget".into(), done: n, total: n + 1 });
            true
        })
        .map_err(|e| e.to_string())?;
        for points in [&mut result.pareto, &mut result.visited] {
            table.annotate(points);
        }
    }
    // Out of reach: the nearest end of the curve, with the reason shown.
    let (chosen, budget_note) = match amp::choose(&result.pareto, target) {
        Ok(p) => (result.pareto.iter().position(|q| std::ptr::eq(q, p)).unwrap_or(0), None),
        Err(e) => (if matches!(target, Target::MaxDrop { .. }) { result.pareto.len() - 1 } else { 0 }, Some(e.to_string().trim_start_matches("target: ").to_string())),
    };
    let layers = space.layers();
    let shapes = qplay_core::cost::infer_shapes(g, &[sample.shape().to_vec()], &limits).map_err(|e| e.to_string())?;
    let fp32_bytes = qplay_core::cost::cost(g, &shapes).layers.iter().map(|l| l.params * 4).sum();
    let out = MixedResult {
        settings: settings.clone(),
        unit: match eval.kind() {
            ScoreKind::AccuracyPct => "%".into(),
            ScoreKind::SqnrDb => "dB".into(),
        },
        fp32_score,
        groups: result.groups.len(),
        pareto: result.pareto.iter().map(|p| point(p, &layers)).collect(),
        visited: result.visited.iter().map(|p| (p.relative_bops, p.score, p.latency_ms.unwrap_or(f64::NAN))).collect(),
        uniform: result.uniform.iter().zip(&result.candidates).map(|(p, c)| (c.to_string(), p.relative_bops, p.score, p.latency_ms.unwrap_or(f64::NAN))).collect(),
        uniform_whole_ms: table.total_ms.clone(),
        chosen,
        budget_note,
        fp32_bytes,
        evaluations: result.evaluations,
        eval_samples: eval.batches.iter().map(|b| b.shape()[0]).sum(),
        seconds: (now() - t0) / 1e3,
        layers,
    };
    let fp32_outputs = eval.outputs(g).map_err(|e| e.to_string())?;
    Ok((Search { space, pareto: result.pareto, eval, fp32_outputs, sample }, out))
}

/// Point `index` of `search` as a simulation, with its timing against `g` in FP32 and both
/// models' outputs side by side.
pub(super) fn apply(search: &Search, g: &Graph, kind: &InputKind, index: usize) -> Result<(QuantSim, MixedApplied), String> {
    let p = search.pareto.get(index).ok_or_else(|| format!("the curve has no point {index}"))?;
    let sim = search.space.sim(&p.choice).map_err(|e| e.to_string())?;
    let limits = Limits::default();
    let mut fp = Executor::new(g.clone(), limits.clone()).map_err(|e| e.to_string())?;
    let x = &search.sample;
    let fp32_ms = median_ms(&mut || fp.run(vec![x.clone()]).map(|_| ()), &now, 7).map_err(|e| e.to_string())?;
    let mut exec = sim.executor().map_err(|e| e.to_string())?;
    let mixed_ms = median_ms(&mut || exec.run(vec![x.clone()]).map(|_| ()), &now, 7).map_err(|e| e.to_string())?;
    let mut y1 = Vec::new();
    for b in &search.eval.batches {
        let out = exec.run(vec![b.clone()]).map_err(|e| e.to_string())?;
        y1.extend(out.first().ok_or("the model has no output")?.to_f32_vec());
    }
    let shapes = qplay_core::cost::infer_shapes(g, &[x.shape().to_vec()], &limits).map_err(|e| e.to_string())?;
    let side = SideBySide::new(g.outputs.first().and_then(|&o| shapes[o].as_ref()).map(Vec::as_slice), kind, &search.eval, &search.fp32_outputs, &y1);
    let applied = MixedApplied {
        index,
        point: point(p, &search.space.layers()),
        fp32_ms,
        mixed_ms,
        top1_agreement: side.top1_agreement,
        compare: side.compare,
        class_accuracy: side.class_accuracy,
        encodings_json: serde_json::to_string_pretty(&sim.to_aimet_json()).map_err(|e| e.to_string())?,
    };
    Ok((sim, applied))
}
