//! Automatic mixed precision: a bit-width per quantizer group, chosen on the whole Pareto curve
//! of score against relative BOPs (after AIMET's AMP, aimet-onnx `choose_mixed_precision`).
//!
//! - **Groups**: a weighted layer (Conv, ConvTranspose, Gemm, MatMul) with its weight quantizer
//!   and the quantizer of its input activation (found back through layout ops); the inputs of an
//!   Add or a Concat share one group. Any other activation quantizer joins the group of the layer
//!   that produces it (back through single-input ops) unless an Add or Concat already ties it to
//!   a layer's input, or stands alone.
//! - **Candidates** `WxAy`: a group's weights get x bits and its activations y bits. Each
//!   candidate's encodings come from calibrating the whole model at that bit-width; optionally
//!   the rounding of candidates below 8 weight bits is learned by AdaRound on the whole model at
//!   that candidate, and a group at such a candidate takes those weights.
//! - **BOPs** = Σ MACs × bw_w × bw_a over the weighted layers (a MatMul of two activations uses
//!   its second input's bits as bw_w), relative to uniform W8A8.
//! - **Phase 1**: every group alone at every cheaper candidate, the others at the most precise
//!   one, scored by the outputs' SQNR: the noise each choice adds.
//! - **Phase 2**: two greedy walks, one group per step, down from the most precise point and up
//!   from the cheapest; every point is measured, and the non-dominated ones are the curve. Each
//!   step ranks the moves by phase 1's noise (output noise powers of separate quantizers add, to
//!   first order) per BOP moved, measures the best few from the current point (the lookahead)
//!   and takes the best measured.

use super::encoding::check_bits;
use super::{QuantSim, QuantSimConfig};
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, ValueId};
use crate::tensor::Tensor;
use crate::timing::{self, median};
use serde::Serialize;
use std::collections::BTreeMap;

mod curve;
pub use curve::{fill, run};

/// One bit-width choice for a group: weights `w` bits, activations `a` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Candidate {
    pub w: u8,
    pub a: u8,
}

impl Candidate {
    /// Parses `w4a8` (any case).
    pub fn parse(s: &str) -> Result<Candidate> {
        let bad = || Error::Input { name: "candidates".into(), msg: format!("'{s}' is not a candidate: write them as w4a8, w8a16, ...") };
        let l = s.trim().to_ascii_lowercase();
        let rest = l.strip_prefix('w').ok_or_else(bad)?;
        let (w, a) = rest.split_once('a').ok_or_else(bad)?;
        let (w, a) = (w.parse::<u32>().map_err(|_| bad())?, a.parse::<u32>().map_err(|_| bad())?);
        let check = |b: u32| check_bits(b).map_err(|e| Error::Input { name: "candidates".into(), msg: format!("'{s}': {e}") });
        Ok(Candidate { w: check(w)?, a: check(a)? })
    }

    /// Bit operations per MAC.
    pub fn cost(&self) -> u64 {
        self.w as u64 * self.a as u64
    }
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "W{}A{}", self.w, self.a)
    }
}

/// Quantizers that take one bit-width together.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// Its first layer's node name (or its first activation's value name).
    pub name: String,
    /// Weighted layers (node indices).
    pub layers: Vec<usize>,
    /// Indices into the simulation's `params` and `acts`.
    pub params: Vec<usize>,
    pub acts: Vec<usize>,
    pub macs: u64,
}

const PASS_THROUGH: &[&str] = &["Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Cast", "Dropout"];

fn is_layer(op: &Op) -> bool {
    matches!(op, Op::Conv { .. } | Op::ConvTranspose { .. } | Op::Gemm { .. } | Op::MatMul)
}

fn find(parent: &mut [usize], i: usize) -> usize {
    let mut r = i;
    while parent[r] != r {
        r = parent[r];
    }
    let mut i = i;
    while parent[i] != r {
        let next = parent[i];
        parent[i] = r;
        i = next;
    }
    r
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        parent[ra.max(rb)] = ra.min(rb);
    }
}

/// The quantizer groups of `sim` (placed, not necessarily calibrated), and each layer's MACs
/// from `shapes` (see [`crate::cost::infer_shapes`]).
pub fn groups(sim: &QuantSim, shapes: &[Option<Vec<usize>>]) -> Vec<Group> {
    let g = sim.graph();
    let act_of: BTreeMap<ValueId, usize> = sim.acts.iter().enumerate().map(|(i, a)| (a.value, i)).collect();
    let param_of: BTreeMap<ValueId, usize> = sim.params.iter().enumerate().map(|(i, p)| (p.value, i)).collect();
    let producer = |v: ValueId| g.nodes.iter().position(|n| n.outputs.contains(&v));
    // The activation quantizer a value is read through: its own, or one before layout ops.
    let quantizer_of = |mut v: ValueId| -> Option<usize> {
        loop {
            if let Some(&i) = act_of.get(&v) {
                return Some(i);
            }
            let n = &g.nodes[producer(v)?];
            if !PASS_THROUGH.contains(&n.op_type.as_str()) {
                return None;
            }
            v = n.inputs.first().copied().flatten()?;
        }
    };
    let layers: Vec<usize> = g.nodes.iter().enumerate().filter(|(_, n)| is_layer(&n.op)).map(|(i, _)| i).collect();
    let (na, nl) = (sim.acts.len(), layers.len());
    // Union-find items: activation quantizers 0..na, then layers.
    let mut parent: Vec<usize> = (0..na + nl).collect();
    let mut claimed = vec![false; na];
    for (li, &ni) in layers.iter().enumerate() {
        let n = &g.nodes[ni];
        let dynamic_b = matches!(n.op, Op::MatMul) && n.inputs.get(1).copied().flatten().is_some_and(|v| !param_of.contains_key(&v));
        for k in if dynamic_b { 0..2 } else { 0..1 } {
            if let Some(q) = n.inputs.get(k).copied().flatten().and_then(quantizer_of) {
                union(&mut parent, na + li, q);
                claimed[q] = true;
            }
        }
    }
    for n in &g.nodes {
        if matches!(n.op_type.as_str(), "Add" | "Concat") {
            let qs: Vec<usize> = n.inputs.iter().flatten().filter_map(|&v| quantizer_of(v)).collect();
            for w in qs.windows(2) {
                union(&mut parent, w[0], w[1]);
            }
        }
    }
    // Unclaimed activations follow the layer that produces them (back through other ops), unless
    // an Add or Concat already ties them to a layer's input; a quantized constant (e.g. a Clip
    // bound) follows the data input of the node that reads it.
    let tied: std::collections::BTreeSet<usize> = (0..na).filter(|&q| claimed[q]).map(|q| find(&mut parent, q)).collect();
    for (q, a) in sim.acts.iter().enumerate() {
        if claimed[q] || tied.contains(&find(&mut parent, q)) {
            continue;
        }
        if g.consts[a.value].is_some() {
            let reader = g.nodes.iter().find(|n| n.inputs.iter().skip(1).flatten().any(|&i| i == a.value));
            if let Some(d) = reader.and_then(|n| n.inputs.first().copied().flatten()).and_then(quantizer_of) {
                union(&mut parent, d, q);
            }
            continue;
        }
        let mut v = a.value;
        while let Some(ni) = producer(v) {
            if let Some(li) = layers.iter().position(|&l| l == ni) {
                union(&mut parent, na + li, q);
                break;
            }
            match g.nodes[ni].inputs.first().copied().flatten() {
                Some(x) => v = x,
                None => break,
            }
        }
    }
    let mut by_root: BTreeMap<usize, Group> = BTreeMap::new();
    let new_group = || Group { name: String::new(), layers: Vec::new(), params: Vec::new(), acts: Vec::new(), macs: 0 };
    for (li, &ni) in layers.iter().enumerate() {
        let r = find(&mut parent, na + li);
        let grp = by_root.entry(r).or_insert_with(new_group);
        let n = &g.nodes[ni];
        if grp.name.is_empty() {
            grp.name = n.name.clone();
        }
        grp.layers.push(ni);
        grp.macs += crate::cost::node_macs(n, shapes);
        if let Some(&p) = n.inputs.get(1).copied().flatten().and_then(|w| param_of.get(&w)) {
            grp.params.push(p);
        }
    }
    for q in 0..na {
        let r = find(&mut parent, q);
        let grp = by_root.entry(r).or_insert_with(new_group);
        if grp.name.is_empty() {
            grp.name = g.values[sim.acts[q].value].name.clone();
        }
        grp.acts.push(q);
    }
    let mut out: Vec<Group> = by_root.into_values().collect();
    out.sort_by_key(|grp| grp.layers.first().copied().unwrap_or(usize::MAX));
    out
}

/// One point of the curve.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub relative_bops: f64,
    pub score: f64,
    pub weight_bytes: u64,
    /// Per weighted layer: `[weight bits, activation bits]`.
    pub bits: BTreeMap<String, [u8; 2]>,
    /// Predicted integer-engine milliseconds per inference on this machine (see
    /// [`LatencyTable`]), once measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The candidate of each group (same order as [`Amp::groups`]).
    #[serde(skip)]
    pub choice: Vec<usize>,
}

/// What [`run`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Amp {
    pub candidates: Vec<Candidate>,
    pub groups: Vec<Group>,
    /// Phase 1: `sensitivity[group][candidate]`, the score with only that group at that
    /// candidate (the others at the most precise one).
    pub sensitivity: Vec<Vec<f64>>,
    /// Every point phase 2 measured, in the order it measured them.
    pub visited: Vec<Point>,
    /// The non-dominated points, cheapest first (scores rising).
    pub pareto: Vec<Point>,
    /// Each candidate applied to every group.
    pub uniform: Vec<Point>,
    pub evaluations: usize,
}

/// How the model is quantized at each candidate.
pub struct Setup<'a> {
    /// The transformed (BN-folded, maybe equalized) graph.
    pub graph: &'a Graph,
    /// Mode, granularity and scheme; the bit-widths are the candidates'.
    pub config: &'a QuantSimConfig,
    pub calib: &'a [Tensor],
    pub limits: crate::Limits,
    /// AdaRound for the candidates with fewer than 8 weight bits (on `calib`; each layer from
    /// its FP32 input, whatever `fp32_inputs` says).
    pub adaround: Option<crate::passes::adaround::AdaroundConfig>,
}

/// The calibrated simulations of every candidate, plus the groups and costs.
pub struct Space {
    pub candidates: Vec<Candidate>,
    /// The setup's graph (a candidate's simulation may hold weights AdaRound learned).
    graph: Graph,
    sims: Vec<QuantSim>,
    pub groups: Vec<Group>,
    /// Per node: MACs.
    layer_macs: Vec<(usize, u64)>,
    /// Per weighted layer node: its weight elements and its other parameters.
    layer_params: Vec<(usize, u64, u64)>,
    /// Weight bytes outside the weighted layers' own (other parameters, as f32).
    other_bytes: u64,
    w8a8_bops: f64,
}

impl Space {
    /// Calibrates the model at every candidate (in the order given; duplicates removed), after
    /// AdaRound where the setup asks for it. `progress(done, total)` counts a calibration as one
    /// step and an AdaRound as its iterations per layer; returning false cancels.
    pub fn new(setup: &Setup, candidates: &[Candidate], progress: &mut dyn FnMut(usize, usize) -> bool) -> Result<Space> {
        let mut cands: Vec<Candidate> = Vec::new();
        for &c in candidates {
            if !cands.contains(&c) {
                cands.push(c);
            }
        }
        if cands.is_empty() {
            return Err(Error::Input { name: "candidates".into(), msg: "give at least one candidate".into() });
        }
        let ada_of = |c: &Candidate| setup.adaround.as_ref().filter(|_| c.w < 8);
        let units = |c: &Candidate| 1 + ada_of(c).map_or(0, |cfg| cfg.iterations);
        let total: usize = cands.iter().map(units).sum();
        let cancelled = || Error::Quant("mixed precision was cancelled".into());
        let mut done = 0;
        let mut sims = Vec::new();
        for c in &cands {
            if !progress(done, total) {
                return Err(cancelled());
            }
            let mut sim = QuantSim::new(setup.graph.clone(), QuantSimConfig { weight_bits: c.w as u32, act_bits: c.a as u32, ..setup.config.clone() })?;
            sim.set_limits(setup.limits.clone());
            if let Some(cfg) = ada_of(c) {
                // Each layer rounded against its own FP32 output from its FP32 input: rounding
                // learned on the inputs of other rounded layers compensates their errors, and
                // breaks once a neighbour takes another candidate (EfficientNet-Lite0 W4A8:
                // 12.6 dB everywhere, 4.4 dB with one group back at W8A8).
                let cfg = &crate::passes::adaround::AdaroundConfig { fp32_inputs: true, ..cfg.clone() };
                crate::passes::adaround::adaround(&mut sim, setup.calib, cfg, &mut |p| {
                    let f = (p.layer * p.iterations + p.iteration) as f64 / (p.layers * p.iterations).max(1) as f64;
                    progress(done + (f * cfg.iterations as f64) as usize, total)
                })
                .map_err(|e| Error::Quant(format!("AdaRound at {c}: {e}")))?;
            }
            sim.calibrate(setup.calib)?;
            sims.push(sim);
            done += units(c);
        }
        if !progress(total, total) {
            return Err(cancelled());
        }
        let g = setup.graph;
        // MACs per sample: the input's shape with a batch of 1.
        let one = |t: &Tensor| t.shape().iter().enumerate().map(|(i, &d)| if i == 0 { 1 } else { d }).collect::<Vec<_>>();
        let given: Vec<(String, Vec<usize>)> = setup.calib.first().map(|t| vec![(g.values[g.inputs[0]].name.clone(), one(t))]).unwrap_or_default();
        let shapes = crate::cost::infer_shapes(g, &crate::cost::input_shapes(g, &given)?, &setup.limits)?;
        let groups = groups(&sims[0], &shapes);
        let report = crate::cost::cost(g, &shapes);
        let mut layer_macs = Vec::new();
        let mut layer_params = Vec::new();
        let mut other_bytes = 0;
        for l in &report.layers {
            let ni = g.nodes.iter().position(|n| n.name == l.name);
            match ni.filter(|&ni| is_layer(&g.nodes[ni].op)) {
                Some(ni) => {
                    layer_macs.push((ni, l.macs));
                    layer_params.push((ni, l.weights, l.params - l.weights));
                }
                None => other_bytes += l.params * 4,
            }
        }
        let w8a8_bops = layer_macs.iter().map(|&(_, m)| m as f64 * 64.0).sum::<f64>().max(1.0);
        Ok(Space { candidates: cands, graph: g.clone(), sims, groups, layer_macs, layer_params, other_bytes, w8a8_bops })
    }

    /// The simulation with group `i` at candidate `choice[i]`.
    pub fn sim(&self, choice: &[usize]) -> Result<QuantSim> {
        let base = &self.sims[0];
        let (w, a) = choice.iter().fold((0u8, 0u8), |(w, a), &c| (w.max(self.candidates[c].w), a.max(self.candidates[c].a)));
        // Weights AdaRound learned for a candidate go with its encodings.
        let mut graph = self.graph.clone();
        for (grp, &c) in self.groups.iter().zip(choice).filter(|&(_, &c)| self.sims[c].params_frozen()) {
            for &p in &grp.params {
                let v = self.sims[c].params[p].value;
                graph.consts[v].clone_from(&self.sims[c].graph().consts[v]);
            }
        }
        let mut sim = QuantSim::new(graph, QuantSimConfig { weight_bits: w.max(2) as u32, act_bits: a.max(2) as u32, ..base.config().clone() })?;
        sim.set_limits(base.limits().clone());
        for (grp, &c) in self.groups.iter().zip(choice) {
            let from = &self.sims[c];
            for &p in &grp.params {
                sim.params[p].encodings = from.params[p].encodings.clone();
            }
            for &q in &grp.acts {
                sim.acts[q].encoding = from.acts[q].encoding;
            }
        }
        // Params in no group (weights of nodes that are not layers) keep the first candidate's.
        for (p, q) in sim.params.iter_mut().zip(&base.params) {
            if p.encodings.is_empty() {
                p.encodings = q.encodings.clone();
            }
        }
        sim.adjust_weight_scales_against_overflow();
        Ok(sim)
    }

    /// Per group: its layers' bits under `choice`, as `[w, a]` by layer node index.
    fn layer_bits(&self, choice: &[usize]) -> BTreeMap<usize, [u8; 2]> {
        let mut m = BTreeMap::new();
        for (grp, &c) in self.groups.iter().zip(choice) {
            let cand = self.candidates[c];
            for &l in &grp.layers {
                m.insert(l, [cand.w, cand.a]);
            }
        }
        m
    }

    /// BOPs of `choice` relative to uniform W8A8.
    pub fn relative_bops(&self, choice: &[usize]) -> f64 {
        let bits = self.layer_bits(choice);
        let g = &self.graph;
        let mut sum = 0.0;
        for &(ni, macs) in &self.layer_macs {
            let [w, a] = bits.get(&ni).copied().unwrap_or([8, 8]);
            let n = &g.nodes[ni];
            // A MatMul of two activations: its second operand's bits stand for the weight's.
            let w = if matches!(n.op, Op::MatMul) && !self.groups.iter().any(|grp| grp.layers.contains(&ni) && !grp.params.is_empty()) { a } else { w };
            sum += macs as f64 * w as f64 * a as f64;
        }
        sum / self.w8a8_bops
    }

    /// Bytes of the weights at their bits (biases and other parameters as f32).
    pub fn weight_bytes(&self, choice: &[usize]) -> u64 {
        let bits = self.layer_bits(choice);
        self.other_bytes + self.layer_params.iter().map(|&(ni, w, rest)| (w * bits.get(&ni).map_or(32, |b| b[0]) as u64).div_ceil(8) + rest * 4).sum::<u64>()
    }

    fn point(&self, choice: &[usize], score: f64) -> Point {
        let g = &self.graph;
        let bits = self.layer_bits(choice).into_iter().map(|(ni, b)| (g.nodes[ni].name.clone(), b)).collect();
        Point { relative_bops: self.relative_bops(choice), score, weight_bytes: self.weight_bytes(choice), bits, latency_ms: None, choice: choice.to_vec() }
    }

    /// Every weighted layer's name and MACs, in graph order.
    pub fn layers(&self) -> Vec<(String, u64)> {
        let g = &self.graph;
        self.layer_macs.iter().map(|&(ni, m)| (g.nodes[ni].name.clone(), m)).collect()
    }

    /// Times the integer engine on `sample` (a batch of one) with each candidate applied to
    /// every group: the median over `runs` timings of each group's steps, each timing a mean over
    /// enough inferences to fill about 10 ms (`clock` returns milliseconds).
    /// A step counts for the group of the layer it starts at, else of an activation quantizer
    /// it writes or reads. `progress(done, total)` after each run; false cancels.
    pub fn latency_table(&self, sample: &Tensor, runs: usize, clock: &dyn Fn() -> f64, progress: &mut dyn FnMut(usize, usize) -> bool) -> Result<LatencyTable> {
        let base = &self.sims[0];
        if base.config().mode != super::Mode::Qplay {
            return Err(Error::Input { name: "latency".into(), msg: "latency is measured in the integer engine, which runs qplay's mode only".into() });
        }
        let g = &self.graph;
        let runs = runs.max(1);
        let mut group_of_node: Vec<Option<usize>> = vec![None; g.nodes.len()];
        let mut group_of_value: BTreeMap<ValueId, usize> = BTreeMap::new();
        for (gi, grp) in self.groups.iter().enumerate() {
            for &l in &grp.layers {
                group_of_node[l] = Some(gi);
            }
            for &q in &grp.acts {
                group_of_value.insert(base.acts[q].value, gi);
            }
        }
        for (ni, n) in g.nodes.iter().enumerate() {
            if group_of_node[ni].is_none() {
                group_of_node[ni] = n.outputs.iter().chain(n.inputs.iter().flatten()).find_map(|v| group_of_value.get(v).copied());
            }
        }
        let (ng, nc) = (self.groups.len(), self.candidates.len());
        let mut ms = vec![vec![0.0; nc]; ng];
        let mut other_ms = vec![0.0; nc];
        let mut total_ms = vec![0.0; nc];
        for c in 0..nc {
            let mut exec = crate::exec::int8::Int8Executor::new(&self.sims[c])?;
            // Each timing is the mean over as many inferences as fill about 10 ms (see
            // crate::timing): per timing, each group's milliseconds, then the other steps'.
            let reps = timing::calls_per_timing(&mut || exec.run(vec![sample.clone()]).map(|_| ()), clock)?;
            let mut per_run: Vec<Vec<f64>> = Vec::new();
            for r in 0..runs {
                let mut row = vec![0.0; ng + 1];
                for _ in 0..reps {
                    for (ni, t) in exec.step_times(vec![sample.clone()], clock)? {
                        row[group_of_node.get(ni).copied().flatten().unwrap_or(ng)] += t / reps as f64;
                    }
                }
                per_run.push(row);
                if !progress(c * runs + r + 1, nc * runs) {
                    return Err(Error::Quant("the latency measurement was cancelled".into()));
                }
            }
            for gi in 0..ng {
                ms[gi][c] = median(per_run.iter().map(|r| r[gi]).collect());
            }
            other_ms[c] = median(per_run.iter().map(|r| r[ng]).collect());
            // Whole inferences, untimed inside: what the table's sums are checked against.
            total_ms[c] = timing::median_ms(&mut || exec.run(vec![sample.clone()]).map(|_| ()), clock, runs)?;
        }
        Ok(LatencyTable { candidates: self.candidates.iter().map(|c| c.to_string()).collect(), groups: self.groups.iter().map(|g| g.name.clone()).collect(), ms, other_ms, total_ms, runs })
    }

    /// The most precise candidate (most bit operations; then most weight bits).
    pub fn top(&self) -> usize {
        (0..self.candidates.len()).max_by_key(|&c| (self.candidates[c].cost(), self.candidates[c].w)).unwrap_or(0)
    }
}

/// Timings per candidate (each a mean over many inferences) whose median the latency table
/// takes; also what a chosen point's whole-inference median is taken over.
pub const LATENCY_TIMINGS: usize = 5;

/// The integer engine's milliseconds per group and candidate on one machine (see
/// [`Space::latency_table`]); a point's latency is predicted as the sum of its groups'.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyTable {
    pub candidates: Vec<String>,
    pub groups: Vec<String>,
    /// `ms[group][candidate]`: the median of the group's steps with every group at that
    /// candidate.
    pub ms: Vec<Vec<f64>>,
    /// Steps of no group, per candidate.
    pub other_ms: Vec<f64>,
    /// The median whole inference per candidate (uniform), timed as one piece: what the sum of
    /// the groups' times is checked against.
    pub total_ms: Vec<f64>,
    pub runs: usize,
}

impl LatencyTable {
    /// Predicted milliseconds of `choice`: its groups' times, plus the steps of no group at
    /// the average of the candidates chosen.
    pub fn predict(&self, choice: &[usize]) -> f64 {
        let other = choice.iter().map(|&c| self.other_ms[c]).sum::<f64>() / choice.len().max(1) as f64;
        choice.iter().enumerate().map(|(gi, &c)| self.ms[gi][c]).sum::<f64>() + other
    }

    /// Sets every point's predicted latency.
    pub fn annotate(&self, points: &mut [Point]) {
        for p in points {
            p.latency_ms = Some(self.predict(&p.choice));
        }
    }
}

/// The points no other point beats on both cost and score, cheapest first (so scores rise).
pub fn pareto_front(mut points: Vec<Point>) -> Vec<Point> {
    points.sort_by(|a, b| a.relative_bops.total_cmp(&b.relative_bops).then(b.score.total_cmp(&a.score)));
    let mut front: Vec<Point> = Vec::new();
    for p in points {
        if front.last().is_none_or(|l| p.score > l.score) {
            if front.last().is_some_and(|l| l.relative_bops == p.relative_bops) {
                front.pop();
            }
            front.push(p);
        }
    }
    front
}

/// What the chosen point must meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The cheapest point scoring at least `baseline - drop`.
    MaxDrop { drop: f64, baseline: f64 },
    /// The best point at most this many relative BOPs.
    Bops(f64),
    /// The best point whose weights take at most this many bytes.
    Bytes(u64),
    /// The best point predicted to run in at most this many milliseconds (points annotated by
    /// [`LatencyTable::annotate`]).
    LatencyMs(f64),
}

impl Target {
    /// Whether a choice of candidates keeps within this target's budget (for [`fill`]): none for
    /// an accuracy drop, nor for a latency budget without a table.
    pub fn within<'a>(self, space: &'a Space, latency: Option<&'a LatencyTable>) -> Option<Box<dyn Fn(&[usize]) -> bool + 'a>> {
        match self {
            Target::Bops(b) => Some(Box::new(move |ch: &[usize]| space.relative_bops(ch) <= b + 1e-12)),
            Target::Bytes(n) => Some(Box::new(move |ch: &[usize]| space.weight_bytes(ch) <= n)),
            Target::LatencyMs(ms) => latency.map(|t| Box::new(move |ch: &[usize]| t.predict(ch) <= ms) as Box<dyn Fn(&[usize]) -> bool>),
            Target::MaxDrop { .. } => None,
        }
    }
}

/// The point of `front` (cheapest first) that meets `target`.
pub fn choose(front: &[Point], target: Target) -> Result<&Point> {
    let none = |msg: String| Error::Input { name: "target".into(), msg };
    match target {
        Target::MaxDrop { drop, baseline } => front.iter().find(|p| p.score >= baseline - drop).ok_or_else(|| {
            none(format!("no point scores within {drop} of {baseline:.2}: the best reaches {:.2}", front.last().map_or(f64::NAN, |p| p.score)))
        }),
        Target::Bops(b) => front.iter().rev().find(|p| p.relative_bops <= b + 1e-12).ok_or_else(|| {
            none(format!("a budget of {b} relative BOPs is below the cheapest point ({:.4})", front.first().map_or(f64::NAN, |p| p.relative_bops)))
        }),
        Target::Bytes(n) => front.iter().filter(|p| p.weight_bytes <= n).max_by(|a, b| a.score.total_cmp(&b.score)).ok_or_else(|| {
            none(format!("a budget of {n} weight bytes is below the smallest point ({} bytes)", front.iter().map(|p| p.weight_bytes).min().unwrap_or(0)))
        }),
        Target::LatencyMs(ms) => {
            if front.iter().any(|p| p.latency_ms.is_none()) {
                return Err(none("the points have no measured latency".into()));
            }
            let within = |p: &&Point| p.latency_ms.is_some_and(|l| l <= ms);
            front.iter().filter(within).max_by(|a, b| a.score.total_cmp(&b.score)).ok_or_else(|| {
                let fastest = front.iter().filter_map(|p| p.latency_ms).fold(f64::INFINITY, f64::min);
                none(format!("a budget of {ms} ms is below the fastest point ({fastest:.2} ms predicted here)"))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(bops: f64, score: f64, latency_ms: Option<f64>) -> Point {
        Point { relative_bops: bops, score, weight_bytes: 0, bits: BTreeMap::new(), latency_ms, choice: Vec::new() }
    }

    #[test]
    fn a_latency_budget_takes_the_best_point_within_it() {
        // Latency need not rise with BOPs (4-bit kernels can be slower than 8-bit ones).
        let front = vec![point(0.5, 1.0, Some(9.0)), point(0.7, 2.0, Some(6.0)), point(1.0, 3.0, Some(8.0)), point(2.0, 4.0, Some(20.0))];
        let pick = |ms: f64| choose(&front, Target::LatencyMs(ms)).map(|p| p.score);
        assert_eq!(pick(8.5).unwrap(), 3.0);
        assert_eq!(pick(7.0).unwrap(), 2.0);
        assert_eq!(pick(100.0).unwrap(), 4.0);
        let e = pick(5.0).unwrap_err().to_string();
        assert!(e.contains("below the fastest point (6.00 ms"), "{e}");
        let unmeasured = vec![point(1.0, 3.0, None)];
        assert!(choose(&unmeasured, Target::LatencyMs(100.0)).unwrap_err().to_string().contains("no measured latency"));
    }
}
