//! Batch-norm folding into the preceding Conv or Gemm (the "backward" fold of AIMET's
//! `fold_all_batch_norms_to_weight`, aimet_onnx/batch_norm_fold.py; Nagel et al. 2019, sec. 2).
//!
//! With `k = gamma / sqrt(var + eps)`: `W'[o, ...] = W[o, ...] * k[o]`, `b' = beta + (b - mean) * k`
//! (a missing bias becomes a new initializer `<node>.bias`). As in AIMET the layer keeps its own
//! output name and the BN's readers are rewired to it; weights shared with another node, BNs whose
//! input has other readers, and non-constant parameters are left alone.
//! Not yet done (AIMET does it too): forward folds of a BN into the *following* layer.

use crate::graph::{Graph, Op, Value, ValueId};
use crate::tensor::Tensor;
use serde::Serialize;

/// What [`fold_batch_norms`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct BnFoldReport {
    /// (layer node, BN node) pairs folded, in graph order.
    pub folded: Vec<(String, String)>,
    /// BN nodes left in the graph.
    pub unfolded: Vec<String>,
    /// The folded BNs' scale and shift (gamma, beta), keyed by the layer node they went into
    /// (high-bias absorption uses them).
    #[serde(skip)]
    pub bn_params: Vec<(String, Vec<f32>, Vec<f32>)>,
}

/// The distribution of a layer's output per channel, as its folded BatchNorm promises it:
/// mean `beta`, standard deviation `|gamma|` (before any activation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputStats {
    pub node: String,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl BnFoldReport {
    /// [`OutputStats`] of every layer whose BN was folded.
    pub fn output_stats(&self) -> Vec<OutputStats> {
        self.bn_params.iter().map(|(node, gamma, beta)| OutputStats { node: node.clone(), mean: beta.clone(), std: gamma.iter().map(|g| g.abs()).collect() }).collect()
    }
}

/// Folds every foldable BatchNormalization into the Conv/Gemm before it.
pub fn fold_batch_norms(mut g: Graph) -> (Graph, BnFoldReport) {
    let mut report = BnFoldReport::default();
    let mut i = 0;
    while i < g.nodes.len() {
        if let Op::BatchNorm { epsilon } = g.nodes[i].op {
            let gb = |k: usize| g.nodes[i].inputs.get(k).copied().flatten().and_then(|v| g.consts[v].as_ref()).map(|t| t.to_f32_vec());
            let (gamma, beta) = (gb(1), gb(2));
            if let Some(layer) = try_fold(&mut g, i, epsilon) {
                report.folded.push((g.nodes[layer].name.clone(), g.nodes[i].name.clone()));
                if let (Some(gamma), Some(beta)) = (gamma, beta) {
                    report.bn_params.push((g.nodes[layer].name.clone(), gamma, beta));
                }
                g.nodes.remove(i);
                continue;
            }
            report.unfolded.push(g.nodes[i].name.clone());
        }
        i += 1;
    }
    (g, report)
}

fn readers(g: &Graph, v: ValueId) -> usize {
    g.reader_counts()[v]
}

fn const_f32(g: &Graph, id: Option<ValueId>) -> Option<Vec<f32>> {
    Some(g.consts[id?].as_ref()?.as_f32()?.to_vec())
}

/// Folds BN node `bi` into its producer; returns the producer's index.
fn try_fold(g: &mut Graph, bi: usize, eps: f32) -> Option<usize> {
    let bn = &g.nodes[bi];
    let x = bn.inputs.first().copied().flatten()?;
    let y = *bn.outputs.first()?;
    let params: Vec<Vec<f32>> = (1..5).map(|k| const_f32(g, bn.inputs.get(k).copied().flatten())).collect::<Option<_>>()?;
    let li = g.nodes.iter().position(|n| n.outputs.contains(&x))?;
    let layer = &g.nodes[li];
    if readers(g, x) != 1 || layer.outputs.len() != 1 {
        return None;
    }
    let w_id = layer.inputs.get(1).copied().flatten()?;
    let w = g.consts[w_id].as_ref()?;
    // Output-channel axis of the weight: Conv [M, C/g, kh, kw]; Gemm B [K, N] (transB=0) or [N, K].
    let (m, out_axis_first) = match layer.op {
        Op::Conv { .. } if w.rank() >= 3 => (w.shape()[0], true),
        Op::Gemm { trans_b: true, trans_a: false, alpha, beta } if w.rank() == 2 && alpha == 1.0 && beta == 1.0 => (w.shape()[0], true),
        Op::Gemm { trans_b: false, trans_a: false, alpha, beta } if w.rank() == 2 && alpha == 1.0 && beta == 1.0 => (w.shape()[1], false),
        _ => return None,
    };
    if params.iter().any(|p| p.len() != m) || readers(g, w_id) != 1 {
        return None;
    }
    let b_id = layer.inputs.get(2).copied().flatten();
    let bias = match b_id {
        Some(b) if readers(g, b) == 1 => const_f32(g, Some(b)).filter(|v| v.len() == m)?,
        Some(_) => return None,
        None => vec![0.0; m],
    };
    let [gamma, beta, mean, var] = [&params[0], &params[1], &params[2], &params[3]];
    let k: Vec<f32> = (0..m).map(|c| gamma[c] / (var[c] + eps).sqrt()).collect();
    let wd = w.as_f32()?;
    let new_w: Vec<f32> = if out_axis_first {
        let per = wd.len() / m;
        wd.iter().enumerate().map(|(i, &v)| v * k[i / per]).collect()
    } else {
        wd.iter().enumerate().map(|(i, &v)| v * k[i % m]).collect()
    };
    let new_b: Vec<f32> = (0..m).map(|c| beta[c] + (bias[c] - mean[c]) * k[c]).collect();
    let w_shape = w.shape().to_vec();
    g.consts[w_id] = Some(Tensor::from_parts_f32(w_shape, new_w));
    let b_new = Tensor::from_parts_f32(vec![m], new_b);
    match b_id {
        Some(b) => g.consts[b] = Some(b_new),
        None => {
            let name = format!("{}.bias", g.nodes[li].name);
            g.values.push(Value { name, ty: None });
            g.consts.push(Some(b_new));
            let id = g.values.len() - 1;
            let layer = &mut g.nodes[li];
            layer.inputs.resize(2, None);
            layer.inputs.push(Some(id));
        }
    }
    // Readers of the BN output now read the layer output.
    for n in &mut g.nodes {
        for inp in n.inputs.iter_mut().flatten() {
            if *inp == y {
                *inp = x;
            }
        }
    }
    for o in &mut g.outputs {
        if *o == y {
            *o = x;
        }
    }
    Some(li)
}
