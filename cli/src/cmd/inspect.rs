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
    /// nodes, op_counts, parameters, fp32_bytes)
    #[arg(long)]
    json: bool,
}

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
        let j = serde_json::json!({
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
    Ok(())
}
