//! Architectures stitched from the block library (the reference's stem and head around library
//! blocks), finetuned briefly by distillation from the reference, and scored: DONNA's
//! architecture library, on which the accuracy predictor is fitted (a ridge regression from the
//! blocks' NSRs to accuracy, judged by its leave-one-out Kendall τ).

use super::bkd::Library;
use super::{parts_of, stitch, BlockChoice, Spec};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, Target};
use crate::graph::Graph;
use crate::rng::SplitMix;
use crate::search::predictor::{kendall_tau_b, leave_one_out, Ridge};
use crate::tensor::Tensor;
use crate::train::{self, Data, Distill, Net, TrainConfig};
use crate::Limits;
use serde::{Deserialize, Serialize};

/// A labelled set of samples.
#[derive(Debug, Clone)]
pub struct Split {
    pub x: Tensor,
    pub labels: Vec<i64>,
}

impl Split {
    /// Top-1 accuracy of `g` in %.
    pub fn accuracy(&self, g: &Graph) -> Result<f64> {
        Evaluator { batches: vec![self.x.clone()], target: Target::Labels(self.labels.clone()), limits: Limits::default() }.score(g)
    }
}

/// The model of `choices`: the reference's stem and head, the library's blocks.
pub fn stitched(spec: &Spec, lib: &Library, reference: &Graph, choices: &[BlockChoice]) -> Result<Graph> {
    let refs = parts_of(spec, &vec![BlockChoice::largest(); spec.slots.len()], reference)?;
    let mut parts = vec![refs[0].clone()];
    for (n, c) in choices.iter().enumerate() {
        let e = lib.entry(n, c).ok_or_else(|| Error::Input { name: format!("block {n}"), msg: format!("{} is not in the block library", c.label()) })?;
        parts.push(e.graph.clone());
    }
    parts.push(refs[refs.len() - 1].clone());
    stitch(&parts)
}

/// How an architecture is finetuned: labels plus distillation from the reference's logits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FinetuneConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub temperature: f32,
    pub seed: u64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig { epochs: 4, batch: 32, lr: 2e-3, temperature: 4.0, seed: 0 }
    }
}

/// Finetunes `graph` on `train` (labels, and KL distillation from `teacher_logits` of the same
/// samples). `progress(step, steps)`; returning false cancels (None).
pub fn finetune(graph: Graph, train_set: &Split, teacher_logits: &[f32], cfg: &FinetuneConfig, progress: &mut dyn FnMut(usize, usize) -> bool) -> Result<Option<Graph>> {
    let mut net = Net::new(graph, Limits::default())?;
    let xd = train_set.x.to_f32_vec();
    let data = Data { x: &xd, sample_shape: &train_set.x.shape()[1..], labels: Some(&train_set.labels), teacher: Some(teacher_logits) };
    let tc = TrainConfig { epochs: cfg.epochs, batch: cfg.batch, lr: cfg.lr, temperature: cfg.temperature, seed: cfg.seed, distill: Distill::Kl, ..Default::default() };
    let steps = data.len().div_ceil(cfg.batch.max(1)) * cfg.epochs;
    let report = train::train(&mut net, &data, &tc, None, &mut |p| progress(p.epoch * p.steps + p.step, steps))?;
    match report.stop {
        train::Stop::Cancelled => Ok(None),
        // The weights are those of the last good epoch (or the start): still a model.
        train::Stop::Finished | train::Stop::Diverged { .. } => Ok(Some(net.into_graph())),
    }
}

/// One architecture of the library: its blocks, their NSRs, and its accuracy after finetuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchRecord {
    pub choices: Vec<BlockChoice>,
    pub block_nsr: Vec<f64>,
    pub macs: u64,
    /// Validation accuracy in %, after finetuning.
    pub accuracy: f64,
}

/// `count` distinct architectures drawn uniformly from the library's blocks (fewer if the
/// library has fewer combinations).
pub fn sample_architectures(lib: &Library, count: usize, seed: u64) -> Vec<Vec<BlockChoice>> {
    let sizes: Vec<usize> = lib.blocks.iter().map(Vec::len).collect();
    if sizes.is_empty() || sizes.contains(&0) {
        return Vec::new();
    }
    let combos = sizes.iter().fold(1usize, |a, &s| a.saturating_mul(s));
    let mut rng = SplitMix(seed ^ 0x4152_4348);
    let mut out: Vec<Vec<BlockChoice>> = Vec::new();
    while out.len() < count.min(combos) {
        let a: Vec<BlockChoice> = lib.blocks.iter().map(|b| b[rng.below(b.len())].choice).collect();
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// Stitches, finetunes and scores each architecture. `progress(done, total)` with fractions
/// during finetuning; returning false stops, keeping the finished records.
#[allow(clippy::too_many_arguments)]
pub fn build_arch_library(spec: &Spec, lib: &Library, reference: &Graph, archs: &[Vec<BlockChoice>], train_set: &Split, val: &Split, cfg: &FinetuneConfig, progress: &mut dyn FnMut(f64, usize) -> bool) -> Result<(Vec<ArchRecord>, bool)> {
    let teacher = crate::exec::Executor::new(reference.clone(), Limits::default())?.run(vec![train_set.x.clone()])?.remove(0).to_f32_vec();
    let mut out = Vec::with_capacity(archs.len());
    for (i, a) in archs.iter().enumerate() {
        let g = stitched(spec, lib, reference, a)?;
        let Some(g) = finetune(g, train_set, &teacher, cfg, &mut |s, steps| progress(i as f64 + s as f64 / steps.max(1) as f64, archs.len()))? else {
            return Ok((out, false));
        };
        let (_, cost) = crate::cost::analyze(&g, &[], &Limits::default())?;
        let block_nsr = a.iter().enumerate().map(|(n, c)| lib.entry(n, c).map_or(f64::NAN, |e| e.nsr)).collect();
        out.push(ArchRecord { choices: a.clone(), block_nsr, macs: cost.macs, accuracy: val.accuracy(&g)? });
        if !progress((i + 1) as f64, archs.len()) {
            return Ok((out, i + 1 == archs.len()));
        }
    }
    Ok((out, true))
}

/// The predictor's features: the logarithm of each block's NSR (accuracy is closer to linear
/// in it than in the NSR).
fn features(block_nsr: &[f64]) -> Vec<f64> {
    block_nsr.iter().map(|v| v.max(1e-9).ln()).collect()
}

/// The accuracy predictor: ridge regression from the per-block log NSRs to accuracy.
#[derive(Debug, Clone, Serialize)]
pub struct Predictor {
    pub ridge: Ridge,
    /// Leave-one-out predictions of the library's accuracies, in its order.
    pub loo_predicted: Vec<f64>,
    pub kendall_tau: f64,
    /// The τ of the summed block NSRs (DONNAv2's surrogate, lower is better) against accuracy.
    pub summed_nsr_tau: f64,
    pub n_architectures: usize,
}

/// Relative ridge strength of the predictor.
pub const PREDICTOR_LAMBDA: f64 = 0.1;

impl Predictor {
    /// Fits on the architecture library.
    pub fn fit(records: &[ArchRecord]) -> Result<Predictor> {
        let f: Vec<Vec<f64>> = records.iter().map(|r| features(&r.block_nsr)).collect();
        let y: Vec<f64> = records.iter().map(|r| r.accuracy).collect();
        let ridge = Ridge::fit(&f, &y, PREDICTOR_LAMBDA)?;
        let (loo_predicted, kendall_tau) = leave_one_out(&f, &y, PREDICTOR_LAMBDA)?;
        let summed: Vec<f64> = records.iter().map(|r| -r.block_nsr.iter().sum::<f64>()).collect();
        Ok(Predictor { ridge, loo_predicted, kendall_tau, summed_nsr_tau: kendall_tau_b(&summed, &y), n_architectures: records.len() })
    }

    /// The predicted accuracy in % (a linear fit can step past 100: held within 0–100).
    pub fn predict(&self, block_nsr: &[f64]) -> f64 {
        self.ridge.predict(&features(block_nsr)).clamp(0.0, 100.0)
    }
}
