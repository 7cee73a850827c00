//! A recipe applied to a graph: BN folding or equalization, AdaRound, calibration and bias
//! correction, as the Quantize request and the model zoo both run it.

use super::post;
use crate::protocol::{AdaroundLayer, CleChoice, CleLayer, QuantConfig, Response};
use qplay_core::quant::{QuantSim, QuantSimConfig};
use qplay_core::{Graph, Tensor};

pub(super) struct Quantized {
    pub sim: QuantSim,
    pub bn_folded: usize,
    pub cle: Vec<CleLayer>,
    pub cle_choices: Vec<CleChoice>,
    pub adaround: Vec<AdaroundLayer>,
    pub bias_corrected: usize,
    /// The first calibration's wall time in seconds, and the workers it ran on.
    pub calibration_seconds: f64,
    pub workers: usize,
}

/// Quantizes `source` by `config`, calibrated on `samples`; progress is posted as job `job`.
pub(super) async fn run(job: u32, source: Graph, config: &QuantConfig, samples: &[Tensor]) -> Result<Quantized, String> {
    let mode = if config.aimet_compatible { qplay_core::quant::Mode::Aimet } else { qplay_core::quant::Mode::Qplay };
    let cfg = QuantSimConfig { mode, weight_bits: config.weight_bits, act_bits: config.act_bits, per_channel: config.per_channel, scheme: config.scheme.core(), ..Default::default() };
    let mut cle_choices = Vec::new();
    let (g, bn_folded, cle, stats) = if config.dfq {
        use qplay_core::passes::cle::{equalize_with, CleMode};
        let (g, r) = if config.cle_measured && !config.aimet_compatible {
            // Calibrate and score each candidate on the first 8 photos (one batch of digits).
            let search = qplay_core::passes::cle_select::leading_samples(samples, 8);
            let (g, r, sel) = qplay_core::passes::cle_select::select_equalization(&source, &cfg, search, search, &mut |done, total| {
                post(&Response::Progress { job, stage: "Measuring equalization per layer set".into(), done, total });
                true
            })
            .map_err(|e| e.to_string())?;
            cle_choices = sel.sets.into_iter().map(|s| CleChoice { layers: s.layers, equalized: s.equalized, with_db: s.with_db, without_db: s.without_db }).collect();
            (g, r)
        } else {
            equalize_with(source, if config.aimet_compatible { CleMode::Aimet } else { CleMode::Preserving })
        };
        let scaled: std::collections::HashSet<&String> = r.sets.iter().flat_map(|(names, _)| names.iter()).collect();
        let cle = r
            .before
            .iter()
            .zip(&r.after)
            .filter(|(b, _)| scaled.contains(&b.node))
            .map(|(b, a)| CleLayer { node: b.node.clone(), before_min: b.min.clone(), before_max: b.max.clone(), after_min: a.min.clone(), after_max: a.max.clone() })
            .collect();
        (g, r.bn_folded, cle, r.output_stats)
    } else {
        let (g, fold) = qplay_core::passes::bn_fold::fold_batch_norms(source);
        let stats = fold.output_stats();
        (g, fold.folded.len(), Vec::new(), stats)
    };
    let mut sim = QuantSim::new(g, cfg).map_err(|e| e.to_string())?;
    let adaround = if config.adaround_iterations > 0 {
        use qplay_core::passes::adaround::{adaround, AdaroundConfig};
        let ada = AdaroundConfig { iterations: config.adaround_iterations as usize, ..Default::default() };
        let r = adaround(&mut sim, samples, &ada, &mut |p| {
            let stage = format!("AdaRound {} ({} of {}), loss {:.4}:", p.node, p.layer + 1, p.layers, p.recon);
            post(&Response::Progress { job, stage, done: p.layer * p.iterations + p.iteration, total: p.layers * p.iterations });
            true
        })
        .map_err(|e| e.to_string())?;
        r.layers
            .into_iter()
            .map(|l| AdaroundLayer {
                node: l.node,
                weights: l.weights,
                changed: l.changed,
                recon_nearest: l.recon_nearest,
                recon_adaround: l.recon_adaround,
                curve: l.curve.iter().map(|p| (p.iteration, p.recon, p.round)).collect(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let t0 = super::now();
    let workers = super::pool::calibrate(&mut sim, samples, config.scheme, job, "Calibrating").await?;
    let calibration_seconds = (super::now() - t0) / 1e3;
    let bias_corrected = if config.bias_correction {
        let r = qplay_core::quant::bias_correction::correct_biases_analytical(&mut sim, &stats).map_err(|e| e.to_string())?;
        super::pool::calibrate(&mut sim, samples, config.scheme, job, "Recalibrating after bias correction").await?;
        r.layers.len()
    } else {
        0
    };
    Ok(Quantized { sim, bn_folded, cle, cle_choices, adaround, bias_corrected, calibration_seconds, workers })
}
