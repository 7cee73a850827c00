//! Typed operators: ONNX attributes are parsed and checked once, at load time.

use crate::error::{Error, Result};
use crate::onnx::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto};

/// ONNX `auto_pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Attributes shared by Conv and the windowed pools (2-D spatial only).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// From the attribute; Conv may leave it to the weight shape.
    pub kernel: Option<[usize; 2]>,
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// [top, left, bottom, right]
    pub pads: [usize; 4],
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    Pow,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    HardSigmoid { alpha: f32, beta: f32 },
    HardSwish,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Neg,
    Abs,
    Reciprocal,
    Floor,
    Ceil,
    Erf,
    Softplus,
    Elu(f32),
    Gelu,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Conv { window: Window, group: usize },
    BatchNorm { epsilon: f32 },
    Unary(UnaryOp),
    /// Clip with bounds from attributes (opset < 11) or from inputs 1 and 2.
    Clip { min: Option<f32>, max: Option<f32> },
    PRelu,
    Binary(BinaryOp),
    GlobalAveragePool,
    GlobalMaxPool,
    AveragePool { window: Window, count_include_pad: bool },
    MaxPool { window: Window },
    Gemm { alpha: f32, beta: f32, trans_a: bool, trans_b: bool },
    MatMul,
    Flatten { axis: i64 },
    Reshape { allowzero: bool },
    Transpose { perm: Option<Vec<usize>> },
    Concat { axis: i64 },
    /// `axes` from the attribute (opset < 13) or None (then input 1, or all size-1 axes).
    Squeeze { axes: Option<Vec<i64>> },
    Unsqueeze { axes: Option<Vec<i64>> },
    /// `legacy`: opset < 13 semantics (flatten to 2-D at `axis`).
    Softmax { axis: i64, legacy: bool },
    /// `pads` set for opset < 11 (attribute form), else from input 1.
    Pad { mode: PadMode, pads: Option<Vec<i64>>, value: f32 },
    /// `axes` from the attribute, or None (then input 1, or every axis).
    Reduce { kind: ReduceKind, axes: Option<Vec<i64>>, keepdims: bool, noop_with_empty_axes: bool },
    /// Resize, and Upsample (opset 7-9). `scales` is the attribute of Upsample-7; otherwise the
    /// scales (input 1 before opset 11, else input 2) or sizes (input 3) are inputs.
    Resize { mode: ResizeMode, coord: CoordMode, nearest: NearestMode, scales: Option<Vec<f32>>, scales_input: usize },
    ConvTranspose { window: Window, group: usize, output_padding: [usize; 2], output_shape: Option<[usize; 2]> },
    /// `split` from the attribute (opset < 13), else input 1; or `num_outputs` equal parts
    /// (opset 18), or as many equal parts as the node has outputs.
    Split { axis: i64, split: Option<Vec<i64>> },
    InstanceNorm { epsilon: f32 },
    /// Normalizes over the axes from `axis` to the last.
    LayerNorm { axis: i64, epsilon: f32 },
    Identity,
    Dropout,
    Shape { start: i64, end: Option<i64> },
    Gather { axis: i64 },
    Cast { to: CastTo },
    /// Slice-1 (opset < 10) takes `starts`, `ends` and `axes` as attributes; later opsets as inputs.
    Slice { attrs: Option<SliceAttrs> },
    ConstantOfShape { value: f32, int: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceAttrs {
    pub starts: Vec<i64>,
    pub ends: Vec<i64>,
    pub axes: Option<Vec<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceKind {
    Mean,
    Sum,
    Max,
    Min,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    Linear,
}

/// How an output coordinate maps to an input coordinate (ONNX `coordinate_transformation_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordMode {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
}

/// How nearest mode picks a pixel. `Simple` is the rule of Resize-10 and Upsample (truncate when
/// enlarging, round up when shrinking), as onnxruntime applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    Simple,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastTo {
    F32,
    I64,
}

struct Attrs<'a> {
    node: &'a NodeProto,
}

impl<'a> Attrs<'a> {
    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name() == name)
    }
    fn err(&self, msg: String) -> Error {
        Error::node(self.node.name(), self.node.op_type(), msg)
    }
    fn typed(&self, name: &str, want: AttributeType) -> Result<Option<&'a AttributeProto>> {
        match self.get(name) {
            None => Ok(None),
            Some(a) => {
                // Old exporters leave `type` unset; accept that when the matching field is filled.
                let ty = a.r#type();
                if ty == want || ty == AttributeType::Undefined {
                    Ok(Some(a))
                } else {
                    Err(self.err(format!("attribute '{name}' should be {} but is {}", want.as_str_name(), ty.as_str_name())))
                }
            }
        }
    }
    fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.typed(name, AttributeType::Int)?.map(|a| a.i()).unwrap_or(default))
    }
    fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.typed(name, AttributeType::Float)?.map(|a| a.f()).unwrap_or(default))
    }
    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self.typed(name, AttributeType::Ints)?.map(|a| a.ints.clone()))
    }
    fn string(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .typed(name, AttributeType::String)?
            .map(|a| String::from_utf8_lossy(a.s()).into_owned()))
    }
    fn usize_list<const N: usize>(&self, name: &str, default: usize, min: usize) -> Result<[usize; N]> {
        match self.ints(name)? {
            None => Ok([default; N]),
            Some(v) if v.len() == N => {
                let mut out = [0usize; N];
                for (o, &x) in out.iter_mut().zip(&v) {
                    if x < min as i64 || x > 1 << 16 {
                        return Err(self.err(format!("attribute '{name}' has value {x} out of range")));
                    }
                    *o = x as usize;
                }
                Ok(out)
            }
            Some(v) => Err(self.err(format!(
                "attribute '{name}' has {} values; qplay supports 2-D spatial ops ({N} values)",
                v.len()
            ))),
        }
    }
    /// Resize (every opset) and Upsample (7-9): the interpolation, the coordinate rule and where
    /// the scales come from.
    fn resize(&self, opset: i64) -> Result<Op> {
        let mode = match self.string("mode")?.as_deref().unwrap_or("nearest") {
            "nearest" => ResizeMode::Nearest,
            "linear" | "bilinear" => ResizeMode::Linear,
            other => return Err(self.err(format!("mode '{other}' is not supported (nearest, linear)"))),
        };
        if self.node.op_type() == "Upsample" {
            if !(7..=9).contains(&opset) {
                return Err(self.err(format!("Upsample is supported for opset 7 to 9, the model has {opset}")));
            }
            let scales = if opset < 9 { Some(self.floats("scales")?.ok_or_else(|| self.err("attribute 'scales' is required".into()))?) } else { None };
            return Ok(Op::Resize { mode, coord: CoordMode::Asymmetric, nearest: NearestMode::Simple, scales, scales_input: 1 });
        }
        if opset < 11 {
            return Ok(Op::Resize { mode, coord: CoordMode::Asymmetric, nearest: NearestMode::Simple, scales: None, scales_input: 1 });
        }
        if self.int("antialias", 0)? != 0 {
            return Err(self.err("antialias=1 is not supported".into()));
        }
        if self.get("axes").is_some() {
            return Err(self.err("attribute 'axes' is not supported (give scales or sizes for every axis)".into()));
        }
        if self.string("keep_aspect_ratio_policy")?.as_deref().is_some_and(|p| p != "stretch") {
            return Err(self.err("keep_aspect_ratio_policy other than 'stretch' is not supported".into()));
        }
        let coord = match self.string("coordinate_transformation_mode")?.as_deref().unwrap_or("half_pixel") {
            "half_pixel" => CoordMode::HalfPixel,
            "half_pixel_symmetric" => CoordMode::HalfPixelSymmetric,
            "pytorch_half_pixel" => CoordMode::PytorchHalfPixel,
            "align_corners" => CoordMode::AlignCorners,
            "asymmetric" => CoordMode::Asymmetric,
            "tf_half_pixel_for_nn" => CoordMode::TfHalfPixelForNn,
            other => return Err(self.err(format!("coordinate_transformation_mode '{other}' is not supported"))),
        };
        let nearest = match self.string("nearest_mode")?.as_deref().unwrap_or("round_prefer_floor") {
            "round_prefer_floor" => NearestMode::RoundPreferFloor,
            "round_prefer_ceil" => NearestMode::RoundPreferCeil,
            "floor" => NearestMode::Floor,
            "ceil" => NearestMode::Ceil,
            other => return Err(self.err(format!("nearest_mode '{other}' is not supported"))),
        };
        Ok(Op::Resize { mode, coord, nearest, scales: None, scales_input: 2 })
    }
    fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        Ok(self.typed(name, AttributeType::Floats)?.map(|a| a.floats.clone()))
    }
    fn window(&self, kernel_required: bool) -> Result<Window> {
        let kernel = match self.ints("kernel_shape")? {
            Some(_) => Some(self.usize_list::<2>("kernel_shape", 1, 1)?),
            None if kernel_required => return Err(self.err("attribute 'kernel_shape' is required".into())),
            None => None,
        };
        let auto_pad = match self.string("auto_pad")?.as_deref() {
            None | Some("NOTSET") | Some("") => AutoPad::NotSet,
            Some("SAME_UPPER") => AutoPad::SameUpper,
            Some("SAME_LOWER") => AutoPad::SameLower,
            Some("VALID") => AutoPad::Valid,
            Some(other) => return Err(self.err(format!("unknown auto_pad '{other}'"))),
        };
        Ok(Window {
            kernel,
            strides: self.usize_list::<2>("strides", 1, 1)?,
            dilations: self.usize_list::<2>("dilations", 1, 1)?,
            pads: self.usize_list::<4>("pads", 0, 0)?,
            auto_pad,
            ceil_mode: self.int("ceil_mode", 0)? != 0,
        })
    }
}

impl Op {
    /// Parses a node of the default domain. `opset` is the model's default-domain opset.
    pub fn parse(node: &NodeProto, opset: i64) -> Result<Op> {
        let a = Attrs { node };
        let unsupported = || Error::UnsupportedOp { node: node.name().to_string(), op: node.op_type().to_string() };
        if !(node.domain().is_empty() || node.domain() == "ai.onnx") {
            return Err(Error::UnsupportedOp {
                node: node.name().to_string(),
                op: format!("{}:{}", node.domain(), node.op_type()),
            });
        }
        use BinaryOp as B;
        use UnaryOp as U;
        Ok(match node.op_type() {
            "Conv" => {
                let group = a.int("group", 1)?;
                if !(1..=1 << 20).contains(&group) {
                    return Err(a.err(format!("attribute 'group' = {group} is out of range")));
                }
                Op::Conv { window: a.window(false)?, group: group as usize }
            }
            "BatchNormalization" => {
                if a.int("training_mode", 0)? != 0 {
                    return Err(a.err("training_mode=1 is not supported (inference only)".into()));
                }
                if opset < 9 && a.int("spatial", 1)? == 0 {
                    return Err(a.err("spatial=0 (per-element statistics, opset 7-8) is not supported".into()));
                }
                Op::BatchNorm { epsilon: a.float("epsilon", 1e-5)? }
            }
            "Relu" => Op::Unary(U::Relu),
            "LeakyRelu" => Op::Unary(U::LeakyRelu(a.float("alpha", 0.01)?)),
            "Sigmoid" => Op::Unary(U::Sigmoid),
            "HardSigmoid" => Op::Unary(U::HardSigmoid { alpha: a.float("alpha", 0.2)?, beta: a.float("beta", 0.5)? }),
            "HardSwish" => Op::Unary(U::HardSwish),
            "Tanh" => Op::Unary(U::Tanh),
            "Exp" => Op::Unary(U::Exp),
            "Log" => Op::Unary(U::Log),
            "Sqrt" => Op::Unary(U::Sqrt),
            "Neg" => Op::Unary(U::Neg),
            "Abs" => Op::Unary(U::Abs),
            "Reciprocal" => Op::Unary(U::Reciprocal),
            "Floor" => Op::Unary(U::Floor),
            "Ceil" => Op::Unary(U::Ceil),
            "Erf" => Op::Unary(U::Erf),
            "Softplus" => Op::Unary(U::Softplus),
            "Elu" => Op::Unary(U::Elu(a.float("alpha", 1.0)?)),
            "Gelu" => {
                if a.string("approximate")?.as_deref().unwrap_or("none") != "none" {
                    return Err(a.err("only approximate='none' is supported".into()));
                }
                Op::Unary(U::Gelu)
            }
            "Clip" => {
                if opset < 11 {
                    Op::Clip { min: Some(a.float("min", f32::MIN)?), max: Some(a.float("max", f32::MAX)?) }
                } else {
                    Op::Clip { min: None, max: None }
                }
            }
            "PRelu" => Op::PRelu,
            "Add" => Op::Binary(B::Add),
            "Sub" => Op::Binary(B::Sub),
            "Mul" => Op::Binary(B::Mul),
            "Div" => Op::Binary(B::Div),
            "Min" if node.input.len() == 2 => Op::Binary(B::Min),
            "Max" if node.input.len() == 2 => Op::Binary(B::Max),
            "Pow" => Op::Binary(B::Pow),
            "GlobalAveragePool" => Op::GlobalAveragePool,
            "GlobalMaxPool" => Op::GlobalMaxPool,
            "AveragePool" => Op::AveragePool {
                window: a.window(true)?,
                count_include_pad: a.int("count_include_pad", 0)? != 0,
            },
            "MaxPool" => {
                if node.output.len() > 1 && !node.output[1].is_empty() {
                    return Err(a.err("the Indices output is not supported".into()));
                }
                if a.int("storage_order", 0)? != 0 {
                    return Err(a.err("storage_order=1 is not supported".into()));
                }
                Op::MaxPool { window: a.window(true)? }
            }
            "Gemm" => Op::Gemm {
                alpha: a.float("alpha", 1.0)?,
                beta: a.float("beta", 1.0)?,
                trans_a: a.int("transA", 0)? != 0,
                trans_b: a.int("transB", 0)? != 0,
            },
            "MatMul" => Op::MatMul,
            "Flatten" => Op::Flatten { axis: a.int("axis", 1)? },
            "Reshape" => Op::Reshape { allowzero: a.int("allowzero", 0)? != 0 },
            "Transpose" => Op::Transpose {
                perm: match a.ints("perm")? {
                    None => None,
                    Some(p) => Some(
                        p.iter()
                            .map(|&x| usize::try_from(x).map_err(|_| a.err(format!("perm value {x} is negative"))))
                            .collect::<Result<Vec<_>>>()?,
                    ),
                },
            },
            "Concat" => Op::Concat { axis: a.typed("axis", AttributeType::Int)?.map(|x| x.i()).ok_or_else(|| a.err("attribute 'axis' is required".into()))? },
            "Squeeze" => Op::Squeeze { axes: if opset < 13 { a.ints("axes")? } else { None } },
            "Unsqueeze" => {
                let axes = if opset < 13 {
                    Some(a.ints("axes")?.ok_or_else(|| a.err("attribute 'axes' is required".into()))?)
                } else {
                    None
                };
                Op::Unsqueeze { axes }
            }
            "Softmax" => Op::Softmax { axis: a.int("axis", if opset < 13 { 1 } else { -1 })?, legacy: opset < 13 },
            "Pad" => {
                let mode = match a.string("mode")?.as_deref().unwrap_or("constant") {
                    "constant" => PadMode::Constant,
                    "reflect" => PadMode::Reflect,
                    "edge" => PadMode::Edge,
                    other => return Err(a.err(format!("pad mode '{other}' is not supported"))),
                };
                let (pads, value) = if opset < 11 { (a.ints("pads")?, a.float("value", 0.0)?) } else { (None, 0.0) };
                Op::Pad { mode, pads, value }
            }
            "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => {
                let (kind, axes_input_from) = match node.op_type() {
                    "ReduceMean" => (ReduceKind::Mean, 18),
                    "ReduceSum" => (ReduceKind::Sum, 13),
                    "ReduceMax" => (ReduceKind::Max, 18),
                    _ => (ReduceKind::Min, 18),
                };
                Op::Reduce {
                    kind,
                    axes: if opset < axes_input_from { a.ints("axes")? } else { None },
                    keepdims: a.int("keepdims", 1)? != 0,
                    noop_with_empty_axes: a.int("noop_with_empty_axes", 0)? != 0,
                }
            }
            "Resize" | "Upsample" => a.resize(opset)?,
            "ConvTranspose" => {
                let group = a.int("group", 1)?;
                if !(1..=1 << 20).contains(&group) {
                    return Err(a.err(format!("attribute 'group' = {group} is out of range")));
                }
                let output_shape = match a.ints("output_shape")? {
                    None => None,
                    Some(v) if v.len() == 2 => Some(a.usize_list::<2>("output_shape", 1, 1)?),
                    Some(v) => return Err(a.err(format!("attribute 'output_shape' has {} values; qplay supports 2-D (2 values)", v.len()))),
                };
                Op::ConvTranspose { window: a.window(false)?, group: group as usize, output_padding: a.usize_list::<2>("output_padding", 0, 0)?, output_shape }
            }
            "Split" => {
                let split = if opset < 13 { a.ints("split")? } else { None };
                if let Some(s) = &split {
                    if s.len() != node.output.len() || s.iter().any(|&v| v < 0) {
                        return Err(a.err(format!("attribute 'split' {s:?} does not give a non-negative size for each of the {} outputs", node.output.len())));
                    }
                }
                if let Some(n) = a.typed("num_outputs", AttributeType::Int)?.map(|x| x.i()) {
                    if n != node.output.len() as i64 {
                        return Err(a.err(format!("num_outputs = {n} but the node has {} outputs", node.output.len())));
                    }
                }
                Op::Split { axis: a.int("axis", 0)?, split }
            }
            "InstanceNormalization" => Op::InstanceNorm { epsilon: a.float("epsilon", 1e-5)? },
            "LayerNormalization" => {
                if node.output.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(a.err("the Mean and InvStdDev outputs are not supported (inference only)".into()));
                }
                Op::LayerNorm { axis: a.int("axis", -1)?, epsilon: a.float("epsilon", 1e-5)? }
            }
            "Identity" => Op::Identity,
            "Dropout" => Op::Dropout,
            "Shape" => Op::Shape {
                start: a.int("start", 0)?,
                end: a.typed("end", AttributeType::Int)?.map(|x| x.i()),
            },
            "Gather" => Op::Gather { axis: a.int("axis", 0)? },
            "Cast" => {
                let to = a.int("to", 0)?;
                Op::Cast {
                    to: match to {
                        1 => CastTo::F32,
                        6 | 7 => CastTo::I64,
                        _ => return Err(a.err(format!("cast to data type {to} is not supported (float32, int32, int64)"))),
                    },
                }
            }
            "Slice" if opset < 10 => {
                let need = |n: &str| a.ints(n)?.ok_or_else(|| a.err(format!("attribute '{n}' is required")));
                Op::Slice { attrs: Some(SliceAttrs { starts: need("starts")?, ends: need("ends")?, axes: a.ints("axes")? }) }
            }
            "Slice" => Op::Slice { attrs: None },
            "ConstantOfShape" => {
                let (value, int) = match a.get("value") {
                    None => (0.0, false),
                    Some(attr) => {
                        let t = attr.t.as_ref().ok_or_else(|| a.err("attribute 'value' has no tensor".into()))?;
                        let mut budget = 64;
                        let t = crate::onnx::tensor_from_proto(t, &crate::onnx::Limits::default(), &mut budget)?;
                        let v = t.to_f32_vec();
                        if v.len() != 1 {
                            return Err(a.err("attribute 'value' must hold one element".into()));
                        }
                        (v[0], t.as_i64().is_some())
                    }
                };
                Op::ConstantOfShape { value, int }
            }
            _ => return Err(unsupported()),
        })
    }
}
