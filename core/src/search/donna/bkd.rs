//! Blockwise knowledge distillation (DONNA's step B): every block choice is trained alone, from
//! the reference's features at the block's input to the reference block's output, by the
//! per-channel noise-to-signal ratio ([`crate::train::loss::nsr`]). The block library keeps each
//! trained block with its NSR measured on a held-out split, DONNA's quality metric per block.

use super::{block, parts_of, BlockChoice, Spec};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::Graph;
use crate::tensor::Tensor;
use crate::train::{self, loss, Data, Distill, Net, TrainConfig};
use crate::Limits;
use serde::Serialize;

/// The reference's features at every block edge: `[stem output = block 0 input, block 0
/// output, …, last block output]`, for the samples `x`.
pub fn teacher_features(spec: &Spec, reference: &Graph, x: &Tensor) -> Result<Vec<Tensor>> {
    let largest = vec![BlockChoice::largest(); spec.slots.len()];
    let parts = parts_of(spec, &largest, reference)?;
    let mut feats = Vec::with_capacity(spec.slots.len() + 1);
    let mut h = x.clone();
    for part in &parts[..parts.len() - 1] {
        h = Executor::new(part.clone(), Limits::default())?.run(vec![h])?.remove(0);
        feats.push(h.clone());
    }
    Ok(feats)
}

/// How each block is distilled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BkdConfig {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
}

impl Default for BkdConfig {
    fn default() -> Self {
        BkdConfig { epochs: 4, batch: 32, lr: 5e-3, seed: 0 }
    }
}

/// One trained block of the library.
#[derive(Debug, Clone, Serialize)]
pub struct BlockEntry {
    pub block: usize,
    pub choice: BlockChoice,
    /// Mean NSR on the training features in each epoch.
    pub train_nsr: Vec<f64>,
    /// NSR on the held-out split after training: the block's quality.
    pub nsr: f64,
    pub macs: u64,
    pub params: u64,
    #[serde(skip)]
    pub graph: Graph,
}

/// The NSR of `g`'s outputs on `x` against `target` (per-channel variances of `target`).
pub fn held_out_nsr(g: &Graph, x: &Tensor, target: &Tensor) -> Result<f64> {
    let y = Executor::new(g.clone(), Limits::default())?.run(vec![x.clone()])?.remove(0);
    let shape = target.shape();
    let (c, pos) = (shape.get(1).copied().unwrap_or(1), shape[2..].iter().product::<usize>());
    let t = target.to_f32_vec();
    Ok(loss::nsr(&y.to_f32_vec(), y.shape(), &t, &loss::channel_weights(&t, c, pos))?.0)
}

/// Distils block `n` at `choice` from `(x, target)`, the reference's features at its input and
/// output on the training split, and measures its NSR on the held-out `(hx, htarget)`.
/// `progress(step, steps)` after every step; returning false cancels (None).
#[allow(clippy::too_many_arguments)]
pub fn distill_block(spec: &Spec, n: usize, choice: &BlockChoice, x: &Tensor, target: &Tensor, hx: &Tensor, htarget: &Tensor, cfg: &BkdConfig, progress: &mut dyn FnMut(usize, usize) -> bool) -> Result<Option<BlockEntry>> {
    let seed = cfg.seed ^ ((n as u64) << 32) ^ choice.index().unwrap_or(0) as u64;
    let g = block(spec, n, choice, seed)?;
    let (_, cost) = crate::cost::analyze(&g, &[], &Limits::default())?;
    let mut net = Net::new(g, Limits::default())?;
    let (xd, td) = (x.to_f32_vec(), target.to_f32_vec());
    let data = Data { x: &xd, sample_shape: &x.shape()[1..], labels: None, teacher: Some(&td) };
    let tc = TrainConfig { epochs: cfg.epochs, batch: cfg.batch, lr: cfg.lr, seed, distill: Distill::Nsr, ..Default::default() };
    let steps = data.len().div_ceil(cfg.batch.max(1)) * cfg.epochs;
    let report = train::train(&mut net, &data, &tc, None, &mut |p| progress(p.epoch * p.steps + p.step, steps))?;
    match report.stop {
        train::Stop::Cancelled => return Ok(None),
        train::Stop::Diverged { epoch, step, loss } => return Err(Error::Input { name: format!("block {n} {}", choice.label()), msg: format!("distillation diverged at epoch {} step {step} (loss {loss})", epoch + 1) }),
        train::Stop::Finished => {}
    }
    let graph = net.into_graph();
    let nsr = held_out_nsr(&graph, hx, htarget)?;
    Ok(Some(BlockEntry { block: n, choice: *choice, train_nsr: report.epochs.iter().map(|e| e.loss).collect(), nsr, macs: cost.macs, params: cost.params, graph }))
}

/// The block library: for each block of the space, its trained choices.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Library {
    pub blocks: Vec<Vec<BlockEntry>>,
    /// False when cancelled: the entries so far are kept.
    pub complete: bool,
}

impl Library {
    /// The entry of block `n` at `choice` (its canonical form).
    pub fn entry(&self, n: usize, choice: &BlockChoice) -> Option<&BlockEntry> {
        let c = choice.canonical();
        self.blocks.get(n)?.iter().find(|e| e.choice.canonical() == c)
    }
}

/// Distils `choices[n]` (duplicates by canonical form trained once) for every block `n`, from
/// the reference's features on the training samples `x`, each measured on the held-out `hx`.
/// `progress(done, total, last)` after each block and during training (`last` None); returning
/// false stops, keeping the finished entries.
pub fn build_library(spec: &Spec, reference: &Graph, x: &Tensor, hx: &Tensor, choices: &[Vec<BlockChoice>], cfg: &BkdConfig, progress: &mut dyn FnMut(f64, usize, Option<&BlockEntry>) -> bool) -> Result<Library> {
    if choices.len() != spec.slots.len() {
        return Err(Error::Input { name: "library".into(), msg: format!("choices for {} blocks in a space of {}", choices.len(), spec.slots.len()) });
    }
    let (feats, hfeats) = (teacher_features(spec, reference, x)?, teacher_features(spec, reference, hx)?);
    let mut todo: Vec<Vec<BlockChoice>> = Vec::new();
    for list in choices {
        let mut seen = Vec::new();
        for c in list {
            if c.index().is_none() {
                return Err(Error::Input { name: "library".into(), msg: format!("{c:?} is outside the search space") });
            }
            if !seen.contains(&c.canonical()) {
                seen.push(c.canonical());
            }
        }
        todo.push(seen);
    }
    let total: usize = todo.iter().map(Vec::len).sum();
    let mut lib = Library { blocks: vec![Vec::new(); spec.slots.len()], complete: false };
    let mut done = 0;
    for (n, list) in todo.iter().enumerate() {
        for c in list {
            let mut step_progress = |s: usize, steps: usize| progress(done as f64 + s as f64 / steps.max(1) as f64, total, None);
            let Some(e) = distill_block(spec, n, c, &feats[n], &feats[n + 1], &hfeats[n], &hfeats[n + 1], cfg, &mut step_progress)? else {
                return Ok(lib);
            };
            done += 1;
            lib.blocks[n].push(e);
            if !progress(done as f64, total, lib.blocks[n].last()) {
                return Ok(lib);
            }
        }
    }
    lib.complete = true;
    Ok(lib)
}
