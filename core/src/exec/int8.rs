//! The integer engine: runs a calibrated [`QuantSim`] with activations and weights of 2 to 16
//! bits (mixed per layer) and exact integer accumulation. Activations live as `v = q - zero_point`
//! (i16 containers up to 8 bits, i32 above) in NHWC layout for convolutions; Conv (regular and
//! depthwise), Gemm, Add, GlobalAveragePool and element-wise activations (as tables over the
//! input's values) run in integers; any other op, and Add, pooling and tables on wider than 8-bit
//! values, run in float between a dequantize and a quantize, exactly as the simulation does.
//!
//! A Conv/Gemm whose input, weights or output are wider than 8 bits takes the wide path: the
//! input and the weights are split into planes of at most 9 bits (`v = hi * 256 + lo`), the
//! 8-bit kernels multiply every pair of planes exactly in i32, and the shifted sums combine in
//! i64 before a requantization in f64. Layers of different bit-widths meet through that
//! requantization, which writes the next layer's encoding.
//!
//! Agreement with the simulation: Add and table ops are bit-identical; Conv/Gemm accumulate
//! exactly in integers where the simulation sums floats, and requantize with an f32 multiplier
//! (`q = round_half_even(acc * s_x s_w / s_y + b / s_y - o_y)`, as onnxruntime's integer kernels
//! round), so an output can differ by one quantization step where the float sum lands within
//! rounding error of a half step, or exactly on one (the simulation rounds half away from zero); likewise
//! GlobalAveragePool (integer sum vs float mean).

use super::ops;
use super::Ctx;
use crate::error::{Error, Result};
use crate::graph::{Graph, Op, ValueId};
use crate::kernels::int8::{depthwise_requant, dot_gemm_requant, padded, DwGeom, PackedWeights, Requant};
use crate::kernels::ConvGeom;
use crate::onnx::Limits;
use crate::quant::{Encoding, QuantSim};
use crate::tensor::Tensor;

mod values;
mod wide;
use wide::{run_linear_wide, step_weights, WidePlanes, WIDE_MAX_K};
use values::{add_quantized, dequantize, quantize_tensor, quantize_val, relayout, to_float};

/// An activation encoding in integer form: real = v * scale, v in [offset, offset + n].
#[derive(Debug, Clone, Copy, PartialEq)]
struct QEnc {
    enc: Encoding,
}

impl QEnc {
    fn scale(&self) -> f32 {
        self.enc.scale as f32
    }
    fn offset(&self) -> i32 {
        self.enc.offset as i32
    }
    fn n(&self) -> i32 {
        self.enc.steps() as i32
    }
    /// Held in i32 (more than 8 bits).
    fn wide(&self) -> bool {
        self.enc.bw > 8
    }
    /// v = q + offset for the real value x (the simulation's rounding).
    fn quantize(&self, x: f32) -> i16 {
        (self.enc.quantize(x) + self.offset()) as i16
    }
}

/// A quantized tensor; `shape` is the logical NCHW shape, data NHWC when `nhwc`.
#[derive(Debug, Clone)]
struct QTensor<T = i16> {
    shape: Vec<usize>,
    nhwc: bool,
    v: Vec<T>,
    enc: QEnc,
}

#[derive(Debug, Clone)]
enum Val {
    /// Up to 8 bits.
    Q(QTensor),
    /// 9 to 16 bits.
    W(QTensor<i32>),
    F(Tensor),
}

/// How a Conv/Gemm step gets its rows.
#[derive(Debug, Clone)]
enum LinearKind {
    /// 2-D convolution. Regular: weights [M][Kp] with K ordered (ky, kx, c); depthwise:
    /// weights [taps][C].
    Conv { kh: usize, kw: usize, depthwise: bool, window: crate::graph::Window },
    /// Gemm with a [M, K] weight (rows of the input are dotted with rows of the weight).
    Gemm,
}

#[derive(Debug, Clone)]
struct Linear {
    input: ValueId,
    output: ValueId,
    kind: LinearKind,
    m: usize,
    k: usize,
    kp: usize,
    /// Depthwise: integer weights [taps][C]; otherwise empty (see `gemm`).
    w: Vec<i16>,
    /// Regular convolution and Gemm: the weights in the GEMM kernel's layout.
    gemm: Option<PackedWeights>,
    /// The wide path's weights (then `w` and `gemm` are empty).
    wide: Option<WidePlanes>,
    /// Per output channel: weight scale, and the bias, in float (AIMET mode) or as int32 on the
    /// accumulator's grid (qplay mode, [`QuantSim::int_bias`]; the float bias is then zero).
    sw: Vec<f32>,
    bias: Vec<f32>,
    ibias: Vec<i32>,
    out: QEnc,
    /// Clamp of a fused activation, in real values, per output channel (or one for all).
    clamp: (Vec<f32>, Vec<f32>),
    /// The input's encoding when planned, and the requantization built for it.
    in_enc: Option<QEnc>,
    rq: Requant,
}

impl Linear {
    /// Requantization of this step's sums for an input of scale `sx`: the centered output
    /// `(acc + ib) * (sx * sw / sy) + b / sy` (the scale product in onnxruntime's order), bounded
    /// by the output range and the fused activation.
    fn requant(&self, sx: f32) -> Requant {
        let sy = self.out.scale();
        let mult: Vec<f32> = self.sw.iter().map(|&sw| sx * sw / sy).collect();
        let add: Vec<f32> = self.bias.iter().map(|&b| b / sy).collect();
        let (lo, hi) = self.bounds();
        Requant::new(&mult, &self.ibias, &add, &lo, &hi)
    }

    /// Rows of a Gemm input of logical shape `shape`, checked against the weights.
    fn gemm_rows(&self, shape: &[usize]) -> Result<usize> {
        if shape.len() != 2 || shape[1] != self.k {
            return Err(Error::Graph(format!("Gemm input {shape:?} does not match K = {}", self.k)));
        }
        Ok(shape[0])
    }

    /// The geometry of a convolution step on an input of logical (NCHW) shape `shape`, checked
    /// against the weights, and the output's height and width.
    fn conv_geometry(&self, shape: &[usize], (kh, kw): (usize, usize), depthwise: bool, window: &crate::graph::Window) -> Result<(ConvGeom, usize, usize)> {
        if shape.len() != 4 {
            return Err(Error::Graph(format!("Conv input {shape:?} is not 4-D")));
        }
        let (c, h, w) = (shape[1], shape[2], shape[3]);
        let pads = ops::resolve_pads_pub(window, [h, w], [kh, kw]);
        let geom = ConvGeom { c_in: c, h, w, c_out: self.m, kh, kw, stride: window.strides, dilation: window.dilations, pads, group: 1 };
        let (oh, ow) = geom.out_hw().ok_or_else(|| Error::Graph("kernel does not fit the input".into()))?;
        if (!depthwise && c * kh * kw != self.k) || (depthwise && c != self.m) {
            return Err(Error::Graph(format!("Conv input has {c} channels, the weights expect another count")));
        }
        Ok((geom, oh, ow))
    }

    /// Per output channel, the lowest and highest centered output: the output range, narrowed
    /// by a fused activation.
    fn bounds(&self) -> (Vec<i32>, Vec<i32>) {
        let o = self.out.offset();
        let per = |v: &[f32], j: usize| v[if v.len() == 1 { 0 } else { j }];
        let bound = |x: f32, or: i32| o + if x.is_finite() { self.out.enc.quantize(x).clamp(0, self.out.n()) } else { or };
        ((0..self.m).map(|j| bound(per(&self.clamp.0, j), 0)).collect(), (0..self.m).map(|j| bound(per(&self.clamp.1, j), self.out.n())).collect())
    }
}

#[derive(Debug, Clone)]
enum Step {
    Linear(Box<Linear>),
    Add { a: ValueId, b: ValueId, out: ValueId, enc: QEnc },
    Gap { input: ValueId, out: ValueId, enc: QEnc },
    /// Element-wise op as a table over the input's 2^b values.
    Table { input: ValueId, out: ValueId, in_offset: i32, table: Vec<i16>, enc: QEnc },
    /// Any other node: dequantize, run in float, quantize outputs that have an encoding.
    Float { node: usize },
}

/// Buffers of activations that are no longer needed, reused by later steps and later inferences.
/// The same network asks for the same sizes every inference, so after the first one a step
/// usually finds a buffer of exactly its size, which it overwrites without clearing (the integer
/// kernels write every element): no allocation and no zeroing in the hot path.
#[derive(Debug, Default)]
struct Pool(Vec<Vec<i16>>);

impl Pool {
    /// Most buffers kept (Lite0 needs about a dozen).
    const MAX: usize = 64;

    /// A buffer of `n` elements, for a caller that overwrites all of them.
    fn take(&mut self, n: usize) -> Vec<i16> {
        if let Some(i) = self.0.iter().position(|b| b.len() == n) {
            return self.0.swap_remove(i);
        }
        let fit = self.0.iter().enumerate().filter(|(_, b)| b.capacity() >= n).min_by_key(|(_, b)| b.capacity()).map(|(i, _)| i);
        let mut b = fit.map_or_else(Vec::new, |i| self.0.swap_remove(i));
        b.clear();
        b.resize(n, 0);
        b
    }

    fn give(&mut self, b: Vec<i16>) {
        if b.capacity() > 0 {
            if self.0.len() == Self::MAX {
                self.0.remove(0);
            }
            self.0.push(b);
        }
    }
}

/// A clock (milliseconds) and the times of the steps so far, by label.
type StepTimes<'a> = (&'a dyn Fn() -> f64, &'a mut Vec<(usize, f64)>);

/// Executes a calibrated quantization simulation in integer arithmetic.
#[derive(Debug)]
pub struct Int8Executor {
    graph: Graph,
    qenc: Vec<Option<QEnc>>,
    steps: Vec<Step>,
    /// Per step: the graph node it starts at (a fused activation follows it).
    step_nodes: Vec<usize>,
    last_use: Vec<Option<usize>>,
    /// Graph inputs read only by convolutions: quantized straight into channels-last layout.
    nhwc_inputs: Vec<ValueId>,
    /// Values with an activation encoding of their own (not inherited through a layout op).
    encoded: Vec<bool>,
    pool: Pool,
    limits: Limits,
}

fn step_io(s: &Step, g: &Graph) -> (Vec<ValueId>, Vec<ValueId>) {
    match s {
        Step::Linear(l) => (vec![l.input], vec![l.output]),
        Step::Add { a, b, out, .. } => (vec![*a, *b], vec![*out]),
        Step::Gap { input, out, .. } | Step::Table { input, out, .. } => (vec![*input], vec![*out]),
        Step::Float { node } => (g.nodes[*node].inputs.iter().flatten().copied().collect(), g.nodes[*node].outputs.clone()),
    }
}

pub(crate) const LAYOUT_OPS: &[&str] = &["Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout"];

impl Int8Executor {
    /// Plans the integer execution of a calibrated simulation (weights and activations of 2 to
    /// 16 bits, as [`crate::quant::check_bits`] allows).
    pub fn new(sim: &QuantSim) -> Result<Self> {
        let (graph, acts) = sim.simulated_graph()?;
        let encoded = acts.iter().map(Option::is_some).collect();
        let mut qenc: Vec<Option<QEnc>> = acts.iter().map(|a| a.map(|enc| QEnc { enc })).collect();
        for n in &graph.nodes {
            if LAYOUT_OPS.contains(&n.op_type.as_str()) {
                if let (Some(Some(i)), Some(&o)) = (n.inputs.first(), n.outputs.first()) {
                    if qenc[o].is_none() {
                        qenc[o] = qenc[*i];
                    }
                }
            }
        }
        let readers = graph.reader_counts();
        let mut steps = Vec::new();
        let mut step_nodes = Vec::new();
        let mut skip = vec![false; graph.nodes.len()];
        for ni in 0..graph.nodes.len() {
            if skip[ni] {
                continue;
            }
            let step = plan_node(sim, &graph, &qenc, &readers, ni, &mut skip)?;
            steps.push(step.unwrap_or(Step::Float { node: ni }));
            step_nodes.push(ni);
        }
        let mut last_use = vec![None; graph.values.len()];
        for (si, s) in steps.iter().enumerate() {
            for i in step_io(s, &graph).0 {
                last_use[i] = Some(si);
            }
        }
        for &o in &graph.outputs {
            last_use[o] = None;
        }
        let conv_reads = |id: ValueId| {
            let mut readers = steps.iter().filter(|s| step_io(s, &graph).0.contains(&id)).peekable();
            readers.peek().is_some() && readers.all(|s| matches!(s, Step::Linear(l) if matches!(l.kind, LinearKind::Conv { .. })))
        };
        let nhwc_inputs = graph.inputs.iter().copied().filter(|&i| conv_reads(i)).collect();
        Ok(Int8Executor { graph, qenc, steps, step_nodes, last_use, nhwc_inputs, encoded, pool: Pool::default(), limits: sim.limits().clone() })
    }

    /// Bytes of the integer weights the steps hold: two per value, half a byte for 4-bit
    /// weights of a GEMM (packed two per byte), two per plane on the wide path.
    pub fn weight_bytes(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Linear(l) => l.w.len() * 2 + l.gemm.as_ref().map_or(0, PackedWeights::bytes) + l.wide.as_ref().map_or(0, WidePlanes::bytes),
                _ => 0,
            })
            .sum()
    }

    /// How many steps run in integers and how many fall back to float.
    pub fn integer_steps(&self) -> (usize, usize) {
        let float = self.steps.iter().filter(|s| matches!(s, Step::Float { .. })).count();
        (self.steps.len() - float, float)
    }

    /// Runs on float inputs (quantized with the model-input encodings); outputs are dequantized.
    pub fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.run_timed(inputs, None, None)
    }

    /// [`Int8Executor::run`], also handing every quantized activation to `visit` (its value's
    /// name and its real values, NCHW), in execution order.
    pub fn run_visiting(&mut self, inputs: Vec<Tensor>, visit: &mut dyn FnMut(&str, &Tensor)) -> Result<Vec<Tensor>> {
        self.run_timed(inputs, None, Some(visit))
    }

    /// Milliseconds per kind of step over one run (`clock` returns milliseconds), slowest first:
    /// where the integer engine spends its time.
    pub fn profile(&mut self, inputs: Vec<Tensor>, clock: &dyn Fn() -> f64) -> Result<Vec<(String, f64)>> {
        let mut times = Vec::new();
        self.run_timed(inputs, Some((clock, &mut times)), None)?;
        let mut by: Vec<(String, f64)> = Vec::new();
        for (si, t) in times {
            let k = self.step_label(&self.steps[si]);
            match by.iter_mut().find(|(n, _)| *n == k) {
                Some((_, v)) => *v += t,
                None => by.push((k, t)),
            }
        }
        by.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(by)
    }

    /// Milliseconds of every step over one run (`clock` returns milliseconds), in execution
    /// order, each with the graph node (of the simulation's graph) the step starts at.
    pub fn step_times(&mut self, inputs: Vec<Tensor>, clock: &dyn Fn() -> f64) -> Result<Vec<(usize, f64)>> {
        let mut times = Vec::new();
        self.run_timed(inputs, Some((clock, &mut times)), None)?;
        Ok(times.into_iter().map(|(si, t)| (self.step_nodes[si], t)).collect())
    }

    fn step_label(&self, step: &Step) -> String {
        match step {
            Step::Linear(l) => match &l.kind {
                LinearKind::Gemm => "Gemm".into(),
                LinearKind::Conv { kh, kw, depthwise, window } => format!("Conv {}{kh}x{kw} s{}", if *depthwise { "dw " } else { "" }, window.strides[0]),
            },
            Step::Add { .. } => "Add".into(),
            Step::Gap { .. } => "GlobalAveragePool".into(),
            Step::Table { .. } => "table (element-wise)".into(),
            Step::Float { node } => format!("float {}", self.graph.nodes[*node].op_type),
        }
    }

    fn run_timed(&mut self, inputs: Vec<Tensor>, mut timing: Option<StepTimes>, mut visit: Option<&mut dyn FnMut(&str, &Tensor)>) -> Result<Vec<Tensor>> {
        let g = &self.graph;
        if inputs.len() != g.inputs.len() {
            return Err(Error::Graph(format!("the model takes {} inputs but {} were given", g.inputs.len(), inputs.len())));
        }
        let mut vals: Vec<Option<Val>> = vec![None; g.values.len()];
        for (&id, t) in g.inputs.iter().zip(inputs) {
            super::check_input(g, id, &t)?;
            vals[id] = Some(match self.qenc[id] {
                Some(enc) => quantize_val(&t, enc, self.nhwc_inputs.contains(&id))?,
                None => Val::F(t),
            });
        }
        let mut show = |id: ValueId, v: &Val| {
            if let (Some(f), true) = (visit.as_mut(), self.encoded[id]) {
                match v {
                    Val::Q(q) => f(g.value_name(id), &dequantize(q)),
                    Val::W(q) => f(g.value_name(id), &dequantize(q)),
                    Val::F(_) => {}
                }
            }
        };
        for &id in &g.inputs {
            if let Some(v) = &vals[id] {
                show(id, v);
            }
        }
        let mut pool = std::mem::take(&mut self.pool);
        for si in 0..self.steps.len() {
            let step = &self.steps[si];
            let t0 = timing.as_ref().map(|(clock, _)| clock());
            let outs = self.exec_step(step, &vals, &mut pool)?;
            if let (Some(t0), Some((clock, times))) = (t0, timing.as_mut()) {
                times.push((si, clock() - t0));
            }
            for (id, v) in outs {
                show(id, &v);
                vals[id] = Some(v);
            }
            for i in step_io(step, &self.graph).0 {
                if self.last_use[i] == Some(si) && self.graph.consts[i].is_none() {
                    if let Some(Val::Q(q)) = vals[i].take() {
                        pool.give(q.v);
                    }
                }
            }
        }
        self.pool = pool;
        self.graph
            .outputs
            .iter()
            .map(|&o| match (&self.graph.consts[o], vals[o].take()) {
                (Some(c), _) => Ok(c.clone()),
                (None, Some(v)) => Ok(to_float(v)),
                _ => Err(Error::Graph(format!("output '{}' was not computed", self.graph.values[o].name))),
            })
            .collect()
    }

    fn get<'a>(&'a self, vals: &'a [Option<Val>], id: ValueId) -> Result<&'a Val> {
        vals[id].as_ref().ok_or_else(|| Error::Graph(format!("value '{}' has not been computed", self.graph.values[id].name)))
    }

    /// A computed value that must be quantized to at most 8 bits.
    fn get_q<'a>(&'a self, vals: &'a [Option<Val>], id: ValueId) -> Result<&'a QTensor> {
        match self.get(vals, id)? {
            Val::Q(q) => Ok(q),
            Val::W(_) => Err(Error::Graph(format!("value '{}' is wider than 8 bits", self.graph.values[id].name))),
            Val::F(t) => Err(Error::Graph(format!("value '{}' ({:?}) is not quantized", self.graph.values[id].name, t.shape()))),
        }
    }

    fn exec_step(&self, step: &Step, vals: &[Option<Val>], pool: &mut Pool) -> Result<Vec<(ValueId, Val)>> {
        Ok(match step {
            Step::Linear(l) => {
                let y = match (&l.wide, self.get(vals, l.input)?) {
                    (None, Val::Q(x)) => Val::Q(run_linear(l, x, &self.limits, pool)?),
                    (Some(planes), x @ (Val::Q(_) | Val::W(_))) => run_linear_wide(l, planes, x, &self.limits)?,
                    _ => return Err(Error::Graph(format!("value '{}' is not quantized at the bit-width its layer was planned for", self.graph.values[l.input].name))),
                };
                vec![(l.output, y)]
            }
            Step::Add { a, b, out, enc } => {
                if let (Val::Q(qa), Val::Q(qb)) = (self.get(vals, *a)?, self.get(vals, *b)?) {
                    if qa.shape == qb.shape && qa.nhwc == qb.nhwc {
                        let mut v = pool.take(qa.v.len());
                        add_quantized(qa, qb, *enc, &mut v);
                        return Ok(vec![(*out, Val::Q(QTensor { shape: qa.shape.clone(), nhwc: qa.nhwc, v, enc: *enc }))]);
                    }
                }
                let (qa, qb) = (self.get_q(vals, *a)?.clone(), self.get_q(vals, *b)?.clone());
                let qb = if qb.nhwc != qa.nhwc { relayout(qb, qa.nhwc) } else { qb };
                if qa.shape != qb.shape {
                    let fa = to_float(Val::Q(qa));
                    let fb = to_float(Val::Q(qb));
                    let t = self.float_node_eval_binary(&fa, &fb, *out)?;
                    vec![(*out, Val::Q(quantize_tensor(&t, *enc)?))]
                } else {
                    let mut v = vec![0; qa.v.len()];
                    add_quantized(&qa, &qb, *enc, &mut v);
                    vec![(*out, Val::Q(QTensor { shape: qa.shape.clone(), nhwc: qa.nhwc, v, enc: *enc }))]
                }
            }
            Step::Gap { input, out, enc } => {
                let x = self.get_q(vals, *input)?;
                if x.shape.len() != 4 {
                    return Err(Error::Graph("GlobalAveragePool needs a 4-D input".into()));
                }
                let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3]);
                // Integer sums per image and channel, in either layout.
                let mut acc = vec![0i32; n * c];
                for (b, sums) in acc.chunks_exact_mut(c.max(1)).enumerate() {
                    if x.nhwc {
                        for px in x.v[b * hw * c..(b + 1) * hw * c].chunks_exact(c) {
                            for (a, &xv) in sums.iter_mut().zip(px) {
                                *a += xv as i32;
                            }
                        }
                    } else {
                        for (a, plane) in sums.iter_mut().zip(x.v[b * c * hw..(b + 1) * c * hw].chunks_exact(hw.max(1))) {
                            *a = plane.iter().map(|&xv| xv as i32).sum();
                        }
                    }
                }
                let s = x.enc.scale();
                let v = acc.iter().map(|&a| enc.quantize(a as f32 * s / hw as f32)).collect();
                vec![(*out, Val::Q(QTensor { shape: vec![n, c, 1, 1], nhwc: false, v, enc: *enc }))]
            }
            Step::Table { input, out, in_offset, table, enc } => {
                let x = self.get_q(vals, *input)?;
                let mut v = pool.take(x.v.len());
                for (o, &xv) in v.iter_mut().zip(&x.v) {
                    *o = table[(xv as i32 - in_offset).clamp(0, table.len() as i32 - 1) as usize];
                }
                vec![(*out, Val::Q(QTensor { shape: x.shape.clone(), nhwc: x.nhwc, v, enc: *enc }))]
            }
            Step::Float { node } => {
                let n = &self.graph.nodes[*node];
                let ins: Vec<Option<Tensor>> = n
                    .inputs
                    .iter()
                    .map(|i| match i {
                        None => Ok(None),
                        Some(id) => match &self.graph.consts[*id] {
                            Some(c) => Ok(Some(c.clone())),
                            None => Ok(Some(match self.get(vals, *id)? {
                                Val::F(t) => t.clone(),
                                Val::Q(q) => dequantize(q),
                                Val::W(q) => dequantize(q),
                            })),
                        },
                    })
                    .collect::<Result<_>>()?;
                let refs: Vec<Option<&Tensor>> = ins.iter().map(Option::as_ref).collect();
                let mut scratch = Vec::new();
                let outs = ops::eval(n, &refs, &mut Ctx { limits: &self.limits, scratch: &mut scratch, clamp: None })?;
                n.outputs
                    .iter()
                    .zip(outs)
                    .map(|(&o, t)| Ok((o, match self.qenc[o] {
                        Some(enc) if t.as_f32().is_some() => quantize_val(&t, enc, false)?,
                        _ => Val::F(t),
                    })))
                    .collect::<Result<_>>()?
            }
        })
    }

    /// Broadcasting Add in float (shapes differ), for the node producing `out`.
    fn float_node_eval_binary(&self, a: &Tensor, b: &Tensor, out: ValueId) -> Result<Tensor> {
        let n = self.graph.nodes.iter().find(|n| n.outputs.contains(&out)).ok_or_else(|| Error::Graph("no producer".into()))?;
        let mut scratch = Vec::new();
        Ok(ops::eval(n, &[Some(a), Some(b)], &mut Ctx { limits: &self.limits, scratch: &mut scratch, clamp: None })?.remove(0))
    }
}

/// Integer weights `q + o`, as the simulation rounds them.
fn int_weights(w: &[f32], per: usize, encs: &[Encoding], axis0: bool, m: usize) -> Vec<i32> {
    w.iter()
        .enumerate()
        .map(|(i, &x)| {
            let e = if encs.len() == 1 { &encs[0] } else if axis0 { &encs[i / per] } else { &encs[i % m] };
            e.quantize(x) + e.offset as i32
        })
        .collect()
}

/// Integer plan of node `ni`, or None for the float fallback.
fn plan_node(sim: &QuantSim, g: &Graph, qenc: &[Option<QEnc>], readers: &[usize], ni: usize, skip: &mut [bool]) -> Result<Option<Step>> {
    let n = &g.nodes[ni];
    let input = n.inputs.first().copied().flatten();
    let Some(&out) = n.outputs.first() else { return Ok(None) };
    let in_q = input.and_then(|i| if g.consts[i].is_none() { qenc[i] } else { None });
    match &n.op {
        Op::Conv { .. } | Op::Gemm { .. } => {
            let (Some(x), Some(_)) = (input, in_q) else { return Ok(None) };
            let Some(w_id) = n.inputs.get(1).copied().flatten() else { return Ok(None) };
            let (Some(w), Some(encs)) = (g.consts[w_id].as_ref(), sim.param_encodings_of(w_id)) else { return Ok(None) };
            // Output encoding: the node's own, or that of a Relu/Clip it feeds alone (fused).
            let m_out = match &n.op {
                Op::Conv { .. } => w.shape().first().copied().unwrap_or(0),
                Op::Gemm { trans_b, .. } => w.shape().get(if *trans_b { 0 } else { 1 }).copied().unwrap_or(0),
                _ => 0,
            };
            let (target, clamp, output) = match qenc[out] {
                Some(e) => (e, (vec![f32::NEG_INFINITY], vec![f32::INFINITY]), out),
                None => {
                    if readers[out] != 1 || g.outputs.contains(&out) {
                        return Ok(None);
                    }
                    let Some(ai) = g.nodes.iter().position(|m| m.inputs.iter().flatten().any(|&i| i == out)) else { return Ok(None) };
                    let act = &g.nodes[ai];
                    let (Some(c), Some(&aout)) = (super::activation_bounds(g, act, m_out), act.outputs.first()) else { return Ok(None) };
                    let Some(e) = qenc[aout] else { return Ok(None) };
                    skip[ai] = true;
                    (e, c, aout)
                }
            };
            let wd = w.as_f32().unwrap_or(&[]);
            let int_bias = sim.int_bias(n).filter(|(ints, _)| ints.len() == m_out);
            let ibias = int_bias.as_ref().map_or_else(|| vec![0; m_out], |(ints, _)| ints.clone());
            let bias_of = |m: usize| -> Option<Vec<f32>> {
                match n.inputs.get(2).copied().flatten() {
                    None => Some(vec![0.0; m]),
                    Some(_) if int_bias.is_some() => Some(vec![0.0; m]),
                    Some(b) => {
                        let t = g.consts[b].as_ref()?;
                        let d = t.to_f32_vec();
                        if d.len() == m {
                            Some(d)
                        } else if d.len() == 1 {
                            Some(vec![d[0]; m])
                        } else {
                            None
                        }
                    }
                }
            };
            let sw_of = |m: usize| -> Vec<f32> { (0..m).map(|j| encs[if encs.len() == 1 { 0 } else { j }].scale as f32).collect() };
            let wide = in_q.is_some_and(|e| e.wide()) || target.wide() || encs.iter().any(|e| e.bw > 8);
            let linear = match &n.op {
                Op::Conv { window, group } => {
                    if w.rank() != 4 {
                        return Ok(None);
                    }
                    let (m, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
                    let depthwise = *group > 1 && cg == 1 && m == *group;
                    if *group != 1 && !depthwise {
                        return Ok(None);
                    }
                    let wq = int_weights(wd, cg * kh * kw, encs, true, m);
                    let Some(bias) = bias_of(m) else { return Ok(None) };
                    if depthwise {
                        let mut packed = vec![0i32; kh * kw * m];
                        for c in 0..m {
                            for t in 0..kh * kw {
                                packed[t * m + c] = wq[c * kh * kw + t];
                            }
                        }
                        let (w, gemm, wide) = step_weights(&packed, m, kh * kw, true, wide);
                        Linear { input: x, output, kind: LinearKind::Conv { kh, kw, depthwise: true, window: window.clone() }, m, k: kh * kw, kp: kh * kw, w, gemm, wide, sw: sw_of(m), bias, ibias: ibias.clone(), out: target, clamp, in_enc: in_q, rq: Requant::default() }
                    } else {
                        let k = cg * kh * kw;
                        let kp = padded(k);
                        if wide && kp > WIDE_MAX_K {
                            return Ok(None);
                        }
                        let mut packed = vec![0i32; m * kp];
                        for j in 0..m {
                            for c in 0..cg {
                                for t in 0..kh * kw {
                                    packed[j * kp + t * cg + c] = wq[(j * cg + c) * kh * kw + t];
                                }
                            }
                        }
                        let (w, gemm, wide) = step_weights(&packed, m, kp, false, wide);
                        Linear { input: x, output, kind: LinearKind::Conv { kh, kw, depthwise: false, window: window.clone() }, m, k, kp, w, gemm, wide, sw: sw_of(m), bias, ibias: ibias.clone(), out: target, clamp, in_enc: in_q, rq: Requant::default() }
                    }
                }
                Op::Gemm { alpha, beta, trans_a, trans_b } => {
                    if *alpha != 1.0 || *beta != 1.0 || *trans_a || w.rank() != 2 {
                        return Ok(None);
                    }
                    let (m, k) = if *trans_b { (w.shape()[0], w.shape()[1]) } else { (w.shape()[1], w.shape()[0]) };
                    let wq = int_weights(wd, k, encs, *trans_b, m);
                    let kp = padded(k);
                    if wide && kp > WIDE_MAX_K {
                        return Ok(None);
                    }
                    let mut packed = vec![0i32; m * kp];
                    for j in 0..m {
                        for kk in 0..k {
                            packed[j * kp + kk] = if *trans_b { wq[j * k + kk] } else { wq[kk * m + j] };
                        }
                    }
                    let Some(bias) = bias_of(m) else { return Ok(None) };
                    let (w, gemm, wide) = step_weights(&packed, m, kp, false, wide);
                    Linear { input: x, output, kind: LinearKind::Gemm, m, k, kp, w, gemm, wide, sw: sw_of(m), bias, ibias: ibias.clone(), out: target, clamp, in_enc: in_q, rq: Requant::default() }
                }
                _ => return Ok(None),
            };
            let mut linear = linear;
            linear.rq = linear.requant(in_q.map_or(1.0, |e| e.scale()));
            Ok(Some(Step::Linear(Box::new(linear))))
        }
        Op::Binary(crate::graph::BinaryOp::Add) => {
            let (Some(a), Some(b)) = (n.inputs.first().copied().flatten(), n.inputs.get(1).copied().flatten()) else { return Ok(None) };
            let q = |v: ValueId| g.consts[v].is_none() && qenc[v].is_some_and(|e| !e.wide());
            match qenc[out] {
                Some(enc) if q(a) && q(b) && !enc.wide() => Ok(Some(Step::Add { a, b, out, enc })),
                _ => Ok(None),
            }
        }
        Op::GlobalAveragePool => match (input, in_q, qenc[out]) {
            (Some(i), Some(ie), Some(enc)) if !ie.wide() && !enc.wide() => Ok(Some(Step::Gap { input: i, out, enc })),
            _ => Ok(None),
        },
        Op::Unary(_) | Op::Clip { .. } => {
            let (Some(i), Some(ie), Some(enc)) = (input, in_q, qenc[out]) else { return Ok(None) };
            if ie.wide() || enc.wide() {
                return Ok(None);
            }
            // Tables need scalar parameters (a per-channel Clip bound runs in float).
            if n.inputs.iter().skip(1).flatten().any(|&c| g.consts[c].as_ref().is_none_or(|t| t.len() != 1)) {
                return Ok(None);
            }
            let grid: Vec<f32> = (0..=ie.n()).map(|q| (q + ie.offset()) as f32 * ie.scale()).collect();
            let x = Tensor::from_parts_f32(vec![grid.len()], grid);
            let mut ins: Vec<Option<&Tensor>> = vec![Some(&x)];
            ins.extend(n.inputs.iter().skip(1).map(|c| c.and_then(|c| g.consts[c].as_ref())));
            let mut scratch = Vec::new();
            let limits = Limits::default();
            let y = ops::eval(n, &ins, &mut Ctx { limits: &limits, scratch: &mut scratch, clamp: None })?.remove(0);
            let table = y.to_f32_vec().iter().map(|&v| enc.quantize(v)).collect();
            Ok(Some(Step::Table { input: i, out, in_offset: ie.offset(), table, enc }))
        }
        _ => Ok(None),
    }
}

/// Runs a Conv/Gemm step on a quantized input.
fn run_linear(l: &Linear, x: &QTensor, limits: &Limits, pool: &mut Pool) -> Result<QTensor> {
    // Built when planned; an input with another encoding (not expected) gets its own.
    let rq = if l.in_enc == Some(x.enc) { std::borrow::Cow::Borrowed(&l.rq) } else { std::borrow::Cow::Owned(l.requant(x.enc.scale())) };
    let rq = rq.as_ref();
    let gemm = || l.gemm.as_ref().ok_or_else(|| Error::Graph("a convolution step without packed weights".into()));
    match &l.kind {
        LinearKind::Gemm => {
            let p = l.gemm_rows(&x.shape)?;
            let rows = pad_rows(&x.v, p, l.k, l.kp);
            let mut v = pool.take(p * l.m);
            dot_gemm_requant(p, &rows, gemm()?, rq, &mut v);
            Ok(QTensor { shape: vec![p, l.m], nhwc: false, v, enc: l.out })
        }
        LinearKind::Conv { kh, kw, depthwise, window } => {
            let (depthwise, stride, dilation) = (*depthwise, &window.strides, &window.dilations);
            // Already channels-last after the first convolution: no copy.
            let x = if x.nhwc { std::borrow::Cow::Borrowed(x) } else { std::borrow::Cow::Owned(relayout(x.clone(), true)) };
            let (geom, oh, ow) = l.conv_geometry(&x.shape, (*kh, *kw), depthwise, window)?;
            let (n, c, h, w, pads) = (x.shape[0], geom.c_in, geom.h, geom.w, geom.pads);
            let p = oh * ow;
            check_size(limits, n * p * l.m)?;
            check_size(limits, 4 * l.kp)?;
            let mut v = pool.take(n * p * l.m);
            if depthwise {
                let dg = DwGeom { h, w, c, oh, ow, kh: *kh, kw: *kw, stride: *stride, dilation: *dilation, pads };
                depthwise_requant(&dg, n, &x.v, &l.w, rq, &mut v);
                return Ok(QTensor { shape: vec![n, l.m, oh, ow], nhwc: true, v, enc: l.out });
            }
            if *kh == 1 && *kw == 1 && *stride == [1, 1] && pads == [0; 4] && c == l.kp {
                // The channels-last input is already the GEMM's rows, for the whole batch.
                dot_gemm_requant(n * p, &x.v, gemm()?, rq, &mut v);
                return Ok(QTensor { shape: vec![n, l.m, oh, ow], nhwc: true, v, enc: l.out });
            }
            // Patches of a few pixels at a time, in a buffer that stays in cache.
            let chunk = (IM2ROW_BYTES / (2 * l.kp)).max(4);
            let mut rows = vec![0i16; chunk.min(p) * l.kp];
            for b in 0..n {
                let xb = &x.v[b * h * w * c..(b + 1) * h * w * c];
                let vb = &mut v[b * p * l.m..(b + 1) * p * l.m];
                for first in (0..p).step_by(chunk) {
                    let n = chunk.min(p - first);
                    let rows = &mut rows[..n * l.kp];
                    im2row(&geom, xb, ow, l.kp, first, rows);
                    dot_gemm_requant(n, rows, gemm()?, rq, &mut vb[first * l.m..(first + n) * l.m]);
                }
            }
            Ok(QTensor { shape: vec![n, l.m, oh, ow], nhwc: true, v, enc: l.out })
        }
    }
}

/// An integer buffer of `n` elements, within the limits.
fn check_size(limits: &Limits, n: usize) -> Result<()> {
    if n > limits.max_tensor_elements {
        Err(Error::Limit(format!("integer buffer of {n} elements")))
    } else {
        Ok(())
    }
}

/// Size of the patch buffer of a convolution that needs one (a part of the L1 cache).
const IM2ROW_BYTES: usize = 8 << 10;

/// Copies `p` rows of `k` values into rows of `kp` (zero padded).
fn pad_rows(x: &[i16], p: usize, k: usize, kp: usize) -> std::borrow::Cow<'_, [i16]> {
    if k == kp {
        return std::borrow::Cow::Borrowed(&x[..p * k]);
    }
    let mut out = vec![0i16; p * kp];
    for r in 0..p {
        out[r * kp..r * kp + k].copy_from_slice(&x[r * k..(r + 1) * k]);
    }
    std::borrow::Cow::Owned(out)
}

/// NHWC patches of the output pixels `first..first + rows.len() / kp` (row-major, `ow` pixels per
/// output row): one row of `kp` values per pixel, ordered (ky, kx, c), zeros for padding.
fn im2row(g: &ConvGeom, x: &[i16], ow: usize, kp: usize, first: usize, rows: &mut [i16]) {
    // Copies of a known small length compile to plain loads and stores (the RGB stem has c = 3,
    // where a memcpy per tap cost more than the convolution).
    fn patches<const C: usize>(g: &ConvGeom, x: &[i16], ow: usize, kp: usize, first: usize, rows: &mut [i16], c: usize) {
        rows.fill(0);
        for (i, row) in rows.chunks_exact_mut(kp).enumerate() {
            let (oy, ox) = ((first + i) / ow, (first + i) % ow);
            crate::kernels::for_each_tap((g.h, g.w), (g.kh, g.kw), g.stride, g.dilation, g.pads, (oy, ox), |t, px| {
                if C > 0 {
                    row[t * C..(t + 1) * C].copy_from_slice(&x[px * C..][..C]);
                } else {
                    row[t * c..(t + 1) * c].copy_from_slice(&x[px * c..][..c]);
                }
            });
        }
    }
    match g.c_in {
        1 => patches::<1>(g, x, ow, kp, first, rows, 1),
        3 => patches::<3>(g, x, ow, kp, first, rows, 3),
        4 => patches::<4>(g, x, ow, kp, first, rows, 4),
        c => patches::<0>(g, x, ow, kp, first, rows, c),
    }
}
