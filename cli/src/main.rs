//! `qplay`: the command-line face of qplay-core. See `qplay --help`.

use qplay_core::graph::Dim;
use qplay_core::npy::{read_npy, write_npy_f32};
use qplay_core::preprocess::Preprocess;
use qplay_core::{load_model, Executor, Graph, Limits, ModelInfo, Tensor};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage:
  qplay inspect MODEL.onnx [--json]
  qplay run MODEL.onnx (--input X.npy | --image PHOTO --preprocess MODEL.json) [--output Y.npy] [--labels CLASSES.txt]
  qplay bench MODEL.onnx [--input X.npy] [--runs N] [--json] [--profile]   (FP32 latency)";

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
        "run" => run(&Opts::parse(rest, &[], &["input", "image", "preprocess", "output", "labels"])?),
        "bench" => bench(&Opts::parse(rest, &["json", "profile"], &["runs", "input", "image", "preprocess"])?),
        "--help" | "-h" | "help" => {
            println!("{USAGE}");
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
        println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
        return Ok(());
    }
    println!("model      {}", o.model.display());
    println!("file       {} bytes, IR {}, opset {}, producer '{}'", info.file_bytes, info.ir_version, info.opset, info.producer);
    for (label, ids) in [("input", &g.inputs), ("output", &g.outputs)] {
        for &i in ids.iter() {
            let (ty, dims) = dims_string(&g, i);
            println!("{label:<10} {} {ty} [{}]", g.values[i].name, dims.join(", "));
        }
    }
    println!("parameters {params} ({:.2} MB as float32, {:.2} MB as int8)", params as f64 * 4.0 / 1e6, params as f64 / 1e6);
    let total: usize = info.op_counts.iter().map(|(_, c)| c).sum();
    println!("nodes      {total}");
    for (op, c) in &info.op_counts {
        println!("  {op:<22} {c}");
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
    let mut exec = Executor::new(g, Limits::default())?;
    let t0 = Instant::now();
    let outs = exec.run(vec![x])?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let y = &outs[0];
    let data = y.to_f32_vec();
    if let Some(p) = o.value("output") {
        std::fs::write(p, write_npy_f32(y.shape(), &data)).map_err(|e| CliError::Failed(format!("{p}: {e}")))?;
    }
    println!("output {:?} in {ms:.1} ms", y.shape());
    let rows = if y.rank() == 2 { y.shape()[0] } else { 1 };
    let is_vector = y.rank() <= 1 || (y.rank() == 2 && y.shape()[1] > 1);
    if is_vector && !data.is_empty() {
        let names = labels(o);
        let k = data.len() / rows;
        for r in 0..rows.min(8) {
            let row = &data[r * k..(r + 1) * k];
            if rows > 1 {
                println!("row {r}:");
            }
            for (rank, &(i, v)) in top_k(row, 5).iter().enumerate() {
                let name = names.as_ref().and_then(|n| n.get(i)).map(String::as_str).unwrap_or("");
                println!("  {}. {i:>4} {v:>10.4}  {name}", rank + 1);
            }
        }
        if rows > 8 {
            println!("({} more rows)", rows - 8);
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
    let mut exec = Executor::new(g, Limits::default())?;
    let mut times = Vec::with_capacity(runs);
    let mut y = Vec::new();
    for i in 0..runs + 3 {
        let t0 = Instant::now();
        let out = exec.run(vec![x.clone()])?;
        if i >= 3 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        y = out[0].to_f32_vec();
    }
    if o.flag("profile") {
        profile(&mut exec, &x)?;
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    let p90 = times[(times.len() * 9 / 10).min(times.len() - 1)];
    let k = x.shape().first().map_or(y.len(), |&b| y.len() / b.max(1));
    let top1 = top_k(&y[..k.min(y.len())], 1).first().map_or(0, |t| t.0);
    if o.flag("json") {
        println!("{{\"engine\":\"qplay-fp32-native\",\"median_ms\":{med:.3},\"p90_ms\":{p90:.3},\"runs\":{runs},\"top1\":{top1}}}");
    } else {
        println!("qplay FP32 native: median {med:.2} ms, p90 {p90:.2} ms over {runs} runs (top-1 of the first row: {top1})");
    }
    Ok(())
}
