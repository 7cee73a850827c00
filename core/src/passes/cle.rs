//! Cross-layer equalization with high-bias absorption, as AIMET's `equalize_model`
//! (aimet_onnx/cross_layer_equalization.py; Nagel et al., "Data-Free Quantization", ICCV 2019):
//! 1. fold BatchNorm ([`super::bn_fold`]), keeping each BN's gamma and beta;
//! 2. replace every ReLU6 (Clip with min 0) between two convolutions by Relu (AIMET does this;
//!    it changes the function wherever a pre-activation exceeds 6, and is reported);
//! 3. find layer groups: chains of Conv and Relu/PRelu nodes with exactly one reader each, found
//!    depth-first from the graph inputs and ordered by their first conv; split each greedily into
//!    Conv-Conv pairs, DepthwiseConv-Conv pairs and Conv-DepthwiseConv-Conv triplets;
//! 4. scale each set once, in order, in place. Pair: `r1[c] = max|W1[c,...]|`,
//!    `r2[c] = max|W2[:,c,...]|`, `s = r1 / sqrt(r1 r2)`, `W1[c] /= s`, `b1[c] /= s`,
//!    `W2[:,c] *= s`. Triplet: `g = cbrt(m0 m1 m2)`, `s12 = m0 / g`, `s23 = g / m2`,
//!    `W0 /= s12`, `b0 /= s12`, `W1 *= s12 / s23`, `b1 /= s23`, `W2[:,c] *= s23` (NaN, inf or 0
//!    scales become 1);
//! 5. high-bias absorption for every scaled pair whose first layer had a BN: with
//!    `beta_s = beta / s`, `gamma_s = gamma / s`, `c = max(0, beta_s - 3|gamma_s|)` if the first
//!    layer feeds a Relu, else `c = beta_s`; `b1 -= c`, `b2 += (sum over kh, kw of W2) c`
//!    (padding effects ignored, as in AIMET).

use super::bn_fold::fold_batch_norms;

/// How equalization treats clipped activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CleMode {
    /// qplay's default, function-preserving: ReLU6 stays; a scale `s[c]` pushed through
    /// `Clip(0, m)` turns its bound into the per-channel `m / s[c]` (`ReLU6(x)/s = clip(x/s, 0,
    /// 6/s)`), so the FP32 model computes the same function. High-bias absorption is made exact
    /// too: only into layers without padding, with the activation's bounds shifted by the
    /// absorbed amount (see `absorb_high_bias`).
    #[default]
    Preserving,
    /// Exactly AIMET 2.42's `equalize_model` (ReLU6 replaced by ReLU, high-bias absorption).
    Aimet,
}
use crate::graph::{Graph, Node, Op, UnaryOp, ValueId};
use crate::tensor::Tensor;
use serde::Serialize;

/// Per-output-channel weight range of one convolution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelRanges {
    pub node: String,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

/// What [`equalize`] did, as data the playground plots.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct CleReport {
    pub bn_folded: usize,
    /// Clip(0, 6) nodes replaced by Relu.
    pub relu6_replaced: Vec<String>,
    /// Layer groups (conv node names), in order.
    pub groups: Vec<Vec<String>>,
    /// Every cross-layer-scaling set found (2 or 3 conv node names), in scaling order; the index
    /// of a set here is what [`equalize_sets`]' `keep` receives.
    pub candidates: Vec<Vec<String>>,
    /// Scaled sets (2 or 3 conv node names) with their scale vectors (1 for a pair, 2 for a triplet).
    pub sets: Vec<(Vec<String>, Vec<Vec<f32>>)>,
    /// (layer1, layer2, absorbed bias per channel) of each high-bias absorption.
    pub absorbed: Vec<(String, String, Vec<f32>)>,
    /// Weight ranges of every convolution after BN folding, and after equalization.
    pub before: Vec<ChannelRanges>,
    pub after: Vec<ChannelRanges>,
    /// Per layer whose BN was folded: the mean and standard deviation of its output per channel
    /// (BN's beta and |gamma|, divided by the equalization scales, minus the absorbed bias), for
    /// analytical bias correction.
    #[serde(skip)]
    pub output_stats: Vec<crate::passes::bn_fold::OutputStats>,
}

fn readers(g: &Graph, v: ValueId) -> Vec<usize> {
    g.nodes.iter().enumerate().filter(|(_, n)| n.inputs.iter().flatten().any(|&i| i == v)).map(|(i, _)| i).collect()
}

fn weight(g: &Graph, n: &Node) -> Option<ValueId> {
    n.inputs.get(1).copied().flatten().filter(|&w| g.consts[w].as_ref().is_some_and(|t| t.rank() == 4 && t.as_f32().is_some()))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Conv,
    Depthwise,
    Unsupported,
}

fn kind(g: &Graph, ni: usize) -> Kind {
    let n = &g.nodes[ni];
    let Op::Conv { group, .. } = n.op else { return Kind::Unsupported };
    let Some(w) = weight(g, n).and_then(|w| g.consts[w].as_ref()) else { return Kind::Unsupported };
    if group == 1 {
        Kind::Conv
    } else if group == w.shape()[0] && w.shape()[1] == 1 {
        Kind::Depthwise
    } else {
        Kind::Unsupported
    }
}

/// Per-output-channel ranges of every Conv weight.
pub fn conv_ranges(g: &Graph) -> Vec<ChannelRanges> {
    g.nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Conv { .. }))
        .filter_map(|n| {
            let t = g.consts[weight(g, n)?].as_ref()?;
            let d = t.as_f32()?;
            let m = t.shape()[0];
            let per = d.len() / m.max(1);
            let (min, max) = (0..m)
                .map(|c| d[c * per..(c + 1) * per].iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x))))
                .unzip();
            Some(ChannelRanges { node: n.name.clone(), min, max })
        })
        .collect()
}

/// Replaces Clip(min 0) between a Conv and a Conv by Relu; returns the replaced nodes' names.
fn replace_relu6(g: &mut Graph) -> Vec<String> {
    let mut replaced = Vec::new();
    for i in 0..g.nodes.len() {
        let n = &g.nodes[i];
        if !matches!(n.op, Op::Clip { .. }) {
            continue;
        }
        let min_is_zero = match n.op {
            Op::Clip { min: Some(m), .. } => m == 0.0,
            _ => n.inputs.get(1).copied().flatten().and_then(|v| g.consts[v].as_ref()).is_some_and(|t| t.len() == 1 && t.to_f32_vec()[0] == 0.0),
        };
        let Some(x) = n.inputs.first().copied().flatten() else { continue };
        let producer_conv = g.nodes.iter().any(|p| p.outputs.contains(&x) && matches!(p.op, Op::Conv { .. }));
        let rs = readers(g, n.outputs[0]);
        let consumer_conv = !rs.is_empty() && rs.iter().all(|&r| matches!(g.nodes[r].op, Op::Conv { .. }));
        if min_is_zero && producer_conv && consumer_conv {
            let n = &mut g.nodes[i];
            n.op = Op::Unary(UnaryOp::Relu);
            n.op_type = "Relu".into();
            n.inputs.truncate(1);
            n.attrs.clear();
            replaced.push(n.name.clone());
        }
    }
    replaced
}

/// Whether node `ni` is Clip(0, m) with constant bounds (scalar or per channel).
fn is_clip0(g: &Graph, ni: usize) -> bool {
    let n = &g.nodes[ni];
    if !matches!(n.op, Op::Clip { .. }) {
        return false;
    }
    let c = |k: usize| n.inputs.get(k).copied().flatten().and_then(|v| g.consts[v].as_ref());
    let min0 = match n.op {
        Op::Clip { min: Some(m), .. } => m == 0.0,
        _ => c(1).is_some_and(|t| t.len() == 1 && t.to_f32_vec()[0] == 0.0),
    };
    min0 && (c(2).is_some() || matches!(n.op, Op::Clip { max: Some(_), .. }))
}

/// AIMET's depth-first layer-group search from the graph inputs (`through_clip`: Clip(0, m)
/// continues a group like Relu does).
fn layer_groups(g: &Graph, through_clip: bool) -> Vec<Vec<usize>> {
    fn visit(g: &Graph, ni: usize, groups: &mut Vec<Vec<usize>>, current: &mut Vec<usize>, visited: &mut [bool], through_clip: bool) {
        if visited[ni] {
            return;
        }
        visited[ni] = true;
        let n = &g.nodes[ni];
        let is_conv = matches!(n.op, Op::Conv { .. });
        if is_conv {
            current.push(ni);
        }
        let outs: Vec<usize> = n.outputs.iter().flat_map(|&o| readers(g, o)).collect();
        let is_act = matches!(n.op, Op::Unary(UnaryOp::Relu) | Op::PRelu) || (through_clip && is_clip0(g, ni));
        let mut fresh = Vec::new();
        let cur: &mut Vec<usize> = if !(is_conv || is_act) || outs.len() != 1 {
            if current.len() > 1 && !groups.contains(current) {
                groups.push(current.clone());
            }
            &mut fresh
        } else {
            current
        };
        for r in outs {
            visit(g, r, groups, cur, visited, through_clip);
        }
        if cur.len() > 1 && !groups.contains(cur) {
            groups.push(cur.clone());
        }
    }
    let mut groups = Vec::new();
    let mut visited = vec![false; g.nodes.len()];
    for &inp in &g.inputs {
        for r in readers(g, inp) {
            let mut current = Vec::new();
            visit(g, r, &mut groups, &mut current, &mut visited, through_clip);
        }
    }
    // Groups are ordered by the position of their first conv.
    groups.sort_by_key(|grp| grp[0]);
    groups
}

/// AIMET's greedy split of a layer group into pairs and triplets.
fn cls_sets(g: &Graph, group: &[usize]) -> Vec<Vec<usize>> {
    let mut q: std::collections::VecDeque<usize> = group.iter().copied().collect();
    let mut sets = Vec::new();
    let next = |q: &mut std::collections::VecDeque<usize>| q.pop_front().map(|n| (kind(g, n), Some(n))).unwrap_or((Kind::Unsupported, None));
    let mut first = (Kind::Unsupported, None);
    while !q.is_empty() {
        while !q.is_empty() && first.0 == Kind::Unsupported {
            first = next(&mut q);
        }
        let second = next(&mut q);
        match (first.0, second.0) {
            (Kind::Conv, Kind::Conv) => {
                sets.push(vec![first.1.unwrap_or(0), second.1.unwrap_or(0)]);
                first = second;
            }
            (Kind::Conv, Kind::Depthwise) => {
                if let Some(&third) = q.front() {
                    if kind(g, third) == Kind::Conv {
                        sets.push(vec![first.1.unwrap_or(0), second.1.unwrap_or(0), third]);
                        first = next(&mut q);
                    } else {
                        first = second;
                    }
                }
            }
            (Kind::Conv, _) => first = (Kind::Unsupported, None),
            (Kind::Depthwise, k) => {
                if k == Kind::Conv {
                    sets.push(vec![first.1.unwrap_or(0), second.1.unwrap_or(0)]);
                }
                first = second;
            }
            _ => first = second,
        }
    }
    sets
}

struct Layer {
    w: ValueId,
    b: Option<ValueId>,
}

fn layer(g: &Graph, ni: usize) -> Option<Layer> {
    Some(Layer { w: weight(g, &g.nodes[ni])?, b: g.nodes[ni].inputs.get(2).copied().flatten() })
}

fn fix(s: f64) -> f64 {
    if s.is_finite() && s != 0.0 {
        s
    } else {
        1.0
    }
}

/// Max |w| per output channel (axis 0).
fn out_absmax(t: &Tensor) -> Vec<f64> {
    let d = t.as_f32().unwrap_or(&[]);
    let m = t.shape()[0];
    let per = d.len() / m.max(1);
    (0..m).map(|c| d[c * per..(c + 1) * per].iter().fold(0.0f64, |a, &x| a.max((x as f64).abs()))).collect()
}

/// Max |w| per input channel (axis 1) of a regular conv.
fn in_absmax(t: &Tensor) -> Vec<f64> {
    let (m, c, k) = (t.shape()[0], t.shape()[1], t.shape()[2] * t.shape()[3]);
    let d = t.as_f32().unwrap_or(&[]);
    (0..c).map(|ci| (0..m).flat_map(|o| d[(o * c + ci) * k..(o * c + ci + 1) * k].iter()).fold(0.0f64, |a, &x| a.max((x as f64).abs()))).collect()
}

fn map_out(g: &mut Graph, v: ValueId, f: impl Fn(usize) -> f64) {
    if let Some(t) = g.consts[v].take() {
        let m = t.shape().first().copied().unwrap_or(1).max(1);
        let shape = t.shape().to_vec();
        let mut d = t.into_f32().unwrap_or_default();
        let per = d.len() / m;
        for (i, x) in d.iter_mut().enumerate() {
            *x = (*x as f64 * f(i / per.max(1))) as f32;
        }
        g.consts[v] = Some(Tensor::from_parts_f32(shape, d));
    }
}

fn map_in(g: &mut Graph, v: ValueId, f: impl Fn(usize) -> f64) {
    if let Some(t) = g.consts[v].take() {
        let shape = t.shape().to_vec();
        let (c, k) = (shape[1], shape[2] * shape[3]);
        let mut d = t.into_f32().unwrap_or_default();
        for (i, x) in d.iter_mut().enumerate() {
            *x = (*x as f64 * f((i / k) % c)) as f32;
        }
        g.consts[v] = Some(Tensor::from_parts_f32(shape, d));
    }
}

/// Divides the upper bound of the Clip(0, m) reading `layer`'s output (if any) by `s` per channel.
fn scale_clip_after(g: &mut Graph, layer: usize, s: &[f64]) {
    let out = g.nodes[layer].outputs[0];
    let rs = readers(g, out);
    if rs.len() != 1 || !is_clip0(g, rs[0]) {
        return;
    }
    let ci = rs[0];
    let old: Vec<f32> = match (g.nodes[ci].inputs.get(2).copied().flatten(), &g.nodes[ci].op) {
        (Some(v), _) => g.consts[v].as_ref().map(|t| t.to_f32_vec()).unwrap_or_default(),
        (None, Op::Clip { max: Some(m), .. }) => vec![*m],
        _ => return,
    };
    let bound: Vec<f32> = (0..s.len()).map(|c| (old[if old.len() == 1 { 0 } else { c }] as f64 / s[c]) as f32).collect();
    let name = format!("{}.max_per_channel", g.nodes[ci].name);
    g.values.push(crate::graph::Value { name, ty: None });
    g.consts.push(Some(Tensor::from_parts_f32(vec![s.len(), 1, 1], bound)));
    let id = g.values.len() - 1;
    let n = &mut g.nodes[ci];
    if n.inputs.len() < 2 {
        // Attribute form: move the min into an input too.
        let Op::Clip { min, .. } = n.op else { return };
        g.values.push(crate::graph::Value { name: format!("{}.min", g.nodes[ci].name), ty: None });
        g.consts.push(Some(Tensor::scalar_f32(min.unwrap_or(0.0))));
        let mid = g.values.len() - 1;
        let n = &mut g.nodes[ci];
        n.inputs = vec![n.inputs[0], Some(mid), Some(id)];
    } else {
        n.inputs.resize(2, None);
        n.inputs.push(Some(id));
    }
    g.nodes[ci].op = Op::Clip { min: None, max: None };
}

/// Equalizes a graph as AIMET's `equalize_model` does (BN folding included).
pub fn equalize(graph: Graph) -> (Graph, CleReport) {
    equalize_with(graph, CleMode::Aimet)
}

/// Cross-layer equalization in the given mode (BN folding included).
pub fn equalize_with(graph: Graph, mode: CleMode) -> (Graph, CleReport) {
    equalize_sets(graph, mode, &|_| true)
}

/// [`equalize_with`], scaling (and absorbing high biases for) only the sets whose index `keep`
/// accepts (see [`CleReport::candidates`]); the others are left as BN folding made them.
pub fn equalize_sets(graph: Graph, mode: CleMode, keep: &dyn Fn(usize) -> bool) -> (Graph, CleReport) {
    let (mut g, fold) = fold_batch_norms(graph);
    let mut report = CleReport { bn_folded: fold.folded.len(), before: conv_ranges(&g), ..Default::default() };
    let preserving = mode == CleMode::Preserving;
    if !preserving {
        report.relu6_replaced = replace_relu6(&mut g);
    }
    let groups = layer_groups(&g, preserving);
    report.groups = groups.iter().map(|grp| grp.iter().map(|&i| g.nodes[i].name.clone()).collect()).collect();
    // (layer1, layer2, scale) pairs for high-bias absorption, in scaling order.
    let mut pairs: Vec<(usize, usize, Vec<f64>)> = Vec::new();
    // Divisors of each scaled layer's output channels.
    let mut out_div: std::collections::HashMap<usize, Vec<f64>> = std::collections::HashMap::new();
    for grp in &groups {
        for set in cls_sets(&g, grp) {
            report.candidates.push(set.iter().map(|&i| g.nodes[i].name.clone()).collect());
            if !keep(report.candidates.len() - 1) {
                continue;
            }
            let layers: Option<Vec<Layer>> = set.iter().map(|&n| layer(&g, n)).collect();
            let Some(l) = layers else { continue };
            let names: Vec<String> = set.iter().map(|&i| g.nodes[i].name.clone()).collect();
            if set.len() == 2 {
                let (Some(w1), Some(w2)) = (g.consts[l[0].w].as_ref(), g.consts[l[1].w].as_ref()) else { continue };
                let r1 = out_absmax(w1);
                let r2 = in_absmax(w2);
                if r1.len() != r2.len() {
                    continue;
                }
                let s: Vec<f64> = r1.iter().zip(&r2).map(|(&a, &b)| fix(a / (a * b).sqrt())).collect();
                map_out(&mut g, l[0].w, |c| 1.0 / s[c]);
                if let Some(b) = l[0].b {
                    map_out(&mut g, b, |c| 1.0 / s[c]);
                }
                map_in(&mut g, l[1].w, |c| s[c]);
                if preserving {
                    scale_clip_after(&mut g, set[0], &s);
                }
                report.sets.push((names, vec![s.iter().map(|&x| x as f32).collect()]));
                out_div.insert(set[0], s.clone());
                pairs.push((set[0], set[1], s));
            } else {
                let (Some(w0), Some(w1), Some(w2)) = (g.consts[l[0].w].as_ref(), g.consts[l[1].w].as_ref(), g.consts[l[2].w].as_ref()) else { continue };
                let (m0, m1, m2) = (out_absmax(w0), out_absmax(w1), in_absmax(w2));
                if m0.len() != m1.len() || m1.len() != m2.len() {
                    continue;
                }
                let gm: Vec<f64> = (0..m0.len()).map(|c| (m0[c] * m1[c] * m2[c]).cbrt()).collect();
                let s12: Vec<f64> = (0..m0.len()).map(|c| fix(m0[c] / gm[c])).collect();
                let s23: Vec<f64> = (0..m0.len()).map(|c| fix(gm[c] / m2[c])).collect();
                map_out(&mut g, l[0].w, |c| 1.0 / s12[c]);
                if let Some(b) = l[0].b {
                    map_out(&mut g, b, |c| 1.0 / s12[c]);
                }
                map_out(&mut g, l[1].w, |c| s12[c] / s23[c]);
                if let Some(b) = l[1].b {
                    map_out(&mut g, b, |c| 1.0 / s23[c]);
                }
                map_in(&mut g, l[2].w, |c| s23[c]);
                if preserving {
                    scale_clip_after(&mut g, set[0], &s12);
                    scale_clip_after(&mut g, set[1], &s23);
                }
                report.sets.push((names, vec![s12.iter().map(|&x| x as f32).collect(), s23.iter().map(|&x| x as f32).collect()]));
                out_div.insert(set[0], s12.clone());
                out_div.insert(set[1], s23.clone());
                pairs.push((set[0], set[1], s12));
                pairs.push((set[1], set[2], s23));
            }
        }
    }
    let mut shift: std::collections::HashMap<String, Vec<f32>> = std::collections::HashMap::new();
    for (l1, l2, s) in pairs {
        if let Some(absorbed) = absorb_high_bias(&mut g, &fold.bn_params, l1, l2, &s, preserving) {
            shift.insert(g.nodes[l1].name.clone(), absorbed.clone());
            report.absorbed.push((g.nodes[l1].name.clone(), g.nodes[l2].name.clone(), absorbed));
        }
    }
    for (name, gamma, beta) in &fold.bn_params {
        let div = g.nodes.iter().position(|n| &n.name == name).and_then(|i| out_div.get(&i));
        let d = |c: usize| div.map_or(1.0, |v| v[c]);
        let sh = shift.get(name);
        report.output_stats.push(crate::passes::bn_fold::OutputStats {
            node: name.clone(),
            mean: beta.iter().enumerate().map(|(c, &b)| (b as f64 / d(c) - sh.map_or(0.0, |v| v[c] as f64)) as f32).collect(),
            std: gamma.iter().enumerate().map(|(c, &g)| (g.abs() as f64 / d(c)) as f32).collect(),
        });
    }
    report.after = conv_ranges(&g);
    (g, report)
}

/// High-bias absorption from layer `l1` into `l2` (see the module doc).
/// With `preserving`, the function is kept exactly: only into a layer without padding (where
/// `W2 (x - c) + W2 c = W2 x` holds at every pixel), and a following Relu / Clip(lo, hi) becomes
/// Clip(lo - c, hi - c) per channel (`clip(x, lo, hi) = clip(x - c, lo - c, hi - c) + c`).
fn absorb_high_bias(g: &mut Graph, bn: &[(String, Vec<f32>, Vec<f32>)], l1: usize, l2: usize, s: &[f64], preserving: bool) -> Option<Vec<f32>> {
    let (_, gamma, beta) = bn.iter().find(|(n, _, _)| *n == g.nodes[l1].name)?;
    let b1 = g.nodes[l1].inputs.get(2).copied().flatten()?;
    let b2 = g.nodes[l2].inputs.get(2).copied().flatten()?;
    let w2 = weight(g, &g.nodes[l2])?;
    let out = g.nodes[l1].outputs[0];
    let rs = readers(g, out);
    let act = (rs.len() == 1).then(|| rs[0]).filter(|&a| matches!(g.nodes[a].op, Op::Unary(UnaryOp::Relu) | Op::PRelu) || (preserving && is_clip0(g, a)));
    if preserving {
        let Op::Conv { window, .. } = &g.nodes[l2].op else { return None };
        let unpadded = window.pads == [0; 4] && matches!(window.auto_pad, crate::graph::AutoPad::NotSet | crate::graph::AutoPad::Valid);
        if !unpadded || act.is_some_and(|a| matches!(g.nodes[a].op, Op::PRelu)) {
            return None;
        }
    }
    let relu = act.is_some();
    let c: Vec<f64> = (0..s.len())
        .map(|i| {
            let (bs, gs) = (beta[i] as f64 / s[i], gamma[i] as f64 / s[i]);
            if relu { (bs - 3.0 * gs.abs()).max(0.0) } else { bs }
        })
        .collect();
    let wt = g.consts[w2].as_ref()?;
    let (m, cin, k) = (wt.shape()[0], wt.shape()[1], wt.shape()[2] * wt.shape()[3]);
    let wd = wt.as_f32()?;
    let depthwise = kind(g, l2) == Kind::Depthwise;
    let add: Vec<f64> = (0..m)
        .map(|o| {
            if depthwise {
                (0..k).map(|t| wd[o * k + t] as f64).sum::<f64>() * c.get(o).copied().unwrap_or(0.0)
            } else {
                (0..cin).map(|ci| (0..k).map(|t| wd[(o * cin + ci) * k + t] as f64).sum::<f64>() * c.get(ci).copied().unwrap_or(0.0)).sum()
            }
        })
        .collect();
    let mut bias1 = g.consts[b1].as_ref()?.to_f32_vec();
    let mut bias2 = g.consts[b2].as_ref()?.to_f32_vec();
    if bias1.len() != c.len() || bias2.len() != m {
        return None;
    }
    for (b, &x) in bias1.iter_mut().zip(&c) {
        *b = (*b as f64 - x) as f32;
    }
    for (b, &x) in bias2.iter_mut().zip(&add) {
        *b = (*b as f64 + x) as f32;
    }
    g.consts[b1] = Some(Tensor::from_parts_f32(vec![bias1.len()], bias1));
    g.consts[b2] = Some(Tensor::from_parts_f32(vec![m], bias2));
    if let (true, Some(a)) = (preserving, act) {
        shift_bounds(g, a, &c);
    }
    Some(c.iter().map(|&x| x as f32).collect())
}

/// Turns activation node `a` (Relu or Clip) into `Clip(lo - c, hi - c)` with per-channel bounds.
fn shift_bounds(g: &mut Graph, a: usize, c: &[f64]) {
    let n = c.len();
    let Some((lo, hi)) = crate::exec::activation_bounds(g, &g.nodes[a], n) else { return };
    let at = |v: &[f32], i: usize| v[if v.len() == 1 { 0 } else { i }] as f64;
    let name = g.nodes[a].name.clone();
    let mut bound = |suffix: &str, v: &[f32]| {
        let vals: Vec<f32> = (0..n).map(|i| (at(v, i) - c[i]) as f32).collect();
        g.values.push(crate::graph::Value { name: format!("{name}.{suffix}_absorbed"), ty: None });
        g.consts.push(Some(Tensor::from_parts_f32(vec![n, 1, 1], vals)));
        g.values.len() - 1
    };
    let (lo_id, hi_id) = (bound("min", &lo), bound("max", &hi));
    let node = &mut g.nodes[a];
    node.op = Op::Clip { min: None, max: None };
    node.op_type = "Clip".into();
    node.inputs = vec![node.inputs[0], Some(lo_id), Some(hi_id)];
    node.attrs.clear();
}
