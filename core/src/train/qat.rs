//! Quantization-aware training: the quantizers of a [`QuantSim`] as differentiable
//! quantize-dequantize steps, with learnable ranges (AIMET's range learning).
//!
//! Each channel's grid is `y = (clamp(round(x/s - o), 0, n) + o) * s` (the simulation's
//! [`Encoding::qdq`], bit for bit). Gradients use the straight-through estimator: `round` is
//! taken as the identity, so inside the range `dy/dx = 1` and outside it 0.
//! - A symmetric grid (weights) learns its scale `s` (LSQ): `dy/ds = (q + o) - x/s` inside,
//!   `o` below, `n + o` above; the offset stays `-2^(b-1)`.
//! - An asymmetric grid (activations) learns its `min` and `max`, with `s = (max - min)/n` and
//!   `o = round(min/s)`. With `A = (q + o) - x/s` inside and `A = (q + o) - min/s` outside,
//!   `dy/dmax = A/n` and `dy/dmin = -A/n + [outside]`.
//!
//! The optimizer sees each range parameter relative to its starting value (`s = s0 * θ`,
//! `min = r0 * θ`), so one learning rate suits every layer, and each gradient is scaled by
//! LSQ's `1/sqrt(count * q_max)`. The model's input quantizer keeps its range.

use super::Net;
use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::quant::encoding::{Encoding, MIN_SCALE};
use crate::quant::sim::{int_bias_values, qdq_param, split};
use crate::quant::{Mode, QuantSim};
use crate::tensor::Tensor;

/// One channel's grid and where its parameters sit in [`FakeQuant::theta`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Grid {
    /// Learns the scale: `s = base * θ[at]`.
    Sym { at: usize, base: f32, offset: i64 },
    /// Learns the range: `min = base * θ[at]`, `max = base * θ[at + 1]`.
    Asym { at: usize, base: f32 },
    /// Fixed.
    Frozen(Encoding),
}

/// A BatchNormalization kept during QAT: the layer output `x` it normalizes into `y`, and
/// the layer's weight quantizer.
#[derive(Debug, Clone, Copy)]
struct KeptBn {
    x: ValueId,
    y: ValueId,
    weight: usize,
}

#[derive(Debug, Clone)]
struct Quantizer {
    value: ValueId,
    /// Channel axis (weights quantized per channel).
    axis: Option<usize>,
    bw: u8,
    ties_even: bool,
    grids: Vec<Grid>,
    /// Elements per channel (LSQ's gradient scale).
    count: usize,
}

/// The simulation's quantizers, trainable.
#[derive(Debug, Clone)]
pub struct FakeQuant {
    weights: Vec<Quantizer>,
    acts: Vec<Quantizer>,
    /// qplay mode's biases on their accumulator's grid: (bias, input activation quantizer,
    /// weight quantizer).
    biases: Vec<(ValueId, usize, usize)>,
    /// BatchNormalizations kept in training (folded when the result is built).
    kept: Vec<KeptBn>,
    /// By value: `Some((is_weight, index))`.
    slot: Vec<Option<(bool, usize)>>,
    /// The range parameters, relative to their starting values.
    pub theta: Vec<f32>,
}

impl FakeQuant {
    /// The quantizers of a calibrated (or imported) simulation of `graph` (the same graph the
    /// simulation was built on). With `learn_ranges` false the ranges stay fixed.
    pub fn from_sim(sim: &QuantSim, learn_ranges: bool) -> Result<FakeQuant> {
        let g = sim.graph();
        let mut theta = Vec::new();
        let mut slot = vec![None; g.values.len()];
        let grid = |e: Encoding, learn: bool, theta: &mut Vec<f32>| -> Grid {
            let at = theta.len();
            match (learn, e.symmetric) {
                (false, _) => Grid::Frozen(e),
                (true, true) => {
                    theta.push(1.0);
                    Grid::Sym { at, base: e.scale as f32, offset: e.offset }
                }
                (true, false) => {
                    let (mn, mx) = (e.min(), e.max());
                    let base = (mx - mn).max(MIN_SCALE as f32);
                    theta.extend([mn / base, mx / base]);
                    Grid::Asym { at, base }
                }
            }
        };
        let mut weights = Vec::new();
        for p in &sim.params {
            let t = g.consts[p.value].as_ref().ok_or_else(|| Error::Quant("a quantized weight is not constant".into()))?;
            let bw = p.encodings.first().ok_or_else(|| Error::Quant("calibrate the simulation first".into()))?.bw;
            let grids = p.encodings.iter().map(|&e| grid(e, learn_ranges, &mut theta)).collect();
            slot[p.value] = Some((true, weights.len()));
            weights.push(Quantizer { value: p.value, axis: p.axis, bw, ties_even: false, grids, count: t.len() / p.encodings.len().max(1) });
        }
        let ties_even = sim.config().mode == Mode::Qplay;
        let mut acts = Vec::new();
        for a in &sim.acts {
            let Some(e) = a.encoding else { continue };
            // The model input's range is the data's own; constants are not trained.
            let learn = learn_ranges && !g.inputs.contains(&a.value) && g.consts[a.value].is_none();
            let grids = vec![grid(Encoding { ties_even, ..e }, learn, &mut theta)];
            slot[a.value] = Some((false, acts.len()));
            acts.push(Quantizer { value: a.value, axis: None, bw: e.bw, ties_even, grids, count: 1 });
        }
        let mut biases = Vec::new();
        for n in &g.nodes {
            if let Some((x, w, b)) = sim.int_bias_sources(n) {
                if let (Some(Some((false, xi))), Some(Some((true, wi)))) = (slot.get(x), slot.get(w)) {
                    biases.push((b, *xi, *wi));
                }
            }
        }
        Ok(FakeQuant { weights, acts, biases, kept: Vec::new(), slot, theta })
    }

    /// Whether BatchNormalizations are kept in training (folded when the result is built).
    pub fn keeps_bn(&self) -> bool {
        !self.kept.is_empty()
    }

    /// Number of range parameters.
    pub fn range_len(&self) -> usize {
        self.theta.len()
    }

    pub(crate) fn has_act(&self, v: ValueId) -> bool {
        matches!(self.slot.get(v), Some(Some((false, _))))
    }

    fn encoding(&self, q: &Quantizer, grid: &Grid) -> Encoding {
        let n = ((1i64 << q.bw) - 1) as f32;
        match *grid {
            Grid::Frozen(e) => e,
            Grid::Sym { at, base, offset } => Encoding { bw: q.bw, scale: (base * self.theta[at]).max(MIN_SCALE as f32) as f64, offset, symmetric: true, ties_even: q.ties_even },
            Grid::Asym { at, base } => {
                let (mn, mx) = (base * self.theta[at], base * self.theta[at + 1]);
                let scale = ((mx - mn) / n).max(MIN_SCALE as f32);
                let offset = (mn / scale).round().clamp(-n, 0.0) as i64;
                Encoding { bw: q.bw, scale: scale as f64, offset, symmetric: false, ties_even: q.ties_even }
            }
        }
    }

    fn encodings(&self, q: &Quantizer) -> Vec<Encoding> {
        q.grids.iter().map(|g| self.encoding(q, g)).collect()
    }

    /// Quantize-dequantized copies of the weights (and of quantized constants) as the nodes
    /// read them, by value; in qplay mode also the biases on their accumulator's grid, as the
    /// simulation and the integer engine add them (their gradient passes straight through).
    pub(crate) fn quantize_weights(&self, g: &Graph, wq: &mut [Option<Tensor>]) {
        for q in self.weights.iter().chain(self.acts.iter().filter(|a| g.consts[a.value].is_some())) {
            if let Some(t) = g.consts[q.value].as_ref() {
                wq[q.value] = Some(qdq_param(t.clone(), q.axis, &self.encodings(q)));
            }
        }
        for &(b, xi, wi) in &self.biases {
            let Some(t) = g.consts[b].as_ref() else { continue };
            let Some(bias) = t.as_f32() else { continue };
            let x = &self.acts[xi];
            let sx = self.encoding(x, &x.grids[0]).scale as f32;
            let scales: Vec<f32> = self.encodings(&self.weights[wi]).iter().map(|e| sx * e.scale as f32).collect();
            if scales.len() != 1 && scales.len() != bias.len() {
                continue;
            }
            let v = int_bias_values(bias, &scales).iter().enumerate().map(|(j, &q)| q as f32 * scales[if scales.len() == 1 { 0 } else { j }]).collect();
            wq[b] = Some(Tensor::from_parts_f32(t.shape().to_vec(), v));
        }
    }

    /// Quantize-dequantizes the activation `v` in place (if it has a quantizer).
    pub(crate) fn quantize_act(&self, v: ValueId, t: &mut Tensor) {
        if let Some(Some((false, i))) = self.slot.get(v) {
            self.encoding(&self.acts[*i], &self.acts[*i].grids[0]).qdq_tensor(t);
        }
    }

    /// Turns the gradient of a quantizer's output into that of its input (`dy` in place) and
    /// adds the gradients of its range parameters to `ranges`.
    fn backward(&self, q: &Quantizer, x: &[f32], shape: &[usize], dy: &mut [f32], ranges: &mut [f32]) {
        let (outer, ch, inner) = match q.axis {
            Some(ax) if ax < shape.len() => split(shape, ax),
            _ => (1, 1, x.len()),
        };
        let n = ((1i64 << q.bw) - 1) as f64;
        let lsq = 1.0 / ((q.count as f64) * (n / 2.0).max(1.0)).sqrt();
        for (c, grid) in q.grids.iter().enumerate().take(ch) {
            let e = self.encoding(q, grid);
            let asym_min = match *grid {
                Grid::Asym { at, base } => Some((base * self.theta[at]) as f64),
                _ => None,
            };
            let mut g = [0.0f64; 2];
            for b in 0..outer {
                let range = (b * ch + c) * inner..(b * ch + c + 1) * inner;
                let gc = ste_backward(&e, asym_min, &x[range.clone()], &mut dy[range]);
                g[0] += gc[0];
                g[1] += gc[1];
            }
            match *grid {
                Grid::Frozen(_) => {}
                Grid::Sym { at, base, .. } => ranges[at] += (g[0] * base as f64 * lsq) as f32,
                Grid::Asym { at, base } => {
                    ranges[at] += (g[0] * base as f64 * lsq) as f32;
                    ranges[at + 1] += (g[1] * base as f64 * lsq) as f32;
                }
            }
        }
    }

    pub(crate) fn act_backward(&self, v: ValueId, pre: &Tensor, dy: &mut [f32], ranges: &mut [f32]) {
        if let Some(Some((false, i))) = self.slot.get(v) {
            let q = &self.acts[*i];
            self.backward(q, pre.as_f32().unwrap_or(&[]), pre.shape(), dy, ranges);
        }
    }

    pub(crate) fn weight_backward(&self, v: ValueId, w: &Tensor, dy: &mut [f32], ranges: &mut [f32]) {
        if let Some(Some((true, i))) = self.slot.get(v) {
            let q = &self.weights[*i];
            self.backward(q, w.as_f32().unwrap_or(&[]), w.shape(), dy, ranges);
        }
    }

    /// Keeps every range valid after an update: a positive scale; `min <= 0 <= max` with a
    /// non-empty range.
    pub fn constrain(&mut self) {
        for q in self.weights.iter().chain(&self.acts) {
            for g in &q.grids {
                match *g {
                    Grid::Frozen(_) => {}
                    Grid::Sym { at, .. } => self.theta[at] = self.theta[at].max(1e-3),
                    Grid::Asym { at, .. } => {
                        self.theta[at] = self.theta[at].min(0.0);
                        self.theta[at + 1] = self.theta[at + 1].max(self.theta[at] + 1e-3).max(0.0);
                    }
                }
            }
        }
    }

    /// The quantization simulation of the trained `graph` (the graph the quantizers were
    /// trained on) with the learned encodings, under the configuration `config` they came from.
    /// BatchNormalizations kept in training are folded first (see [`FakeQuant::fold_kept`]).
    pub fn to_sim(&self, graph: Graph, config: crate::quant::QuantSimConfig) -> Result<QuantSim> {
        if !self.kept.is_empty() {
            return self.fold_kept(graph, config).map(|(_, sim)| sim);
        }
        let mut sim = QuantSim::new(graph, config)?;
        self.write_encodings(&mut sim)?;
        Ok(sim)
    }

    /// Folds the BatchNormalizations kept in training (with their running statistics) into
    /// their layers, and their factors `k = gamma / sqrt(var + eps)` into the weight
    /// quantizers' per-channel scales, `s' = s |k|`. The folded quantized weight is then the
    /// trained one times `k` (exact but where `k < 0` mirrors a weight on the grid's lowest
    /// step), so the folded simulation computes what the trained graph does in evaluation mode.
    /// Returns the folded graph and its simulation.
    pub fn fold_kept(&self, graph: Graph, config: crate::quant::QuantSimConfig) -> Result<(Graph, QuantSim)> {
        let mut q = self.clone();
        for kb in &self.kept {
            let k = bn_factor(&graph, kb.y).ok_or_else(|| Error::Quant(format!("the BatchNormalization of '{}' cannot be folded", graph.values[kb.x].name)))?;
            if let Some(a) = q.acts.iter_mut().find(|a| a.value == kb.y) {
                a.value = kb.x;
            }
            scale_grids(&mut q.weights[kb.weight], &k, false);
        }
        let (folded, _) = crate::passes::bn_fold::fold_batch_norms(graph);
        let mut sim = QuantSim::new(folded.clone(), config)?;
        q.write_encodings(&mut sim)?;
        Ok((folded, sim))
    }

    /// Writes the learned encodings into `sim` (built on the trained graph with the same
    /// configuration, so its quantizers are the same).
    pub fn write_encodings(&self, sim: &mut QuantSim) -> Result<()> {
        let mismatch = || Error::Quant("the simulation's quantizers differ from the trained ones".into());
        for q in &self.weights {
            let p = sim.params.iter_mut().find(|p| p.value == q.value).ok_or_else(mismatch)?;
            p.encodings = self.encodings(q);
        }
        for q in &self.acts {
            let a = sim.acts.iter_mut().find(|a| a.value == q.value).ok_or_else(mismatch)?;
            a.encoding = Some(Encoding { ties_even: false, ..self.encodings(q)[0] });
        }
        Ok(())
    }
}

/// The straight-through backward pass of one grid `e` over inputs `x`: `dy` (the gradient of
/// the quantize-dequantized values) becomes the gradient of `x` in place, and the return value
/// holds the range gradients: `[dL/ds, 0]` for a symmetric grid, or `[dL/dmin, dL/dmax]` for an
/// asymmetric one whose unrounded minimum is `asym_min` (see the module doc).
pub fn ste_backward(e: &Encoding, asym_min: Option<f64>, x: &[f32], dy: &mut [f32]) -> [f64; 2] {
    let (s, o, n) = (e.scale, e.offset as f64, e.steps() as f64);
    let mut g = [0.0f64; 2];
    for (&xv, d) in x.iter().zip(dy) {
        let r = e.quantize(xv) as f64; // the clamped grid index
        let t = xv as f64 / s - o;
        let inside = t > -0.5 && t < n + 0.5;
        let dd = *d as f64;
        match asym_min {
            None => g[0] += dd * if inside { r + o - xv as f64 / s } else { r + o },
            Some(mn) => {
                let a = if inside { r + o - xv as f64 / s } else { r + o - mn / s };
                g[0] += dd * (-a / n + if inside { 0.0 } else { 1.0 });
                g[1] += dd * a / n;
            }
        }
        if !inside {
            *d = 0.0;
        }
    }
    g
}

/// Quantization-aware training's starting point: `graph` with its BatchNormalization folded,
/// the simulation's quantizers placed by `config` and initialized by min-max calibration on
/// `calib` (or from the AIMET encodings `init`), made trainable (ranges too with
/// `learn_ranges`).
///
/// With `keep_bn` the foldable BatchNormalizations stay in the trained graph instead (batch
/// statistics in training, running averages updated; re-estimate them afterwards with
/// [`super::reestimate_bn`]): the quantizers are those of the folded model, moved onto the
/// unfolded one, each weight grid's scale divided by its channel's `|k|` and a layer's output
/// quantizer put after its BatchNormalization. [`FakeQuant::to_sim`] folds them back. This
/// needs per-channel weights, since one scale per tensor cannot absorb a factor per channel.
pub fn qat_net(graph: Graph, config: &crate::quant::QuantSimConfig, calib: &[Tensor], init: Option<&str>, learn_ranges: bool, keep_bn: bool, limits: crate::Limits) -> Result<Net> {
    if keep_bn && !config.per_channel && graph.nodes.iter().any(|n| matches!(n.op, crate::graph::Op::BatchNorm { .. })) {
        return Err(Error::Input { name: "settings".into(), msg: "keeping BatchNormalization in QAT needs per-channel weights (its factors are folded into the weights' per-channel scales afterwards)".into() });
    }
    let (folded, report) = crate::passes::bn_fold::fold_batch_norms(graph.clone());
    let mut sim = QuantSim::new(folded.clone(), config.clone())?;
    sim.set_limits(limits.clone());
    match init {
        Some(text) => sim.import_aimet_json(text)?,
        None => sim.calibrate(calib)?,
    }
    let mut fq = FakeQuant::from_sim(&sim, learn_ranges)?;
    if !keep_bn || report.folded.is_empty() {
        let mut net = Net::new(folded, limits)?;
        net.quant = Some(fq);
        return Ok(net);
    }
    for (layer, bn) in &report.folded {
        let find = |name: &str| graph.nodes.iter().find(|n| n.name == name);
        let (Some(l), Some(b)) = (find(layer), find(bn)) else { continue };
        let (Some(Some(x)), Some(&y), Some(Some(w))) = (b.inputs.first(), b.outputs.first(), l.inputs.get(1)) else { continue };
        let (Some(weight), Some(k)) = (fq.weights.iter().position(|q| q.value == *w), bn_factor(&graph, y)) else { continue };
        if let Some(a) = fq.acts.iter_mut().find(|a| a.value == *x) {
            a.value = y;
        }
        scale_grids(&mut fq.weights[weight], &k, true);
        fq.biases.retain(|&(_, _, wi)| wi != weight);
        fq.kept.push(KeptBn { x: *x, y, weight });
    }
    fq.slot = vec![None; graph.values.len().max(folded.values.len())];
    for (i, q) in fq.weights.iter().enumerate() {
        fq.slot[q.value] = Some((true, i));
    }
    for (i, q) in fq.acts.iter().enumerate() {
        fq.slot[q.value] = Some((false, i));
    }
    let mut net = Net::new(graph, limits)?;
    net.quant = Some(fq);
    Ok(net)
}

/// `k = gamma / sqrt(var + eps)` per channel of the BatchNormalization whose output is `y`.
fn bn_factor(g: &Graph, y: ValueId) -> Option<Vec<f32>> {
    let bn = g.nodes.iter().find(|n| n.outputs.first() == Some(&y))?;
    let crate::graph::Op::BatchNorm { epsilon } = bn.op else { return None };
    let param = |k: usize| bn.inputs.get(k).copied().flatten().and_then(|v| g.consts[v].as_ref()).map(Tensor::to_f32_vec);
    let (gamma, var) = (param(1)?, param(4)?);
    (gamma.len() == var.len()).then(|| gamma.iter().zip(&var).map(|(g, v)| g / (v + epsilon).sqrt()).collect())
}

/// Multiplies (or with `divide`, divides) each channel's grid scale by `|k|` of its channel.
fn scale_grids(q: &mut Quantizer, k: &[f32], divide: bool) {
    for (grid, &kc) in q.grids.iter_mut().zip(k) {
        let f = kc.abs().max(1e-12);
        let f = if divide { 1.0 / f } else { f };
        match grid {
            Grid::Sym { base, .. } | Grid::Asym { base, .. } => *base *= f,
            Grid::Frozen(e) => e.scale *= f as f64,
        }
    }
}
