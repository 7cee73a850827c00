//! `qplay quantize`: a recipe (BN folding, equalization, AdaRound, bias correction), calibration,
//! and the encodings, QDQ model, transformed FP32 model and report written out.

use crate::data::{self, Settings};
use crate::common::{encodings_config, equalized, failed_at, read_text, transform, write_file, CliError, CliResult, Global, ModeArg, Transform, Transformed};
use crate::out;
use crate::progress::{Progress, Stage};
use clap::ValueEnum;
use qplay_core::passes::adaround::{adaround, AdaroundConfig};
use qplay_core::quant::{CalibScheme, Mode, QuantSim, QuantSimConfig};
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
    /// What to do before calibrating
    #[arg(long, value_enum, default_value_t = Recipe::None)]
    recipe: Recipe,
    /// Weight bit-width
    #[arg(long, value_name = "BITS", default_value_t = 8)]
    weight_bits: u32,
    /// Activation bit-width
    #[arg(long, value_name = "BITS", default_value_t = 8)]
    act_bits: u32,
    /// One weight encoding per output channel
    #[arg(long)]
    per_channel: bool,
    /// How activation ranges are chosen: minmax, sqnr, percentile (99.99) or percentile:P
    #[arg(long, value_name = "SCHEME", default_value = "minmax", value_parser = parse_scheme)]
    scheme: CalibScheme,
    /// Quantizer placement and arithmetic: qplay's own, or AIMET 2.42's exactly
    #[arg(long, value_enum, default_value_t = ModeArg::Qplay)]
    mode: ModeArg,
    /// Correct the biases for the weights' quantization error after calibrating
    #[arg(long, value_enum, value_name = "KIND")]
    bias_correction: Option<BiasCorrection>,
    /// Leave this node unquantized (repeatable)
    #[arg(long, value_name = "NODE")]
    skip: Vec<String>,
    /// AdaRound iterations per layer
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    adaround_iters: usize,
    /// Seed of AdaRound's sampling
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// With dfq: equalize every layer set, or only those that measurably help (qplay mode)
    #[arg(long, value_enum, default_value_t = Cle::All)]
    cle: Cle,
    /// Calibration samples used to score each set when --cle measured
    #[arg(long, value_name = "N", default_value_t = 8)]
    cle_samples: usize,
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

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Recipe {
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
enum BiasCorrection {
    /// From the float and quantized outputs on calibration samples
    Empirical,
    /// From the folded BN's statistics, without data
    Analytical,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Cle {
    All,
    Measured,
}

fn parse_scheme(s: &str) -> Result<CalibScheme, String> {
    match s {
        "minmax" => Ok(CalibScheme::MinMax),
        "sqnr" => Ok(CalibScheme::Sqnr),
        "percentile" => Ok(CalibScheme::Percentile(99.99)),
        _ => s.strip_prefix("percentile:").and_then(|p| p.parse::<f32>().ok()).map(CalibScheme::Percentile).ok_or_else(|| "expected minmax, sqnr, percentile or percentile:P".into()),
    }
}

pub fn run(a: &Args, global: &Global) -> CliResult<()> {
    let (g, _) = global.load(&a.model)?;
    let mode = Mode::from(a.mode);
    let (base, with_adaround) = match a.recipe {
        Recipe::None => (Transform::None, false),
        Recipe::Dfq => (Transform::Dfq, false),
        Recipe::Adaround => (Transform::None, true),
        Recipe::DfqAdaround => (Transform::Dfq, true),
    };
    let progress = Progress::new(global.quiet);
    let settings = a.preprocess.as_deref().map(Settings::read).transpose()?;
    let calib_set = |g: &qplay_core::Graph, path: &std::path::Path| data::load(global, g, path, settings.as_ref(), 32);
    let ada = AdaroundConfig { iterations: a.adaround_iters, seed: a.seed, ..Default::default() };
    let config = QuantSimConfig { mode, weight_bits: a.weight_bits, act_bits: a.act_bits, per_channel: a.per_channel, scheme: a.scheme, skip: a.skip.clone() };
    if a.cle == Cle::Measured && (base != Transform::Dfq || mode != Mode::Qplay) {
        return Err(CliError::Usage("--cle measured needs --recipe dfq (or dfq+adaround) in qplay mode".into()));
    }
    let mut selection = None;
    let (g, done) = if a.cle == Cle::Measured {
        let calib = a.calib.as_ref().ok_or_else(|| CliError::Usage("--cle measured needs --calib".into()))?;
        // The search quantizes the model once per set and twice more: it calibrates and scores on
        // the first --cle-samples samples only.
        use qplay_core::passes::cle_select::{leading_samples, select_equalization};
        let all = calib_set(&g, calib)?.batches;
        let data = leading_samples(&all, a.cle_samples.max(1));
        let mut stage: Option<Stage> = None;
        let (g, cle, sel) = select_equalization(&g, &config, data, data, &mut |done, total| {
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
        selection = Some(sel);
        (g, equalized(cle))
    } else {
        transform(g, base, mode)
    };
    if let Some(path) = &a.import {
        // Encodings from a file instead of calibration (checks them against this model).
        let text = read_text(path)?;
        let mut sim = QuantSim::new(g, QuantSimConfig { skip: config.skip, ..encodings_config(&text) })?;
        sim.import_aimet_json(&text).map_err(|e| failed_at(path, e))?;
        let (n_par, n_act) = write_outputs(a, &sim)?;
        out!("imported {n_par} weight and {n_act} activation encodings from {}", path.display());
        return Ok(());
    }
    let calib = a.calib.as_ref().ok_or_else(|| CliError::Usage("--calib is required (or --import E.json)".into()))?;
    let set = calib_set(&g, calib)?;
    let data = set.batches;
    let t0 = Instant::now();
    let mut sim = QuantSim::new(g, config.clone())?;
    let adaround_report = if with_adaround {
        let mut stage: Option<(usize, Stage)> = None;
        let end = |stage: Option<(usize, Stage)>| {
            if let Some((_, mut s)) = stage {
                s.set(ada.iterations);
                s.finish();
            }
        };
        let r = adaround(&mut sim, &data, &ada, &mut |p| {
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
    calibrate(&mut sim, &data, &progress)?;
    let bias_correction = match a.bias_correction {
        None => None,
        Some(kind) => {
            use qplay_core::quant::bias_correction::{correct_biases, correct_biases_analytical};
            let r = match kind {
                BiasCorrection::Empirical => correct_biases(&mut sim, &data[..data.len().min(16)])?,
                BiasCorrection::Analytical => correct_biases_analytical(&mut sim, &done.stats)?,
            };
            calibrate(&mut sim, &data, &progress)?;
            Some(r)
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let (n_par, n_act) = write_outputs(a, &sim)?;
    let Transformed { fold, cle, .. } = done;
    if let Some(p) = &a.report {
        let analysis = qplay_core::quant::analysis::analyze(&sim, &data[..data.len().min(10)])?;
        let report = serde_json::json!({
            "analysis": analysis,
            "model": a.model.display().to_string(),
            "recipe": a.recipe.to_possible_value().map(|v| v.get_name().to_string()),
            "cle": cle,
            "cle_selection": selection,
            "bias_correction": bias_correction,
            "adaround": adaround_report,
            "config": {"mode": format!("{:?}", config.mode), "weight_bits": config.weight_bits, "act_bits": config.act_bits, "per_channel": config.per_channel, "scheme": format!("{:?}", config.scheme)},
            "bn_fold": fold,
            "calibration_batches": data.len(),
            "calibration_samples": set.samples,
            "activation_quantizers": n_act,
            "param_quantizers": n_par,
            "seconds": secs,
        });
        write_file(p, serde_json::to_string_pretty(&report).unwrap_or_default())?;
    }
    if let Some(c) = &cle {
        out!("equalized: {} ReLU6 replaced by ReLU, {} layer groups, {} scaled sets, {} high biases absorbed", c.relu6_replaced.len(), c.groups.len(), c.sets.len(), c.absorbed.len());
    }
    out!("quantized: {} BN folded, {n_par} weight and {n_act} activation encodings from {} calibration samples ({} batches) in {secs:.2} s", fold["folded"], set.samples, data.len());
    Ok(())
}

fn calibrate(sim: &mut QuantSim, data: &[qplay_core::Tensor], progress: &Progress) -> CliResult<()> {
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
