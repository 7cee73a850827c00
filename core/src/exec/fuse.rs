//! Load-time fusions of the FP32 executor (numerically equivalent up to float rounding):
//! - Conv -> BatchNormalization with constant parameters becomes one Conv with
//!   `W'[m] = W[m] * k[m]`, `b'[m] = (b[m] - mean[m]) * k[m] + beta[m]`, `k = gamma / sqrt(var + eps)`.
//! - Conv -> Relu / Clip(constant bounds) becomes a Conv whose output is clamped in place.
//!
//! Only applied where the intermediate tensor has no other reader and is not a graph output.

use crate::graph::{Graph, Op, UnaryOp, Value, ValueId};
use crate::tensor::Tensor;

fn readers(g: &Graph) -> Vec<usize> {
    g.reader_counts()
}

/// Index of the node that reads `value`, when it is the only reader.
fn sole_reader(g: &Graph, readers: &[usize], value: ValueId) -> Option<usize> {
    if readers[value] != 1 {
        return None;
    }
    g.nodes.iter().position(|n| n.inputs.iter().flatten().any(|&i| i == value))
}

fn add_const(g: &mut Graph, name: String, t: Tensor) -> ValueId {
    g.values.push(Value { name, ty: None });
    g.consts.push(Some(t));
    g.values.len() - 1
}

fn const_f32(g: &Graph, id: Option<ValueId>) -> Option<&[f32]> {
    g.consts[id?].as_ref()?.as_f32()
}

pub(crate) fn fold_batch_norms(g: &mut Graph) {
    let mut i = 0;
    while i < g.nodes.len() {
        if let Some(bn) = fold_one(g, i) {
            g.nodes.remove(bn);
        }
        i += 1;
    }
}

/// Folds the BN reading node `ci`'s output into it; returns the BN's index to remove.
fn fold_one(g: &mut Graph, ci: usize) -> Option<usize> {
    if !matches!(g.nodes[ci].op, Op::Conv { .. }) || g.nodes[ci].outputs.len() != 1 {
        return None;
    }
    let readers = readers(g);
    let bi = sole_reader(g, &readers, g.nodes[ci].outputs[0])?;
    let Op::BatchNorm { epsilon } = g.nodes[bi].op else { return None };
    let bn = &g.nodes[bi];
    if bn.inputs.first().copied().flatten() != Some(g.nodes[ci].outputs[0]) || bn.outputs.len() != 1 {
        return None;
    }
    let p: Vec<&[f32]> = (1..5).map(|k| const_f32(g, bn.inputs.get(k).copied().flatten())).collect::<Option<_>>()?;
    let conv = &g.nodes[ci];
    let w = g.consts[conv.inputs.get(1).copied().flatten()?].as_ref()?;
    let wd = w.as_f32()?;
    let m = *w.shape().first()?;
    if p.iter().any(|v| v.len() != m) || m == 0 || wd.len() % m != 0 {
        return None;
    }
    let bias: Vec<f32> = match conv.inputs.get(2).copied().flatten() {
        Some(b) => const_f32(g, Some(b))?.to_vec(),
        None => vec![0.0; m],
    };
    if bias.len() != m {
        return None;
    }
    let per = wd.len() / m;
    let k: Vec<f32> = (0..m).map(|c| p[0][c] / (p[3][c] + epsilon).sqrt()).collect();
    let new_w: Vec<f32> = wd.iter().enumerate().map(|(i, &v)| v * k[i / per]).collect();
    let new_b: Vec<f32> = (0..m).map(|c| (bias[c] - p[2][c]) * k[c] + p[1][c]).collect();
    let (w_shape, bn_out, name) = (w.shape().to_vec(), bn.outputs[0], conv.name.clone());
    let wid = add_const(g, format!("{name}.weight_bn_folded"), Tensor::from_parts_f32(w_shape, new_w));
    let bid = add_const(g, format!("{name}.bias_bn_folded"), Tensor::from_parts_f32(vec![m], new_b));
    let conv = &mut g.nodes[ci];
    conv.inputs.truncate(1);
    conv.inputs.push(Some(wid));
    conv.inputs.push(Some(bid));
    conv.outputs = vec![bn_out];
    Some(bi)
}

/// Fuses Relu and constant-bound Clip into the Conv that feeds them; returns the clamp of each
/// remaining node.
pub(crate) fn fuse_activations(g: &mut Graph) -> Vec<Option<(f32, f32)>> {
    let mut clamps: Vec<Option<(f32, f32)>> = Vec::new();
    let mut i = 0;
    while i < g.nodes.len() {
        let mut clamp = None;
        if matches!(g.nodes[i].op, Op::Conv { .. }) && g.nodes[i].outputs.len() == 1 {
            let readers = readers(g);
            if let Some(ai) = sole_reader(g, &readers, g.nodes[i].outputs[0]) {
                if let Some(c) = activation_range(g, ai) {
                    clamp = Some(c);
                    let out = g.nodes[ai].outputs[0];
                    g.nodes[i].outputs = vec![out];
                    g.nodes.remove(ai);
                }
            }
        }
        clamps.push(clamp);
        i += 1;
    }
    clamps
}

/// The output range of node `ai` when it is a Relu or a Clip with constant bounds.
fn activation_range(g: &Graph, ai: usize) -> Option<(f32, f32)> {
    let n = &g.nodes[ai];
    if n.outputs.len() != 1 {
        return None;
    }
    match n.op {
        Op::Unary(UnaryOp::Relu) => Some((0.0, f32::INFINITY)),
        Op::Clip { min, max } => {
            let bound = |k: usize, attr: Option<f32>, dflt: f32| -> Option<f32> {
                match n.inputs.get(k).copied().flatten() {
                    None => Some(attr.unwrap_or(dflt)),
                    Some(id) => {
                        let t = g.consts[id].as_ref()?;
                        (t.len() == 1).then(|| t.to_f32_vec()[0])
                    }
                }
            };
            Some((bound(1, min, f32::NEG_INFINITY)?, bound(2, max, f32::INFINITY)?))
        }
        _ => None,
    }
}
