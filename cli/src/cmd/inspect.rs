//! `qplay inspect`: what a model file holds (inputs, outputs, opset, parameters, op counts).

use crate::common::{CliResult, Global};
use crate::out;
use qplay_core::graph::Dim;
use qplay_core::Graph;
use std::path::PathBuf;

/// Describe a model: inputs, outputs, opset, parameter count and operators
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model
    #[arg(value_name = "MODEL.onnx")]
    model: PathBuf,
    /// Print one JSON object (stable keys: file_bytes, ir_version, opset, producer, inputs, outputs,
    /// nodes, op_counts, parameters, fp32_bytes, macs, weight_bytes, layers)
    #[arg(long)]
    json: bool,
    /// The shape of a dynamic input, for the cost model (e.g. `input=1x3x224x224`; repeatable).
    /// A dynamic batch is taken as 1.
    #[arg(long, value_name = "NAME=DIMS", value_parser = parse_shape)]
    shape: Vec<(String, Vec<usize>)>,
}

fn parse_shape(s: &str) -> Result<(String, Vec<usize>), String> {
    let (name, dims) = s.rsplit_once('=').ok_or_else(|| format!("'{s}' is not NAME=DIMS (e.g. input=1x3x224x224)"))?;
    let dims = dims.split('x').map(|d| d.parse::<usize>().map_err(|_| format!("'{d}' in '{s}' is not a dimension"))).collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), dims))
}

const BITS: [u32; 4] = [4, 8, 16, 32];

fn dims_string(g: &Graph, id: usize) -> (String, Vec<String>) {
    let v = &g.values[id];
    match &v.ty {
        Some(t) => (t.elem_type.clone(), t.dims.as_ref().map(|d| d.iter().map(Dim::to_string).collect()).unwrap_or_default()),
        None => ("?".into(), vec![]),
    }
}

pub fn run(a: &Args, global: &Global) -> CliResult<()> {
    let (g, info) = global.load(&a.model)?;
    let params = g.parameter_count();
    // The cost model needs every input's shape; without one the rest is still shown.
    let cost = qplay_core::cost::analyze(&g, &a.shape, &global.limits()).map(|(_, c)| c);
    let bytes = |c: &qplay_core::cost::CostReport| -> serde_json::Map<String, serde_json::Value> { BITS.iter().map(|&b| (b.to_string(), c.weight_bytes(b).into())).collect() };
    let total: usize = info.op_counts.iter().map(|(_, c)| c).sum();
    if a.json {
        let io = |ids: &[usize]| -> Vec<serde_json::Value> {
            ids.iter()
                .map(|&i| {
                    let (ty, dims) = dims_string(&g, i);
                    serde_json::json!({"name": g.values[i].name, "type": ty, "shape": dims})
                })
                .collect()
        };
        let ops: serde_json::Map<String, serde_json::Value> = info.op_counts.iter().map(|(k, v)| (k.clone(), (*v).into())).collect();
        let mut j = serde_json::json!({
            "file_bytes": info.file_bytes,
            "ir_version": info.ir_version,
            "opset": info.opset,
            "producer": info.producer,
            "inputs": io(&g.inputs),
            "outputs": io(&g.outputs),
            "nodes": total,
            "op_counts": ops,
            "parameters": params,
            "fp32_bytes": params * 4,
        });
        match &cost {
            Ok(c) => {
                j["macs"] = c.macs.into();
                j["weight_bytes"] = bytes(c).into();
                j["layers"] = c
                    .layers
                    .iter()
                    .map(|l| serde_json::json!({"name": l.name, "op": l.op, "macs": l.macs, "params": l.params, "weights": l.weights, "output": l.output}))
                    .collect::<Vec<_>>()
                    .into();
            }
            Err(e) => {
                j["macs"] = serde_json::Value::Null;
                j["cost_error"] = e.to_string().into();
            }
        }
        out!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
        return Ok(());
    }
    out!("model      {}", a.model.display());
    out!("file       {} bytes, IR {}, opset {}, producer '{}'", info.file_bytes, info.ir_version, info.opset, info.producer);
    for (label, ids) in [("input", &g.inputs), ("output", &g.outputs)] {
        for &i in ids.iter() {
            let (ty, dims) = dims_string(&g, i);
            out!("{label:<10} {} {ty} [{}]", g.values[i].name, dims.join(", "));
        }
    }
    out!("parameters {params} ({:.2} MB as float32, {:.2} MB as int8)", params as f64 * 4.0 / 1e6, params as f64 / 1e6);
    out!("nodes      {total}");
    for (op, c) in &info.op_counts {
        out!("  {op:<22} {c}");
    }
    match &cost {
        Ok(c) => {
            let mb = |b: u32| c.weight_bytes(b) as f64 / 1e6;
            out!("MACs       {} ({:.1} M); weights {:.2} MB at 4 bits, {:.2} at 8, {:.2} at 16, {:.2} at 32", c.macs, c.macs as f64 / 1e6, mb(4), mb(8), mb(16), mb(32));
            out!("  {:<36} {:<14} {:>13} {:>6} {:>10}  output", "layer", "op", "MACs", "share", "params");
            for l in &c.layers {
                let share = 100.0 * l.macs as f64 / c.macs.max(1) as f64;
                let shape = l.output.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
                out!("  {:<36} {:<14} {:>13} {share:>5.1}% {:>10}  {shape}", l.name, l.op, l.macs, l.params);
            }
        }
        Err(e) => out!("MACs       unknown: {e}"),
    }
    Ok(())
}
