//! Channel pruning (He et al. 2017; AIMET `InputChannelPruner`): a layer's input channels are
//! removed, the removal is carried upstream to the output channels of the layers that produce
//! them, and the pruned layer's weights are fitted again by least squares.
//!
//! - **Channel groups.** Channels flow unchanged through BatchNorm, activations, pools, depthwise
//!   convolutions and element-wise ops; every tensor connected that way shares one channel index.
//!   A group is prunable when it is produced only by ungrouped Convs (their output channels) and
//!   read only by ungrouped Convs (their input channels) besides those channel-preserving ops. A
//!   depthwise chain goes with its producer and its consumer; tensors tied by a residual Add form
//!   one group, pruned together or not at all. AIMET refuses both.
//! - **Selection**: AIMET's L2 magnitude, `Σ W[:, c, :, :]²` over every consumer, keeping the
//!   largest; or a greedy choice that adds, one at a time, the channel that lowers the
//!   least-squares reconstruction error most ([`Selection::Greedy`]).
//! - **Reconstruction**: each consumer's weights (and a bias, added when it has none, which
//!   absorbs the removed channels' mean) by ridge regression from the inputs it now gets to the
//!   outputs the original layer gave, at seeded random output pixels of the calibration samples:
//!   at least 10 per sample and 2 per fitted weight, at most every pixel. AIMET draws 10 unseeded
//!   pixels per image and fits by ordinary least squares.

use crate::cost::shape_of;
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::{Graph, Op, ValueId};
use crate::linalg::ridge_solve;
use crate::onnx::{attr, Limits};
use crate::rng::SplitMix;
use crate::tensor::Tensor;
use serde::Serialize;

/// How the kept channels are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    Magnitude,
    Greedy,
}

/// One prunable channel group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PruneUnit {
    /// The first consumer's name: the layer whose input channels are pruned.
    pub name: String,
    pub channels: usize,
    /// Convs whose output channels are the group's.
    pub producers: Vec<String>,
    /// Convs whose input channels are the group's.
    pub consumers: Vec<String>,
    /// Depthwise convs inside the group.
    pub depthwise: Vec<String>,
    #[serde(skip)]
    values: Vec<ValueId>,
    #[serde(skip)]
    members: Vec<usize>,
    #[serde(skip)]
    producer_nodes: Vec<usize>,
    #[serde(skip)]
    consumer_nodes: Vec<usize>,
}

struct Dsu(Vec<usize>);
impl Dsu {
    fn find(&mut self, x: usize) -> usize {
        let mut r = x;
        while self.0[r] != r {
            r = self.0[r];
        }
        let mut y = x;
        while self.0[y] != r {
            let next = self.0[y];
            self.0[y] = r;
            y = next;
        }
        r
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.0[b] = a;
        }
    }
}

fn const_of(g: &Graph, v: Option<ValueId>) -> Option<&Tensor> {
    g.consts[v?].as_ref()
}

/// A depthwise Conv: one group per channel, multiplier 1.
fn is_depthwise(g: &Graph, ni: usize, shapes: &[Option<Vec<usize>>]) -> bool {
    let n = &g.nodes[ni];
    let Op::Conv { group, .. } = n.op else { return false };
    let Some(w) = const_of(g, n.inputs.get(1).copied().flatten()) else { return false };
    let c = n.inputs[0].and_then(|x| shape_of(shapes, x)).and_then(|s| s.get(1).copied());
    group > 1 && w.rank() == 4 && w.shape()[1] == 1 && w.shape()[0] == group && c == Some(group)
}

fn is_plain_conv(g: &Graph, ni: usize) -> bool {
    let n = &g.nodes[ni];
    matches!(n.op, Op::Conv { group: 1, .. }) && const_of(g, n.inputs.get(1).copied().flatten()).is_some_and(|w| w.rank() == 4 && w.as_f32().is_some())
}

/// How a constant operand of an element-wise op on a rank-`rank` tensor with `c` channels lines
/// up with the channels: Some(None) when it is the same for every channel, Some(Some(axis)) when
/// it has one value per channel along its `axis`, None otherwise (it varies in another way).
fn per_channel_axis(t: &Tensor, rank: usize, c: usize) -> Option<Option<usize>> {
    if t.len() == 1 {
        return Some(None);
    }
    let r = t.rank();
    if r > rank || r + 1 < rank {
        return None;
    }
    // Right-aligned broadcasting: axis 1 of the activation is axis `r + 1 - rank` of the const.
    let axis = r + 1 - rank;
    let s = t.shape();
    s.iter().enumerate().all(|(i, &d)| d == 1 || i == axis && d == c).then_some(Some(axis))
}

/// The prunable channel groups of `g`, in the order of their first consumer.
pub fn find_units(g: &Graph, shapes: &[Option<Vec<usize>>]) -> Vec<PruneUnit> {
    let nv = g.values.len();
    let mut dsu = Dsu((0..nv).collect());
    // Nodes that carry channels from input 0 (and other non-constant inputs) to output 0.
    let mut member = vec![false; g.nodes.len()];
    let mut bad_value = vec![false; nv];
    let chan = |v: ValueId| shape_of(shapes, v).and_then(|s| (s.len() >= 2).then(|| s[1]));
    for (ni, n) in g.nodes.iter().enumerate() {
        let Some(&y) = n.outputs.first() else { continue };
        let x = n.inputs.first().copied().flatten();
        let passes = match &n.op {
            Op::BatchNorm { .. } | Op::Unary(_) | Op::Clip { .. } | Op::PRelu | Op::Identity | Op::Dropout | Op::MaxPool { .. } | Op::AveragePool { .. } | Op::GlobalAveragePool | Op::GlobalMaxPool => true,
            Op::Conv { .. } => is_depthwise(g, ni, shapes),
            Op::Binary(_) => true,
            _ => false,
        };
        let Some(x) = x else { continue };
        if !passes || n.outputs.len() != 1 || chan(x).is_none() || chan(x) != chan(y) {
            continue;
        }
        // Every other input must be a harmless constant or a tensor of the same channels.
        let rank = shape_of(shapes, y).map_or(0, |s| s.len());
        let c = chan(y).unwrap_or(0);
        let mut ok = true;
        for (k, i) in n.inputs.iter().enumerate().skip(1) {
            let Some(i) = *i else { continue };
            match &g.consts[i] {
                Some(t) => {
                    let stats = matches!(n.op, Op::BatchNorm { .. } | Op::PRelu | Op::Conv { .. });
                    if !stats && per_channel_axis(t, rank, c).is_none() || stats && k > 0 && !(t.len() == c || matches!(n.op, Op::Conv { .. }) && k == 1) {
                        ok = false;
                    }
                }
                None if matches!(n.op, Op::Binary(_)) && chan(i) == Some(c) && shape_of(shapes, i).is_some_and(|s| s.len() == rank) => dsu.union(x, i),
                None => ok = false,
            }
        }
        if ok {
            member[ni] = true;
            dsu.union(x, y);
        }
    }
    // Collect groups.
    let mut groups: std::collections::BTreeMap<usize, Vec<ValueId>> = Default::default();
    for v in 0..nv {
        if g.consts[v].is_none() && chan(v).is_some() {
            let r = dsu.find(v);
            groups.entry(r).or_default().push(v);
        }
    }
    for &o in &g.outputs {
        bad_value[o] = true;
    }
    for &i in &g.inputs {
        bad_value[i] = true;
    }
    let mut units = Vec::new();
    for (_, values) in groups {
        let c = chan(values[0]).unwrap_or(0);
        let in_group = |v: ValueId| values.contains(&v);
        if c < 2 || values.iter().any(|&v| bad_value[v] || chan(v) != Some(c)) {
            continue;
        }
        let (mut producers, mut consumers, mut members) = (Vec::new(), Vec::new(), Vec::new());
        let mut ok = true;
        for (ni, n) in g.nodes.iter().enumerate() {
            let reads = n.inputs.iter().flatten().any(|&v| in_group(v));
            let writes = n.outputs.iter().any(|&v| in_group(v));
            if !reads && !writes {
                continue;
            }
            if member[ni] && writes {
                members.push(ni);
            } else if writes {
                if is_plain_conv(g, ni) && n.outputs.len() == 1 {
                    producers.push(ni);
                } else {
                    ok = false;
                }
            }
            if reads && !(member[ni] && writes) {
                if is_plain_conv(g, ni) && n.inputs[0].is_some_and(in_group) && !n.inputs.iter().skip(1).flatten().any(|&v| in_group(v)) {
                    consumers.push(ni);
                } else {
                    ok = false;
                }
            }
        }
        if !ok || producers.is_empty() || consumers.is_empty() {
            continue;
        }
        // Every sliced constant must be read by this group's nodes only.
        let counts = g.reader_counts();
        let sliced_shared = members.iter().chain(&producers).chain(&consumers).any(|&ni| g.nodes[ni].inputs.iter().skip(1).flatten().any(|&v| g.consts[v].as_ref().is_some_and(|t| t.len() > 1) && counts[v] > 1));
        if sliced_shared {
            continue;
        }
        let names = |v: &[usize]| v.iter().map(|&i| g.nodes[i].name.clone()).collect::<Vec<_>>();
        let depthwise: Vec<usize> = members.iter().copied().filter(|&i| matches!(g.nodes[i].op, Op::Conv { .. })).collect();
        units.push(PruneUnit {
            name: g.nodes[consumers[0]].name.clone(),
            channels: c,
            producers: names(&producers),
            consumers: names(&consumers),
            depthwise: names(&depthwise),
            values,
            members,
            producer_nodes: producers,
            consumer_nodes: consumers,
        });
    }
    units.sort_by_key(|u| u.consumer_nodes[0]);
    units
}

/// Channels kept at ratio `ratio` as AIMET counts them: `max(1, floor(C·ratio))`, rounded up to
/// a multiple of `multiple`, at most C.
pub fn kept_for_ratio(c: usize, ratio: f64, multiple: usize) -> usize {
    let k = ((c as f64 * ratio + 1e-9).floor() as usize).max(1);
    let m = multiple.max(1);
    (k.div_ceil(m) * m).min(c)
}

impl PruneUnit {
    /// The convs whose output channels are the group's.
    pub fn producer_nodes(&self) -> &[usize] {
        &self.producer_nodes
    }
    /// The convs whose input channels are the group's.
    pub fn consumer_nodes(&self) -> &[usize] {
        &self.consumer_nodes
    }
    /// The channel-preserving nodes inside the group (BatchNorm, activations, depthwise convs).
    pub fn member_nodes(&self) -> &[usize] {
        &self.members
    }

    /// AIMET's channel magnitudes: `Σ W[:, c, :, :]²` over every consumer.
    pub fn magnitudes(&self, g: &Graph) -> Vec<f64> {
        let mut m = vec![0.0; self.channels];
        for &ni in &self.consumer_nodes {
            let Some(w) = const_of(g, g.nodes[ni].inputs[1]) else { continue };
            let (s, d) = (w.shape(), w.as_f32().unwrap_or(&[]));
            let per = s[2] * s[3];
            for o in 0..s[0] {
                for (c, mc) in m.iter_mut().enumerate().take(s[1]) {
                    let base = (o * s[1] + c) * per;
                    *mc += d[base..base + per].iter().map(|&x| (x as f64).powi(2)).sum::<f64>();
                }
            }
        }
        m
    }

    /// The `k` channels of largest magnitude, in increasing order.
    pub fn by_magnitude(&self, g: &Graph, k: usize) -> Vec<usize> {
        let m = self.magnitudes(g);
        let mut order: Vec<usize> = (0..self.channels).collect();
        order.sort_by(|&a, &b| m[b].total_cmp(&m[a]).then(a.cmp(&b)));
        let mut keep = order[..k.min(self.channels)].to_vec();
        keep.sort_unstable();
        keep
    }

    /// Removes every channel not in `keep` (increasing) from the group: producers' output
    /// channels, the members' per-channel constants, depthwise convs' channels and consumers'
    /// input channels. The consumers' weights are sliced, not refitted (see [`reconstruct`]).
    pub fn prune(&self, g: &mut Graph, keep: &[usize]) -> Result<()> {
        let c = self.channels;
        let k = keep.len();
        if k == 0 || keep.iter().any(|&i| i >= c) || keep.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::Graph(format!("{}: the kept channels {keep:?} are not increasing indices below {c}", self.name)));
        }
        let slice_axis = |g: &mut Graph, v: ValueId, axis: usize| -> Result<()> {
            let Some(t) = g.consts[v].as_ref() else { return Ok(()) };
            if t.shape().get(axis) != Some(&c) {
                return Ok(());
            }
            let shape = t.shape().to_vec();
            let d = t.to_f32_vec();
            let outer: usize = shape[..axis].iter().product();
            let inner: usize = shape[axis + 1..].iter().product();
            let mut out = Vec::with_capacity(outer * k * inner);
            for o in 0..outer {
                for &ch in keep {
                    let b = (o * c + ch) * inner;
                    out.extend_from_slice(&d[b..b + inner]);
                }
            }
            let mut ns = shape;
            ns[axis] = k;
            g.consts[v] = Some(Tensor::f32(ns, out)?);
            Ok(())
        };
        for &ni in &self.producer_nodes {
            let ins: Vec<ValueId> = g.nodes[ni].inputs.iter().skip(1).flatten().copied().collect();
            for v in ins {
                slice_axis(g, v, 0)?;
            }
        }
        for &ni in &self.members {
            let n = &g.nodes[ni];
            // A group's values are [N, C, H, W]: its producers and consumers are 2-D convs.
            let rank = 4;
            let ins: Vec<ValueId> = n.inputs.iter().skip(1).flatten().copied().filter(|&v| g.consts[v].is_some()).collect();
            let is_conv = matches!(n.op, Op::Conv { .. });
            for v in ins {
                let t = g.consts[v].as_ref().ok_or_else(|| Error::Graph("constant expected".into()))?;
                let axis = if is_conv || t.rank() == 1 { Some(0) } else { per_channel_axis(t, rank, c).flatten() };
                if let Some(axis) = axis {
                    slice_axis(g, v, axis)?;
                }
            }
            if is_conv {
                let n = &mut g.nodes[ni];
                if let Op::Conv { group, .. } = &mut n.op {
                    *group = k;
                }
                n.attrs.retain(|a| a.name() != "group");
                n.attrs.push(attr::int("group", k as i64));
            }
        }
        for &ni in &self.consumer_nodes {
            if let Some(w) = g.nodes[ni].inputs[1] {
                slice_axis(g, w, 1)?;
            }
        }
        Ok(())
    }
}

/// Where least-squares points are drawn: per sample, `per_sample` output pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sampling {
    pub seed: u64,
    /// Ridge strength, relative to the mean diagonal of XᵀX.
    pub ridge: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { seed: 0, ridge: 1e-3 }
    }
}

/// A consumer conv's geometry.
#[derive(Debug, Clone)]
struct Geometry {
    cin: usize,
    cout: usize,
    k: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
}

fn geometry(g: &Graph, ni: usize, shapes: &[Option<Vec<usize>>]) -> Result<Geometry> {
    let n = &g.nodes[ni];
    let Op::Conv { window, .. } = &n.op else { return Err(Error::node(&n.name, &n.op_type, "not a Conv")) };
    let w = const_of(g, n.inputs[1]).ok_or_else(|| Error::node(&n.name, &n.op_type, "weight is not constant"))?;
    let x = n.inputs[0].and_then(|v| shape_of(shapes, v)).ok_or_else(|| Error::node(&n.name, &n.op_type, "input shape unknown"))?;
    let s = w.shape();
    let pads = crate::exec::resolve_pads(window, [x[2], x[3]], [s[2], s[3]]);
    Ok(Geometry { cin: s[1], cout: s[0], k: [s[2], s[3]], strides: window.strides, dilations: window.dilations, pads })
}

/// Least-squares statistics of one consumer: the Gram matrix of its input patches (all `cin`
/// channels, plus a constant 1 last) and their products with the original outputs, over the
/// sampled pixels.
#[derive(Debug, Clone)]
pub struct Stats {
    features: usize,
    cout: usize,
    xtx: Vec<f64>,
    xty: Vec<f64>,
    /// The original outputs at the sampled pixels (reused when the inputs change).
    targets: Vec<f32>,
    pixels: Vec<(usize, usize, usize)>,
    pub points: usize,
}

/// The pixels sampled for sample `i` of a consumer (seeded by the seed, the node and `i`).
fn sample_pixels(seed: u64, node: usize, i: usize, ho: usize, wo: usize, n: usize) -> Vec<(usize, usize)> {
    let total = ho * wo;
    if n >= total {
        return (0..total).map(|p| (p / wo, p % wo)).collect();
    }
    let mut r = SplitMix(seed ^ (node as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    // Distinct pixels: a partial Fisher–Yates shuffle.
    let mut idx: Vec<usize> = (0..total).collect();
    for j in 0..n {
        let t = j + r.below(total - j);
        idx.swap(j, t);
    }
    idx[..n].iter().map(|&p| (p / wo, p % wo)).collect()
}

fn patch(x: &[f32], c: usize, h: usize, w: usize, geo: &Geometry, (oy, ox): (usize, usize), out: &mut Vec<f64>) {
    out.clear();
    for ch in 0..c {
        for ky in 0..geo.k[0] {
            let iy = (oy * geo.strides[0] + ky * geo.dilations[0]) as isize - geo.pads[0] as isize;
            for kx in 0..geo.k[1] {
                let ix = (ox * geo.strides[1] + kx * geo.dilations[1]) as isize - geo.pads[1] as isize;
                let inside = iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                out.push(if inside { x[(ch * h + iy as usize) * w + ix as usize] as f64 } else { 0.0 });
            }
        }
    }
    out.push(1.0);
}

/// Runs `g` on `batches` up to node `stop` (unfused, so every value keeps its id) and calls
/// `f(value, tensor)` for each of `wanted` as it is computed.
fn capture(g: &Graph, batches: &[Tensor], limits: &Limits, stop: usize, wanted: &[ValueId], f: &mut dyn FnMut(ValueId, usize, &Tensor)) -> Result<()> {
    // Only the nodes up to `stop` matter: cut the graph there.
    let mut cut = g.clone();
    cut.nodes.truncate(stop + 1);
    cut.outputs = wanted.to_vec();
    let mut exec = Executor::with_fusion(cut, limits.clone(), false)?;
    for (bi, b) in batches.iter().enumerate() {
        let outs = exec.run(vec![b.clone()])?;
        for (&v, t) in wanted.iter().zip(&outs) {
            f(v, bi, t);
        }
    }
    Ok(())
}

impl Stats {
    /// Gathers the statistics of consumer node `ni`: its inputs from `inputs_graph` (the
    /// compressed model so far, or the original) and its outputs from `original` (None: reuse
    /// the pixels and targets of `reuse`).
    #[allow(clippy::too_many_arguments)]
    fn gather(inputs_graph: &Graph, original: &Graph, ni: usize, shapes: &[Option<Vec<usize>>], batches: &[Tensor], limits: &Limits, sampling: Sampling, reuse: Option<&Stats>) -> Result<Stats> {
        let geo = geometry(original, ni, shapes)?;
        let node = &original.nodes[ni];
        let (xv, yv) = (node.inputs[0].ok_or_else(|| Error::node(&node.name, &node.op_type, "no input"))?, node.outputs[0]);
        let ys = shape_of(shapes, yv).ok_or_else(|| Error::node(&node.name, &node.op_type, "output shape unknown"))?.to_vec();
        let (ho, wo) = (ys[2], ys[3]);
        let samples: usize = batches.iter().map(|b| b.shape()[0]).sum();
        let features = geo.cin * geo.k[0] * geo.k[1] + 1;
        let per = (2 * features).div_ceil(samples.max(1)).max(10);
        let (pixels, targets) = match reuse {
            Some(s) => (s.pixels.clone(), s.targets.clone()),
            None => {
                let mut pixels = Vec::new();
                let mut targets = Vec::new();
                let mut base = 0;
                capture(original, batches, limits, ni, &[yv], &mut |_, _, t| {
                    let d = t.as_f32().unwrap_or(&[]);
                    let b = t.shape()[0];
                    for s in 0..b {
                        let i = base + s;
                        for (py, px) in sample_pixels(sampling.seed, ni, i, ho, wo, per) {
                            pixels.push((i, py, px));
                            for o in 0..geo.cout {
                                targets.push(d[((s * geo.cout + o) * ho + py) * wo + px]);
                            }
                        }
                    }
                    base += b;
                })?;
                (pixels, targets)
            }
        };
        let in_node = inputs_graph.nodes.iter().position(|n| n.name == node.name).ok_or_else(|| Error::Graph(format!("no node '{}'", node.name)))?;
        let (mut xtx, mut xty) = (vec![0.0; features * features], vec![0.0; features * geo.cout]);
        let mut base = 0;
        let mut row = Vec::with_capacity(features);
        let mut pi = 0;
        capture(inputs_graph, batches, limits, in_node.saturating_sub(1), &[xv], &mut |_, _, t| {
            let s = t.shape();
            let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
            let d = t.as_f32().unwrap_or(&[]);
            while pi < pixels.len() && pixels[pi].0 < base + b {
                let (i, py, px) = pixels[pi];
                let img = &d[(i - base) * c * h * w..(i - base + 1) * c * h * w];
                patch(img, c, h, w, &geo, (py, px), &mut row);
                let f = row.len();
                for a in 0..f {
                    let ra = row[a];
                    if ra == 0.0 {
                        continue;
                    }
                    for bb in a..f {
                        xtx[a * f + bb] += ra * row[bb];
                    }
                    let y = &targets[pi * geo.cout..(pi + 1) * geo.cout];
                    for (o, &yo) in y.iter().enumerate() {
                        xty[a * geo.cout + o] += ra * yo as f64;
                    }
                }
                pi += 1;
            }
            base += b;
        })?;
        let f = features;
        for a in 0..f {
            for bb in 0..a {
                xtx[a * f + bb] = xtx[bb * f + a];
            }
        }
        let points = pixels.len();
        Ok(Stats { features: f, cout: geo.cout, xtx, xty, targets, pixels, points })
    }

    /// Solves for the weights of the kept channels (increasing) and a bias: returns
    /// (weight [cout, k, kh, kw] row-major, bias [cout]).
    fn solve(&self, keep: &[usize], kk: usize, ridge: f64) -> Option<(Vec<f32>, Vec<f32>)> {
        let cols: Vec<usize> = keep.iter().flat_map(|&c| (0..kk).map(move |t| c * kk + t)).chain(std::iter::once(self.features - 1)).collect();
        let n = cols.len();
        let mut a = vec![0.0; n * n];
        let mut b = vec![0.0; n * self.cout];
        for (i, &ci) in cols.iter().enumerate() {
            for (j, &cj) in cols.iter().enumerate() {
                a[i * n + j] = self.xtx[ci * self.features + cj];
            }
            b[i * self.cout..(i + 1) * self.cout].copy_from_slice(&self.xty[ci * self.cout..(ci + 1) * self.cout]);
        }
        let sol = ridge_solve(&a, &b, n, self.cout, ridge)?;
        let k = keep.len();
        let mut w = vec![0f32; self.cout * k * kk];
        for o in 0..self.cout {
            for j in 0..k * kk {
                w[o * k * kk + j] = sol[j * self.cout + o] as f32;
            }
        }
        let bias = (0..self.cout).map(|o| sol[(n - 1) * self.cout + o] as f32).collect();
        Some((w, bias))
    }

    /// The interaction of channels `a` and `b` in the consumer's output, `M[a][b] = Σ_p z_a(p)·z_b(p)`
    /// with `z_c(p)` the part of the output at pixel p that channel c contributes, its mean over
    /// the points removed (a bias absorbs it): `Σ over the channels' (ky, kx) of G' ∘ WᵀW`, G'
    /// the centred Gram matrix of the inputs. Removing a set R changes the output by
    /// `Σ_{a,b ∈ R} M[a][b]` in squared norm (before refitting).
    fn interactions(&self, w: &[f32], kk: usize, channels: usize) -> Vec<f64> {
        let f = self.features - 1;
        let p = self.xtx[f * self.features + f].max(1.0);
        let sum = |i: usize| self.xtx[i * self.features + f];
        // H = WᵀW (f × f).
        let mut h = vec![0.0; f * f];
        for o in 0..self.cout {
            let row = &w[o * f..(o + 1) * f];
            for i in 0..f {
                let wi = row[i] as f64;
                if wi == 0.0 {
                    continue;
                }
                for j in 0..f {
                    h[i * f + j] += wi * row[j] as f64;
                }
            }
        }
        let mut m = vec![0.0; channels * channels];
        for i in 0..f {
            for j in 0..f {
                let gc = self.xtx[i * self.features + j] - sum(i) * sum(j) / p;
                m[(i / kk) * channels + j / kk] += gc * h[i * f + j];
            }
        }
        m
    }
}

/// Writes the fitted weights and bias into consumer node `ni` (adding a bias input when it has
/// none).
fn set_weights(g: &mut Graph, ni: usize, w: Vec<f32>, shape: Vec<usize>, bias: Vec<f32>) -> Result<()> {
    let wv = g.nodes[ni].inputs[1].ok_or_else(|| Error::Graph("conv without weight".into()))?;
    g.consts[wv] = Some(Tensor::f32(shape, w)?);
    let n = bias.len();
    match g.nodes[ni].inputs.get(2).copied().flatten() {
        Some(b) => g.consts[b] = Some(Tensor::f32(vec![n], bias)?),
        None => {
            let name = format!("{}.bias", g.nodes[ni].name);
            let b = g.add_value(&name, Some(Tensor::f32(vec![n], bias)?));
            let node = &mut g.nodes[ni];
            node.inputs.resize(2, None);
            node.inputs.push(Some(b));
        }
    }
    Ok(())
}

/// Node index -> the original output channels a conv still has, for convs pruned as a group's
/// producers (see [`PruneUnit::apply_solved`]).
pub type KeptRows = std::collections::HashMap<usize, Vec<usize>>;

/// A consumer's refitted weight and bias.
#[derive(Debug, Clone)]
pub struct Refit {
    pub weight: Vec<f32>,
    pub shape: Vec<usize>,
    pub bias: Vec<f32>,
}

/// Per consumer: its statistics on the original model's inputs, reusable for every candidate
/// of the unit (the sensitivity pass prunes one unit at a time, so a consumer's inputs are the
/// original ones restricted to the kept channels).
pub struct UnitFit {
    stats: Vec<Stats>,
    pub points: usize,
}

impl PruneUnit {
    /// The least-squares statistics of every consumer, on the original model.
    pub fn fit_original(&self, g: &Graph, shapes: &[Option<Vec<usize>>], batches: &[Tensor], limits: &Limits, sampling: Sampling) -> Result<UnitFit> {
        let stats = self.consumer_nodes.iter().map(|&ni| Stats::gather(g, g, ni, shapes, batches, limits, sampling, None)).collect::<Result<Vec<_>>>()?;
        let points = stats.iter().map(|s| s.points).max().unwrap_or(0);
        Ok(UnitFit { stats, points })
    }

    /// The channels to keep: `k` by magnitude, or greedily (`fit` needed): channels are removed
    /// one at a time, each time the one whose removal adds least to the consumers' output error
    /// given those removed so far ([`Stats::interactions`]; ThiNet's greedy, with the channels'
    /// correlations).
    pub fn choose(&self, g: &Graph, k: usize, selection: Selection, fit: Option<&UnitFit>) -> Vec<usize> {
        let (Selection::Greedy, Some(fit)) = (selection, fit) else { return self.by_magnitude(g, k) };
        let c = self.channels;
        let mut m = vec![0.0; c * c];
        for (&ni, s) in self.consumer_nodes.iter().zip(&fit.stats) {
            let Some(w) = const_of(g, g.nodes[ni].inputs[1]) else { return self.by_magnitude(g, k) };
            let kk = w.shape()[2] * w.shape()[3];
            if s.xtx.is_empty() || w.shape()[1] != c {
                return self.by_magnitude(g, k);
            }
            for (a, b) in m.iter_mut().zip(s.interactions(w.as_f32().unwrap_or(&[]), kk, c)) {
                *a += b;
            }
        }
        let mut removed = vec![false; c];
        // cross[x] = Σ_{b removed} M[x][b]
        let mut cross = vec![0.0; c];
        for _ in 0..c.saturating_sub(k) {
            let pick = (0..c).filter(|&x| !removed[x]).min_by(|&x, &y| (m[x * c + x] + 2.0 * cross[x]).total_cmp(&(m[y * c + y] + 2.0 * cross[y])));
            let Some(x) = pick else { break };
            removed[x] = true;
            for (y, cy) in cross.iter_mut().enumerate() {
                *cy += m[y * c + x];
            }
        }
        (0..c).filter(|&x| !removed[x]).collect()
    }

    /// Prunes the unit to `keep` and refits every consumer from `fit` (statistics on the original
    /// inputs), or slices only when `fit` is None.
    pub fn apply_with_fit(&self, g: &mut Graph, keep: &[usize], fit: Option<&UnitFit>, ridge: f64, rows: &mut KeptRows) -> Result<()> {
        let solved = match fit {
            Some(fit) => self.solve(g, keep, fit, ridge)?,
            None => vec![],
        };
        self.apply_solved(g, keep, &solved, rows)
    }

    /// The refitted weights ([cout, k, kh, kw]) and bias of every consumer for `keep`.
    pub fn solve(&self, g: &Graph, keep: &[usize], fit: &UnitFit, ridge: f64) -> Result<Vec<Refit>> {
        self.consumer_nodes
            .iter()
            .zip(&fit.stats)
            .map(|(&ni, s)| {
                let k = const_of(g, g.nodes[ni].inputs[1]).map_or([1, 1], |w| [w.shape()[2], w.shape()[3]]);
                let (w, b) = s.solve(keep, k[0] * k[1], ridge).ok_or_else(|| Error::Graph(format!("{}: the least-squares fit failed", g.nodes[ni].name)))?;
                Ok(Refit { weight: w, shape: vec![s.cout, keep.len(), k[0], k[1]], bias: b })
            })
            .collect()
    }

    /// Prunes the unit to `keep` and writes `solved` (from [`PruneUnit::solve`]; empty: slice
    /// only) into the consumers. A refit covers all of a consumer's original output channels;
    /// where a group pruned some (the consumer is also that group's producer, as a residual
    /// block's project conv is, of another group or of this one), only the rows `rows` records
    /// are written. Records this unit's producers in `rows` first.
    pub fn apply_solved(&self, g: &mut Graph, keep: &[usize], solved: &[Refit], rows: &mut KeptRows) -> Result<()> {
        self.prune(g, keep)?;
        for &p in &self.producer_nodes {
            rows.insert(p, keep.to_vec());
        }
        for (&ni, r) in self.consumer_nodes.iter().zip(solved) {
            match rows.get(&ni) {
                Some(kept) => {
                    let per: usize = r.shape[1..].iter().product();
                    let w = kept.iter().flat_map(|&o| r.weight[o * per..(o + 1) * per].iter().copied()).collect();
                    let mut shape = r.shape.clone();
                    shape[0] = kept.len();
                    set_weights(g, ni, w, shape, kept.iter().map(|&o| r.bias[o]).collect())?;
                }
                None => set_weights(g, ni, r.weight.clone(), r.shape.clone(), r.bias.clone())?,
            }
        }
        Ok(())
    }

    /// Prunes the unit to `k` channels in `current` (a model already pruned upstream): gathers
    /// each consumer's statistics from the inputs it gets there and the outputs of `original`
    /// (the pixels and targets of `fit`), chooses the channels and refits. Returns the channels
    /// kept.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_sequential(&self, current: &mut Graph, original: &Graph, shapes: &[Option<Vec<usize>>], k: usize, selection: Selection, fit: &UnitFit, batches: &[Tensor], limits: &Limits, sampling: Sampling, rows: &mut KeptRows) -> Result<Vec<usize>> {
        let mut stats = Vec::new();
        for (&ni, s) in self.consumer_nodes.iter().zip(&fit.stats) {
            stats.push(Stats::gather(current, original, ni, shapes, batches, limits, sampling, Some(s))?);
        }
        let fit = UnitFit { stats, points: fit.points };
        let keep = self.choose(current, k, selection, Some(&fit));
        self.apply_with_fit(current, &keep, Some(&fit), sampling.ridge, rows)?;
        Ok(keep)
    }
}
