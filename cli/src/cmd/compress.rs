//! `qplay compress`: spatial SVD, weight SVD or channel pruning to a MAC target, with AIMET's greedy per-layer
//! ratio search scored on the user's data; writes the compressed FP32 model and a report.

use crate::cmd::quantize::{quantize_graph, QuantOptions, Quantized};
use crate::common::{failed_at, write_file, CliError, CliResult, Global};
use crate::data::{self, Settings};
use crate::out;
use crate::progress::{Progress, Stage};
use clap::ValueEnum;
use qplay_core::eval::{Evaluator, Target};
use qplay_core::passes::prune::{Sampling, Selection};
use qplay_core::search::compress::{compress, svd_then_pruning, CompressConfig, Method};
use std::path::PathBuf;

/// Compress a model to a share of its MACs (SVD or channel pruning), choosing each layer's ratio
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model
    #[arg(value_name = "MODEL.onnx")]
    model: PathBuf,
    /// Samples the model is run on: one .npy with N samples along axis 0, a directory of .npy
    /// files, or a directory of photos (with --preprocess). Without --eval-data, candidates are
    /// scored by the SQNR of their outputs against the original model's on these.
    #[arg(long, value_name = "X.npy|DIR")]
    calib: PathBuf,
    /// How photos become the model's input (the preprocessing JSON)
    #[arg(long, value_name = "MODEL.json")]
    preprocess: Option<PathBuf>,
    #[arg(long, value_enum)]
    method: MethodArg,
    /// Share of the original MACs to keep, 0 < R <= 1
    #[arg(long, value_name = "R", value_parser = parse_target)]
    target_macs: f64,
    /// Score candidates on these samples instead (with --labels or --reference)
    #[arg(long, value_name = "X.npy")]
    eval_data: Option<PathBuf>,
    /// Class indices of --eval-data: the score is accuracy in %
    #[arg(long, value_name = "Y.npy", requires = "eval_data", conflicts_with = "reference")]
    labels: Option<PathBuf>,
    /// Reference outputs of --eval-data: the score is pooled SQNR in dB
    #[arg(long, value_name = "R.npy", requires = "eval_data")]
    reference: Option<PathBuf>,
    /// N: the candidate ratios are k/N for k = 1..N-1 (0.1 ... 0.9 for 10)
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=100))]
    candidates: u32,
    /// Leave this node as it is (repeatable)
    #[arg(long, value_name = "NODE")]
    skip: Vec<String>,
    /// Round every rank (or kept channel count) up to a multiple of K (4 or 8 give SIMD-friendly
    /// shapes)
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    rank_multiple: u32,
    /// Seed of channel pruning's sampling of reconstruction points
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// svd+pruning: the share of the MACs the SVD stage keeps (default: the square root of
    /// --target-macs)
    #[arg(long, value_name = "R", value_parser = parse_target)]
    svd_target: Option<f64>,
    /// Channel pruning: how the kept channels are chosen
    #[arg(long, value_enum, default_value_t = SelectionArg::Magnitude)]
    selection: SelectionArg,
    /// Channel pruning: ridge strength of the reconstruction, relative to the mean diagonal of XᵀX
    #[arg(long, value_name = "L", default_value_t = 1e-3)]
    ridge: f64,
    /// Evaluations of the local search after AIMET's selection (0: keep AIMET's selection;
    /// default: 2 per layer plus 10)
    #[arg(long, value_name = "N")]
    refine_steps: Option<usize>,
    /// Write the compressed FP32 model
    #[arg(long, value_name = "COMPRESSED.onnx")]
    out: Option<PathBuf>,
    /// Write the report: the sensitivity table, the search, the choices and the costs
    #[arg(long, value_name = "REPORT.json")]
    report: Option<PathBuf>,
    /// Then quantize the compressed model (calibrated on --calib) by the options below, and score
    /// it as the compressed model is scored
    #[arg(long)]
    quantize: bool,
    #[command(flatten, next_help_heading = "Quantization of the compressed model (with --quantize)")]
    quant: QuantOptions,
    /// With --quantize: write the compressed and quantized model as QDQ ONNX
    #[arg(long, value_name = "QDQ.onnx", requires = "quantize")]
    qdq_out: Option<PathBuf>,
    /// With --quantize: write the encodings (AIMET's JSON format)
    #[arg(long, value_name = "E.json", requires = "quantize")]
    encodings: Option<PathBuf>,
    /// With --quantize: write the transformed FP32 model the encodings refer to (the compressed
    /// model with BN folded, and equalized or AdaRounded by the recipe)
    #[arg(long, value_name = "TRANSFORMED.onnx", requires = "quantize")]
    transformed_out: Option<PathBuf>,
    /// Print {"macs_ratio", "params_ratio", "score", "baseline_score", "layers": [...]} as one line
    #[arg(long)]
    json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum MethodArg {
    /// Each kh x kw conv becomes kh x 1 then 1 x kw through rank r
    SpatialSvd,
    /// Each conv becomes 1 x 1 through rank r then kh x kw; Gemm and MatMul two products
    WeightSvd,
    /// Input channels removed (with the producers' output channels), weights refitted
    ChannelPruning,
    /// Spatial SVD to the square root of the target, then channel pruning to the rest (AIMET's
    /// recommended order)
    #[value(name = "svd+pruning")]
    SvdPruning,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SelectionArg {
    /// AIMET's: the channels of largest weight magnitude
    Magnitude,
    /// Remove, one at a time, the channel adding least output error (data-aware)
    Greedy,
}

fn parse_target(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not in (0, 1]: give the share of the MACs to keep, e.g. 0.5"))
    }
}

pub fn run(a: &Args, global: &Global) -> CliResult<()> {
    let (g, _) = global.load(&a.model)?;
    let settings = a.preprocess.as_deref().map(Settings::read).transpose()?;
    let limits = global.limits();
    for s in &a.skip {
        if !g.nodes.iter().any(|n| &n.name == s) {
            return Err(CliError::Usage(format!("--skip '{s}': the model has no node of that name")));
        }
    }
    let calib = data::load(global, &g, &a.calib, settings.as_ref(), 32)?.batches;
    if calib.is_empty() {
        return Err(failed_at(&a.calib, "no samples"));
    }
    let shapes = qplay_core::cost::infer_shapes(&g, &[calib[0].shape().iter().enumerate().map(|(i, &d)| if i == 0 { 1 } else { d }).collect()], &limits).map_err(|e| failed_at(&a.model, e))?;
    let eval = match &a.eval_data {
        None => Evaluator::against_model(&g, calib.clone(), limits.clone())?,
        Some(p) => evaluator(global, &g, p, a.labels.as_deref(), a.reference.as_deref(), settings.as_ref())?,
    };
    let method = match a.method {
        MethodArg::SpatialSvd => Method::SpatialSvd,
        MethodArg::WeightSvd => Method::WeightSvd,
        MethodArg::ChannelPruning | MethodArg::SvdPruning => Method::ChannelPruning,
    };
    let cfg = CompressConfig {
        candidates: a.candidates as usize,
        skip: a.skip.clone(),
        multiple: a.rank_multiple as usize,
        refine_steps: a.refine_steps,
        selection: match a.selection {
            SelectionArg::Magnitude => Selection::Magnitude,
            SelectionArg::Greedy => Selection::Greedy,
        },
        sampling: Sampling { seed: a.seed, ridge: a.ridge },
        ..CompressConfig::new(method, a.target_macs)
    };
    let progress = Progress::new(global.quiet);
    let mut stage: Option<Stage> = None;
    let mut on_progress = |name: &str, done: usize, total: usize| {
        if stage.as_ref().is_none_or(|s| s.name() != name) {
            if let Some(s) = stage.take() {
                s.finish();
            }
            stage = Some(progress.stage(name, total, "evaluations"));
        }
        if let Some(s) = stage.as_mut() {
            s.set(done);
        }
        true
    };
    let (out_graph, stages) = if a.method == MethodArg::SvdPruning {
        let (g2, [r1, r2]) = svd_then_pruning(&g, &shapes, &cfg, a.svd_target, &eval, &calib, &mut on_progress).map_err(|e| failed_at(&a.model, e))?;
        (g2, vec![r1, r2])
    } else {
        let (g2, r) = compress(&g, &shapes, &cfg, &eval, &calib, &mut on_progress).map_err(|e| failed_at(&a.model, e))?;
        (g2, vec![r])
    };
    drop(on_progress);
    if let Some(s) = stage.take() {
        s.finish();
    }
    if let Some(p) = &a.out {
        write_file(p, qplay_core::onnx::export::fp32_model(&out_graph)?)?;
    }
    let quantized = if a.quantize {
        let Quantized { sim, .. } = quantize_graph(out_graph, &a.quant, &[], a.seed, &calib, &progress)?;
        if let Some(p) = &a.qdq_out {
            write_file(p, qplay_core::onnx::export::qdq_model(&sim)?)?;
        }
        if let Some(p) = &a.encodings {
            write_file(p, serde_json::to_string_pretty(&sim.to_aimet_json()).unwrap_or_default())?;
        }
        if let Some(p) = &a.transformed_out {
            write_file(p, qplay_core::onnx::export::fp32_model(sim.graph())?)?;
        }
        Some(simulated_score(&sim, &eval)?)
    } else {
        None
    };
    let (first, last) = (&stages[0], &stages[stages.len() - 1]);
    let macs_ratio = last.macs_after as f64 / first.macs_before.max(1) as f64;
    let params_ratio = last.params_after as f64 / first.params_before.max(1) as f64;
    let layers: Vec<&qplay_core::search::compress::LayerChoice> = stages.iter().flat_map(|r| &r.layers).collect();
    if let Some(p) = &a.report {
        let text = if stages.len() == 1 { serde_json::to_string_pretty(first) } else { serde_json::to_string_pretty(&serde_json::json!({ "stages": stages })) };
        write_file(p, text.unwrap_or_default())?;
    }
    let unit = match last.score_kind {
        qplay_core::eval::ScoreKind::AccuracyPct => "%",
        qplay_core::eval::ScoreKind::SqnrDb => "dB",
    };
    let name = a.method.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string());
    if a.json {
        let j = serde_json::json!({
            "method": name,
            "target_macs": a.target_macs,
            "macs_ratio": macs_ratio,
            "params_ratio": params_ratio,
            "score": last.score,
            "baseline_score": first.baseline_score,
            "score_kind": last.score_kind,
            "selection_score": last.selection_score,
            "evaluations": stages.iter().map(|r| r.evaluations).sum::<usize>(),
            "quantized_score": quantized,
            "uniform": last.uniform,
            "layers": layers,
        });
        out!("{j}");
    } else {
        out!("{name}: MACs {} -> {} ({macs_ratio:.4} of the original, target {}), parameters {params_ratio:.4}", first.macs_before, last.macs_after, a.target_macs);
        out!("score {:.2} {unit} (original {:.2} {unit}; greedy selection {:.2} {unit}), {} evaluations", last.score, first.baseline_score, last.selection_score, stages.iter().map(|r| r.evaluations).sum::<usize>());
        if let Some(u) = &last.uniform {
            out!("one ratio for every layer ({:.3}): score {:.2} {unit} at {:.4} of the MACs", u.ratio, u.score, u.macs_ratio);
        }
        if let Some(q) = quantized {
            out!("quantized ({}): score {q:.2} {unit}", a.quant.describe());
        }
        for (r, l) in stages.iter().flat_map(|r| r.layers.iter().map(move |l| (r, l))) {
            match l.ratio {
                Some(x) => out!("  {:<28} ratio {x:.2}  {} {}/{}  MACs {} -> {}", l.name, if r.method == Method::ChannelPruning { "channels" } else { "rank" }, l.kept, l.of, l.macs_before, l.macs_after),
                None => out!("  {:<28} kept", l.name),
            }
        }
    }
    Ok(())
}

/// The evaluation set `data` of `--eval-data`, scored against `labels` (accuracy), `reference`
/// outputs (SQNR) or the photos' own labels.
pub(crate) fn evaluator(global: &Global, g: &qplay_core::Graph, data: &std::path::Path, labels: Option<&std::path::Path>, reference: Option<&std::path::Path>, settings: Option<&Settings>) -> CliResult<Evaluator> {
    let set = data::load(global, g, data, settings, 32)?;
    let target = match (labels, reference) {
        (Some(l), _) => Target::Labels(global.read_npy(l)?.to_i64_vec()),
        (None, Some(r)) => Target::Reference(global.read_tensor(r)?.to_f32_vec()),
        (None, None) => match set.labels {
            Some(l) => Target::Labels(l),
            None => return Err(CliError::Usage("--eval-data needs --labels Y.npy or --reference R.npy".into())),
        },
    };
    Ok(Evaluator { batches: set.batches, target, limits: global.limits() })
}

/// The score of the quantization simulation (what the QDQ export computes) on the evaluation set.
pub(crate) fn simulated_score(sim: &qplay_core::quant::QuantSim, eval: &Evaluator) -> CliResult<f64> {
    Ok(eval.score_sim(sim)?)
}
