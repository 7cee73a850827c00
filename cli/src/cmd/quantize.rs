//! `qplay quantize`: a recipe (BN folding, equalization, AdaRound, bias correction), calibration,
//! and the encodings, QDQ model, transformed FP32 model and report written out.

use crate::data::{self, Settings};
use crate::common::{encodings_config, equalized, failed_at, read_text, transform, write_file, CliError, CliResult, Global, ModeArg, Transform, Transformed};
use crate::out;
use crate::progress::{Progress, Stage};
use clap::ValueEnum;
use qplay_core::passes::adaround::{adaround, AdaroundConfig, AdaroundReport};
use qplay_core::passes::cle_select::{leading_samples, select_equalization, SelectReport};
use qplay_core::quant::bias_correction::{correct_biases, correct_biases_analytical, BiasCorrectionReport};
use qplay_core::quant::{CalibScheme, Mode, QuantSim, QuantSimConfig};
use qplay_core::{Graph, Tensor};
use std::path::PathBuf;
use std::time::Instant;

/// Quantize a model: transform it, calibrate on samples, write encodings and a QDQ ONNX model
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model
    #[arg(value_name = "MODEL.onnx")]
    model: PathBuf,
    /// Calibration samples: one .npy with N samples along axis 0, a directory of .npy files, or a
    /// directory of photos (with --preprocess)
    #[arg(long, value_name = "X.npy|DIR", required_unless_present = "import")]
    calib: Option<PathBuf>,
    /// How photos become the model's input (the preprocessing JSON)
    #[arg(long, value_name = "MODEL.json")]
    preprocess: Option<PathBuf>,
    #[command(flatten)]
    quant: QuantOptions,
    /// Leave this node unquantized (repeatable)
    #[arg(long, value_name = "NODE")]
    skip: Vec<String>,
    /// Seed of AdaRound's sampling
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Take encodings from this file instead of calibrating (checked against the model)
    #[arg(long, value_name = "E.json")]
    import: Option<PathBuf>,
    /// Write the encodings (AIMET's JSON format)
    #[arg(long, value_name = "E.json")]
    encodings: Option<PathBuf>,
    /// Write a JSON report: per-layer error analysis and what each step did
    #[arg(long, value_name = "R.json")]
    report: Option<PathBuf>,
    /// Write the quantized model as QDQ ONNX
    #[arg(long, value_name = "QDQ.onnx")]
    out: Option<PathBuf>,
    /// Write the transformed FP32 model (BN folded, equalized, AdaRounded) the encodings refer to
    #[arg(long, value_name = "TRANSFORMED.onnx")]
    fp32_out: Option<PathBuf>,
}

/// How a model is quantized: shared by `quantize` and `compress --quantize`.
#[derive(clap::Args, Debug, Clone)]
pub struct QuantOptions {
    /// What to do before calibrating
    #[arg(long, value_enum, default_value_t = Recipe::None)]
    pub recipe: Recipe,
    /// Weight bit-width
    #[arg(long, value_name = "BITS", default_value_t = 8)]
    pub weight_bits: u32,
    /// Activation bit-width
    #[arg(long, value_name = "BITS", default_value_t = 8)]
    pub act_bits: u32,
    /// One weight encoding per output channel
    #[arg(long)]
    pub per_channel: bool,
    /// How activation ranges are chosen: minmax, sqnr, percentile (99.99) or percentile:P
    #[arg(long, value_name = "SCHEME", default_value = "minmax", value_parser = parse_scheme)]
    pub scheme: CalibScheme,
    /// Quantizer placement and arithmetic: qplay's own, or AIMET 2.42's exactly
    #[arg(long, value_enum, default_value_t = ModeArg::Qplay)]
    pub mode: ModeArg,
    /// Correct the biases for the weights' quantization error after calibrating
    #[arg(long, value_enum, value_name = "KIND")]
    pub bias_correction: Option<BiasCorrection>,
    /// AdaRound iterations per layer
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub adaround_iters: usize,
    /// With dfq: equalize every layer set, or only those that measurably help (qplay mode)
    #[arg(long, value_enum, default_value_t = Cle::All)]
    pub cle: Cle,
    /// Calibration samples used to score each set when --cle measured
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub cle_samples: usize,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    /// BN folding only
    None,
    /// Data-free quantization: BN folding and cross-layer equalization
    Dfq,
    /// BN folding and AdaRound
    Adaround,
    /// DFQ, then AdaRound
    #[value(name = "dfq+adaround")]
    DfqAdaround,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BiasCorrection {
    /// From the float and quantized outputs on calibration samples
    Empirical,
    /// From the folded BN's statistics, without data
    Analytical,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cle {
    All,
    Measured,
}

pub(crate) fn parse_scheme(s: &str) -> Result<CalibScheme, String> {
    match s {
        "minmax" => Ok(CalibScheme::MinMax),
        "sqnr" => Ok(CalibScheme::Sqnr),
        "percentile" => Ok(CalibScheme::Percentile(99.99)),
        _ => s.strip_prefix("percentile:").and_then(|p| p.parse::<f32>().ok()).map(CalibScheme::Percentile).ok_or_else(|| "expected minmax, sqnr, percentile or percentile:P".into()),
    }
}

impl QuantOptions {
    /// E.g. "dfq, W8A8 per-channel".
    pub fn describe(&self) -> String {
        let recipe = self.recipe.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string());
        format!("{recipe}, W{}A{} {}", self.weight_bits, self.act_bits, if self.per_channel { "per-channel" } else { "per-tensor" })
    }

    fn sim_config(&self, skip: &[String]) -> QuantSimConfig {
        QuantSimConfig { mode: Mode::from(self.mode), weight_bits: self.weight_bits, act_bits: self.act_bits, per_channel: self.per_channel, scheme: self.scheme, skip: skip.to_vec() }
    }

    /// The FP32 transformation of the recipe (BN folding, equalization measured on `data` with
    /// --cle measured), before any quantizer exists.
    fn prepare(&self, g: Graph, config: &QuantSimConfig, data: Option<&[Tensor]>, progress: &Progress) -> CliResult<(Graph, Transformed, Option<SelectReport>)> {
        let base = match self.recipe {
            Recipe::None | Recipe::Adaround => Transform::None,
            Recipe::Dfq | Recipe::DfqAdaround => Transform::Dfq,
        };
        if self.cle != Cle::Measured {
            let (g, done) = transform(g, base, config.mode);
            return Ok((g, done, None));
        }
        if base != Transform::Dfq || config.mode != Mode::Qplay {
            return Err(CliError::Usage("--cle measured needs --recipe dfq (or dfq+adaround) in qplay mode".into()));
        }
        let all = data.ok_or_else(|| CliError::Usage("--cle measured needs --calib".into()))?;
        // The search quantizes the model once per set and twice more: it calibrates and scores on
        // the first --cle-samples samples only.
        let data = leading_samples(all, self.cle_samples.max(1));
        let mut stage: Option<Stage> = None;
        let (g, cle, sel) = select_equalization(&g, config, data, data, &mut |done, total| {
            stage.get_or_insert_with(|| progress.stage("choose equalization", total, "models")).set(done);
            true
        })?;
        if let Some(s) = stage {
            s.finish();
        }
        out!(
            "measured equalization: {} of {} sets equalized, output SQNR {:.2} dB (none {:.2} dB, all {:.2} dB) on the calibration data",
            sel.sets.iter().filter(|s| s.equalized).count(),
            sel.sets.len(),
            sel.chosen_db,
            sel.none_db,
            sel.all_db
        );
        Ok((g, equalized(cle), Some(sel)))
    }
}

/// A model quantized by a recipe, with what each step did.
pub struct Quantized {
    pub sim: QuantSim,
    pub done: Transformed,
    pub selection: Option<SelectReport>,
    pub adaround: Option<AdaroundReport>,
    pub bias_correction: Option<BiasCorrectionReport>,
    pub seconds: f64,
}

/// Quantizes `g` by `opts` (leaving the `skip` nodes in float), calibrated on `data`.
pub fn quantize_graph(g: Graph, opts: &QuantOptions, skip: &[String], seed: u64, data: &[Tensor], progress: &Progress) -> CliResult<Quantized> {
    let config = opts.sim_config(skip);
    let (g, done, selection) = opts.prepare(g, &config, Some(data), progress)?;
    let t0 = Instant::now();
    let mut sim = QuantSim::new(g, config)?;
    let adaround = if matches!(opts.recipe, Recipe::Adaround | Recipe::DfqAdaround) {
        let ada = AdaroundConfig { iterations: opts.adaround_iters, seed, ..Default::default() };
        let mut stage: Option<(usize, Stage)> = None;
        let end = |stage: Option<(usize, Stage)>| {
            if let Some((_, mut s)) = stage {
                s.set(ada.iterations);
                s.finish();
            }
        };
        let r = adaround(&mut sim, data, &ada, &mut |p| {
            if stage.as_ref().map(|s| s.0) != Some(p.layer) {
                end(stage.take());
                stage = Some((p.layer, progress.stage(format!("adaround {}/{}", p.layer + 1, p.layers), p.iterations, "iterations")));
            }
            if let Some((_, s)) = &mut stage {
                s.set(p.iteration);
                s.note(format!("{}, loss {:.5}", p.node, p.recon));
            }
            true
        })?;
        end(stage);
        Some(r)
    } else {
        None
    };
    calibrate(&mut sim, data, progress)?;
    let bias_correction = match opts.bias_correction {
        None => None,
        Some(kind) => {
            let r = match kind {
                BiasCorrection::Empirical => correct_biases(&mut sim, &data[..data.len().min(16)])?,
                BiasCorrection::Analytical => correct_biases_analytical(&mut sim, &done.stats)?,
            };
            calibrate(&mut sim, data, progress)?;
            Some(r)
        }
    };
    Ok(Quantized { sim, done, selection, adaround, bias_correction, seconds: t0.elapsed().as_secs_f64() })
}

pub fn run(a: &Args, global: &Global) -> CliResult<()> {
    let (g, _) = global.load(&a.model)?;
    let progress = Progress::new(global.quiet);
    let settings = a.preprocess.as_deref().map(Settings::read).transpose()?;
    let set = a.calib.as_ref().map(|c| data::load(global, &g, c, settings.as_ref(), 32)).transpose()?;
    if let Some(path) = &a.import {
        // Encodings from a file instead of calibration (checks them against this model).
        let config = a.quant.sim_config(&a.skip);
        let (g, _, _) = a.quant.prepare(g, &config, set.as_ref().map(|s| s.batches.as_slice()), &progress)?;
        let text = read_text(path)?;
        let mut sim = QuantSim::new(g, QuantSimConfig { skip: config.skip, ..encodings_config(&text) })?;
        sim.import_aimet_json(&text).map_err(|e| failed_at(path, e))?;
        let (n_par, n_act) = write_outputs(a, &sim)?;
        out!("imported {n_par} weight and {n_act} activation encodings from {}", path.display());
        return Ok(());
    }
    let set = set.ok_or_else(|| CliError::Usage("--calib is required (or --import E.json)".into()))?;
    let data = &set.batches;
    let Quantized { sim, done, selection, adaround, bias_correction, seconds } = quantize_graph(g, &a.quant, &a.skip, a.seed, data, &progress)?;
    let (n_par, n_act) = write_outputs(a, &sim)?;
    let Transformed { fold, cle, .. } = done;
    if let Some(p) = &a.report {
        let analysis = qplay_core::quant::analysis::analyze(&sim, &data[..data.len().min(10)])?;
        let config = sim.config();
        let report = serde_json::json!({
            "analysis": analysis,
            "model": a.model.display().to_string(),
            "recipe": a.quant.recipe.to_possible_value().map(|v| v.get_name().to_string()),
            "cle": cle,
            "cle_selection": selection,
            "bias_correction": bias_correction,
            "adaround": adaround,
            "config": {"mode": format!("{:?}", config.mode), "weight_bits": config.weight_bits, "act_bits": config.act_bits, "per_channel": config.per_channel, "scheme": format!("{:?}", config.scheme)},
            "bn_fold": fold,
            "calibration_batches": data.len(),
            "calibration_samples": set.samples,
            "activation_quantizers": n_act,
            "param_quantizers": n_par,
            "seconds": seconds,
        });
        write_file(p, serde_json::to_string_pretty(&report).unwrap_or_default())?;
    }
    if let Some(c) = &cle {
        out!("equalized: {} ReLU6 replaced by ReLU, {} layer groups, {} scaled sets, {} high biases absorbed", c.relu6_replaced.len(), c.groups.len(), c.sets.len(), c.absorbed.len());
    }
    out!("quantized: {} BN folded, {n_par} weight and {n_act} activation encodings from {} calibration samples ({} batches) in {seconds:.2} s", fold["folded"], set.samples, data.len());
    Ok(())
}

fn calibrate(sim: &mut QuantSim, data: &[Tensor], progress: &Progress) -> CliResult<()> {
    let mut stage = progress.stage("calibrate", data.len(), "batches");
    sim.calibrate_with_progress(data, &mut |done, _| {
        stage.set(done);
        true
    })?;
    stage.finish();
    Ok(())
}

/// Writes what `quantize` was asked for: encodings (--encodings), the QDQ model (--out) and the
/// FP32 transformed model (--fp32-out). Returns the numbers of weight and activation encodings.
fn write_outputs(a: &Args, sim: &QuantSim) -> CliResult<(usize, usize)> {
    let enc = sim.to_aimet_json();
    if let Some(p) = &a.encodings {
        write_file(p, serde_json::to_string_pretty(&enc).unwrap_or_default())?;
    }
    if let Some(p) = &a.out {
        write_file(p, qplay_core::onnx::export::qdq_model(sim)?)?;
    }
    if let Some(p) = &a.fp32_out {
        write_file(p, qplay_core::onnx::export::fp32_model(sim.graph())?)?;
    }
    let count = |k: &str| enc[k].as_array().map_or(0, Vec::len);
    Ok((count("param_encodings"), count("activation_encodings")))
}
