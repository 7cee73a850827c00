//! [`Graph`] -> ONNX bytes: the FP32 model as qplay transformed it (BN folded, equalized,
//! AdaRounded), and the quantized model in QDQ form for onnxruntime.
//!
//! QDQ conventions (those of onnxruntime's `quantize_static` output):
//! - weights are stored quantized (int8, zero point 0; per output channel with `axis` when the
//!   encoding is per channel) and read through one `DequantizeLinear`;
//! - every quantized activation `v` becomes `producer -> v_prequant -> QuantizeLinear ->
//!   v_quantized -> DequantizeLinear -> v` (uint8, zero point `-offset`), so consumers and graph
//!   outputs keep their names; a quantized graph input is rewired to `v_dequantized`;
//! - biases of Conv/Gemm stay float in AIMET mode (AIMET's default config does not quantize
//!   them); in qplay mode they are int32 on the accumulator's grid (`s_x * s_w`, zero point 0)
//!   read through a `DequantizeLinear`, as the simulation and integer kernels add them;
//! - quantized constants (Clip bounds in AIMET's placement) are stored already quantize-dequantized.
//!
//! Bit-widths below 8 use the 8-bit containers with a restricted range: weights are exact (their
//! integers already lie in the smaller range), activations get a `Clip` to the encoding's range
//! before `QuantizeLinear`. Bit-widths 9 to 16 (mixed precision) use 16-bit containers the same
//! way (int16 weights, uint16 activations): in the standard domain when the model's opset is 21
//! or later, else in onnxruntime's `com.microsoft` domain, whose QuantizeLinear and
//! DequantizeLinear take 16-bit types at any opset (the 8-bit ones stay standard). A Clip with per-channel bounds (left by
//! qplay's function-preserving equalization) is written as `Max`/`Min` with broadcast bounds,
//! since ONNX's Clip takes scalars only; qplay's loader reads the pair back as that Clip. When
//! such a Clip's output is quantized and its input is not, the input gets a QDQ pair with the
//! output's encoding: the same values (quantization commutes with the clip), and onnxruntime
//! can then fuse the producing convolution into its integer kernel.

use super::proto::{self, tensor_proto::DataType, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto};
use crate::error::{Error, Result};
use crate::graph::{Dim, Graph, Op, ValueId};
use crate::quant::encoding::Encoding;
use crate::quant::sim::QuantSim;
use crate::tensor::{Tensor, TensorData};
use prost::Message;

/// The FP32 graph as an ONNX model.
pub fn fp32_model(g: &Graph) -> Result<Vec<u8>> {
    let mut w = Writer::new(g);
    w.nodes(g, &|_| None)?;
    w.finish(g, g.opset)
}

/// The simulated quantized model as QDQ ONNX (see the module doc), opset 13 or later: per-axis
/// DequantizeLinear needs 13, so opset 11 and 12 models are written as opset 13, with the ops
/// whose form changed at 13 rewritten (see [`upgrade_to_13`]).
pub fn qdq_model(sim: &QuantSim) -> Result<Vec<u8>> {
    let g = sim.graph();
    if g.opset < 11 {
        return Err(Error::Quant(format!("QDQ export of an opset-{} model is not supported: it needs opset 11 or later (convert the model first)", g.opset)));
    }
    let mut w = Writer::new(g);
    w.upgrade = g.opset < 13;
    w.standard_16 = g.opset >= 21;
    // Weights: int8 initializer + DequantizeLinear writing the weight's own name.
    for p in &sim.params {
        let name = g.value_name(p.value).to_string();
        let t = g.consts[p.value].as_ref().ok_or_else(|| Error::tensor(&name, "weight is not constant"))?;
        if p.encodings.iter().any(|e| e.bw > 16) {
            return Err(Error::tensor(&name, "QDQ export supports weights of up to 16 bits"));
        }
        let q = quantize_weights(t, p.axis, &p.encodings);
        w.skip_init.insert(p.value);
        let scales: Vec<f32> = p.encodings.iter().map(|e| e.scale as f32).collect();
        let (dtype, data) = match p.encodings.iter().any(|e| e.bw > 8) {
            true => (DataType::Int16, q.iter().flat_map(|&v| (v as i16).to_le_bytes()).collect()),
            false => (DataType::Int8, q.iter().map(|&v| v as i8 as u8).collect()),
        };
        w.dequantized_const(&name, t.shape(), dtype, data, &scales, p.axis);
    }
    // Biases of integer kernels (qplay mode): int32 on the accumulator's grid.
    for n in &g.nodes {
        let (Some((ints, scales)), Some(&Some(b))) = (sim.int_bias(n), n.inputs.get(2)) else { continue };
        if !w.skip_init.insert(b) {
            continue;
        }
        let name = g.value_name(b).to_string();
        let axis = (scales.len() > 1).then_some(0);
        w.dequantized_const(&name, &[ints.len()], DataType::Int32, ints.iter().flat_map(|v| v.to_le_bytes()).collect(), &scales, axis);
    }
    // Activations.
    let mut quantized: Vec<Option<Encoding>> = vec![None; g.values.len()];
    for a in &sim.acts {
        let Some(e) = a.encoding else { continue };
        if e.bw > 16 {
            return Err(Error::tensor(g.value_name(a.value), "QDQ export supports activations of up to 16 bits"));
        }
        match &g.consts[a.value] {
            Some(t) => {
                let mut t = t.clone();
                e.qdq_tensor(&mut t);
                w.const_override.insert(a.value, t);
            }
            None => quantized[a.value] = Some(e),
        }
    }
    let rename = |v: ValueId| quantized[v].map(|_| format!("{}_prequant", g.value_name(v)));
    // Graph inputs: consumers read the dequantized copy.
    let mut input_alias = std::collections::HashMap::new();
    for &i in &g.inputs {
        if let Some(e) = quantized[i] {
            let name = g.value_name(i).to_string();
            let out = format!("{name}_dequantized");
            w.qdq(&name, &out, &e);
            input_alias.insert(i, out);
        }
    }
    w.input_alias = input_alias;
    w.act = quantized.clone();
    w.nodes(g, &rename)?;
    w.finish(g, g.opset.max(13))
}

/// Rewrites an opset-11/12 node into its opset-13 form: the `axes` of Squeeze, Unsqueeze and
/// ReduceSum and the `split` of Split move from attributes to int64 inputs; Softmax-family ops
/// over the last axis keep their form; others are written as the legacy computation
/// `Reshape(Softmax(Flatten(x, axis), -1), Shape(x))`. Returns the node's inputs and attributes,
/// or None when it wrote the node's replacement itself.
fn upgrade_to_13(w: &mut Writer, g: &Graph, n: &crate::graph::Node, mut ins: Vec<String>, out: &str) -> Result<Option<(Vec<String>, Vec<AttributeProto>)>> {
    let mut attrs = n.attrs.clone();
    let moved = match n.op_type.as_str() {
        "Squeeze" | "Unsqueeze" | "ReduceSum" => Some(("axes", 1)),
        "Split" => Some(("split", 1)),
        _ => None,
    };
    if let Some((name, at)) = moved {
        if let Some(pos) = attrs.iter().position(|a| a.name() == name) {
            let values = attrs.remove(pos).ints;
            let t = w.fresh(&format!("{}_{name}", n.name));
            w.init(&t, &[values.len()], DataType::Int64, values.iter().flat_map(|v| v.to_le_bytes()).collect());
            ins.resize(at.max(ins.len()), String::new());
            ins.insert(at, t);
        }
    }
    if matches!(n.op_type.as_str(), "Softmax" | "LogSoftmax" | "Hardmax") {
        let rank = n.inputs.first().copied().flatten().and_then(|x| g.values[x].ty.as_ref()).and_then(|t| t.dims.as_ref()).map(Vec::len);
        let axis = attrs.iter().find(|a| a.name() == "axis").map_or(1, |a| a.i());
        attrs.retain(|a| a.name() != "axis");
        attrs.push(super::attr::int("axis", -1));
        let last = axis == -1 || rank.is_some_and(|r| axis == r as i64 - 1);
        if !last {
            let x = ins.first().cloned().unwrap_or_default();
            let (flat, soft, shape) = (w.fresh(&format!("{}_flat", n.name)), w.fresh(&format!("{}_2d", n.name)), w.fresh(&format!("{}_shape", n.name)));
            let names = [w.fresh(&format!("{}_Flatten", n.name)), w.fresh(&format!("{}_Shape", n.name)), w.fresh(&format!("{}_Reshape", n.name))];
            w.node(&names[0], "Flatten", &[&x], &[&flat], vec![super::attr::int("axis", axis)]);
            w.node(&n.name, &n.op_type, &[&flat], &[&soft], attrs);
            w.node(&names[1], "Shape", &[&x], &[&shape], vec![]);
            w.node(&names[2], "Reshape", &[&soft, &shape], &[out], vec![]);
            return Ok(None);
        }
    }
    Ok(Some((ins, attrs)))
}

/// The integers `q + offset` (signed) of each weight.
fn quantize_weights(t: &Tensor, axis: Option<usize>, encs: &[Encoding]) -> Vec<i32> {
    let d = t.to_f32_vec();
    let shape = t.shape();
    let (ch, inner) = match axis {
        Some(ax) => (shape[ax], shape[ax + 1..].iter().product::<usize>()),
        None => (1, d.len().max(1)),
    };
    d.iter()
        .enumerate()
        .map(|(i, &x)| {
            let e = &encs[if encs.len() == 1 { 0 } else { (i / inner) % ch }];
            (e.quantize(x) as i64 + e.offset) as i32
        })
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

struct Writer {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    names: std::collections::HashSet<String>,
    skip_init: std::collections::HashSet<ValueId>,
    const_override: std::collections::HashMap<ValueId, Tensor>,
    input_alias: std::collections::HashMap<ValueId, String>,
    /// Encodings of the computed values to quantize right after their producer.
    act: Vec<Option<Encoding>>,
    /// Write an opset-11/12 graph's nodes in their opset-13 form.
    upgrade: bool,
    /// 16-bit QuantizeLinear/DequantizeLinear in the standard domain (opset 21 or later), else
    /// in `com.microsoft`.
    standard_16: bool,
    /// Whether a node of `com.microsoft` was written.
    uses_ms: bool,
}

impl Writer {
    fn new(g: &Graph) -> Self {
        Writer {
            nodes: Vec::new(),
            inits: Vec::new(),
            names: g.values.iter().map(|v| v.name.clone()).collect(),
            skip_init: Default::default(),
            const_override: Default::default(),
            input_alias: Default::default(),
            act: vec![None; g.values.len()],
            upgrade: false,
            standard_16: false,
            uses_ms: false,
        }
    }

    fn init(&mut self, name: &str, shape: &[usize], dt: DataType, raw: Vec<u8>) {
        self.inits.push(TensorProto {
            name: Some(name.into()),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: Some(dt as i32),
            raw_data: Some(raw),
            ..Default::default()
        });
    }

    fn node(&mut self, name: &str, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            name: Some(name.into()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// A name not used by the graph or by anything written so far.
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// A constant stored as integers (`dtype`, little-endian `data` of `shape`) and read through a
    /// `DequantizeLinear` writing `name`: zero points 0, one scale per slice along `axis` (scalar
    /// scale and zero point without one).
    fn dequantized_const(&mut self, name: &str, shape: &[usize], dtype: DataType, data: Vec<u8>, scales: &[f32], axis: Option<usize>) {
        let (q, scale, zp) = (format!("{name}_quantized"), format!("{name}_scale"), format!("{name}_zero_point"));
        self.init(&q, shape, dtype, data);
        let n = scales.len();
        let per: &[usize] = if axis.is_some() { &[n] } else { &[] };
        self.init(&scale, per, DataType::Float, f32_bytes(scales));
        let zp_width = match dtype {
            DataType::Int32 => 4,
            DataType::Int16 => 2,
            _ => 1,
        };
        self.init(&zp, per, dtype, vec![0; zp_width * n]);
        let attrs = axis.map(|ax| vec![super::attr::int("axis", ax as i64)]).unwrap_or_default();
        self.node(&format!("{name}_DequantizeLinear"), "DequantizeLinear", &[&q, &scale, &zp], &[name], attrs);
        if dtype == DataType::Int16 {
            self.domain_16();
        }
    }

    /// `input -> [Clip] -> QuantizeLinear -> DequantizeLinear -> output` with encoding `e`.
    fn qdq(&mut self, input: &str, output: &str, e: &Encoding) {
        let base = output.trim_end_matches("_dequantized");
        let (scale, zp, q) = (self.fresh(&format!("{base}_scale")), self.fresh(&format!("{base}_zero_point")), self.fresh(&format!("{base}_quantized")));
        self.init(&scale, &[], DataType::Float, f32_bytes(&[e.scale as f32]));
        let wide = e.bw > 8;
        match wide {
            true => self.init(&zp, &[], DataType::Uint16, ((-e.offset) as u16).to_le_bytes().to_vec()),
            false => self.init(&zp, &[], DataType::Uint8, vec![(-e.offset) as u8]),
        }
        let mut src = input.to_string();
        // Narrower than its container (8 or 16 bits): clipped to the encoding's range first.
        if e.bw < if wide { 16 } else { 8 } {
            let (lo, hi) = (self.fresh(&format!("{base}_min")), self.fresh(&format!("{base}_max")));
            self.init(&lo, &[], DataType::Float, f32_bytes(&[e.min()]));
            self.init(&hi, &[], DataType::Float, f32_bytes(&[e.max()]));
            let clipped = self.fresh(&format!("{base}_clipped"));
            let name = self.fresh(&format!("{base}_Clip"));
            self.node(&name, "Clip", &[&src, &lo, &hi], &[&clipped], vec![]);
            src = clipped;
        }
        let (qn, dqn) = (self.fresh(&format!("{base}_QuantizeLinear")), self.fresh(&format!("{base}_DequantizeLinear")));
        self.node(&qn, "QuantizeLinear", &[&src, &scale, &zp], &[&q], vec![]);
        if wide {
            self.domain_16();
        }
        self.node(&dqn, "DequantizeLinear", &[&q, &scale, &zp], &[output], vec![]);
        if wide {
            self.domain_16();
        }
    }

    /// Puts the last node written (a 16-bit QuantizeLinear or DequantizeLinear) in the domain
    /// that takes 16-bit types at this opset.
    fn domain_16(&mut self) {
        if !self.standard_16 {
            if let Some(n) = self.nodes.last_mut() {
                n.domain = Some("com.microsoft".into());
                self.uses_ms = true;
            }
        }
    }

    /// The graph's nodes, outputs renamed by `rename` (inputs follow [`Writer::input_alias`]).
    fn nodes(&mut self, g: &Graph, rename: &dyn Fn(ValueId) -> Option<String>) -> Result<()> {
        for n in &g.nodes {
            let ins: Vec<String> = n.inputs.iter().map(|i| i.map_or(String::new(), |v| self.input_alias.get(&v).cloned().unwrap_or_else(|| g.value_name(v).to_string()))).collect();
            let outs: Vec<String> = n.outputs.iter().map(|&o| rename(o).unwrap_or_else(|| g.value_name(o).to_string())).collect();
            match is_vector_clip(g, n) {
                true => {
                    // Quantizing the input with the output's encoding first changes nothing
                    // (quantization is monotonic, so it commutes with the clip, and quantizing
                    // twice is quantizing once), but lets onnxruntime fuse the producing
                    // convolution into its integer kernel; the clip then runs on grid values.
                    let (x, y) = (n.inputs[0], n.outputs[0]);
                    let mut src = ins[0].clone();
                    if let (Some(None), Some(Some(e))) = (x.map(|x| self.act[x]), self.act.get(y).copied()) {
                        let on_grid = self.fresh(&format!("{src}_on_grid"));
                        self.qdq(&src, &on_grid, &e);
                        src = on_grid;
                    }
                    self.vector_clip(g, n, &src, &outs[0])
                }
                false => {
                    let rewritten = if self.upgrade { upgrade_to_13(self, g, n, ins, &outs[0])? } else { Some((ins, n.attrs.clone())) };
                    if let Some((input, attribute)) = rewritten {
                        self.nodes.push(NodeProto { name: Some(n.name.clone()), op_type: Some(n.op_type.clone()), input, output: outs.clone(), attribute, ..Default::default() });
                    }
                }
            }
            for (&o, stored) in n.outputs.iter().zip(&outs) {
                if let Some(e) = self.act[o] {
                    self.qdq(stored, g.value_name(o), &e);
                }
            }
        }
        Ok(())
    }

    /// Clip with per-channel bounds as `Max(x, lo) -> Min(., hi)` with the bound constants as
    /// stored (shaped to broadcast, e.g. [C, 1, 1]); the loader turns the pair back into a Clip.
    fn vector_clip(&mut self, g: &Graph, n: &crate::graph::Node, x: &str, y: &str) {
        let mut bound = |k: usize, attr: Option<f32>, default: f32| match n.inputs.get(k).copied().flatten() {
            Some(v) => g.value_name(v).to_string(),
            None => {
                let name = self.fresh(&format!("{}.bound{k}", n.name));
                self.init(&name, &[], DataType::Float, f32_bytes(&[attr.unwrap_or(default)]));
                name
            }
        };
        let Op::Clip { min, max } = n.op else { return };
        let (lo, hi) = (bound(1, min, f32::NEG_INFINITY), bound(2, max, f32::INFINITY));
        let (mid, mx, mn) = (self.fresh(&format!("{y}_lower_bounded")), self.fresh(&format!("{}/Max", n.name)), self.fresh(&format!("{}/Min", n.name)));
        self.node(&mx, "Max", &[x, &lo], &[&mid], vec![]);
        self.node(&mn, "Min", &[&mid, &hi], &[y], vec![]);
    }

    fn finish(mut self, g: &Graph, opset: i64) -> Result<Vec<u8>> {
        let mut used = vec![false; g.values.len()];
        for n in &g.nodes {
            for &i in n.inputs.iter().flatten() {
                used[i] = true;
            }
        }
        for &o in &g.outputs {
            used[o] = true;
        }
        for (id, c) in g.consts.iter().enumerate() {
            let Some(t) = self.const_override.get(&id).or(c.as_ref()) else { continue };
            if !used[id] || self.skip_init.contains(&id) {
                continue;
            }
            let (dt, raw) = match t.data() {
                TensorData::F32(_) => (DataType::Float, f32_bytes(&t.to_f32_vec())),
                TensorData::I64(_) => (DataType::Int64, t.to_i64_vec().iter().flat_map(|x| x.to_le_bytes()).collect()),
            };
            let shape = t.shape().to_vec();
            self.init(g.value_name(id), &shape, dt, raw);
        }
        let info = |id: ValueId| -> ValueInfoProto {
            let v = &g.values[id];
            let ty = v.ty.as_ref();
            let elem = ty.and_then(|t| DataType::from_str_name(&t.elem_type.to_ascii_uppercase())).unwrap_or(DataType::Float);
            let shape = ty.and_then(|t| t.dims.as_ref()).map(|dims| proto::TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| proto::tensor_shape_proto::Dimension {
                        value: Some(match d {
                            Dim::Fixed(n) => proto::tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                            Dim::Symbolic(s) => proto::tensor_shape_proto::dimension::Value::DimParam(s.clone()),
                        }),
                        ..Default::default()
                    })
                    .collect(),
            });
            ValueInfoProto {
                name: Some(v.name.clone()),
                r#type: Some(proto::TypeProto {
                    value: Some(proto::type_proto::Value::TensorType(proto::type_proto::Tensor { elem_type: Some(elem as i32), shape })),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
        let graph = GraphProto {
            name: Some("qplay".into()),
            node: self.nodes,
            initializer: self.inits,
            input: g.inputs.iter().map(|&i| info(i)).collect(),
            output: g.outputs.iter().map(|&o| info(o)).collect(),
            ..Default::default()
        };
        let model = ModelProto {
            ir_version: Some(match opset {
                ..=18 => 8,
                19..=20 => 9,
                _ => 10,
            }),
            opset_import: std::iter::once(OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) })
                .chain(self.uses_ms.then(|| OperatorSetIdProto { domain: Some("com.microsoft".into()), version: Some(1) }))
                .collect(),
            producer_name: Some("qplay".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            graph: Some(graph),
            ..Default::default()
        };
        Ok(model.encode_to_vec())
    }
}

/// Whether `n` is a Clip whose min or max is a constant of more than one value.
fn is_vector_clip(g: &Graph, n: &crate::graph::Node) -> bool {
    matches!(n.op, Op::Clip { .. }) && n.inputs.iter().skip(1).flatten().any(|&v| g.consts[v].as_ref().is_some_and(|t| t.len() > 1))
}
