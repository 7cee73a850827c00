//! The worker's training job: quantization-aware training of the loaded model, or fine-tuning of
//! the compressed model by distillation from the loaded one. Data: the user's files (labelled or
//! not), else the bundled training digits (with labels) or the calibration photos (distilled).

use super::data::{digits_test, input_rank};
use super::{now, post, DIGITS_TRAIN_X, DIGITS_TRAIN_Y};
use crate::protocol::{InputKind, Response, TrainEpoch, TrainResult, TrainSettings};
use qplay_core::eval::{Evaluator, Target};
use qplay_core::npy::read_npy;
use qplay_core::quant::{QuantSim, QuantSimConfig};
use qplay_core::train::{fixed_batch, qat::qat_net, reestimate_bn, train, Data, Distill, Net, Stop, TrainConfig};
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
    eval.score_sim(sim).map_err(err)
}

/// Most training samples the page takes.
const MAX_SAMPLES: usize = 4000;
/// Most training data the page holds (floats): 64 Mi, 256 MB.
pub(super) const MAX_FLOATS: usize = 1 << 26;

/// Most training samples the page takes of a model whose input is `input` (batch first): at
/// most [`MAX_SAMPLES`], and at most [`MAX_FLOATS`] in all, checked as the files are read.
pub(super) fn max_samples(input: &[usize]) -> usize {
    let per = input.iter().skip(1).product::<usize>().max(1);
    MAX_SAMPLES.min(MAX_FLOATS / per).max(1)
}

/// Samples (one tensor each), their labels if every one has one, and where those came from.
pub(super) type LabelledSet = (Vec<Tensor>, Option<Vec<i64>>, Option<String>);

/// What to train on.
pub(super) enum Source {
    /// Nothing of the user's: the bundled training digits, or the calibration photos (`samples`,
    /// scored against FP32 on `probe`).
    Bundled { samples: Vec<Tensor>, probe: Vec<Tensor> },
    /// The user's training files, and test files if given (else one sample in five is held out).
    Files { train: LabelledSet, test: Option<LabelledSet> },
}

/// The training set stacked, the evaluation and a description of both.
struct Prepared {
    x: Vec<f32>,
    shape: Vec<usize>,
    labels: Option<Vec<i64>>,
    /// Calibration batches for QAT's starting encodings.
    calib: Vec<Tensor>,
    eval: Evaluator,
    data: String,
    /// The data is the user's (their labels also guide fine-tuning; the bundled digits' do not,
    /// so that fine-tuning shows what distillation alone recovers).
    own: bool,
}

fn prepare(original: &Graph, kind: &InputKind, source: Source, limits: &Limits, n_digits: u32) -> Result<Prepared, String> {
    let rank = input_rank(original);
    let samples_of = |n: usize| if n == 1 { "1 sample".to_string() } else { format!("{n} samples") };
    Ok(match source {
        Source::Bundled { .. } if *kind == InputKind::Digits => {
            let x = read_npy(DIGITS_TRAIN_X, 1 << 20).map_err(err)?.to_f32_vec();
            let y = read_npy(DIGITS_TRAIN_Y, 1 << 20).map_err(err)?.to_i64_vec();
            let n = match n_digits as usize {
                0 => y.len(),
                n => n.min(y.len()),
            };
            let shape = if rank == 2 { vec![64] } else { vec![1, 8, 8] };
            let calib = batches(original, &x[..n.min(256) * 64], &shape)?;
            let (batches, test_labels) = digits_test(rank)?;
            let data = format!("{n} training digits with their labels; scored on the {} test digits", test_labels.len());
            Prepared { x: x[..n * 64].to_vec(), shape, labels: Some(y[..n].to_vec()), calib, eval: Evaluator { batches, target: Target::Labels(test_labels), limits: limits.clone() }, data, own: false }
        }
        Source::Bundled { samples, probe } => {
            let (x, shape) = stack(&samples)?;
            let data = format!("{} calibration samples, distilled from the FP32 model; scored against it on the first {}", samples.len(), probe.len());
            Prepared { x, shape, labels: None, calib: samples, eval: Evaluator::against_model(original, probe, limits.clone()).map_err(err)?, data, own: false }
        }
        Source::Files { train: (samples, labels, from), test } => {
            let labelled = |l: &Option<Vec<i64>>, from: &Option<String>| match (l, from) {
                (Some(_), Some(f)) => format!(" (labels from {f})"),
                _ => " (no labels)".to_string(),
            };
            let mut data = format!("your {}{}", samples_of(samples.len()), labelled(&labels, &from));
            let (samples, labels, test, test_labels) = match test {
                Some((t, tl, tfrom)) => {
                    data += &format!("; scored on your {} test samples{}", t.len(), labelled(&tl, &tfrom));
                    (samples, labels, t, tl)
                }
                None => {
                    if samples.len() < 5 {
                        return Err(format!("{} to train on: give at least 5 (one in five is held out to score the model), or test files too", samples_of(samples.len())));
                    }
                    let held = |i: usize| i % 5 == 4;
                    let split = |keep: bool| -> (Vec<Tensor>, Option<Vec<i64>>) {
                        let x = samples.iter().enumerate().filter(|(i, _)| held(*i) != keep).map(|(_, t)| t.clone()).collect();
                        (x, labels.as_ref().map(|l| l.iter().enumerate().filter(|(i, _)| held(*i) != keep).map(|(_, &l)| l).collect()))
                    };
                    let ((tr, trl), (te, tel)) = (split(true), split(false));
                    data += &format!("; {} of them (one in five) held out to score the model", te.len());
                    (tr, trl, te, tel)
                }
            };
            let (x, shape) = stack(&samples)?;
            if x.len() > MAX_FLOATS {
                return Err(format!("{} of {:?} are {} MB: more than the page trains on ({} MB); give fewer", samples_of(samples.len()), shape, x.len() * 4 / 1_000_000, MAX_FLOATS * 4 / 1_000_000));
            }
            let eval = match test_labels {
                Some(l) => Evaluator { batches: test, target: Target::Labels(l), limits: limits.clone() },
                None => Evaluator::against_model(original, test, limits.clone()).map_err(err)?,
            };
            let calib = samples.iter().take(64).cloned().collect();
            Prepared { x, shape, labels, calib, eval, data, own: true }
        }
    })
}

/// Samples `x` (each of `shape`) in batches the model accepts: its fixed batch size, else 32.
fn batches(g: &Graph, x: &[f32], shape: &[usize]) -> Result<Vec<Tensor>, String> {
    let per: usize = shape.iter().product();
    x.chunks(fixed_batch(g).unwrap_or(32) * per).map(|c| Tensor::f32([vec![c.len() / per], shape.to_vec()].concat(), c.to_vec()).map_err(err)).collect()
}

/// Trains as `settings` says on `source`. `original` is the loaded model, `compressed` the last
/// compressed one. Returns the trained FP32 graph, for QAT the simulation with the learned
/// encodings, and what happened.
pub(super) fn run(job: u32, original: &Graph, compressed: Option<&Graph>, kind: &InputKind, settings: &TrainSettings, source: Source) -> Result<(Graph, Option<QuantSim>, TrainResult), String> {
    let limits = Limits::default();
    let t0 = now();
    let Prepared { x, shape, labels, calib, eval, data: described, own } = prepare(original, kind, source, &limits, settings.samples)?;
    let accuracy = matches!(eval.target, Target::Labels(_));
    let fp32 = accuracy.then(|| eval.score(original)).transpose().map_err(err)?;
    // The teacher's outputs on every training sample.
    let teacher = || outputs(original, &batches(original, &x, &shape)?, &limits);
    let (mut net, config, before, labels, teacher) = if settings.qat {
        let config = QuantSimConfig { weight_bits: settings.weight_bits, act_bits: settings.act_bits, per_channel: settings.per_channel, ..Default::default() };
        post(&Response::Progress { job, stage: "Calibrating the quantizers (min-max)".into(), done: 0, total: 1 });
        let net = qat_net(original.clone(), &config, &calib, None, true, settings.keep_bn, limits.clone()).map_err(err)?;
        let q = net.quant.as_ref().ok_or("no quantizers")?;
        let before = sim_score(&q.to_sim(net.graph().clone(), config.clone()).map_err(err)?, &eval)?;
        // No labels: distil from the FP32 model.
        let teacher = labels.is_none().then(teacher).transpose()?;
        (net, Some(config), before, labels, teacher)
    } else {
        let g = compressed.ok_or("compress the model first (step 7): fine-tuning starts from the compressed model")?.clone();
        let before = eval.score(&g).map_err(err)?;
        // Distilled from the loaded model; the user's labels count too.
        let labels = labels.filter(|_| own);
        (Net::new(g, limits.clone()).map_err(err)?, None, before, labels, Some(teacher()?))
    };
    // Scored by the SQNR of the outputs: distil by the outputs' squared error.
    let distill = if accuracy { Distill::Kl } else { Distill::Mse };
    let cfg = TrainConfig { epochs: settings.epochs.max(1) as usize, batch: settings.batch.max(1) as usize, lr: settings.lr, distill, ..Default::default() };
    let data = Data { x: &x, sample_shape: &shape, labels: labels.as_deref(), teacher: teacher.as_deref() };
    let unit = if accuracy { "%" } else { "dB" };
    let mut epochs = Vec::new();
    let report = train(&mut net, &data, &cfg, Some(&eval), &mut |p| {
        match &p.finished {
            Some(e) => {
                let epoch = TrainEpoch { epoch: e.epoch, loss: e.loss, score: e.score, unit: unit.into() };
                epochs.push(epoch.clone());
                post(&Response::TrainEpoch { job, epoch });
            }
            None => post(&Response::Progress { job, stage: format!("Epoch {} of {}, loss {:.4}:", p.epoch + 1, p.epochs, p.loss), done: p.epoch * p.steps + p.step, total: p.epochs * p.steps }),
        }
        true
    })
    .map_err(err)?;
    if settings.keep_bn {
        post(&Response::Progress { job, stage: "Re-estimating BatchNorm statistics".into(), done: 0, total: 1 });
        reestimate_bn(&mut net, &data, cfg.batch).map_err(err)?;
    }
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
        unit: unit.into(),
        before,
        after,
        fp32,
        epochs,
        samples: data.len(),
        data: described,
        seconds: (now() - t0) / 1e3,
        stop,
        encodings_json,
    };
    // With BatchNorm kept, the simulation's graph is the folded one.
    let graph = sim.as_ref().map_or_else(|| net.into_graph(), |s| s.graph().clone());
    Ok((graph, sim, result))
}
