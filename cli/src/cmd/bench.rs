//! `qplay bench`: latency of one engine, natively, after warm-up.

use super::run::Input;
use crate::common::{top_k, CliError, CliResult, Engine, Global, Model};
use crate::out;
use qplay_core::graph::Dim;
use qplay_core::{Executor, Tensor};
use std::path::PathBuf;
use std::time::Instant;

/// Measure latency: 3 warm-up runs, then --runs timed runs (median and p90)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model
    #[arg(value_name = "MODEL.onnx")]
    model: PathBuf,
    /// The input (default: a fixed synthetic tensor of the declared input shape)
    #[command(flatten)]
    input: Input,
    #[command(flatten)]
    engine: Engine,
    /// Timed runs
    #[arg(long, value_name = "N", default_value_t = 20)]
    runs: usize,
    /// Print one JSON object: engine, median_ms, p90_ms, runs, top1
    #[arg(long)]
    json: bool,
    /// Also print the FP32 executor's time per op type and its slowest nodes (stderr)
    #[arg(long)]
    profile: bool,
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

pub fn run(a: &Args, global: &Global) -> CliResult<()> {
    let (g, _) = global.load(&a.model)?;
    let runs = a.runs.max(1);
    let x = match a.input.tensor(global)? {
        Some(x) => x,
        None => {
            let id = *g.inputs.first().ok_or_else(|| CliError::Failed("the model has no input".into()))?;
            let shape: Vec<usize> = match g.values[id].ty.as_ref().and_then(|t| t.dims.clone()) {
                Some(d) => d.iter().map(|x| if let Dim::Fixed(v) = x { *v } else { 1 }).collect(),
                None => return Err(CliError::Failed("the input shape is not declared; pass --input".into())),
            };
            let n: usize = shape.iter().product();
            Tensor::f32(shape, (0..n).map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0).collect())?
        }
    };
    let mut model = Model::new(g.clone(), &a.engine, global)?;
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
    if a.profile {
        profile(&mut Executor::new(g, global.limits())?, &x)?;
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    let p90 = times[(times.len() * 9 / 10).min(times.len() - 1)];
    let k = x.shape().first().map_or(y.len(), |&b| y.len() / b.max(1));
    let top1 = top_k(&y[..k.min(y.len())], 1).first().map_or(0, |t| t.0);
    if a.json {
        let engine = if a.engine.int8 { "qplay-int8-native" } else if a.engine.encodings.is_some() { "qplay-sim-native" } else { "qplay-fp32-native" };
        out!("{{\"engine\":\"{engine}\",\"median_ms\":{med:.3},\"p90_ms\":{p90:.3},\"runs\":{runs},\"top1\":{top1}}}");
    } else {
        out!("qplay native: median {med:.2} ms, p90 {p90:.2} ms over {runs} runs (top-1 of the first row: {top1})");
    }
    Ok(())
}
