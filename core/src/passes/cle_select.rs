//! Choosing, set by set, whether cross-layer equalization pays off for a given quantization
//! config, by measuring instead of assuming.
//!
//! Equalization evens out the weight ranges of a set of consecutive layers, which helps per-tensor
//! weight quantization; it also rescales the activations between them, which can cost more than it
//! gains (with per-channel weights the first effect is mostly gone). So each set is tried both ways:
//! the score of a choice is the SQNR of the model's outputs against FP32 on probe samples, with the
//! model quantized (calibrated on the calibration samples) under `config`. Search: the better of
//! "no set" and "every set", then each set flipped in order, the flip kept when it raises the score.
//! In [`CleMode::Preserving`] every choice computes the same FP32 function, so only quantization
//! error is compared.

use super::cle::{equalize_sets, CleMode, CleReport};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::Graph;
use crate::quant::{QuantSim, QuantSimConfig};
use crate::tensor::Tensor;
use serde::Serialize;

/// The decision for one set of layers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetChoice {
    /// The set's convolutions.
    pub layers: Vec<String>,
    pub equalized: bool,
    /// Output SQNR (dB) with this set equalized and without it, the other sets as they were when
    /// this one was decided.
    pub with_db: f64,
    pub without_db: f64,
}

/// What the search measured and chose.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelectReport {
    /// Output SQNR with no set equalized (BN folding only) and with every set equalized.
    pub none_db: f64,
    pub all_db: f64,
    /// Output SQNR of the chosen mix.
    pub chosen_db: f64,
    pub sets: Vec<SetChoice>,
    /// Quantized models built and scored.
    pub evaluations: usize,
}

/// The leading samples holding at least `rows` rows (whole tensors): the search's share of a
/// calibration set, which it quantizes and scores about once per layer set.
pub fn leading_samples(samples: &[Tensor], rows: usize) -> &[Tensor] {
    let mut seen = 0;
    let n = samples
        .iter()
        .take_while(|t| {
            let take = seen < rows;
            seen += t.shape().first().copied().unwrap_or(1);
            take
        })
        .count();
    &samples[..n]
}

/// Searches which sets to equalize (see the module doc) and returns the model equalized that way,
/// its equalization report and the search's. `progress(done, total)` is called after every
/// evaluation; returning false cancels (an error).
pub fn select_equalization(
    graph: &Graph,
    config: &QuantSimConfig,
    calib: &[Tensor],
    probe: &[Tensor],
    progress: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<(Graph, CleReport, SelectReport)> {
    if calib.is_empty() || probe.is_empty() {
        return Err(Error::Quant("choosing equalization needs calibration and probe samples".into()));
    }
    let mut fp = Executor::new(graph.clone(), Default::default())?;
    let mut reference = Vec::new();
    for x in probe {
        reference.extend(fp.run(vec![x.clone()])?.swap_remove(0).to_f32_vec());
    }
    let n = equalize_sets(graph.clone(), CleMode::Preserving, &|_| false).1.candidates.len();
    let total = n + 2;
    let mut done = 0;
    let mut score = |mask: &[bool]| -> Result<f64> {
        let (g, _) = equalize_sets(graph.clone(), CleMode::Preserving, &|i| mask[i]);
        let mut sim = QuantSim::new(g, config.clone())?;
        sim.calibrate(calib)?;
        let mut ex = sim.executor()?;
        let mut y = Vec::with_capacity(reference.len());
        for x in probe {
            y.extend(ex.run(vec![x.clone()])?.swap_remove(0).to_f32_vec());
        }
        done += 1;
        if !progress(done, total) {
            return Err(Error::Quant("cancelled".into()));
        }
        Ok(crate::metrics::sqnr_db(&reference, &y))
    };
    let none_db = score(&vec![false; n])?;
    let all_db = score(&vec![true; n])?;
    let mut mask = vec![all_db > none_db; n];
    let mut best = none_db.max(all_db);
    // Per set, (with, without) as measured when it was decided.
    let mut measured = vec![(0.0, 0.0); n];
    for i in 0..n {
        mask[i] = !mask[i];
        let flipped = score(&mask)?;
        measured[i] = if mask[i] { (flipped, best) } else { (best, flipped) };
        // A tie leaves the set unequalized (the simpler change).
        if flipped > best || (flipped == best && !mask[i]) {
            best = flipped;
        } else {
            mask[i] = !mask[i];
        }
    }
    let (g, cle) = equalize_sets(graph.clone(), CleMode::Preserving, &|i| mask[i]);
    let sets = cle
        .candidates
        .iter()
        .zip(&measured)
        .enumerate()
        .map(|(i, (layers, &(with_db, without_db)))| SetChoice { layers: layers.clone(), equalized: mask[i], with_db, without_db })
        .collect();
    Ok((g, cle, SelectReport { none_db, all_db, chosen_db: best, sets, evaluations: done }))
}
