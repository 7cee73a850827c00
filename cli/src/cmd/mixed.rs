//! `qplay mixed-precision`: a bit-width per quantizer group on the whole Pareto curve of score
//! against relative BOPs; the point meeting the target is written as encodings and a model.

use crate::cmd::compress::evaluator;
use crate::common::{failed_at, transform, write_file, CliError, CliResult, Global, ModeArg, Transform};
use crate::data::{self, Settings};
use crate::out;
use crate::progress::{Progress, Stage};
use qplay_core::exec::int8::Int8Executor;
use qplay_core::passes::adaround::AdaroundConfig;
use qplay_core::quant::amp::{self, Candidate, Point, Setup, Space, Target};
use qplay_core::quant::QuantSimConfig;
use std::path::PathBuf;
use std::time::Instant;

/// Choose a bit-width per layer group: the Pareto curve of score against BOPs, and the point that
/// meets a target (accuracy drop, BOPs, or weight size)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model
    #[arg(value_name = "MODEL.onnx")]
    model: PathBuf,
    /// Calibration samples: one .npy with N samples along axis 0, a directory of .npy files, or
    /// of photos (with --preprocess)
    #[arg(long, value_name = "X.npy|DIR")]
    calib: PathBuf,
    /// How photos become the model's input (the preprocessing JSON)
    #[arg(long, value_name = "MODEL.json")]
    preprocess: Option<PathBuf>,
    /// The samples every point is scored on
    #[arg(long, value_name = "X.npy|DIR")]
    eval_data: PathBuf,
    /// Class indices of --eval-data: the score is accuracy in %
    #[arg(long, value_name = "Y.npy", conflicts_with = "reference")]
    labels: Option<PathBuf>,
    /// Reference outputs of --eval-data: the score is pooled SQNR in dB
    #[arg(long, value_name = "R.npy")]
    reference: Option<PathBuf>,
    /// The bit-widths a group may take, as wXaY
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "w4a8,w8a8,w8a16,w16a16")]
    candidates: Vec<String>,
    /// One weight encoding per output channel
    #[arg(long)]
    per_channel: bool,
    /// The FP32 transformation first: BN folding, or BN folding and cross-layer equalization
    #[arg(long, value_enum, default_value_t = Transform::None)]
    recipe: Transform,
    #[arg(long, value_enum, default_value_t = ModeArg::Qplay)]
    mode: ModeArg,
    /// How each candidate's ranges are chosen: minmax, sqnr (a search over a histogram, weights
    /// and activations), percentile or percentile:P (activations)
    #[arg(long, value_name = "SCHEME", default_value = "minmax", value_parser = crate::cmd::quantize::parse_scheme)]
    scheme: qplay_core::quant::CalibScheme,
    /// Target: the cheapest point within D of the FP32 score (accuracy), or of the most precise
    /// candidate's (SQNR)
    #[arg(long, value_name = "D", group = "target")]
    max_drop: Option<f64>,
    /// Target: the best point at most F times the BOPs of uniform W8A8
    #[arg(long, value_name = "F", group = "target")]
    target_bops: Option<f64>,
    /// Target: the best point whose weights take at most M MB (10^6 bytes)
    #[arg(long, value_name = "M", group = "target")]
    target_size_mb: Option<f64>,
    /// Target: the best point predicted to run in at most MS milliseconds in the integer engine
    /// on this machine (each group timed at each candidate; the chosen point is then measured)
    #[arg(long, value_name = "MS", group = "target")]
    target_latency_ms: Option<f64>,
    /// Learn the rounding of the candidates below 8 weight bits by AdaRound, this many
    /// iterations per layer (0: round to nearest)
    #[arg(long, value_name = "N", default_value_t = 0)]
    adaround_iters: usize,
    /// Write the curve: [{"relative_bops", "score", "weight_bytes", "bits": {"<layer>": [w, a]}}]
    #[arg(long, value_name = "PARETO.json")]
    pareto: Option<PathBuf>,
    /// Write the chosen point's encodings (AIMET's JSON format, a bit-width per tensor)
    #[arg(long, value_name = "E.json")]
    encodings: Option<PathBuf>,
    /// Write the transformed FP32 model the encodings refer to
    #[arg(long, value_name = "T.onnx")]
    fp32_out: Option<PathBuf>,
    /// Write the chosen point as a QDQ model (bit-widths above 8 in 16-bit QuantizeLinear /
    /// DequantizeLinear: standard at opset 21 or later, else onnxruntime's com.microsoft domain)
    #[arg(long, value_name = "QDQ.onnx")]
    out: Option<PathBuf>,
    /// Write the whole search: groups, the phase-1 table, every point visited, the uniform points
    #[arg(long, value_name = "REPORT.json")]
    report: Option<PathBuf>,
    /// Each step of phase 2 scores this many of the moves phase 1 estimates best and takes the
    /// best per BOP (1: phase 1's estimate alone decides; more finds better points, at that many
    /// evaluations per step)
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    lookahead: u32,
    /// Print the chosen point as one JSON line
    #[arg(long)]
    json: bool,
}

fn point_json(p: &Point) -> serde_json::Value {
    serde_json::json!({ "relative_bops": p.relative_bops, "score": p.score, "weight_bytes": p.weight_bytes, "latency_ms": p.latency_ms, "bits": p.bits })
}

pub fn run(a: &Args, global: &Global) -> CliResult<()> {
    let target_given = [a.max_drop.is_some(), a.target_bops.is_some(), a.target_size_mb.is_some(), a.target_latency_ms.is_some()].iter().filter(|&&x| x).count();
    if target_given != 1 {
        return Err(CliError::Usage("give one target: --max-drop D, --target-bops F, --target-size-mb M or --target-latency-ms MS".into()));
    }
    if let Some(ms) = a.target_latency_ms.filter(|ms| !(ms.is_finite() && *ms > 0.0)) {
        return Err(CliError::Usage(format!("--target-latency-ms {ms} is not a positive number")));
    }
    if a.target_latency_ms.is_some() && a.mode != ModeArg::Qplay {
        return Err(CliError::Usage("--target-latency-ms times the integer engine, which runs --mode qplay only".into()));
    }
    if let Some(f) = a.target_bops.filter(|f| !(f.is_finite() && *f > 0.0)) {
        return Err(CliError::Usage(format!("--target-bops {f} is not a positive number")));
    }
    if let Some(m) = a.target_size_mb.filter(|m| !(m.is_finite() && *m > 0.0)) {
        return Err(CliError::Usage(format!("--target-size-mb {m} is not a positive number")));
    }
    if let Some(d) = a.max_drop.filter(|d| !(d.is_finite() && *d >= 0.0)) {
        return Err(CliError::Usage(format!("--max-drop {d} is not a non-negative number")));
    }
    let candidates = a.candidates.iter().map(|s| Candidate::parse(s)).collect::<Result<Vec<_>, _>>().map_err(|e| CliError::Usage(format!("--candidates: {}", e.to_string().trim_start_matches("candidates: "))))?;
    let (g, _) = global.load(&a.model)?;
    let settings = a.preprocess.as_deref().map(Settings::read).transpose()?;
    let calib = data::load(global, &g, &a.calib, settings.as_ref(), 32)?.batches;
    if calib.is_empty() {
        return Err(failed_at(&a.calib, "no samples"));
    }
    let eval = evaluator(global, &g, &a.eval_data, a.labels.as_deref(), a.reference.as_deref(), settings.as_ref())?;
    let fp32_score = eval.score(&g)?;
    // Phase 1 by the outputs' SQNR against FP32 on the same samples (as AIMET measures it).
    let sensitivity_eval = qplay_core::eval::Evaluator::against_model(&g, eval.batches.clone(), global.limits())?;
    let mode = a.mode.into();
    let (tg, _) = transform(g, a.recipe, mode);
    let config = QuantSimConfig { mode, per_channel: a.per_channel, scheme: a.scheme, ..Default::default() };
    let progress = Progress::new(global.quiet);
    let adaround = (a.adaround_iters > 0).then(|| AdaroundConfig { iterations: a.adaround_iters, ..Default::default() });
    let mut stage: Option<Stage> = None;
    let setup = Setup { graph: &tg, config: &config, calib: &calib, limits: global.limits(), adaround };
    let space = Space::new(&setup, &candidates, &mut |d, t| {
        stage.get_or_insert_with(|| progress.stage("calibrate", t, "steps")).set(d);
        true
    })
    .map_err(|e| failed_at(&a.model, e))?;
    if let Some(s) = stage {
        s.finish();
    }
    // Evaluations finish on several threads: the progress line takes them in turn.
    let stage: std::sync::Mutex<Option<Stage>> = std::sync::Mutex::new(None);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut result = amp::run(&space, &eval, &sensitivity_eval, a.lookahead as usize, threads, &|d, t| {
        if let Ok(mut s) = stage.lock() {
            s.get_or_insert_with(|| progress.stage("search", t, "evaluations")).set(d);
        }
        true
    })
    .map_err(|e| failed_at(&a.model, e))?;
    if let Some(s) = stage.into_inner().ok().flatten() {
        s.finish();
    }
    // The integer engine's time per group and candidate on one sample, here (qplay mode).
    let clock = Instant::now();
    let ms = || clock.elapsed().as_secs_f64() * 1e3;
    let sample = calib[0].first_item()?;
    let latency = if a.mode == ModeArg::Qplay {
        let mut stage = progress.stage("time", space.candidates.len() * amp::LATENCY_TIMINGS, "timings");
        let table = space.latency_table(&sample, amp::LATENCY_TIMINGS, &ms, &mut |d, _| {
            stage.set(d);
            true
        })?;
        stage.finish();
        for points in [&mut result.pareto, &mut result.visited, &mut result.uniform] {
            table.annotate(points);
        }
        Some(table)
    } else {
        None
    };
    let target = match (a.max_drop, a.target_bops, a.target_size_mb) {
        (Some(drop), _, _) => {
            let baseline = match eval.kind() {
                qplay_core::eval::ScoreKind::AccuracyPct => fp32_score,
                qplay_core::eval::ScoreKind::SqnrDb => result.visited[0].score,
            };
            Target::MaxDrop { drop, baseline }
        }
        (_, Some(f), _) => Target::Bops(f),
        (_, _, Some(m)) => Target::Bytes((m * 1e6) as u64),
        _ => Target::LatencyMs(a.target_latency_ms.unwrap_or_default()),
    };
    // The part of a budget the curve's points leave unused, spent group by group.
    if let Some(within) = target.within(&space, latency.as_ref()) {
        let stage = std::cell::RefCell::new(progress.stage("fill the budget", a.lookahead as usize, "evaluations"));
        amp::fill(&space, &eval, &mut result, &*within, a.lookahead as usize, &|n| {
            stage.borrow_mut().set(n);
            true
        })
        .map_err(|e| failed_at(&a.model, e))?;
        stage.into_inner().finish();
        if let Some(t) = &latency {
            for points in [&mut result.pareto, &mut result.visited] {
                t.annotate(points);
            }
        }
    }
    let chosen = amp::choose(&result.pareto, target).map_err(|e| CliError::Failed(e.to_string().trim_start_matches("target: ").to_string()))?;
    let sim = space.sim(&chosen.choice)?;
    // The chosen point timed whole, against the table's prediction.
    let measured_ms = match latency {
        Some(_) => {
            let mut exec = Int8Executor::new(&sim)?;
            Some(qplay_core::timing::median_ms(&mut || exec.run(vec![sample.clone()]).map(|_| ()), &ms, amp::LATENCY_TIMINGS)?)
        }
        None => None,
    };
    if let Some(p) = &a.pareto {
        write_file(p, serde_json::to_string_pretty(&result.pareto.iter().map(point_json).collect::<Vec<_>>()).unwrap_or_default())?;
    }
    if let Some(p) = &a.encodings {
        write_file(p, serde_json::to_string_pretty(&sim.to_aimet_json()).unwrap_or_default())?;
    }
    if let Some(p) = &a.fp32_out {
        write_file(p, qplay_core::onnx::export::fp32_model(sim.graph())?)?;
    }
    if let Some(p) = &a.out {
        write_file(p, qplay_core::onnx::export::qdq_model(&sim)?)?;
    }
    if let Some(p) = &a.report {
        let j = serde_json::json!({
            "candidates": result.candidates.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "layers": space.layers().into_iter().map(|(name, macs)| serde_json::json!({"name": name, "macs": macs})).collect::<Vec<_>>(),
            "groups": result.groups,
            "sensitivity": result.sensitivity,
            "visited": result.visited.iter().map(point_json).collect::<Vec<_>>(),
            "uniform": result.uniform.iter().zip(&result.candidates).map(|(p, c)| serde_json::json!({"candidate": c.to_string(), "point": point_json(p)})).collect::<Vec<_>>(),
            "fp32_score": fp32_score,
            "evaluations": result.evaluations,
            "latency_table": latency,
        });
        write_file(p, serde_json::to_string_pretty(&j).unwrap_or_default())?;
    }
    let unit = match eval.kind() {
        qplay_core::eval::ScoreKind::AccuracyPct => "%",
        qplay_core::eval::ScoreKind::SqnrDb => "dB",
    };
    if a.json {
        let mut j = point_json(chosen);
        j["measured_latency_ms"] = serde_json::json!(measured_ms);
        out!("{j}");
    } else {
        out!("{} groups, {} candidates, {} evaluations; FP32 {fp32_score:.2} {unit}", result.groups.len(), result.candidates.len(), result.evaluations);
        for (p, c) in result.uniform.iter().zip(&result.candidates) {
            out!("  uniform {c:<7} {:.4} BOPs  {:.2} {unit}", p.relative_bops, p.score);
        }
        out!("Pareto curve ({} points):", result.pareto.len());
        for p in &result.pareto {
            out!("  {:.4} BOPs  {:.2} {unit}  {} weight bytes", p.relative_bops, p.score, p.weight_bytes);
        }
        out!("chosen: {:.4} BOPs, {:.2} {unit}, {} weight bytes", chosen.relative_bops, chosen.score, chosen.weight_bytes);
        if let (Some(p), Some(m)) = (chosen.latency_ms, measured_ms) {
            out!("  latency: {p:.2} ms predicted by the per-group table, {m:.2} ms measured ({:+.1} %)", 100.0 * (p - m) / m);
        }
        for (layer, b) in &chosen.bits {
            out!("  {layer:<32} W{}A{}", b[0], b[1]);
        }
    }
    Ok(())
}
