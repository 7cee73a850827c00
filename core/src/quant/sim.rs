//! Quantization simulation following AIMET's default quantsim configs ([`Mode::Aimet`]; qplay's
//! default [`Mode::Qplay`] differs only in fusing depthwise convolutions with their activation)
//! (aimet-onnx 2.42,
//! `default_config.json` / `default_config_per_channel.json`; tests/aimet/SEMANTICS.md sec. 2):
//! - parameters: Conv/Gemm/MatMul weights, symmetric, per tensor or per output channel
//!   (Conv axis 0, Gemm axis 0 with transB=1 else 1, MatMul last axis); biases not quantized;
//! - activations, asymmetric: model inputs, every op output except shape/layout ops and the first
//!   op of a supergroup `[Conv, Relu|Clip]`, `[Add, Relu]`, `[Gemm, Relu]` (depthwise and grouped
//!   Conv excluded, so their outputs are quantized before the activation), and float constants
//!   that are not parameters (e.g. Clip bounds);
//! - calibration observes activations on a forward pass with quantized weights and unquantized
//!   activations; encodings from min-max.
//!
//! Execution: AIMET mode runs AIMET's float simulation (quantize-dequantize after every quantized
//! value, float arithmetic in between). qplay mode simulates what an integer runtime computes:
//! biases are int32 on the accumulator's grid ([`QuantSim::int_bias`]), activations round as
//! ONNX's QuantizeLinear, and the model runs on the integer engine ([`crate::exec::int8`]) at
//! every bit-width. Up to 8 bits its arithmetic is that of onnxruntime's integer kernels (the
//! exported QDQ model gives the same integers in onnxruntime); wider layers are exact in
//! integers and requantized in f64.

use super::encoding::{check_bits, sqnr_search, Encoding, QuantScheme};
use super::calib;
use super::observer::{Histogram, MinMax};
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::{Graph, Op, UnaryOp, ValueId};
use crate::onnx::Limits;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// How ranges are chosen from the calibration data.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum CalibScheme {
    /// Minimum and maximum seen (AIMET "tf" / min_max).
    #[default]
    MinMax,
    /// SQNR-based search over a histogram (AIMET "tf_enhanced"), for weights and activations.
    Sqnr,
    /// Activations: the given percentile of each batch at each end, averaged over batches;
    /// weights: min-max.
    Percentile(f32),
}

/// Quantizer placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Mode {
    /// qplay's default: as AIMET, except that a depthwise or grouped convolution and its
    /// activation share one output quantizer (as integer kernels execute them: the activation is
    /// fused into the requantization), instead of quantizing the convolution's output before the
    /// activation clips it.
    #[default]
    Qplay,
    /// Exactly AIMET 2.42's default configs (reproduces its encodings).
    Aimet,
}

/// What to quantize and how.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantSimConfig {
    pub mode: Mode,
    pub weight_bits: u32,
    pub act_bits: u32,
    /// One encoding per output channel for weights.
    pub per_channel: bool,
    pub scheme: CalibScheme,
    /// Names of nodes left in float: neither their weights nor their outputs are quantized.
    pub skip: Vec<String>,
}

impl Default for QuantSimConfig {
    fn default() -> Self {
        QuantSimConfig { mode: Mode::Qplay, weight_bits: 8, act_bits: 8, per_channel: false, scheme: CalibScheme::MinMax, skip: Vec::new() }
    }
}

/// A simulation's quantizers, with values named rather than numbered, so that another worker
/// holding the same graph can rebuild the simulation ([`QuantSim::from_state`]). The calibration
/// scheme is not kept: it only matters while calibrating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimState {
    pub mode: Mode,
    pub weight_bits: u32,
    pub act_bits: u32,
    pub per_channel: bool,
    pub skip: Vec<String>,
    pub params: Vec<(String, Option<usize>, Vec<Encoding>)>,
    pub acts: Vec<(String, Option<Encoding>)>,
    pub params_frozen: bool,
}

/// A weight quantizer: one encoding, or one per slice along `axis`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamQuantizer {
    pub value: ValueId,
    pub axis: Option<usize>,
    pub encodings: Vec<Encoding>,
}

/// An activation quantizer (also used for non-parameter constants such as Clip bounds).
#[derive(Debug, Clone, PartialEq)]
pub struct ActQuantizer {
    pub value: ValueId,
    pub encoding: Option<Encoding>,
}

/// A graph with quantizers placed; calibrate it, then run it quantized.
#[derive(Debug)]
pub struct QuantSim {
    graph: Graph,
    config: QuantSimConfig,
    weight_bits: u8,
    act_bits: u8,
    pub params: Vec<ParamQuantizer>,
    pub acts: Vec<ActQuantizer>,
    /// Weight encodings were fixed before the weights were changed (AdaRound).
    params_frozen: bool,
    /// Resource limits of every execution of the simulated model.
    limits: Limits,
}

/// An activation's encoding from what calibration saw (the sequence merged and in order).
fn encoding_of(s: &calib::Seen, bw: u8) -> Result<Encoding> {
    match s {
        calib::Seen::MinMax(m) => Encoding::from_min_max(m.min, m.max, bw, QuantScheme::Asymmetric),
        calib::Seen::Hist { later, .. } if !later.is_empty() => Err(Error::Quant("histogram batches left unmerged".into())),
        calib::Seen::Hist { hist, .. } => sqnr_search(hist, bw, QuantScheme::Asymmetric),
        calib::Seen::Pct(p) => {
            let (lo, hi) = p.range();
            Encoding::from_min_max(lo, hi, bw, QuantScheme::Asymmetric)
        }
    }
}

const IGNORED_OUTPUT_OPS: &[&str] =
    &["Flatten", "Reshape", "Gather", "Shape", "Squeeze", "Unsqueeze", "Split", "Transpose", "Identity", "Cast", "Dropout"];

impl QuantSim {
    /// Places the quantizers on `graph` (BN should already be folded, as AIMET's recipes do).
    pub fn new(graph: Graph, config: QuantSimConfig) -> Result<Self> {
        let weight_bits = check_bits(config.weight_bits)?;
        let act_bits = check_bits(config.act_bits)?;
        if let Some(name) = config.skip.iter().find(|s| !graph.nodes.iter().any(|n| &n.name == *s)) {
            return Err(Error::Quant(format!("cannot skip node '{name}': the model has no node of that name")));
        }
        let skipped = |n: &crate::graph::Node| config.skip.contains(&n.name);
        let readers = graph.reader_counts();
        let mut params = Vec::new();
        let mut acts: Vec<ActQuantizer> = graph.inputs.iter().map(|&v| ActQuantizer { value: v, encoding: None }).collect();
        let mut param_ids = std::collections::HashSet::new();
        for n in &graph.nodes {
            // Parameters (and which inputs are parameters: weights and biases).
            let weight = match &n.op {
                Op::Conv { .. } => Some(0),
                // [C_in, C_out / group, kh, kw]: the output channels are axis 1.
                Op::ConvTranspose { .. } => Some(1),
                Op::Gemm { trans_b, .. } => Some(if *trans_b { 0 } else { 1 }),
                Op::MatMul => None, // axis depends on rank, set below
                _ => None,
            };
            let is_layer = matches!(n.op, Op::Conv { .. } | Op::ConvTranspose { .. } | Op::Gemm { .. } | Op::MatMul) && !skipped(n);
            if is_layer {
                if let Some(w) = n.inputs.get(1).copied().flatten().filter(|&w| graph.consts[w].as_ref().is_some_and(|t| t.as_f32().is_some())) {
                    let rank = graph.consts[w].as_ref().map_or(0, Tensor::rank);
                    let axis_of = weight.or_else(|| rank.checked_sub(1));
                    let axis = match (config.per_channel, axis_of) {
                        (false, _) => None,
                        (true, Some(ax)) if ax < rank => Some(ax),
                        (true, _) => {
                            return Err(Error::Quant(format!(
                                "weight '{}' of node '{}' has no channel axis (rank {rank}): per-channel quantization needs one",
                                graph.values[w].name, n.name
                            )))
                        }
                    };
                    if param_ids.insert(w) {
                        params.push(ParamQuantizer { value: w, axis, encodings: vec![] });
                    }
                }
                if let Some(b) = n.inputs.get(2).copied().flatten() {
                    param_ids.insert(b);
                }
            }
        }
        for n in &graph.nodes {
            if skipped(n) {
                continue;
            }
            // Constant float inputs that are not parameters get an activation quantizer.
            // Only data inputs: not Resize's roi and scales, not a normalization's scale and bias.
            let data_inputs = match n.op {
                Op::Resize { .. } | Op::InstanceNorm { .. } | Op::LayerNorm { .. } => 1,
                _ => n.inputs.len(),
            };
            for &i in n.inputs.iter().take(data_inputs).flatten() {
                let is_float_const = graph.consts[i].as_ref().is_some_and(|t| t.as_f32().is_some());
                // qplay mode: Clip bounds are clamp parameters of the integer kernel, not data.
                let bn_param = matches!(n.op, Op::BatchNorm { .. }) || (config.mode == Mode::Qplay && matches!(n.op, Op::Clip { .. }));
                if is_float_const && !param_ids.contains(&i) && !bn_param && !acts.iter().any(|a| a.value == i) {
                    acts.push(ActQuantizer { value: i, encoding: None });
                }
            }
            if IGNORED_OUTPUT_OPS.contains(&n.op_type.as_str()) || supergroup_head(&graph, n, &readers, config.mode) {
                continue;
            }
            for &o in &n.outputs {
                if graph.consts[o].is_none() {
                    acts.push(ActQuantizer { value: o, encoding: None });
                }
            }
        }
        Ok(QuantSim { graph, config, weight_bits, act_bits, params, acts, params_frozen: false, limits: Limits::default() })
    }

    /// The quantizers by value name (see [`SimState`]).
    pub fn to_state(&self) -> SimState {
        let name = |v: ValueId| self.graph.values[v].name.clone();
        let c = &self.config;
        SimState {
            mode: c.mode,
            weight_bits: c.weight_bits,
            act_bits: c.act_bits,
            per_channel: c.per_channel,
            skip: c.skip.clone(),
            params: self.params.iter().map(|p| (name(p.value), p.axis, p.encodings.clone())).collect(),
            acts: self.acts.iter().map(|a| (name(a.value), a.encoding)).collect(),
            params_frozen: self.params_frozen,
        }
    }

    /// The simulation of `graph` (the same graph as the state's, e.g. read back from ONNX) with
    /// the quantizers of `state`: it runs exactly as the original.
    pub fn from_state(graph: Graph, state: SimState) -> Result<Self> {
        let weight_bits = check_bits(state.weight_bits)?;
        let act_bits = check_bits(state.act_bits)?;
        let ids: std::collections::HashMap<&str, ValueId> = graph.values.iter().enumerate().map(|(i, v)| (v.name.as_str(), i)).collect();
        let id = |n: &str| ids.get(n).copied().ok_or_else(|| Error::Quant(format!("the simulation's value '{n}' is not in the graph")));
        let params = state.params.iter().map(|(n, axis, encodings)| Ok(ParamQuantizer { value: id(n)?, axis: *axis, encodings: encodings.clone() })).collect::<Result<_>>()?;
        let acts = state.acts.iter().map(|(n, encoding)| Ok(ActQuantizer { value: id(n)?, encoding: *encoding })).collect::<Result<_>>()?;
        let config = QuantSimConfig { mode: state.mode, weight_bits: state.weight_bits, act_bits: state.act_bits, per_channel: state.per_channel, skip: state.skip, ..Default::default() };
        Ok(QuantSim { graph, config, weight_bits, act_bits, params, acts, params_frozen: state.params_frozen, limits: Limits::default() })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    /// The limits every run of the simulation (calibration, analysis, the integer engine) obeys;
    /// [`Limits::default`] unless set.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }
    /// Whether the weight encodings are frozen (AdaRound learned the weights on their grids).
    pub fn params_frozen(&self) -> bool {
        self.params_frozen
    }

    pub fn config(&self) -> &QuantSimConfig {
        &self.config
    }

    /// Weight encodings from the weights themselves, then activation encodings from a min-max
    /// pass over `samples` (each a full input tensor) with quantized weights.
    pub fn calibrate(&mut self, samples: &[Tensor]) -> Result<()> {
        self.calibrate_with_progress(samples, &mut |_, _| true)
    }

    /// [`QuantSim::calibrate`], calling `progress(done, total)` after each sample; returning
    /// false from it cancels calibration (the simulation is then left uncalibrated).
    pub fn calibrate_with_progress(&mut self, samples: &[Tensor], progress: &mut dyn FnMut(usize, usize) -> bool) -> Result<()> {
        let frozen = self.params_frozen;
        let plan = self.calibration_plan(samples.len())?;
        match calib::observe(&plan, samples, None, progress) {
            Ok(part) => self.finish_calibration(part),
            Err(e) => {
                if !frozen {
                    for p in &mut self.params {
                        p.encodings.clear();
                    }
                }
                Err(e)
            }
        }
    }

    /// The first step of calibration in parts (see [`calib`]): computes the weight encodings
    /// (unless frozen) and returns the graph to run on the `samples` calibration samples.
    pub fn calibration_plan(&mut self, samples: usize) -> Result<calib::Plan> {
        if samples == 0 {
            return Err(Error::Quant("the calibration set is empty".into()));
        }
        if let CalibScheme::Percentile(p) = self.config.scheme {
            if !(50.0..=100.0).contains(&p) {
                return Err(Error::Quant(format!("percentile {p} is out of range (50 to 100)")));
            }
        }
        if !self.params_frozen {
            self.compute_param_encodings()?;
        }
        let watched = self.acts.iter().filter(|a| self.graph.consts[a.value].is_none()).map(|a| self.graph.values[a.value].name.clone()).collect();
        Ok(calib::Plan { graph: self.quantized_weights_graph(), watched, scheme: self.config.scheme, limits: self.limits.clone() })
    }

    /// The last step of calibration in parts: activation encodings from what the merged `part`
    /// (over every calibration sample, in order) saw; constants are encoded from their values.
    pub fn finish_calibration(&mut self, part: calib::Part) -> Result<()> {
        let scheme = self.config.scheme;
        let watched = self.acts.iter().filter(|a| self.graph.consts[a.value].is_none()).count();
        if part.seen.len() != watched {
            return Err(Error::Quant(format!("the calibration part holds {} values, the simulation watches {watched}", part.seen.len())));
        }
        let mut seen = part.seen.into_iter();
        for a in &mut self.acts {
            let name = &self.graph.values[a.value].name;
            let s = match &self.graph.consts[a.value] {
                // Constants (e.g. Clip bounds) are encoded from their exact range.
                Some(t) => {
                    let mut s = calib::Seen::MinMax(MinMax::default());
                    s.observe(&t.to_f32_vec(), scheme);
                    s
                }
                None => seen.next().ok_or_else(|| Error::Quant("calibration part too short".into()))?,
            };
            if s.saw_nan() {
                return Err(Error::Quant(format!("tensor '{name}': NaN in the calibration data")));
            }
            if !s.seen() {
                continue; // never computed (e.g. an unused branch)
            }
            a.encoding = Some(encoding_of(&s, self.act_bits).map_err(|e| Error::Quant(format!("tensor '{name}': {e}")))?);
        }
        self.adjust_weight_scales_against_overflow();
        Ok(())
    }

    /// Weight encodings from the weights themselves (min-max, or the SQNR search for
    /// [`CalibScheme::Sqnr`]); [`QuantSim::calibrate`] does this first unless they are frozen.
    pub fn compute_param_encodings(&mut self) -> Result<()> {
        let sqnr = self.config.scheme == CalibScheme::Sqnr;
        for p in &mut self.params {
            let t = self.graph.consts[p.value].as_ref().ok_or_else(|| Error::Quant("parameter is not constant".into()))?;
            p.encodings = param_encodings(t, p.axis, self.weight_bits, sqnr).map_err(|e| Error::Quant(format!("weight '{}': {e}", self.graph.values[p.value].name)))?;
        }
        Ok(())
    }

    /// Replaces the weights `w` (same shape) and freezes every weight encoding, so that later
    /// calibrations keep them (AdaRound: the rounding was learned on those grids).
    pub(crate) fn set_weights_frozen(&mut self, w: ValueId, t: Tensor) {
        self.graph.consts[w] = Some(t);
        self.params_frozen = true;
    }

    fn act_encoding(&self, v: ValueId) -> Option<Encoding> {
        self.acts.iter().find(|a| a.value == v).and_then(|a| a.encoding)
    }

    /// AIMET's `_adjust_weight_scales_against_overflow` (quantsim.py): widens weight scales so
    /// that the int32 bias and output-offset terms of an integer kernel cannot overflow. With
    /// `N = 2^31 - 2^15`, input scale `s_x`, output `(s_y, z_y)` and float bias `b`:
    /// `s_w >= |b| / (N s_x)`; if the output is quantized `s_w >= 2^-23.5 s_y / s_x`; and
    /// `s_w >= |round(b/(s_x s_w)) + round(z_y s_y/(s_x s_w))| s_w / N`. Offsets are kept.
    /// In practice this only touches dead channels (|w| ~ 0).
    pub(crate) fn adjust_weight_scales_against_overflow(&mut self) {
        const N: f64 = 2_147_483_648.0 - 32_768.0;
        let min_ratio = 2f64.powf(-23.5);
        let mut updates: Vec<(usize, Vec<f64>)> = Vec::new();
        for n in &self.graph.nodes {
            if !matches!(n.op, Op::Conv { .. } | Op::Gemm { .. } | Op::MatMul) {
                continue;
            }
            let (Some(x), Some(w)) = (n.inputs.first().copied().flatten(), n.inputs.get(1).copied().flatten()) else { continue };
            let Some(sx) = self.act_encoding(x).map(|e| e.scale) else { continue };
            let Some(pi) = self.params.iter().position(|p| p.value == w) else { continue };
            let p = &self.params[pi];
            let channels = p.encodings.len();
            let bias: Vec<f64> = match n.inputs.get(2).copied().flatten().and_then(|b| self.graph.consts[b].as_ref()).and_then(Tensor::as_f32) {
                Some(b) if channels == 1 => vec![b.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()))],
                Some(b) if b.len() == channels => b.iter().map(|&v| v as f64).collect(),
                _ => vec![0.0; channels],
            };
            let out = n.outputs.first().and_then(|&o| self.act_encoding(o));
            let scales = p
                .encodings
                .iter()
                .zip(&bias)
                .map(|(e, &b)| {
                    let mut sw = e.scale.max(b.abs() / (N * sx));
                    let (sy, zy) = out.map_or((0.0, 0.0), |o| (o.scale, o.offset as f64));
                    if out.is_some() {
                        sw = sw.max(min_ratio * sy / sx);
                    }
                    let acc = (b / (sx * sw)).round() + (zy * sy / (sx * sw)).round();
                    sw.max((acc * sx * sw).abs() / (N * sx))
                })
                .collect();
            updates.push((pi, scales));
        }
        for (pi, scales) in updates {
            for (e, s) in self.params[pi].encodings.iter_mut().zip(scales) {
                e.scale = s;
            }
        }
    }

    /// qplay mode: the bias of a Conv or Gemm node as int32 on its accumulator's grid, as
    /// integer kernels add it: scale `s_x * s_w[c]` (the f32 product, as onnxruntime computes
    /// it), value `round_half_even(b / scale)`. Returns the integers and the scales (one, or one
    /// per output channel); `None` in AIMET mode (AIMET leaves biases in float) or when the
    /// node's input or weight is not quantized.
    pub fn int_bias(&self, n: &crate::graph::Node) -> Option<(Vec<i32>, Vec<f32>)> {
        let (x, w, b) = self.int_bias_sources(n)?;
        let sx = self.act_encoding(x)?.scale as f32;
        let sw: Vec<f32> = self.param_encodings_of(w)?.iter().map(|e| e.scale as f32).collect();
        let bias = self.graph.consts[b].as_ref()?.as_f32()?;
        if sw.is_empty() || (sw.len() != 1 && sw.len() != bias.len()) {
            return None;
        }
        let scales: Vec<f32> = sw.iter().map(|&s| sx * s).collect();
        Some((int_bias_values(bias, &scales), scales))
    }

    /// qplay mode: for a Conv or Gemm node whose bias goes on the accumulator's grid, the
    /// activation whose encoding gives the input scale (the node's input, or the value before
    /// layout ops that keep its encoding), the weight and the bias.
    pub(crate) fn int_bias_sources(&self, n: &crate::graph::Node) -> Option<(ValueId, ValueId, ValueId)> {
        if self.config.mode != Mode::Qplay || !matches!(n.op, Op::Conv { .. } | Op::Gemm { .. }) {
            return None;
        }
        let (mut x, w, b) = (n.inputs.first().copied().flatten()?, n.inputs.get(1).copied().flatten()?, n.inputs.get(2).copied().flatten()?);
        while self.act_encoding(x).is_none() {
            let p = self.graph.nodes.iter().find(|m| m.outputs.contains(&x) && crate::exec::int8::LAYOUT_OPS.contains(&m.op_type.as_str()))?;
            x = p.inputs.first().copied().flatten()?;
        }
        Some((x, w, b))
    }

    /// A copy of the graph whose weights are quantize-dequantized with their encodings.
    pub(crate) fn quantized_weights_graph(&self) -> Graph {
        let mut g = self.graph.clone();
        for p in &self.params {
            if let Some(t) = g.consts[p.value].take() {
                g.consts[p.value] = Some(qdq_param(t, p.axis, &p.encodings));
            }
        }
        g
    }

    /// The graph as the simulation runs it — weights and quantized constants replaced by their
    /// quantize-dequantized values — and the activation encoding of every computed value.
    pub(crate) fn simulated_graph(&self) -> Result<(Graph, Vec<Option<Encoding>>)> {
        if self.params.iter().any(|p| p.encodings.is_empty()) {
            return Err(Error::Quant("calibrate the simulation first".into()));
        }
        let mut g = self.quantized_weights_graph();
        // Biases of integer kernels: their int32 values, dequantized as DequantizeLinear does.
        for n in &self.graph.nodes {
            if let (Some((ints, scales)), Some(Some(b))) = (self.int_bias(n), n.inputs.get(2)) {
                let per = |j: usize| scales[if scales.len() == 1 { 0 } else { j }];
                if let Some(t) = g.consts[*b].as_ref() {
                    let v = ints.iter().enumerate().map(|(j, &q)| q as f32 * per(j)).collect();
                    g.consts[*b] = Some(Tensor::from_parts_f32(t.shape().to_vec(), v));
                }
            }
        }
        let mut act = vec![None; g.values.len()];
        // qplay mode rounds activations as ONNX's QuantizeLinear does (half to even), so that an
        // exported QDQ model computes what the simulation shows; AIMET mode rounds ties up.
        let ties_even = self.config.mode == Mode::Qplay;
        for a in &self.acts {
            if let Some(e) = a.encoding {
                let e = Encoding { ties_even, ..e };
                match g.consts[a.value].as_mut() {
                    Some(t) => e.qdq_tensor(t),
                    None => act[a.value] = Some(e),
                }
            }
        }
        Ok((g, act))
    }

    /// Runs the simulated quantized model: in AIMET mode the float simulation, weights,
    /// constants and activations quantize-dequantized; in qplay mode the integer engine at
    /// every bit-width, mixed or not (see the module doc).
    pub fn executor(&self) -> Result<SimExecutor> {
        if self.config.mode == Mode::Qplay {
            return Ok(SimExecutor(SimExec::Integer(Box::new(crate::exec::int8::Int8Executor::new(self)?))));
        }
        self.float_executor()
    }

    /// The float simulation (AIMET's), whatever the mode.
    pub fn float_executor(&self) -> Result<SimExecutor> {
        let (g, act) = self.simulated_graph()?;
        Ok(SimExecutor(SimExec::Float { exec: Executor::with_fusion(g, self.limits.clone(), false)?, act }))
    }

    /// Subtracts `shift` (per channel) from the bias constant `b` (bias correction).
    pub(crate) fn adjust_bias(&mut self, b: ValueId, shift: &[f64]) -> Result<()> {
        let t = self.graph.consts[b].as_ref().ok_or_else(|| Error::Quant("bias is not constant".into()))?;
        let d = t.to_f32_vec();
        if d.len() != shift.len() {
            return Err(Error::Quant(format!("bias '{}' has {} values for {} channels", self.graph.values[b].name, d.len(), shift.len())));
        }
        let v = d.iter().zip(shift).map(|(&x, &s)| (x as f64 - s) as f32).collect();
        self.graph.consts[b] = Some(Tensor::from_parts_f32(t.shape().to_vec(), v));
        Ok(())
    }

    /// The weight encodings of each parameter value.
    pub(crate) fn param_encodings_of(&self, v: ValueId) -> Option<&[Encoding]> {
        self.params.iter().find(|p| p.value == v).map(|p| p.encodings.as_slice())
    }

    /// Sets every quantizer's encodings from an AIMET encodings file (format 1.0.0, or 0.6.1's
    /// name-keyed maps). All or nothing: on any error the simulation is left unchanged.
    /// Quantizers the file does not mention stay as they are (disabled if never calibrated).
    pub fn import_aimet_json(&mut self, text: &str) -> Result<()> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Quant(format!("encodings file is not valid JSON: {e}")))?;
        let entries = |kind: &str| -> Result<Vec<(String, Vec<Encoding>)>> {
            match &v[kind] {
                serde_json::Value::Null => Ok(vec![]),
                serde_json::Value::Array(list) => list.iter().map(parse_v1).collect(),
                serde_json::Value::Object(map) => map.iter().map(|(name, e)| parse_v06(name, e)).collect(),
                _ => Err(Error::Quant(format!("'{kind}' must be a list (1.0.0) or an object (0.6.1)"))),
            }
        };
        let (acts_in, params_in) = (entries("activation_encodings")?, entries("param_encodings")?);
        let mut params = self.params.clone();
        let mut acts = self.acts.clone();
        for (name, encs) in params_in {
            let p = params
                .iter_mut()
                .find(|p| self.graph.values[p.value].name == name)
                .ok_or_else(|| Error::Quant(format!("tensor '{name}': not a quantized parameter of this model")))?;
            let t = self.graph.consts[p.value].as_ref().ok_or_else(|| Error::Quant(format!("tensor '{name}': not constant")))?;
            let want = match p.axis {
                Some(ax) => t.shape().get(ax).copied().unwrap_or(0),
                None => 1,
            };
            if encs.len() != want {
                return Err(Error::Quant(format!("tensor '{name}': {} encodings for {want} channels (per-channel is {})", encs.len(), p.axis.is_some())));
            }
            p.encodings = encs;
        }
        for (name, encs) in acts_in {
            let a = acts
                .iter_mut()
                .find(|a| self.graph.values[a.value].name == name)
                .ok_or_else(|| Error::Quant(format!("tensor '{name}': not a quantized activation of this model")))?;
            if encs.len() != 1 {
                return Err(Error::Quant(format!("tensor '{name}': activations take one encoding, got {}", encs.len())));
            }
            a.encoding = Some(encs[0]);
        }
        if let Some(p) = params.iter().find(|p| p.encodings.is_empty()) {
            return Err(Error::Quant(format!("tensor '{}': the file has no encoding for this weight", self.graph.values[p.value].name)));
        }
        self.params = params;
        self.acts = acts;
        Ok(())
    }

    /// Encodings in AIMET's JSON format, version 1.0.0.
    pub fn to_aimet_json(&self) -> serde_json::Value {
        let enc = |name: &str, e: &[Encoding], per_channel: bool| {
            serde_json::json!({
                "bw": e.first().map_or(0, |x| x.bw),
                "dtype": "INT",
                "enc_type": if per_channel { "PER_CHANNEL" } else { "PER_TENSOR" },
                "is_sym": e.first().is_some_and(|x| x.symmetric),
                "name": name,
                "offset": e.iter().map(|x| x.offset as f64).collect::<Vec<_>>(),
                "scale": e.iter().map(|x| x.scale).collect::<Vec<_>>(),
            })
        };
        let acts: Vec<_> = self.acts.iter().filter_map(|a| a.encoding.map(|e| enc(&self.graph.values[a.value].name, &[e], false))).collect();
        let params: Vec<_> = self.params.iter().map(|p| enc(&self.graph.values[p.value].name, &p.encodings, p.axis.is_some())).collect();
        serde_json::json!({
            "version": "1.0.0",
            "activation_encodings": acts,
            "param_encodings": params,
            "quantizer_args": {
                "activation_bitwidth": self.act_bits,
                "param_bitwidth": self.weight_bits,
                "dtype": "int",
                "is_symmetric": true,
                "per_channel_quantization": self.config.per_channel,
                "qplay_mode": match self.config.mode { Mode::Qplay => "qplay", Mode::Aimet => "aimet" },
                "quant_scheme": match self.config.scheme {
                    CalibScheme::MinMax => "min_max",
                    CalibScheme::Sqnr => "tf_enhanced",
                    CalibScheme::Percentile(_) => "percentile",
                },
            },
            "producer": {"name": "qplay", "version": env!("CARGO_PKG_VERSION")},
        })
    }
}

fn encoding_from(name: &str, bw: &serde_json::Value, scale: f64, offset: f64, sym: bool) -> Result<Encoding> {
    let bw = bw.as_u64().ok_or_else(|| Error::Quant(format!("tensor '{name}': 'bw' is missing")))?;
    let bw = check_bits(bw as u32).map_err(|e| Error::Quant(format!("tensor '{name}': {e}")))?;
    if !(scale.is_finite() && scale > 0.0) || offset.fract() != 0.0 || offset > 0.0 || offset < -(((1u64 << bw) - 1) as f64) {
        return Err(Error::Quant(format!("tensor '{name}': invalid scale {scale} / offset {offset}")));
    }
    Ok(Encoding { bw, scale, offset: offset as i64, symmetric: sym, ties_even: false })
}

/// One entry of a 1.0.0 file: `{name, bw, dtype, enc_type, is_sym, offset: [..], scale: [..]}`.
fn parse_v1(e: &serde_json::Value) -> Result<(String, Vec<Encoding>)> {
    let name = e["name"].as_str().ok_or_else(|| Error::Quant("an encoding has no 'name'".into()))?.to_string();
    if e["dtype"].as_str().is_some_and(|d| d != "INT") {
        return Err(Error::Quant(format!("tensor '{name}': dtype {} is not supported (INT only)", e["dtype"])));
    }
    let nums = |k: &str| -> Result<Vec<f64>> {
        e[k].as_array()
            .ok_or_else(|| Error::Quant(format!("tensor '{name}': '{k}' must be a list")))?
            .iter()
            .map(|x| x.as_f64().ok_or_else(|| Error::Quant(format!("tensor '{name}': '{k}' holds a non-number"))))
            .collect()
    };
    let (scale, offset) = (nums("scale")?, nums("offset")?);
    if scale.len() != offset.len() || scale.is_empty() {
        return Err(Error::Quant(format!("tensor '{name}': {} scales and {} offsets", scale.len(), offset.len())));
    }
    let sym = e["is_sym"].as_bool().unwrap_or(false);
    let encs = scale.iter().zip(&offset).map(|(&s, &o)| encoding_from(&name, &e["bw"], s, o, sym)).collect::<Result<_>>()?;
    Ok((name, encs))
}

/// One entry of a 0.6.1 file: `"name": [{bitwidth, is_symmetric, max, min, offset, scale}, ...]`.
fn parse_v06(name: &str, e: &serde_json::Value) -> Result<(String, Vec<Encoding>)> {
    let list = e.as_array().ok_or_else(|| Error::Quant(format!("tensor '{name}': expected a list of encodings")))?;
    let encs = list
        .iter()
        .map(|x| {
            let sym = x["is_symmetric"].as_str().map_or_else(|| x["is_symmetric"].as_bool().unwrap_or(false), |s| s == "True");
            let (s, o) = (x["scale"].as_f64(), x["offset"].as_f64());
            match (s, o) {
                (Some(s), Some(o)) => encoding_from(name, &x["bitwidth"], s, o, sym),
                _ => Err(Error::Quant(format!("tensor '{name}': 'scale' and 'offset' are required"))),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    if encs.is_empty() {
        return Err(Error::Quant(format!("tensor '{name}': empty encoding list")));
    }
    Ok((name.to_string(), encs))
}

/// Whether node `n` is the first op of a supergroup: AIMET's defaults, plus (qplay mode)
/// depthwise and grouped convolutions followed by their activation.
fn supergroup_head(g: &Graph, n: &crate::graph::Node, readers: &[usize], mode: Mode) -> bool {
    let Some(&out) = n.outputs.first() else { return false };
    if readers[out] != 1 || g.outputs.contains(&out) {
        return false;
    }
    let Some(next) = g.nodes.iter().find(|m| m.inputs.iter().flatten().any(|&i| i == out)) else { return false };
    let relu = matches!(next.op, Op::Unary(UnaryOp::Relu));
    match &n.op {
        Op::Conv { group, .. } => (*group == 1 || mode == Mode::Qplay) && (relu || matches!(next.op, Op::Clip { .. })),
        Op::Binary(crate::graph::BinaryOp::Add) | Op::Gemm { .. } => relu,
        _ => false,
    }
}

/// Symmetric weight encodings, one per slice along `axis` (or one for the tensor), by min-max or
/// by the SQNR search over the weights' own histogram.
fn param_encodings(t: &Tensor, axis: Option<usize>, bw: u8, sqnr: bool) -> Result<Vec<Encoding>> {
    let d = t.as_f32().ok_or_else(|| Error::Quant("weights must be float32".into()))?;
    let slices: Vec<Vec<f32>> = match axis {
        None => vec![d.to_vec()],
        Some(ax) => {
            if ax >= t.rank() || t.rank() == 0 {
                return Err(Error::Quant(format!("per-channel quantization needs a channel axis; shape {:?} has no axis {ax}", t.shape())));
            }
            let (outer, ch, inner) = split(t.shape(), ax);
            (0..ch).map(|c| (0..outer).flat_map(|o| d[(o * ch + c) * inner..(o * ch + c + 1) * inner].iter().copied()).collect()).collect()
        }
    };
    slices
        .iter()
        .map(|v| {
            if sqnr {
                let mut h = Histogram::default();
                h.observe(v);
                sqnr_search(&h, bw, QuantScheme::Symmetric)
            } else {
                let (mn, mx) = min_max(v.iter().copied());
                Encoding::from_min_max(mn, mx, bw, QuantScheme::Symmetric)
            }
        })
        .collect()
}

pub(crate) fn split(shape: &[usize], ax: usize) -> (usize, usize, usize) {
    (shape[..ax].iter().product(), shape[ax], shape[ax + 1..].iter().product())
}

fn min_max(it: impl Iterator<Item = f32>) -> (f32, f32) {
    it.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), x| {
        if x.is_nan() { (f32::NAN, f32::NAN) } else { (a.min(x), b.max(x)) }
    })
}

/// A bias as int32 on the grid `scales` (one, or one per channel), rounded half to even.
pub(crate) fn int_bias_values(bias: &[f32], scales: &[f32]) -> Vec<i32> {
    bias.iter()
        .enumerate()
        .map(|(j, &v)| {
            let s = scales[if scales.len() == 1 { 0 } else { j }] as f64;
            (v as f64 / s).round_ties_even().clamp(-(i32::MAX as f64), i32::MAX as f64) as i32
        })
        .collect()
}

pub(crate) fn qdq_param(t: Tensor, axis: Option<usize>, enc: &[Encoding]) -> Tensor {
    let shape = t.shape().to_vec();
    let mut d = t.into_f32().unwrap_or_default();
    match axis {
        None => enc[0].qdq_slice(&mut d),
        Some(ax) => {
            let (outer, ch, inner) = split(&shape, ax);
            for o in 0..outer {
                for (c, e) in enc.iter().enumerate().take(ch) {
                    e.qdq_slice(&mut d[(o * ch + c) * inner..(o * ch + c + 1) * inner]);
                }
            }
        }
    }
    Tensor::from_parts_f32(shape, d)
}

/// Executes the simulated quantized model.
#[derive(Debug)]
pub struct SimExecutor(SimExec);

#[derive(Debug)]
enum SimExec {
    Float { exec: Executor, act: Vec<Option<Encoding>> },
    Integer(Box<crate::exec::int8::Int8Executor>),
}

impl SimExecutor {
    pub fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        match &mut self.0 {
            SimExec::Integer(e) => e.run(inputs),
            SimExec::Float { .. } => self.run_visiting(inputs, &mut |_, _| {}),
        }
    }

    /// [`SimExecutor::run`], also handing every quantized activation to `visit` (its value's
    /// name and the quantize-dequantized tensor, as the next layers see it).
    pub fn run_visiting(&mut self, inputs: Vec<Tensor>, visit: &mut dyn FnMut(&str, &Tensor)) -> Result<Vec<Tensor>> {
        let (exec, act) = match &mut self.0 {
            SimExec::Integer(e) => return e.run_visiting(inputs, visit),
            SimExec::Float { exec, act } => (exec, act),
        };
        let names: Vec<String> = exec.graph().values.iter().map(|v| v.name.clone()).collect();
        exec.run_with_hook(inputs, &mut |id, t| {
            if let Some(e) = act[id] {
                e.qdq_tensor(t);
                visit(&names[id], t);
            }
            Ok(())
        })
    }
}
