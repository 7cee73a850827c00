//! The cost model: the shape of every value, and per node the multiply-accumulates, parameters
//! and weight bytes. Compression, mixed precision and search all count with it.
//!
//! MACs are counted for the ops that multiply by weights, as AIMET's cost calculator does
//! (`aimet_common/cost_calculator.py`: Σ prod(weight shape) · Ho · Wo), extended to every such op:
//! - Conv: `N · Cout · Cin/g · kh · kw · Ho · Wo` (depthwise included);
//! - ConvTranspose: `N · Cin · Cout/g · kh · kw · Hi · Wi`;
//! - Gemm: `M · N · K`; MatMul: `prod(output) · K`.
//!
//! Everything else (BatchNorm, activations, Add, pools) is counted as free, as AIMET counts it.

use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::{Dim, Graph, Op};
use crate::onnx::Limits;
use crate::tensor::Tensor;
use serde::Serialize;

/// The shape each graph input is given: its fixed dims, a symbolic first (batch) dim as 1, and
/// `given` for the inputs named there (the dims a user chose for a dynamic input).
pub fn input_shapes(g: &Graph, given: &[(String, Vec<usize>)]) -> Result<Vec<Vec<usize>>> {
    g.inputs
        .iter()
        .map(|&id| {
            let v = &g.values[id];
            if let Some((_, s)) = given.iter().find(|(n, _)| *n == v.name) {
                return Ok(s.clone());
            }
            let dims = v.ty.as_ref().and_then(|t| t.dims.as_ref()).ok_or_else(|| Error::Input { name: v.name.clone(), msg: "the model does not declare its shape; give one".into() })?;
            dims.iter()
                .enumerate()
                .map(|(axis, d)| match d {
                    Dim::Fixed(n) => Ok(*n),
                    Dim::Symbolic(_) if axis == 0 => Ok(1),
                    Dim::Symbolic(s) => Err(Error::Input { name: v.name.clone(), msg: format!("dimension {axis} ('{s}') is not fixed; give the input's shape") }),
                })
                .collect()
        })
        .collect()
}

/// The shape of every value (indexed by [`ValueId`]; `None` for a value nothing computes, such as
/// an omitted optional output), found by running the graph once on zeros of `shapes`. Shapes
/// that contradict each other fail here, with the node named.
pub fn infer_shapes(g: &Graph, shapes: &[Vec<usize>], limits: &Limits) -> Result<Vec<Option<Vec<usize>>>> {
    let mut exec = Executor::with_fusion(g.clone(), limits.clone(), false)?;
    let mut inputs = Vec::with_capacity(shapes.len());
    for s in shapes {
        let n = crate::tensor::checked_numel(s).filter(|&n| n <= limits.max_tensor_elements).ok_or_else(|| Error::Limit(format!("an input of shape {s:?} is over the tensor limit")))?;
        inputs.push(Tensor::f32(s.clone(), vec![0.0; n])?);
    }
    let mut out: Vec<Option<Vec<usize>>> = exec.graph().consts.iter().map(|c| c.as_ref().map(|t| t.shape().to_vec())).collect();
    exec.run_with_hook(inputs, &mut |id, t| {
        out[id] = Some(t.shape().to_vec());
        Ok(())
    })?;
    Ok(out)
}

/// One node's cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerCost {
    pub name: String,
    pub op: String,
    pub macs: u64,
    /// f32 constants the node reads (weights and biases; not BatchNorm's running statistics).
    pub params: u64,
    /// Elements of its weight (input 1 of Conv, ConvTranspose, Gemm and MatMul, when constant).
    pub weights: u64,
    /// Shape of its first output.
    pub output: Vec<usize>,
}

/// The cost of a whole graph: every node with MACs or parameters, in graph order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostReport {
    pub layers: Vec<LayerCost>,
    pub macs: u64,
    pub params: u64,
    pub weights: u64,
}

impl CostReport {
    /// Bytes of the weights stored at `bits` per element, the biases and other parameters as
    /// 32-bit values.
    pub fn weight_bytes(&self, bits: u32) -> u64 {
        (self.weights * bits as u64).div_ceil(8) + (self.params - self.weights) * 4
    }
    pub fn layer(&self, name: &str) -> Option<&LayerCost> {
        self.layers.iter().find(|l| l.name == name)
    }
}

/// The MACs of `node` given the shapes of its values.
pub fn node_macs(node: &crate::graph::Node, shapes: &[Option<Vec<usize>>]) -> u64 {
    let shape = |k: usize| node.inputs.get(k).copied().flatten().and_then(|v| shapes[v].as_deref());
    let out = node.outputs.first().and_then(|&v| shapes[v].as_deref());
    let prod = |s: &[usize]| s.iter().map(|&d| d as u64).product::<u64>();
    match (&node.op, shape(0), shape(1), out) {
        (Op::Conv { .. }, Some(_), Some(w), Some(y)) if w.len() >= 2 && y.len() >= 2 => prod(w) * y[0] as u64 * prod(&y[2..]),
        (Op::ConvTranspose { .. }, Some(x), Some(w), Some(_)) if w.len() >= 2 && x.len() >= 2 => prod(w) * x[0] as u64 * prod(&x[2..]),
        (Op::Gemm { trans_a, .. }, Some(a), Some(_), Some(y)) if a.len() == 2 => prod(y) * if *trans_a { a[0] } else { a[1] } as u64,
        (Op::MatMul, Some(a), Some(_), Some(y)) if !a.is_empty() => prod(y) * a[a.len() - 1] as u64,
        _ => 0,
    }
}

/// The f32 constants `node` reads after its first input, and those of its weight (skipping
/// BatchNorm's statistics and Clip's bounds, as [`Graph::parameter_count`] does).
fn params_of(g: &Graph, node: &crate::graph::Node) -> (u64, u64) {
    let skip_from = match node.op {
        Op::BatchNorm { .. } => 3,
        Op::Clip { .. } => 1,
        _ => node.inputs.len(),
    };
    let mut params = 0;
    let mut weights = 0;
    for (k, v) in node.inputs.iter().enumerate().take(skip_from) {
        let Some(t) = v.and_then(|v| g.consts[v].as_ref()) else { continue };
        if t.as_f32().is_none() || k == 0 {
            continue;
        }
        params += t.len() as u64;
        if k == 1 && matches!(node.op, Op::Conv { .. } | Op::ConvTranspose { .. } | Op::Gemm { .. } | Op::MatMul) {
            weights += t.len() as u64;
        }
    }
    (params, weights)
}

/// The cost of every node of `g`, whose values have `shapes` (from [`infer_shapes`]).
pub fn cost(g: &Graph, shapes: &[Option<Vec<usize>>]) -> CostReport {
    let mut layers = Vec::new();
    for n in &g.nodes {
        let macs = node_macs(n, shapes);
        let (params, weights) = params_of(g, n);
        if macs == 0 && params == 0 {
            continue;
        }
        let output = n.outputs.first().and_then(|&v| shapes[v].clone()).unwrap_or_default();
        layers.push(LayerCost { name: n.name.clone(), op: n.op_type.clone(), macs, params, weights, output });
    }
    CostReport { macs: layers.iter().map(|l| l.macs).sum(), params: layers.iter().map(|l| l.params).sum(), weights: layers.iter().map(|l| l.weights).sum(), layers }
}

/// Shapes and cost of `g` with its inputs shaped by [`input_shapes`] (`given` for dynamic ones).
pub fn analyze(g: &Graph, given: &[(String, Vec<usize>)], limits: &Limits) -> Result<(Vec<Option<Vec<usize>>>, CostReport)> {
    let shapes = infer_shapes(g, &input_shapes(g, given)?, limits)?;
    let report = cost(g, &shapes);
    Ok((shapes, report))
}

/// The shape of value `v`, when known.
pub fn shape_of(shapes: &[Option<Vec<usize>>], v: crate::graph::ValueId) -> Option<&[usize]> {
    shapes.get(v).and_then(|s| s.as_deref())
}
