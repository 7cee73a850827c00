//! Training in the core: reverse-mode gradients over the model graph ([`tape`], [`grad`]),
//! losses, optimizers, and quantization-aware training ([`qat`]). [`train`] runs seeded epochs
//! of mini-batches, deterministic on every target.

pub mod grad;
pub mod loss;
pub mod optim;
pub mod qat;
pub mod tape;

pub use optim::{Method, Optimizer, Schedule};
pub use qat::FakeQuant;
pub use tape::{Grads, Net, Pass, Tape};

use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::rng::SplitMix;
use crate::tensor::Tensor;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub method: Method,
    pub weight_decay: f32,
    pub schedule: Schedule,
    pub seed: u64,
    /// Distillation temperature.
    pub temperature: f32,
    /// How the teacher's outputs are matched.
    pub distill: Distill,
    /// Run each batch in pieces of this many samples, gradients accumulated (less memory; a
    /// model with a fixed batch size always runs in pieces of that size).
    pub micro_batch: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig { epochs: 10, batch: 32, lr: 1e-3, method: Method::adam(), weight_decay: 0.0, schedule: Schedule::Cosine, seed: 0, temperature: 4.0, distill: Distill::Kl, micro_batch: None }
    }
}

/// The distillation loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Distill {
    /// KL divergence of the softened class distributions at the temperature (Hinton et al.).
    Kl,
    /// Mean squared error against the teacher's outputs (logits, or any output map): what the
    /// output SQNR measures.
    Mse,
    /// The per-channel noise-to-signal ratio against the teacher's outputs (blockwise
    /// distillation: each channel's squared error over the teacher channel's variance on the
    /// whole set).
    Nsr,
}

/// A training set: `n` samples of `sample_shape` stacked in `x`, with labels and/or the teacher's
/// outputs for each sample (a loss needs at least one of them).
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    pub x: &'a [f32],
    pub sample_shape: &'a [usize],
    pub labels: Option<&'a [i64]>,
    /// The teacher's first output for every sample, stacked.
    pub teacher: Option<&'a [f32]>,
}

impl Data<'_> {
    pub fn len(&self) -> usize {
        let per: usize = self.sample_shape.iter().product();
        self.x.len().checked_div(per).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn check(&self) -> Result<()> {
        let n = self.len();
        let bad = |name: &str, msg: String| Err(Error::Input { name: name.into(), msg });
        if n == 0 {
            return bad("data", "the training set is empty".into());
        }
        if let Some(l) = self.labels {
            if l.len() != n {
                return bad("labels", format!("{} labels for {n} samples", l.len()));
            }
        }
        if let Some(t) = self.teacher {
            if t.len() % n != 0 {
                return bad("teacher", format!("{} teacher values do not split into {n} samples", t.len()));
            }
        }
        if self.labels.is_none() && self.teacher.is_none() {
            return bad("labels", "training needs labels or a teacher to distil from".into());
        }
        Ok(())
    }
}

/// Where a training run is.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub epoch: usize,
    pub epochs: usize,
    pub step: usize,
    pub steps: usize,
    /// Mean loss of the epoch so far.
    pub loss: f64,
    /// Set once per epoch, after it ends (and is scored): its report.
    pub finished: Option<EpochReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub loss: f64,
    pub lr: f32,
    /// The evaluation score after the epoch (accuracy in % or SQNR in dB), when asked.
    pub score: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    Finished,
    Cancelled,
    /// The loss or a gradient stopped being finite, or a batch's loss rose above 10 times the
    /// first batch's plus 10; the weights are those of the last epoch that ended well (or the
    /// starting ones).
    Diverged { epoch: usize, step: usize, loss: f64 },
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub epochs: Vec<EpochReport>,
    pub stop: Stop,
    pub seconds: f64,
}

impl TrainReport {
    pub fn final_loss(&self) -> Option<f64> {
        self.epochs.last().map(|e| e.loss)
    }
}

/// The score of `net` (evaluation mode) on `ev`'s batches, as [`Evaluator::score_outputs`].
pub fn score(net: &mut Net, ev: &Evaluator) -> Result<f64> {
    let mut out = Vec::new();
    for b in &ev.batches {
        let (y, _) = net.forward(b.clone(), Pass::Eval)?;
        out.extend(y.first().ok_or_else(|| Error::Graph("the model has no output".into()))?.to_f32_vec());
    }
    ev.score_outputs(&out)
}

/// Trains `net` on `data`: per epoch a seeded shuffle, mini-batches of `cfg.batch`, the loss
/// (cross-entropy against labels plus distillation from the teacher's outputs), one optimizer
/// step per batch (the quantizers' ranges too when `net.quant` learns them), then `eval` (if
/// given) scores the epoch. `progress` after every step; returning false cancels.
pub fn train(net: &mut Net, data: &Data, cfg: &TrainConfig, eval: Option<&Evaluator>, progress: &mut dyn FnMut(&Progress) -> bool) -> Result<TrainReport> {
    data.check()?;
    if cfg.epochs == 0 || cfg.batch == 0 {
        return Err(Error::Input { name: "settings".into(), msg: "epochs and batch size must be at least 1".into() });
    }
    if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
        return Err(Error::Input { name: "learning rate".into(), msg: format!("{} is not a positive number", cfg.lr) });
    }
    let t0 = web_time();
    let n = data.len();
    let per: usize = data.sample_shape.iter().product();
    let teacher_per = data.teacher.map(|t| t.len() / n);
    let steps = n.div_ceil(cfg.batch);
    let total = steps * cfg.epochs;
    let decay: Vec<bool> = net.params().iter().map(|&p| net.graph.consts[p].as_ref().is_some_and(|t| t.rank() >= 2)).collect();
    let mut opt = Optimizer::new(cfg.method, cfg.weight_decay);
    let mut rng = SplitMix(cfg.seed ^ 0x7261_696e);
    let mut order: Vec<usize> = (0..n).collect();
    let mut report = TrainReport { epochs: Vec::new(), stop: Stop::Finished, seconds: 0.0 };
    let mut good = net.clone();
    let mut limit = f64::INFINITY;
    let fixed = fixed_batch(&net.graph);
    let micro = fixed.unwrap_or(cfg.micro_batch.unwrap_or(cfg.batch)).max(1);
    let inv_var = match (cfg.distill, data.teacher, teacher_per) {
        (Distill::Nsr, Some(t), Some(tp)) => {
            let mut shape = vec![1];
            shape.extend_from_slice(data.sample_shape);
            let (y, _) = net.forward(Tensor::f32(shape, data.x[..per].to_vec())?, Pass::Eval)?;
            let c = y.first().and_then(|y| y.shape().get(1).copied()).filter(|&c| c > 0 && tp % c == 0).ok_or_else(|| Error::Input { name: "teacher".into(), msg: "blockwise distillation needs an output with a channel axis matching the teacher's".into() })?;
            Some(loss::channel_weights(t, c, tp / c))
        }
        _ => None,
    };
    let batch_stats = !net.freeze_bn && net.graph.nodes.iter().any(|n| matches!(n.op, crate::graph::Op::BatchNorm { .. }));
    if batch_stats && micro < 2 && net.quant.as_ref().is_some_and(FakeQuant::keeps_bn) {
        return Err(Error::Input {
            name: "settings".into(),
            msg: "BatchNorm kept in QAT trains on batch statistics, which need at least 2 samples per pass; this model runs 1 at a time (its fixed batch size, or the micro-batch): fold BatchNorm instead".into(),
        });
    }
    'epochs: for epoch in 0..cfg.epochs {
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let (mut sum, mut count) = (0.0f64, 0usize);
        let mut lr = cfg.lr;
        for (step, idx) in order.chunks(cfg.batch).enumerate() {
            if idx.len() < 2 && n > 1 && batch_stats {
                continue; // a last batch of one sample: batch statistics need two
            }
            // The batch in micro-batches (the model's fixed batch, or --micro-batch), their
            // gradients summed with weights that make the result the whole batch's mean.
            let mut loss = 0.0f64;
            let mut grads: Option<Grads> = None;
            for mb in idx.chunks(micro) {
                if fixed.is_some_and(|b| b != mb.len()) {
                    continue; // a model of fixed batch b cannot run a remainder of other size
                }
                let w = mb.len() as f64 / idx.len() as f64;
                let (l, g) = batch_step(net, data, cfg, mb, per, teacher_per, inv_var.as_deref())?;
                loss += l * w;
                match grads.as_mut() {
                    None => grads = Some(scaled(g, w as f32)),
                    Some(acc) => add_scaled(acc, &g, w as f32),
                }
            }
            let Some(grads) = grads else { continue };
            if limit.is_infinite() && loss.is_finite() {
                limit = 10.0 * loss + 10.0;
            }
            let finite = loss.is_finite() && grads.params.iter().flatten().chain(&grads.ranges).all(|v| v.is_finite());
            if !finite || loss > limit {
                *net = good;
                report.stop = Stop::Diverged { epoch, step, loss };
                break 'epochs;
            }
            lr = cfg.schedule.rate(cfg.lr, epoch * steps + step, total, epoch);
            opt.tick();
            net.with_params(|i, p| opt.update(i, p, &grads.params[i], lr, decay[i]));
            if let Some(q) = net.quant.as_mut() {
                let slot = decay.len();
                opt.update(slot, &mut q.theta, &grads.ranges, lr, false);
                q.constrain();
            }
            sum += loss * idx.len() as f64;
            count += idx.len();
            if !progress(&Progress { epoch, epochs: cfg.epochs, step: step + 1, steps, loss: sum / count.max(1) as f64, finished: None }) {
                report.stop = Stop::Cancelled;
                break 'epochs;
            }
        }
        let mean = sum / count.max(1) as f64;
        let score = eval.map(|ev| score(net, ev)).transpose()?;
        if !mean.is_finite() || score.is_some_and(|s| s.is_nan()) {
            *net = good;
            report.stop = Stop::Diverged { epoch, step: steps, loss: mean };
            break;
        }
        let done = EpochReport { epoch, loss: mean, lr, score };
        report.epochs.push(done.clone());
        good = net.clone();
        if !progress(&Progress { epoch, epochs: cfg.epochs, step: steps, steps, loss: mean, finished: Some(done) }) {
            report.stop = Stop::Cancelled;
            break;
        }
    }
    report.seconds = web_time() - t0;
    Ok(report)
}

/// Re-estimates every BatchNormalization's running mean and (unbiased) variance as the plain average of
/// its batch statistics over `data` in batches of `batch` (a model with a fixed batch size in
/// batches of that size), with the quantizers on: what training changed, measured without the
/// momentum's lag. Returns the number of batches.
pub fn reestimate_bn(net: &mut Net, data: &Data, batch: usize) -> Result<usize> {
    let (n, per) = (data.len(), data.sample_shape.iter().product::<usize>());
    let size = fixed_batch(&net.graph).unwrap_or(batch.clamp(2, n.max(2)));
    // Whole batches only: a short remainder would weigh as much as a full batch.
    let count = n / size;
    let saved = (net.bn_momentum, net.freeze_bn);
    net.freeze_bn = false;
    let mut result = Ok(count);
    for j in 0..count {
        // The running value after batch j is the mean of batches 0..=j.
        net.bn_momentum = j as f32 / (j + 1) as f32;
        let mut shape = vec![size];
        shape.extend_from_slice(data.sample_shape);
        let x = Tensor::f32(shape, data.x[j * size * per..(j + 1) * size * per].to_vec());
        if let Err(e) = x.and_then(|x| net.forward(x, Pass::Train)) {
            result = Err(e);
            break;
        }
    }
    (net.bn_momentum, net.freeze_bn) = saved;
    result
}

/// Forward and backward over the samples `idx`: the loss (distillation from the teacher's
/// outputs plus cross-entropy against labels, each a mean over the samples) and its gradients.
fn batch_step(net: &mut Net, data: &Data, cfg: &TrainConfig, idx: &[usize], per: usize, teacher_per: Option<usize>, inv_var: Option<&[f64]>) -> Result<(f64, Grads)> {
    let mut shape = vec![idx.len()];
    shape.extend_from_slice(data.sample_shape);
    let xb: Vec<f32> = idx.iter().flat_map(|&i| data.x[i * per..(i + 1) * per].iter().copied()).collect();
    let (outs, tape) = net.forward(Tensor::f32(shape, xb)?, Pass::Train)?;
    let tape = tape.ok_or_else(|| Error::Graph("no tape".into()))?;
    let y = outs.first().ok_or_else(|| Error::Graph("the model has no output".into()))?;
    let yd = y.as_f32().ok_or_else(|| Error::Graph("the model's output is not float".into()))?;
    let mut loss = 0.0f64;
    let mut dy = vec![0.0f32; yd.len()];
    // A model ending in Softmax outputs probabilities: the class losses take their logarithms
    // as logits (softmax(ln p) = p, so cross-entropy and distillation are exact), and their
    // gradient goes back through d ln p / dp = 1/p.
    let probs = ends_in_softmax(&net.graph);
    let logs: Vec<f32>;
    let z = if probs {
        logs = yd.iter().map(|&p| p.max(P_MIN).ln()).collect();
        &logs[..]
    } else {
        yd
    };
    let mut dz = vec![0.0f32; yd.len()];
    if let (Some(t), Some(tp)) = (data.teacher, teacher_per) {
        if tp * idx.len() != yd.len() {
            return Err(Error::Input { name: "teacher".into(), msg: format!("the teacher gives {tp} values per sample, the model {}", yd.len() / idx.len()) });
        }
        let mut tb: Vec<f32> = idx.iter().flat_map(|&i| t[i * tp..(i + 1) * tp].iter().copied()).collect();
        let (l, g, to) = match cfg.distill {
            Distill::Kl => {
                // The teacher's probabilities too (a teacher giving logits is used as is).
                if probs && tb.iter().all(|v| (0.0..=1.0).contains(v)) {
                    tb.iter_mut().for_each(|p| *p = p.max(P_MIN).ln());
                }
                let (l, g) = loss::distillation(z, y.shape(), &tb, cfg.temperature)?;
                (l, g, &mut dz)
            }
            // On the outputs themselves: what the output SQNR measures.
            Distill::Mse => {
                let (l, g) = loss::mse(yd, &tb)?;
                (l, g, &mut dy)
            }
            Distill::Nsr => {
                let (l, g) = loss::nsr(yd, y.shape(), &tb, inv_var.unwrap_or(&[]))?;
                (l, g, &mut dy)
            }
        };
        loss += l;
        to.iter_mut().zip(g).for_each(|(a, b)| *a += b);
    }
    if let Some(labels) = data.labels {
        let lb: Vec<i64> = idx.iter().map(|&i| labels[i]).collect();
        let (l, g) = loss::cross_entropy(z, y.shape(), &lb)?;
        loss += l;
        dz.iter_mut().zip(g).for_each(|(a, b)| *a += b);
    }
    for ((d, &g), &p) in dy.iter_mut().zip(&dz).zip(yd) {
        *d += if probs { g / p.max(P_MIN) } else { g };
    }
    let mut dout = vec![Vec::new(); net.graph.outputs.len()];
    dout[0] = dy;
    Ok((loss, net.backward(&tape, dout)?))
}

/// The smallest probability whose logarithm a loss takes (an 8-bit grid over [0, 1] has steps
/// of 1/255; a probability rounded to 0 counts as this).
const P_MIN: f32 = 1e-4;

/// Whether the model's first output comes from a Softmax (through ops that only copy or
/// reshape values).
fn ends_in_softmax(g: &crate::graph::Graph) -> bool {
    let mut v = g.outputs.first().copied();
    while let Some(n) = v.and_then(|o| g.nodes.iter().find(|n| n.outputs.contains(&o))) {
        if matches!(n.op, crate::graph::Op::Softmax { .. }) {
            return true;
        }
        if !matches!(n.op_type.as_str(), "Identity" | "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze") {
            return false;
        }
        v = n.inputs.first().copied().flatten();
    }
    false
}

fn scaled(mut g: Grads, w: f32) -> Grads {
    g.params.iter_mut().flatten().chain(g.ranges.iter_mut()).for_each(|v| *v *= w);
    g
}

fn add_scaled(acc: &mut Grads, g: &Grads, w: f32) {
    for (a, b) in acc.params.iter_mut().zip(&g.params) {
        a.iter_mut().zip(b).for_each(|(x, y)| *x += w * y);
    }
    acc.ranges.iter_mut().zip(&g.ranges).for_each(|(x, y)| *x += w * y);
}

/// The batch size the model's first input declares, if fixed.
pub fn fixed_batch(g: &crate::graph::Graph) -> Option<usize> {
    let dims = g.inputs.first().and_then(|&i| g.values[i].ty.as_ref()).and_then(|t| t.dims.as_ref())?;
    match dims.first() {
        Some(crate::graph::Dim::Fixed(b)) => Some(*b),
        _ => None,
    }
}

/// Seconds from an arbitrary origin (wall clock natively; 0 in wasm, where the caller times).
fn web_time() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::time::{SystemTime, UNIX_EPOCH};
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
    }
    #[cfg(target_arch = "wasm32")]
    {
        0.0
    }
}
