//! The worker's training job: quantization-aware training of the loaded model (digits: on the
//! training split with its labels; photos: distilled from the FP32 model on the calibration
//! photos), or fine-tuning of the compressed model by distillation from the loaded one.

use super::compress::digits_test;
use super::{now, post, DIGITS_TRAIN_X, DIGITS_TRAIN_Y};
use crate::protocol::{InputKind, Response, TrainEpoch, TrainResult, TrainSettings};
use qplay_core::eval::{Evaluator, Target};
use qplay_core::npy::read_npy;
use qplay_core::quant::{QuantSim, QuantSimConfig};
use qplay_core::train::{qat::qat_net, train, Data, Net, Stop, TrainConfig};
use qplay_core::{Executor, Graph, Limits, Tensor};

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Samples stacked, with their shape (without the batch axis).
fn stack(batches: &[Tensor]) -> Result<(Vec<f32>, Vec<usize>), String> {
    let shape = batches.first().ok_or("no training samples")?.shape()[1..].to_vec();
    Ok((batches.iter().flat_map(Tensor::to_f32_vec).collect(), shape))
}

/// The first output of `g` on every batch, stacked.
fn outputs(g: &Graph, batches: &[Tensor], limits: &Limits) -> Result<Vec<f32>, String> {
    let mut exec = Executor::new(g.clone(), limits.clone()).map_err(err)?;
    let mut y = Vec::new();
    for b in batches {
        y.extend(exec.run(vec![b.clone()]).map_err(err)?.first().ok_or("the model has no output")?.to_f32_vec());
    }
    Ok(y)
}

/// The score of the quantization simulation on `eval`.
fn sim_score(sim: &QuantSim, eval: &Evaluator) -> Result<f64, String> {
    let mut exec = sim.executor().map_err(err)?;
    let mut y = Vec::new();
    for b in &eval.batches {
        y.extend(exec.run(vec![b.clone()]).map_err(err)?.first().ok_or("the model has no output")?.to_f32_vec());
    }
    eval.score_outputs(&y).map_err(err)
}

/// Trains as `settings` says. `original` is the loaded model, `compressed` the last compressed
/// one; `samples` the calibration samples, `probe` the photos scored against FP32. Returns the
/// trained FP32 graph, for QAT the simulation with the learned encodings, and what happened.
pub(super) fn run(job: u32, original: &Graph, compressed: Option<&Graph>, kind: &InputKind, settings: &TrainSettings, samples: &[Tensor], probe: &[Tensor]) -> Result<(Graph, Option<QuantSim>, TrainResult), String> {
    let limits = Limits::default();
    let t0 = now();
    let digits = *kind == InputKind::Digits;
    let rank = original.values[original.inputs[0]].ty.as_ref().and_then(|t| t.dims.as_ref()).map_or(4, Vec::len);
    // Training data: every training digit (labels used by QAT only), or the calibration photos.
    let (x, shape, labels) = if digits {
        let x = read_npy(DIGITS_TRAIN_X, 1 << 20).map_err(err)?.to_f32_vec();
        let y = read_npy(DIGITS_TRAIN_Y, 1 << 20).map_err(err)?.to_i64_vec();
        let n = match settings.samples as usize {
            0 => y.len(),
            n => n.min(y.len()),
        };
        (x[..n * 64].to_vec(), if rank == 2 { vec![64] } else { vec![1, 8, 8] }, Some(y[..n].to_vec()))
    } else {
        let (x, shape) = stack(samples)?;
        (x, shape, None)
    };
    let sample_batches: Vec<Tensor> = x.chunks(32 * shape.iter().product::<usize>()).map(|c| Tensor::f32([vec![c.len() / shape.iter().product::<usize>()], shape.clone()].concat(), c.to_vec()).map_err(err)).collect::<Result<_, _>>()?;
    let eval = if digits {
        let (batches, labels) = digits_test(rank)?;
        Evaluator { batches, target: Target::Labels(labels), limits: limits.clone() }
    } else {
        Evaluator::against_model(original, probe.to_vec(), limits.clone()).map_err(err)?
    };
    let fp32 = digits.then(|| eval.score(original)).transpose().map_err(err)?;
    let (mut net, config, before, labels, teacher) = if settings.qat {
        let config = QuantSimConfig { weight_bits: settings.weight_bits, act_bits: settings.act_bits, per_channel: settings.per_channel, ..Default::default() };
        post(&Response::Progress { job, stage: "Calibrating the quantizers (min-max)".into(), done: 0, total: 1 });
        let calib = if digits { &sample_batches[..sample_batches.len().min(8)] } else { samples };
        let net = qat_net(original.clone(), &config, calib, None, true, limits.clone()).map_err(err)?;
        let q = net.quant.as_ref().ok_or("no quantizers")?;
        let before = sim_score(&q.to_sim(net.graph().clone(), config.clone()).map_err(err)?, &eval)?;
        // Photos have no labels: distil from the FP32 model.
        let teacher = (!digits).then(|| outputs(original, &sample_batches, &limits)).transpose()?;
        (net, Some(config), before, labels, teacher)
    } else {
        let g = compressed.ok_or("compress the model first (step 7): fine-tuning starts from the compressed model")?.clone();
        let before = eval.score(&g).map_err(err)?;
        let teacher = outputs(original, &sample_batches, &limits)?;
        (Net::new(g, limits.clone()).map_err(err)?, None, before, None, Some(teacher))
    };
    let cfg = TrainConfig { epochs: settings.epochs.max(1) as usize, batch: settings.batch.max(1) as usize, lr: settings.lr, ..Default::default() };
    let data = Data { x: &x, sample_shape: &shape, labels: labels.as_deref(), teacher: teacher.as_deref() };
    let mut epochs = Vec::new();
    let report = train(&mut net, &data, &cfg, Some(&eval), &mut |p| {
        match &p.finished {
            Some(e) => {
                let epoch = TrainEpoch { epoch: e.epoch, loss: e.loss, score: e.score };
                epochs.push(epoch.clone());
                post(&Response::TrainEpoch { job, epoch });
            }
            None => post(&Response::Progress { job, stage: format!("Epoch {} of {}, loss {:.4}:", p.epoch + 1, p.epochs, p.loss), done: p.epoch * p.steps + p.step, total: p.epochs * p.steps }),
        }
        true
    })
    .map_err(err)?;
    let sim = match (&net.quant, &config) {
        (Some(q), Some(c)) => Some(q.to_sim(net.graph().clone(), c.clone()).map_err(err)?),
        _ => None,
    };
    let (after, encodings_json) = match &sim {
        Some(sim) => (sim_score(sim, &eval)?, Some(serde_json::to_string_pretty(&sim.to_aimet_json()).unwrap_or_default())),
        None => (eval.score(net.graph()).map_err(err)?, None),
    };
    let stop = match report.stop {
        Stop::Finished => "finished".to_string(),
        Stop::Cancelled => "cancelled".to_string(),
        Stop::Diverged { epoch, step, loss } => format!("diverged in epoch {} at batch {} (loss {loss:.3}); the last good weights were kept: try a lower learning rate", epoch + 1, step + 1),
    };
    let result = TrainResult {
        settings: settings.clone(),
        unit: if digits { "%".into() } else { "dB".into() },
        before,
        after,
        fp32,
        epochs,
        samples: data.len(),
        seconds: (now() - t0) / 1e3,
        stop,
        encodings_json,
    };
    Ok((net.into_graph(), sim, result))
}
