//! `qplay`: the command-line face of qplay-core. See `qplay --help`.

use qplay_core::graph::Dim;
use qplay_core::npy::{read_npy, write_npy_f32};
use qplay_core::preprocess::Preprocess;
use qplay_core::exec::int8::Int8Executor;
use qplay_core::passes::adaround::{adaround, AdaroundConfig};
use qplay_core::passes::bn_fold::OutputStats;
use qplay_core::quant::{CalibScheme, Mode, QuantSim, QuantSimConfig};
use qplay_core::{load_model, Executor, Graph, Limits, ModelInfo, Tensor};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage:
  qplay inspect MODEL.onnx [--json]
  qplay run MODEL.onnx (--input X.npy | --image PHOTO --preprocess MODEL.json) [--output Y.npy] [--labels CLASSES.txt]
            [--encodings E.json [--int8] [--recipe none|dfq]]
  qplay quantize MODEL.onnx --calib X.npy|DIR [--recipe none|dfq|adaround|dfq+adaround] [--weight-bits 8] [--act-bits 8]
            [--per-channel] [--scheme minmax|sqnr|percentile[:P]] [--mode qplay|aimet] [--bias-correction empirical|analytical] [--skip NODE]...
            [--adaround-iters 10000] [--seed 0] [--cle all|measured [--cle-samples 8]]
            [--import E.json (instead of calibrating)] [--encodings E.json] [--report R.json] [--out QDQ.onnx] [--fp32-out TRANSFORMED.onnx]
  qplay eval MODEL.onnx --data X.npy [--labels Y.npy] [--reference R.npy] [--output Y.npy] [--encodings E.json [--int8] [--recipe none|dfq]] [--json]
            [--dump DIR (with --encodings: every quantized activation as DIR/NNN.npy, named in DIR/index.json)]
  qplay bench MODEL.onnx [--input X.npy] [--encodings E.json [--int8]] [--runs N] [--json] [--profile]";

/// `println!` that ends the process quietly when stdout is closed (`qplay inspect m | head -1`)
/// instead of panicking, and with a one-line error on any other write failure.
macro_rules! out {
    ($($arg:tt)*) => {
        emit(format_args!($($arg)*))
    };
}

fn emit(line: std::fmt::Arguments) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("qplay: error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run_cli(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(m)) => {
            eprintln!("qplay: {m}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(m)) => {
            eprintln!("qplay: error: {m}");
            ExitCode::FAILURE
        }
    }
}

enum CliError {
    Usage(String),
    Failed(String),
}

impl From<qplay_core::Error> for CliError {
    fn from(e: qplay_core::Error) -> Self {
        CliError::Failed(e.to_string())
    }
}

type CliResult<T> = Result<T, CliError>;

/// Parsed `--flag value` / `--switch` options after the positional model path.
struct Opts {
    model: PathBuf,
    pairs: Vec<(String, Option<String>)>,
}

impl Opts {
    fn parse(args: &[String], switches: &[&str], valued: &[&str]) -> CliResult<Opts> {
        let mut model = None;
        let mut pairs = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if switches.contains(&name) {
                    pairs.push((name.to_string(), None));
                } else if valued.contains(&name) {
                    let v = it.next().ok_or_else(|| CliError::Usage(format!("--{name} needs a value")))?;
                    pairs.push((name.to_string(), Some(v.clone())));
                } else {
                    return Err(CliError::Usage(format!("unknown option --{name}")));
                }
            } else if model.is_none() {
                model = Some(PathBuf::from(a));
            } else {
                return Err(CliError::Usage(format!("unexpected argument '{a}'")));
            }
        }
        Ok(Opts { model: model.ok_or_else(|| CliError::Usage("MODEL is required".into()))?, pairs })
    }
    fn flag(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }
    fn values(&self, name: &str) -> Vec<String> {
        self.pairs.iter().filter(|(k, _)| k == name).filter_map(|(_, v)| v.clone()).collect()
    }
    fn value(&self, name: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref())
    }
}

fn read_file(path: &Path, limit: usize) -> CliResult<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    if meta.len() > limit as u64 {
        return Err(CliError::Failed(format!("{}: {} bytes, over the limit of {limit} bytes", path.display(), meta.len())));
    }
    std::fs::read(path).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))
}

fn load(path: &Path) -> CliResult<(Graph, ModelInfo)> {
    let limits = Limits::default();
    let bytes = read_file(path, limits.max_file_bytes)?;
    load_model(&bytes, &limits).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))
}

fn run_cli(args: &[String]) -> CliResult<()> {
    let Some(cmd) = args.first() else {
        return Err(CliError::Usage("a command is required".into()));
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "inspect" => inspect(&Opts::parse(rest, &["json"], &[])?),
        "run" => run(&Opts::parse(rest, &["int8"], &["input", "image", "preprocess", "output", "labels", "encodings", "recipe"])?),
        "quantize" => quantize(&Opts::parse(rest, &["per-channel"], &["bias-correction", "calib", "recipe", "weight-bits", "act-bits", "scheme", "encodings", "report", "out", "fp32-out", "skip", "mode", "adaround-iters", "seed", "import", "cle", "cle-samples"])?),
        "eval" => eval(&Opts::parse(rest, &["json", "int8"], &["data", "labels", "reference", "encodings", "recipe", "output", "dump"])?),
        "bench" => bench(&Opts::parse(rest, &["json", "profile", "int8"], &["runs", "input", "image", "preprocess", "encodings", "recipe"])?),
        "--help" | "-h" | "help" => {
            out!("{USAGE}");
            Ok(())
        }
        other => Err(CliError::Usage(format!("unknown command '{other}'"))),
    }
}

fn dims_string(g: &Graph, id: usize) -> (String, Vec<String>) {
    let v = &g.values[id];
    match &v.ty {
        Some(t) => (t.elem_type.clone(), t.dims.as_ref().map(|d| d.iter().map(Dim::to_string).collect()).unwrap_or_default()),
        None => ("?".into(), vec![]),
    }
}

fn inspect(o: &Opts) -> CliResult<()> {
    let (g, info) = load(&o.model)?;
    let params = g.parameter_count();
    let io = |ids: &[usize]| -> Vec<serde_json::Value> {
        ids.iter()
            .map(|&i| {
                let (ty, dims) = dims_string(&g, i);
                serde_json::json!({"name": g.values[i].name, "type": ty, "shape": dims})
            })
            .collect()
    };
    if o.flag("json") {
        let ops: serde_json::Map<String, serde_json::Value> = info.op_counts.iter().map(|(k, v)| (k.clone(), (*v).into())).collect();
        let j = serde_json::json!({
            "file_bytes": info.file_bytes,
            "ir_version": info.ir_version,
            "opset": info.opset,
            "producer": info.producer,
            "inputs": io(&g.inputs),
            "outputs": io(&g.outputs),
            "nodes": info.op_counts.iter().map(|(_, c)| c).sum::<usize>(),
            "op_counts": ops,
            "parameters": params,
            "fp32_bytes": params * 4,
        });
        out!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
        return Ok(());
    }
    out!("model      {}", o.model.display());
    out!("file       {} bytes, IR {}, opset {}, producer '{}'", info.file_bytes, info.ir_version, info.opset, info.producer);
    for (label, ids) in [("input", &g.inputs), ("output", &g.outputs)] {
        for &i in ids.iter() {
            let (ty, dims) = dims_string(&g, i);
            out!("{label:<10} {} {ty} [{}]", g.values[i].name, dims.join(", "));
        }
    }
    out!("parameters {params} ({:.2} MB as float32, {:.2} MB as int8)", params as f64 * 4.0 / 1e6, params as f64 / 1e6);
    let total: usize = info.op_counts.iter().map(|(_, c)| c).sum();
    out!("nodes      {total}");
    for (op, c) in &info.op_counts {
        out!("  {op:<22} {c}");
    }
    Ok(())
}

fn input_tensor(o: &Opts) -> CliResult<Tensor> {
    let limits = Limits::default();
    match (o.value("input"), o.value("image")) {
        (Some(p), None) => {
            let bytes = read_file(Path::new(p), limits.max_file_bytes)?;
            let t = read_npy(&bytes, limits.max_tensor_elements).map_err(|e| CliError::Failed(format!("{p}: {e}")))?;
            Ok(match t.as_f32() {
                Some(_) => t,
                None => Tensor::f32(t.shape().to_vec(), t.to_f32_vec())?,
            })
        }
        (None, Some(img)) => {
            let pp = o.value("preprocess").ok_or_else(|| CliError::Usage("--image needs --preprocess MODEL.json".into()))?;
            let text = String::from_utf8_lossy(&read_file(Path::new(pp), 1 << 20)?).into_owned();
            let pre = Preprocess::from_json(&text).map_err(|e| CliError::Failed(format!("{pp}: {e}")))?;
            let bytes = read_file(Path::new(img), 64 << 20)?;
            let decoded = image::load_from_memory(&bytes).map_err(|e| CliError::Failed(format!("{img}: cannot decode image: {e}")))?;
            let rgb = decoded.to_rgb8();
            Ok(pre.apply(rgb.as_raw(), rgb.width() as usize, rgb.height() as usize)?)
        }
        _ => Err(CliError::Usage("give exactly one of --input X.npy or --image PHOTO".into())),
    }
}

/// Class names: --labels, else the `labels` file named by the preprocessing JSON.
fn labels(o: &Opts) -> Option<Vec<String>> {
    let path = match (o.value("labels"), o.value("preprocess")) {
        (Some(l), _) => PathBuf::from(l),
        (None, Some(pp)) => {
            let j: serde_json::Value = serde_json::from_slice(&std::fs::read(pp).ok()?).ok()?;
            Path::new(pp).parent()?.join(j.get("labels")?.as_str()?)
        }
        _ => return None,
    };
    let text = std::fs::read_to_string(&path).ok()?;
    Some(text.lines().map(str::to_string).collect())
}

fn run(o: &Opts) -> CliResult<()> {
    let (g, _) = load(&o.model)?;
    let x = input_tensor(o)?;
    if g.inputs.len() != 1 {
        return Err(CliError::Failed(format!("the model has {} inputs; qplay run feeds exactly one", g.inputs.len())));
    }
    let mut model = Model::new(g, o)?;
    let t0 = Instant::now();
    let outs = model.run(x)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let y = &outs[0];
    let data = y.to_f32_vec();
    if let Some(p) = o.value("output") {
        std::fs::write(p, write_npy_f32(y.shape(), &data)).map_err(|e| CliError::Failed(format!("{p}: {e}")))?;
    }
    out!("output {:?} in {ms:.1} ms", y.shape());
    let rows = if y.rank() == 2 { y.shape()[0] } else { 1 };
    let is_vector = y.rank() <= 1 || (y.rank() == 2 && y.shape()[1] > 1);
    if is_vector && !data.is_empty() {
        let names = labels(o);
        let k = data.len() / rows;
        for r in 0..rows.min(8) {
            let row = &data[r * k..(r + 1) * k];
            if rows > 1 {
                out!("row {r}:");
            }
            for (rank, &(i, v)) in top_k(row, 5).iter().enumerate() {
                let name = names.as_ref().and_then(|n| n.get(i)).map(String::as_str).unwrap_or("");
                out!("  {}. {i:>4} {v:>10.4}  {name}", rank + 1);
            }
        }
        if rows > 8 {
            out!("({} more rows)", rows - 8);
        }
    }
    Ok(())
}

/// Time per op type over one run, measured between consecutive node outputs.
fn profile(exec: &mut Executor, x: &Tensor) -> CliResult<()> {
    let producer: std::collections::HashMap<usize, String> =
        exec.graph().nodes.iter().flat_map(|n| n.outputs.iter().map(move |&o| (o, format!("{} {}", n.op_type, n.name)))).collect();
    let mut spans: Vec<(String, f64)> = Vec::new();
    let mut last = Instant::now();
    exec.run_with_hook(vec![x.clone()], &mut |id, _| {
        let now = Instant::now();
        if let Some(p) = producer.get(&id) {
            spans.push((p.clone(), (now - last).as_secs_f64() * 1e3));
        }
        last = now;
        Ok(())
    })?;
    let mut by_op: Vec<(String, f64, usize)> = Vec::new();
    for (p, ms) in &spans {
        let op = p.split(' ').next().unwrap_or("").to_string();
        match by_op.iter_mut().find(|(k, _, _)| *k == op) {
            Some(e) => {
                e.1 += ms;
                e.2 += 1;
            }
            None => by_op.push((op, *ms, 1)),
        }
    }
    by_op.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (op, ms, n) in by_op {
        eprintln!("{op:<20} {n:>4} nodes {ms:>9.2} ms");
    }
    spans.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (p, ms) in spans.iter().take(12) {
        eprintln!("  {ms:>8.2} ms  {p}");
    }
    Ok(())
}

/// The FP32 executor, the simulated quantized model (`--encodings`), or the integer engine
/// (`--encodings --int8`).
enum Model {
    Fp32(Executor),
    Sim(qplay_core::quant::sim::SimExecutor),
    Int8(Box<Int8Executor>),
}

impl Model {
    fn new(g: Graph, o: &Opts) -> CliResult<Model> {
        Ok(match o.value("encodings") {
            None if o.flag("int8") => return Err(CliError::Usage("--int8 needs --encodings E.json (from qplay quantize)".into())),
            None => Model::Fp32(Executor::new(g, Limits::default())?),
            Some(path) => {
                // The encodings refer to the transformed model: redo the recipe's transformation.
                let text = String::from_utf8_lossy(&read_file(Path::new(path), 64 << 20)?).into_owned();
                let config = encodings_config(&text);
                let g = transform(g, o.value("recipe").unwrap_or("none"), config.mode)?.0;
                let mut sim = QuantSim::new(g, config)?;
                sim.import_aimet_json(&text).map_err(|e| CliError::Failed(format!("{path}: {e}")))?;
                if o.flag("int8") {
                    Model::Int8(Box::new(Int8Executor::new(&sim)?))
                } else {
                    Model::Sim(sim.executor()?)
                }
            }
        })
    }
    fn run(&mut self, x: Tensor) -> CliResult<Vec<Tensor>> {
        Ok(match self {
            Model::Fp32(e) => e.run(vec![x])?,
            Model::Sim(e) => e.run(vec![x])?,
            Model::Int8(e) => e.run(vec![x])?,
        })
    }
}

/// Quantizer placement for an imported file: per-channel when any parameter has several
/// encodings; qplay's placement when the file says so (files from AIMET use AIMET's).
fn encodings_config(text: &str) -> QuantSimConfig {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let per_channel = v["quantizer_args"]["per_channel_quantization"].as_bool().unwrap_or_else(|| {
        v["param_encodings"].as_array().is_some_and(|l| l.iter().any(|e| e["scale"].as_array().is_some_and(|s| s.len() > 1)))
            || v["param_encodings"].as_object().is_some_and(|m| m.values().any(|e| e.as_array().is_some_and(|l| l.len() > 1)))
    });
    let mode = if v["quantizer_args"]["qplay_mode"] == "qplay" { Mode::Qplay } else { Mode::Aimet };
    let bits = |k: &str| v["quantizer_args"][k].as_u64().map_or(8, |b| b as u32);
    QuantSimConfig { weight_bits: bits("param_bitwidth"), act_bits: bits("activation_bitwidth"), per_channel, mode, ..Default::default() }
}

/// Samples for calibration or evaluation from one .npy (N along axis 0) or a directory of .npy
/// files (sorted by name). Models with a fixed batch of 1 get one sample per tensor; others get
/// batches of up to `batch`.
fn samples(g: &Graph, path: &Path, batch: usize) -> CliResult<Vec<Tensor>> {
    let limits = Limits::default();
    let mut files: Vec<PathBuf> = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "npy"))
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(CliError::Failed(format!("{}: no .npy files", path.display())));
    }
    let fixed_batch = g.inputs.first().and_then(|&i| g.values[i].ty.as_ref()).and_then(|t| t.dims.as_ref()).and_then(|d| match d.first() {
        Some(Dim::Fixed(b)) => Some(*b),
        _ => None,
    });
    let step = fixed_batch.unwrap_or(batch).max(1);
    let mut out = Vec::new();
    for f in files.drain(..) {
        let t = read_npy(&read_file(&f, limits.max_file_bytes)?, limits.max_tensor_elements).map_err(|e| CliError::Failed(format!("{}: {e}", f.display())))?;
        let n = *t.shape().first().ok_or_else(|| CliError::Failed(format!("{}: a scalar is not a sample", f.display())))?;
        let d = t.to_f32_vec();
        let per = if n == 0 { 0 } else { d.len() / n };
        let mut i = 0;
        while i < n {
            let b = step.min(n - i);
            let mut shape = t.shape().to_vec();
            shape[0] = b;
            out.push(Tensor::f32(shape, d[i * per..(i + b) * per].to_vec())?);
            i += b;
        }
    }
    Ok(out)
}

/// The FP32 transformation of a recipe: BN folding, plus cross-layer equalization for dfq
/// (function-preserving in qplay mode, AIMET's `equalize_model` in AIMET mode).
/// Also returns the per-channel output statistics of the layers whose BN was folded (for
/// analytical bias correction).
fn transform(g: Graph, recipe: &str, mode: Mode) -> CliResult<(Graph, serde_json::Value, Option<qplay_core::passes::cle::CleReport>, Vec<OutputStats>)> {
    use qplay_core::passes::cle::{equalize_with, CleMode};
    Ok(match recipe {
        "none" => {
            let (g, fold) = qplay_core::passes::bn_fold::fold_batch_norms(g);
            let stats = fold.output_stats();
            (g, serde_json::json!({"folded": fold.folded.len(), "pairs": fold.folded, "unfolded": fold.unfolded}), None, stats)
        }
        "dfq" => {
            let (g, cle) = equalize_with(g, if mode == Mode::Aimet { CleMode::Aimet } else { CleMode::Preserving });
            let stats = cle.output_stats.clone();
            (g, serde_json::json!({"folded": cle.bn_folded}), Some(cle), stats)
        }
        "adaround" | "dfq+adaround" => {
            return Err(CliError::Usage(format!(
                "--recipe {recipe}: AdaRound changes the weights; run the model written by `qplay quantize --fp32-out` with its encodings instead"
            )))
        }
        r => return Err(CliError::Usage(format!("--recipe {r}: expected none or dfq"))),
    })
}

fn quantize(o: &Opts) -> CliResult<()> {
    let (g, _) = load(&o.model)?;
    let recipe = o.value("recipe").unwrap_or("none");
    let mode = match o.value("mode").unwrap_or("qplay") {
        "qplay" => Mode::Qplay,
        "aimet" => Mode::Aimet,
        m => return Err(CliError::Usage(format!("unknown mode '{m}' (qplay, aimet)"))),
    };

    let (base, with_adaround) = match recipe {
        "none" | "dfq" => (recipe, false),
        "adaround" => ("none", true),
        "dfq+adaround" => ("dfq", true),
        r => return Err(CliError::Usage(format!("unknown recipe '{r}' (none, dfq, adaround, dfq+adaround)"))),
    };
    let scheme = match o.value("scheme").unwrap_or("minmax") {
        "minmax" => CalibScheme::MinMax,
        "sqnr" => CalibScheme::Sqnr,
        "percentile" => CalibScheme::Percentile(99.99),
        s => match s.strip_prefix("percentile:").and_then(|p| p.parse::<f32>().ok()) {
            Some(p) => CalibScheme::Percentile(p),
            None => return Err(CliError::Usage(format!("unknown scheme '{s}' (minmax, sqnr, percentile, percentile:P)"))),
        },
    };
    let number = |k: &str, default: usize| -> CliResult<usize> { o.value(k).map_or(Ok(default), |v| v.parse().map_err(|_| CliError::Usage(format!("--{k} takes a number")))) };
    let bits = |k: &str| -> CliResult<u32> { number(k, 8).map(|b| b as u32) };
    let ada = AdaroundConfig { iterations: number("adaround-iters", 10_000)?, seed: number("seed", 0)? as u64, ..Default::default() };
    let config = QuantSimConfig { mode, weight_bits: bits("weight-bits")?, act_bits: bits("act-bits")?, per_channel: o.flag("per-channel"), scheme, skip: o.values("skip") };
    let measured = match o.value("cle").unwrap_or("all") {
        "all" => false,
        "measured" if base == "dfq" && mode == Mode::Qplay => true,
        "measured" => return Err(CliError::Usage("--cle measured needs --recipe dfq (or dfq+adaround) in qplay mode".into())),
        c => return Err(CliError::Usage(format!("--cle {c}: expected all or measured"))),
    };
    let mut selection = None;
    let (g, fold, cle, stats) = if measured {
        let calib = o.value("calib").ok_or_else(|| CliError::Usage("--cle measured needs --calib".into()))?;
        // The search quantizes the model once per set and twice more: it calibrates and scores on
        // the first --cle-samples samples only.
        use qplay_core::passes::cle_select::{leading_samples, select_equalization};
        let all = samples(&g, Path::new(calib), 32)?;
        let data = leading_samples(&all, number("cle-samples", 8)?.max(1));
        let (g, cle, sel) = select_equalization(&g, &config, data, data, &mut |done, total| {
            eprint!("\rchoosing equalization: {done}/{total} quantized models scored ");
            true
        })?;
        eprintln!();
        out!(
            "measured equalization: {} of {} sets equalized, output SQNR {:.2} dB (none {:.2} dB, all {:.2} dB) on the calibration data",
            sel.sets.iter().filter(|s| s.equalized).count(),
            sel.sets.len(),
            sel.chosen_db,
            sel.none_db,
            sel.all_db
        );
        selection = Some(sel);
        let stats = cle.output_stats.clone();
        (g, serde_json::json!({"folded": cle.bn_folded}), Some(cle), stats)
    } else {
        transform(g, base, mode)?
    };
    if let Some(path) = o.value("import") {
        // Encodings from a file instead of calibration (checks them against this model).
        let text = String::from_utf8_lossy(&read_file(Path::new(path), 64 << 20)?).into_owned();
        let mut sim = QuantSim::new(g, QuantSimConfig { skip: config.skip, ..encodings_config(&text) })?;
        sim.import_aimet_json(&text).map_err(|e| CliError::Failed(format!("{path}: {e}")))?;
        return write_outputs(o, &sim).map(|n| out!("imported {} weight and {} activation encodings from {path}", n.0, n.1));
    }
    let calib = o.value("calib").ok_or_else(|| CliError::Usage("--calib is required (or --import E.json)".into()))?;
    let data = samples(&g, Path::new(calib), 32)?;
    let t0 = Instant::now();
    let mut sim = QuantSim::new(g, config.clone())?;
    let adaround_report = if with_adaround {
        let mut last = (usize::MAX, 0);
        let r = adaround(&mut sim, &data, &ada, &mut |p| {
            let tenth = p.iteration * 10 / p.iterations;
            if (p.layer, tenth) != last {
                last = (p.layer, tenth);
                eprint!("\radaround: layer {}/{} {:<40} {:>3} % loss {:.5}  ", p.layer + 1, p.layers, p.node, tenth * 10, p.recon);
            }
            true
        })?;
        eprintln!();
        Some(r)
    } else {
        None
    };
    sim.calibrate(&data)?;
    let bias_correction = match o.value("bias-correction") {
        None => None,
        Some(kind) => {
            use qplay_core::quant::bias_correction::{correct_biases, correct_biases_analytical};
            let r = match kind {
                "empirical" => correct_biases(&mut sim, &data[..data.len().min(16)])?,
                "analytical" => correct_biases_analytical(&mut sim, &stats)?,
                k => return Err(CliError::Usage(format!("--bias-correction {k}: expected empirical or analytical"))),
            };
            sim.calibrate(&data)?;
            Some(r)
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let (n_par, n_act) = write_outputs(o, &sim)?;
    if let Some(p) = o.value("report") {
        let analysis = qplay_core::quant::analysis::analyze(&sim, &data[..data.len().min(10)])?;
        let report = serde_json::json!({
            "analysis": analysis,
            "model": o.model.display().to_string(),
            "recipe": recipe,
            "cle": cle,
            "cle_selection": selection,
            "bias_correction": bias_correction,
            "adaround": adaround_report,
            "config": {"mode": format!("{:?}", config.mode), "weight_bits": config.weight_bits, "act_bits": config.act_bits, "per_channel": config.per_channel, "scheme": format!("{:?}", config.scheme)},
            "bn_fold": fold,
            "calibration_batches": data.len(),
            "activation_quantizers": n_act,
            "param_quantizers": n_par,
            "seconds": secs,
        });
        std::fs::write(p, serde_json::to_string_pretty(&report).unwrap_or_default()).map_err(|e| CliError::Failed(format!("{p}: {e}")))?;
    }
    if let Some(c) = &cle {
        out!("equalized: {} ReLU6 replaced by ReLU, {} layer groups, {} scaled sets, {} high biases absorbed", c.relu6_replaced.len(), c.groups.len(), c.sets.len(), c.absorbed.len());
    }
    out!("quantized: {} BN folded, {n_par} weight and {n_act} activation encodings from {} calibration batches in {secs:.2} s", fold["folded"], data.len());

    Ok(())
}

/// Writes what `quantize` was asked for: encodings (--encodings), the QDQ model (--out) and the
/// FP32 transformed model (--fp32-out). Returns the numbers of weight and activation encodings.
fn write_outputs(o: &Opts, sim: &QuantSim) -> CliResult<(usize, usize)> {
    let write = |p: &str, bytes: Vec<u8>| std::fs::write(p, bytes).map_err(|e| CliError::Failed(format!("{p}: {e}")));
    let enc = sim.to_aimet_json();
    if let Some(p) = o.value("encodings") {
        write(p, serde_json::to_string_pretty(&enc).unwrap_or_default().into_bytes())?;
    }
    if let Some(p) = o.value("out") {
        write(p, qplay_core::onnx::export::qdq_model(sim)?)?;
    }
    if let Some(p) = o.value("fp32-out") {
        write(p, qplay_core::onnx::export::fp32_model(sim.graph())?)?;
    }
    let count = |k: &str| enc[k].as_array().map_or(0, Vec::len);
    Ok((count("param_encodings"), count("activation_encodings")))
}

/// The simulation's quantized activations over all samples, concatenated along the first axis,
/// in the order they were produced.
#[derive(Default)]
struct Dump {
    values: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl Dump {
    fn add(&mut self, name: &str, t: &Tensor) {
        let Some(d) = t.as_f32() else { return };
        match self.values.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, shape, data)) if shape[1..] == t.shape()[1..] && !shape.is_empty() => {
                shape[0] += t.shape()[0];
                data.extend_from_slice(d);
            }
            Some(_) => {}
            None => self.values.push((name.to_string(), t.shape().to_vec(), d.to_vec())),
        }
    }

    fn write(&self, dir: &Path) -> CliResult<()> {
        let fail = |e: std::io::Error| CliError::Failed(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(fail)?;
        let mut index = serde_json::Map::new();
        for (i, (name, shape, data)) in self.values.iter().enumerate() {
            let file = format!("{i:03}.npy");
            std::fs::write(dir.join(&file), write_npy_f32(shape, data)).map_err(fail)?;
            index.insert(name.clone(), file.into());
        }
        std::fs::write(dir.join("index.json"), serde_json::to_string_pretty(&index).unwrap_or_default()).map_err(fail)
    }
}

fn eval(o: &Opts) -> CliResult<()> {
    let (g, _) = load(&o.model)?;
    let data = samples(&g, Path::new(o.value("data").ok_or_else(|| CliError::Usage("--data is required".into()))?), 64)?;
    let mut model = Model::new(g, o)?;
    let mut logits = Vec::new();
    let mut k = 0;
    let mut dump = Dump::default();
    for x in data {
        let y = match (&mut model, o.value("dump")) {
            (Model::Sim(e), Some(_)) => e.run_visiting(vec![x], &mut |name, t| dump.add(name, t))?,
            (_, Some(_)) => return Err(CliError::Usage("--dump needs --encodings (and no --int8): it writes the simulation's activations".into())),
            _ => model.run(x)?,
        }
        .remove(0);
        k = *y.shape().last().unwrap_or(&1);
        logits.extend(y.to_f32_vec());
    }
    let n = logits.len() / k.max(1);
    let limits = Limits::default();
    let mut result = serde_json::json!({"n": n});
    if let Some(l) = o.value("labels") {
        let labels = read_npy(&read_file(Path::new(l), limits.max_file_bytes)?, limits.max_tensor_elements)?.to_i64_vec();
        if labels.len() != n {
            return Err(CliError::Failed(format!("{l}: {} labels for {n} samples", labels.len())));
        }
        result["accuracy"] = qplay_core::metrics::accuracy(&logits, &labels, k).into();
    }
    if let Some(r) = o.value("reference") {
        let reference = read_npy(&read_file(Path::new(r), limits.max_file_bytes)?, limits.max_tensor_elements)?.to_f32_vec();
        if reference.len() != logits.len() {
            return Err(CliError::Failed(format!("{r}: {} values, the model produced {}", reference.len(), logits.len())));
        }
        result["sqnr_db"] = qplay_core::metrics::sqnr_db(&reference, &logits).into();
        result["top1_agreement"] = qplay_core::metrics::top1_agreement(&reference, &logits, k).into();
    }
    if let Some(p) = o.value("output") {
        std::fs::write(p, write_npy_f32(&[n, k], &logits)).map_err(|e| CliError::Failed(format!("{p}: {e}")))?;
    }
    if let Some(dir) = o.value("dump") {
        dump.write(Path::new(dir))?;
    }
    if result.get("accuracy").is_none() && result.get("sqnr_db").is_none() && o.value("output").is_none() && o.value("dump").is_none() {
        return Err(CliError::Usage("give --labels Y.npy, --reference R.npy, --output Y.npy or --dump DIR".into()));
    }
    if o.flag("json") {
        out!("{result}");
    } else {
        if let Some(a) = result["accuracy"].as_f64() {
            out!("accuracy {:.2} % on {n} samples", a * 100.0);
        }
        if let Some(s) = result["sqnr_db"].as_f64() {
            out!("logits SQNR {s:.2} dB (pooled), top-1 agreement {:.2} % on {n} samples", result["top1_agreement"].as_f64().unwrap_or(0.0) * 100.0);
        }
    }
    Ok(())
}

fn top_k(v: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<(usize, f32)> = v.iter().copied().enumerate().collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    idx.truncate(k);
    idx
}

/// Latency of the FP32 executor: 3 warm-up runs, then `--runs` timed runs on `--input` (or a
/// fixed synthetic tensor of the declared input shape).
fn bench(o: &Opts) -> CliResult<()> {
    let (g, _) = load(&o.model)?;
    let runs: usize = o.value("runs").map(|r| r.parse().map_err(|_| CliError::Usage("--runs takes a number".into()))).transpose()?.unwrap_or(20).max(1);
    let x = if o.value("input").is_some() {
        input_tensor(o)?
    } else {
        let id = *g.inputs.first().ok_or_else(|| CliError::Failed("the model has no input".into()))?;
        let shape: Vec<usize> = match g.values[id].ty.as_ref().and_then(|t| t.dims.clone()) {
            Some(d) => d.iter().map(|x| if let Dim::Fixed(v) = x { *v } else { 1 }).collect(),
            None => return Err(CliError::Failed("the input shape is not declared; pass --input".into())),
        };
        let n: usize = shape.iter().product();
        Tensor::f32(shape, (0..n).map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0).collect())?
    };
    let int8 = o.flag("int8");
    let mut model = Model::new(g.clone(), o)?;
    let mut times = Vec::with_capacity(runs);
    let mut y = Vec::new();
    for i in 0..runs + 3 {
        let t0 = Instant::now();
        let out = model.run(x.clone())?;
        if i >= 3 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        y = out[0].to_f32_vec();
    }
    if o.flag("profile") {
        profile(&mut Executor::new(g, Limits::default())?, &x)?;
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    let p90 = times[(times.len() * 9 / 10).min(times.len() - 1)];
    let k = x.shape().first().map_or(y.len(), |&b| y.len() / b.max(1));
    let top1 = top_k(&y[..k.min(y.len())], 1).first().map_or(0, |t| t.0);
    if o.flag("json") {
        let engine = if int8 { "qplay-int8-native" } else if o.value("encodings").is_some() { "qplay-sim-native" } else { "qplay-fp32-native" };
        out!("{{\"engine\":\"{engine}\",\"median_ms\":{med:.3},\"p90_ms\":{p90:.3},\"runs\":{runs},\"top1\":{top1}}}");
    } else {
        out!("qplay native: median {med:.2} ms, p90 {p90:.2} ms over {runs} runs (top-1 of the first row: {top1})");
    }
    Ok(())
}
