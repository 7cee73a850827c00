//! Op implementations over whole tensors. Kernels do the arithmetic; this file checks shapes,
//! resolves attributes against inputs, and allocates outputs within the limits.

mod conv_transpose;
mod norm;
mod resize;
mod shape;

use shape::{concat, gather, pad, reshape_dims, slice, split_op, transpose};

use super::Ctx;
use crate::error::{Error, Result};
use crate::graph::{AutoPad, BinaryOp, CastTo, Node, Op, ReduceKind, UnaryOp, Window};
use crate::kernels::{self, pool::PoolGeom, ConvGeom};
use crate::tensor::{checked_numel, Tensor, TensorData};

type Ins<'a, 'b> = &'a [Option<&'b Tensor>];

struct E<'n> {
    node: &'n Node,
}

impl E<'_> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::node(&self.node.name, &self.node.op_type, msg)
    }
    fn input<'b>(&self, ins: Ins<'_, 'b>, i: usize) -> Result<&'b Tensor> {
        ins.get(i).copied().flatten().ok_or_else(|| self.err(format!("input {i} is required")))
    }
    fn f32<'b>(&self, ins: Ins<'_, 'b>, i: usize) -> Result<&'b [f32]> {
        let t = self.input(ins, i)?;
        t.as_f32().ok_or_else(|| self.err(format!("input {i} must be float32, got {}", t.dtype_name())))
    }
    fn opt<'b>(&self, ins: Ins<'_, 'b>, i: usize) -> Option<&'b Tensor> {
        ins.get(i).copied().flatten()
    }
    /// A convolution's optional bias (input 2): float32, one value per output channel.
    fn bias<'b>(&self, ins: Ins<'_, 'b>, channels: usize) -> Result<Option<&'b [f32]>> {
        let Some(b) = self.opt(ins, 2) else { return Ok(None) };
        let bd = b.as_f32().ok_or_else(|| self.err("bias must be float32"))?;
        if bd.len() != channels {
            return Err(self.err(format!("bias has {} values for {channels} output channels", bd.len())));
        }
        Ok(Some(bd))
    }
    /// Checks an output size against the limits before allocating it.
    fn numel(&self, ctx: &Ctx, shape: &[usize]) -> Result<usize> {
        checked_numel(shape)
            .filter(|&n| n <= ctx.limits.max_tensor_elements)
            .ok_or_else(|| self.err(format!("output shape {shape:?} exceeds the limit of {} elements", ctx.limits.max_tensor_elements)))
    }
    fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if (0..r).contains(&a) {
            Ok(a as usize)
        } else {
            Err(self.err(format!("axis {axis} is out of range for rank {rank}")))
        }
    }
}

pub(crate) fn eval(node: &Node, ins: Ins, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
    let e = E { node };
    let one = |t: Tensor| Ok(vec![t]);
    match &node.op {
        Op::Conv { window, group } => one(conv(&e, ins, ctx, window, *group)?),
        Op::BatchNorm { epsilon } => one(batch_norm(&e, ins, *epsilon)?),
        Op::Unary(u) => {
            let x = e.input(ins, 0)?;
            let d = e.f32(ins, 0)?;
            let f = unary_fn(*u);
            one(Tensor::from_parts_f32(x.shape().to_vec(), d.iter().map(|&v| f(v)).collect()))
        }
        Op::Clip { min, max } => {
            let x = e.input(ins, 0)?;
            // Non-scalar bounds (qplay's function-preserving equalization carries a per-channel
            // bound through ReLU6) broadcast against the input like Max/Min, keeping its shape.
            let vector_bounds = [1, 2].iter().any(|&i| e.opt(ins, i).is_some_and(|t| t.len() != 1));
            if vector_bounds && x.as_f32().is_some() {
                let mut y = x.clone();
                for (i, f) in [(1usize, f32::max as fn(f32, f32) -> f32), (2, f32::min)] {
                    if let Some(b) = e.opt(ins, i) {
                        let b = if b.as_f32().is_some() { b.clone() } else { Tensor::from_parts_f32(b.shape().to_vec(), b.to_f32_vec()) };
                        y = binary_f32(&e, ctx, &y, &b, f)?;
                    }
                }
                if y.shape() != x.shape() {
                    return Err(e.err(format!("bounds do not broadcast to the input shape {:?}", x.shape())));
                }
                return one(y);
            }
            let bound = |i: usize, attr: Option<f32>, default: f32| -> Result<f32> {
                match e.opt(ins, i) {
                    Some(t) if t.len() == 1 => Ok(t.to_f32_vec()[0]),
                    Some(_) => Err(e.err(format!("input {i} (bound) must be a scalar"))),
                    None => Ok(attr.unwrap_or(default)),
                }
            };
            let lo = bound(1, *min, f32::NEG_INFINITY)?;
            let hi = bound(2, *max, f32::INFINITY)?;
            match x.data() {
                TensorData::F32(d) => one(Tensor::from_parts_f32(x.shape().to_vec(), d.iter().map(|&v| clamp_select(v, lo, hi)).collect())),
                TensorData::I64(d) => one(Tensor::from_parts_i64(x.shape().to_vec(), d.iter().map(|&v| v.max(lo as i64).min(hi as i64)).collect())),
            }
        }
        Op::PRelu => {
            let x = e.input(ins, 0)?;
            let s = e.input(ins, 1)?;
            let out = binary_f32(&e, ctx, x, s, |a, b| if a < 0.0 { a * b } else { a })?;
            if out.shape() != x.shape() {
                return Err(e.err("slope does not broadcast to the input shape"));
            }
            one(out)
        }
        Op::Binary(b) => one(binary(&e, ctx, ins, *b)?),
        Op::GlobalAveragePool | Op::GlobalMaxPool => {
            let x = e.input(ins, 0)?;
            let d = e.f32(ins, 0)?;
            if x.rank() < 3 {
                return Err(e.err(format!("input must be [N, C, spatial...], got {:?}", x.shape())));
            }
            let (n, c) = (x.shape()[0], x.shape()[1]);
            let sp: usize = x.shape()[2..].iter().product();
            let max = matches!(node.op, Op::GlobalMaxPool);
            let out: Vec<f32> = (0..n * c)
                .map(|i| {
                    let s = &d[i * sp..(i + 1) * sp];
                    if max {
                        s.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                    } else {
                        s.iter().sum::<f32>() / sp.max(1) as f32
                    }
                })
                .collect();
            let mut shape = vec![n, c];
            shape.extend(std::iter::repeat_n(1, x.rank() - 2));
            one(Tensor::from_parts_f32(shape, out))
        }
        Op::AveragePool { window, count_include_pad } => one(pool(&e, ins, ctx, window, Some(*count_include_pad))?),
        Op::MaxPool { window } => one(pool(&e, ins, ctx, window, None)?),
        Op::Gemm { alpha, beta, trans_a, trans_b } => one(gemm_op(&e, ins, ctx, *alpha, *beta, *trans_a, *trans_b)?),
        Op::MatMul => one(matmul(&e, ins, ctx)?),
        Op::Flatten { axis } => {
            let x = e.input(ins, 0)?;
            let r = x.rank() as i64;
            let a = if *axis < 0 { axis + r } else { *axis };
            if !(0..=r).contains(&a) {
                return Err(e.err(format!("axis {axis} is out of range for rank {r}")));
            }
            let outer: usize = x.shape()[..a as usize].iter().product();
            let inner: usize = x.shape()[a as usize..].iter().product();
            one(x.clone().reshaped(vec![outer, inner])?)
        }
        Op::Reshape { allowzero } => {
            let x = e.input(ins, 0)?;
            let spec = e.input(ins, 1)?.to_i64_vec();
            one(x.clone().reshaped(reshape_dims(&e, x.shape(), &spec, *allowzero)?)?)
        }
        Op::Transpose { perm } => one(transpose(&e, e.input(ins, 0)?, perm.as_deref())?),
        Op::Concat { axis } => one(concat(&e, ctx, ins, *axis)?),
        Op::Squeeze { axes } => {
            let x = e.input(ins, 0)?;
            let axes = match (axes, e.opt(ins, 1)) {
                (Some(a), _) => Some(a.clone()),
                (None, Some(t)) => Some(t.to_i64_vec()),
                (None, None) => None,
            };
            let shape = match axes {
                None => x.shape().iter().copied().filter(|&d| d != 1).collect(),
                Some(axes) => {
                    let axes = axes.iter().map(|&a| e.axis(a, x.rank())).collect::<Result<Vec<_>>>()?;
                    for &a in &axes {
                        if x.shape()[a] != 1 {
                            return Err(e.err(format!("cannot squeeze axis {a} of size {}", x.shape()[a])));
                        }
                    }
                    x.shape().iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
                }
            };
            one(x.clone().reshaped(shape)?)
        }
        Op::Unsqueeze { axes } => {
            let x = e.input(ins, 0)?;
            let axes = match axes {
                Some(a) => a.clone(),
                None => e.input(ins, 1)?.to_i64_vec(),
            };
            let out_rank = x.rank() + axes.len();
            if out_rank > ctx.limits.max_rank {
                return Err(e.err(format!("output rank {out_rank} is over the limit")));
            }
            let mut axes = axes.iter().map(|&a| e.axis(a, out_rank)).collect::<Result<Vec<_>>>()?;
            axes.sort_unstable();
            if axes.windows(2).any(|w| w[0] == w[1]) {
                return Err(e.err("axes contain duplicates"));
            }
            let mut shape = Vec::with_capacity(out_rank);
            let mut it = x.shape().iter();
            for i in 0..out_rank {
                if axes.contains(&i) {
                    shape.push(1);
                } else {
                    shape.push(*it.next().ok_or_else(|| e.err("bad axes"))?);
                }
            }
            one(x.clone().reshaped(shape)?)
        }
        Op::Softmax { axis, legacy } => one(softmax(&e, ins, *axis, *legacy)?),
        Op::Pad { mode, pads, value } => one(pad(&e, ctx, ins, *mode, pads.as_deref(), *value)?),
        Op::Reduce { kind, axes, keepdims, noop_with_empty_axes } => one(reduce(&e, ins, *kind, axes.as_deref(), *keepdims, *noop_with_empty_axes)?),
        Op::Resize { .. } => one(resize::resize(&e, ctx, ins, &node.op)?),
        Op::ConvTranspose { window, group, output_padding, output_shape } => {
            one(conv_transpose::conv_transpose(&e, ctx, ins, window, *group, *output_padding, *output_shape)?)
        }
        Op::Split { axis, split } => split_op(&e, ins, *axis, split.as_deref()),
        Op::InstanceNorm { epsilon } => one(norm::instance_norm(&e, ins, *epsilon)?),
        Op::LayerNorm { axis, epsilon } => one(norm::layer_norm(&e, ctx, ins, *axis, *epsilon)?),
        Op::Identity | Op::Dropout => {
            let x = e.input(ins, 0)?;
            if node.outputs.len() > 1 {
                let mask = Tensor::from_parts_f32(x.shape().to_vec(), vec![1.0; x.len()]);
                return Ok(vec![x.clone(), mask]);
            }
            one(x.clone())
        }
        Op::Shape { start, end } => {
            let x = e.input(ins, 0)?;
            let r = x.rank() as i64;
            let clampi = |v: i64| -> usize { (if v < 0 { v + r } else { v }).clamp(0, r) as usize };
            let (s, en) = (clampi(*start), clampi(end.unwrap_or(r)));
            let dims: Vec<i64> = if s < en { x.shape()[s..en].iter().map(|&d| d as i64).collect() } else { vec![] };
            one(Tensor::from_parts_i64(vec![dims.len()], dims))
        }
        Op::Gather { axis } => one(gather(&e, ctx, ins, *axis)?),
        Op::Cast { to } => {
            let x = e.input(ins, 0)?;
            one(match to {
                CastTo::F32 => Tensor::from_parts_f32(x.shape().to_vec(), x.to_f32_vec()),
                CastTo::I64 => Tensor::from_parts_i64(x.shape().to_vec(), x.to_i64_vec()),
            })
        }
        Op::Slice { attrs } => one(slice(&e, ctx, ins, attrs.as_ref())?),
        Op::ConstantOfShape { value, int } => {
            let dims = e.input(ins, 0)?.to_i64_vec();
            let shape = dims
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| e.err(format!("negative dimension {d}"))))
                .collect::<Result<Vec<_>>>()?;
            let n = e.numel(ctx, &shape)?;
            one(if *int {
                Tensor::from_parts_i64(shape, vec![*value as i64; n])
            } else {
                Tensor::from_parts_f32(shape, vec![*value; n])
            })
        }
    }
}

/// ReduceMean / Sum / Max / Min over `axes` (the attribute, else input 1, else every axis).
fn reduce(e: &E, ins: Ins, kind: ReduceKind, axes: Option<&[i64]>, keepdims: bool, noop_with_empty_axes: bool) -> Result<Tensor> {
    let x = e.input(ins, 0)?;
    let view = x.view_f32().ok_or_else(|| e.err("input must be float32"))?;
    let axes = match (axes, e.opt(ins, 1)) {
        (Some(a), _) => a.to_vec(),
        (None, Some(t)) => t.to_i64_vec(),
        (None, None) => vec![],
    };
    if axes.is_empty() && noop_with_empty_axes {
        return Ok(x.clone());
    }
    let mut axes: Vec<usize> = if axes.is_empty() { (0..x.rank()).collect() } else { axes.iter().map(|&a| e.axis(a, x.rank())).collect::<Result<_>>()? };
    axes.sort_unstable();
    axes.dedup();
    if axes.iter().any(|&a| x.shape()[a] == 0) && kind != ReduceKind::Sum {
        return Err(e.err("cannot reduce an empty axis"));
    }
    let mut arr = view.to_owned();
    for &a in axes.iter().rev() {
        let ax = ndarray::Axis(a);
        arr = match kind {
            ReduceKind::Mean => arr.mean_axis(ax).ok_or_else(|| e.err("cannot reduce an empty axis"))?,
            ReduceKind::Sum => arr.sum_axis(ax),
            ReduceKind::Max => arr.fold_axis(ax, f32::NEG_INFINITY, |&m, &v| m.max(v)),
            ReduceKind::Min => arr.fold_axis(ax, f32::INFINITY, |&m, &v| m.min(v)),
        };
    }
    let mut shape: Vec<usize> = arr.shape().to_vec();
    if keepdims {
        for &a in &axes {
            shape.insert(a, 1);
        }
    }
    Ok(Tensor::from_parts_f32(shape, arr.iter().copied().collect()))
}

fn unary_fn(u: UnaryOp) -> impl Fn(f32) -> f32 {
    move |x: f32| match u {
        UnaryOp::Relu => clamp_select(x, 0.0, f32::INFINITY),
        UnaryOp::LeakyRelu(a) => if x < 0.0 { a * x } else { x },
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
        UnaryOp::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Reciprocal => 1.0 / x,
        UnaryOp::Floor => x.floor(),
        UnaryOp::Ceil => x.ceil(),
        UnaryOp::Erf => kernels::erf(x),
        UnaryOp::Softplus => if x > 20.0 { x } else { x.exp().ln_1p() },
        UnaryOp::Elu(a) => if x < 0.0 { a * (x.exp() - 1.0) } else { x },
        UnaryOp::Gelu => 0.5 * x * (1.0 + kernels::erf(x * std::f32::consts::FRAC_1_SQRT_2)),
    }
}

/// [`resolve_pads`] for the integer engine.
pub(crate) fn resolve_pads_pub(w: &Window, hw: [usize; 2], kernel: [usize; 2]) -> [usize; 4] {
    resolve_pads(w, hw, kernel)
}

/// Resolves auto_pad into explicit [top, left, bottom, right] pads.
fn resolve_pads(w: &Window, hw: [usize; 2], kernel: [usize; 2]) -> [usize; 4] {
    match w.auto_pad {
        AutoPad::NotSet => w.pads,
        AutoPad::Valid => [0; 4],
        AutoPad::SameUpper | AutoPad::SameLower => {
            let mut p = [0usize; 4];
            for d in 0..2 {
                let out = hw[d].div_ceil(w.strides[d]);
                let ext = (kernel[d] - 1) * w.dilations[d] + 1;
                let total = ((out - 1) * w.strides[d] + ext).saturating_sub(hw[d]);
                let small = total / 2;
                let (b, e) = if w.auto_pad == AutoPad::SameUpper { (small, total - small) } else { (total - small, small) };
                p[d] = b;
                p[d + 2] = e;
            }
            p
        }
    }
}

fn conv(e: &E, ins: Ins, ctx: &mut Ctx, w: &Window, group: usize) -> Result<Tensor> {
    let x = e.input(ins, 0)?;
    let xd = e.f32(ins, 0)?;
    let wt = e.input(ins, 1)?;
    let wd = e.f32(ins, 1)?;
    if x.rank() != 4 || wt.rank() != 4 {
        return Err(e.err(format!("only 2-D convolution is supported (input {:?}, weight {:?})", x.shape(), wt.shape())));
    }
    let (n, c, h, wi) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (m, cg, kh, kw) = (wt.shape()[0], wt.shape()[1], wt.shape()[2], wt.shape()[3]);
    if c % group != 0 || m % group != 0 || cg * group != c {
        return Err(e.err(format!("input has {c} channels, weight {:?} and group {group} do not match", wt.shape())));
    }
    if let Some(k) = w.kernel {
        if k != [kh, kw] {
            return Err(e.err(format!("kernel_shape {k:?} does not match the weight {:?}", wt.shape())));
        }
    }
    let bias = e.bias(ins, m)?;
    let g = ConvGeom {
        c_in: c,
        h,
        w: wi,
        c_out: m,
        kh,
        kw,
        stride: w.strides,
        dilation: w.dilations,
        pads: resolve_pads(w, [h, wi], [kh, kw]),
        group,
    };
    let (oh, ow) = g.out_hw().ok_or_else(|| e.err(format!("kernel {kh}x{kw} does not fit the padded input {h}x{wi}")))?;
    let out_shape = vec![n, m, oh, ow];
    let total = e.numel(ctx, &out_shape)?;
    if g.scratch_len() > ctx.limits.max_tensor_elements {
        return Err(e.err("the im2col buffer would exceed the tensor element limit"));
    }
    let mut out = vec![0.0f32; total];
    let (isz, osz) = (c * h * wi, m * oh * ow);
    for b in 0..n {
        kernels::conv2d(&g, &xd[b * isz..(b + 1) * isz], wd, bias, &mut out[b * osz..(b + 1) * osz], ctx.scratch);
    }
    if let Some((lo, hi)) = ctx.clamp {
        out.iter_mut().for_each(|v| *v = clamp_select(*v, lo, hi));
    }
    Ok(Tensor::from_parts_f32(out_shape, out))
}

/// `v` clamped to `[lo, hi]` by compare-and-select, which vectorises to `f32x4.pmin/pmax` in
/// wasm (`f32::max/min` carry NaN rules that cost several instructions per lane). NaN stays NaN.
#[inline(always)]
fn clamp_select(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v < lo { lo } else { v };
    if hi < v { hi } else { v }
}

fn batch_norm(e: &E, ins: Ins, eps: f32) -> Result<Tensor> {
    let x = e.input(ins, 0)?;
    let xd = e.f32(ins, 0)?;
    if x.rank() < 2 {
        return Err(e.err(format!("input must have a channel axis, got {:?}", x.shape())));
    }
    let c = x.shape()[1];
    let p: Vec<&[f32]> = (1..5).map(|i| e.f32(ins, i)).collect::<Result<_>>()?;
    if p.iter().any(|v| v.len() != c) {
        return Err(e.err(format!("scale, bias, mean and var must each have {c} values")));
    }
    let sp: usize = x.shape()[2..].iter().product();
    let mut out = Vec::with_capacity(xd.len());
    for (i, chunk) in xd.chunks(sp.max(1)).enumerate() {
        let ch = i % c;
        let k = p[0][ch] / (p[3][ch] + eps).sqrt();
        let b = p[1][ch] - p[2][ch] * k;
        out.extend(chunk.iter().map(|&v| v * k + b));
    }
    Ok(Tensor::from_parts_f32(x.shape().to_vec(), out))
}

fn pool(e: &E, ins: Ins, ctx: &Ctx, w: &Window, avg_include_pad: Option<bool>) -> Result<Tensor> {
    let x = e.input(ins, 0)?;
    let xd = e.f32(ins, 0)?;
    if x.rank() != 4 {
        return Err(e.err(format!("only 2-D pooling is supported, input {:?}", x.shape())));
    }
    let k = w.kernel.ok_or_else(|| e.err("kernel_shape is required"))?;
    let (n, c, h, wi) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let pads = resolve_pads(w, [h, wi], k);
    let mut o = [0usize; 2];
    for d in 0..2 {
        let ext = (k[d] - 1) * w.dilations[d] + 1;
        let padded = [h, wi][d] + pads[d] + pads[d + 2];
        if padded < ext {
            return Err(e.err(format!("kernel {k:?} does not fit the padded input {h}x{wi}")));
        }
        let span = padded - ext;
        o[d] = if w.ceil_mode { span.div_ceil(w.strides[d]) + 1 } else { span / w.strides[d] + 1 };
        // A window must start inside the input or the leading padding.
        if w.ceil_mode && (o[d] - 1) * w.strides[d] >= [h, wi][d] + pads[d] {
            o[d] -= 1;
        }
    }
    let g = PoolGeom { h, w: wi, oh: o[0], ow: o[1], kernel: k, stride: w.strides, dilation: w.dilations, pads };
    let shape = vec![n, c, o[0], o[1]];
    let total = e.numel(ctx, &shape)?;
    let mut out = vec![0.0f32; total];
    let (isz, osz) = (c * h * wi, c * o[0] * o[1]);
    for b in 0..n {
        let (src, dst) = (&xd[b * isz..(b + 1) * isz], &mut out[b * osz..(b + 1) * osz]);
        match avg_include_pad {
            Some(cip) => kernels::pool::avg_pool(&g, c, src, dst, cip),
            None => kernels::pool::max_pool(&g, c, src, dst),
        }
    }
    Ok(Tensor::from_parts_f32(shape, out))
}

/// Contiguous copy of a 2-D matrix, transposed if asked.
fn mat(d: &[f32], rows: usize, cols: usize, trans: bool) -> std::borrow::Cow<'_, [f32]> {
    if !trans {
        return std::borrow::Cow::Borrowed(d);
    }
    let mut t = vec![0.0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = d[r * cols + c];
        }
    }
    std::borrow::Cow::Owned(t)
}

#[allow(clippy::too_many_arguments)]
fn gemm_op(e: &E, ins: Ins, ctx: &Ctx, alpha: f32, beta: f32, ta: bool, tb: bool) -> Result<Tensor> {
    let (a, b) = (e.input(ins, 0)?, e.input(ins, 1)?);
    let (ad, bd) = (e.f32(ins, 0)?, e.f32(ins, 1)?);
    if a.rank() != 2 || b.rank() != 2 {
        return Err(e.err(format!("A and B must be matrices, got {:?} and {:?}", a.shape(), b.shape())));
    }
    let (m, k) = if ta { (a.shape()[1], a.shape()[0]) } else { (a.shape()[0], a.shape()[1]) };
    let (k2, n) = if tb { (b.shape()[1], b.shape()[0]) } else { (b.shape()[0], b.shape()[1]) };
    if k != k2 {
        return Err(e.err(format!("inner dimensions differ: A {:?} (transA={ta}) vs B {:?} (transB={tb})", a.shape(), b.shape())));
    }
    let total = e.numel(ctx, &[m, n])?;
    let mut out = vec![0.0f32; total];
    if tb && !ta && m < 4 {
        // Few rows against a [n, k] weight (a classifier head at batch 1): row dot products,
        // without transposing the weight.
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = kernels::dot(&ad[i * k..(i + 1) * k], &bd[j * k..(j + 1) * k]);
            }
        }
    } else {
        let am = mat(ad, a.shape()[0], a.shape()[1], ta);
        let bm = mat(bd, b.shape()[0], b.shape()[1], tb);
        kernels::gemm(m, n, k, &am, &bm, &mut out);
    }
    if alpha != 1.0 {
        out.iter_mut().for_each(|v| *v *= alpha);
    }
    if let Some(c) = e.opt(ins, 2) {
        let cd = c.as_f32().ok_or_else(|| e.err("C must be float32"))?;
        let cs = c.shape();
        let (cr, cc) = match cs.len() {
            0 => (1, 1),
            1 => (1, cs[0]),
            2 => (cs[0], cs[1]),
            _ => return Err(e.err(format!("C of shape {cs:?} cannot broadcast to [{m}, {n}]"))),
        };
        if !(cr == 1 || cr == m) || !(cc == 1 || cc == n) {
            return Err(e.err(format!("C of shape {cs:?} cannot broadcast to [{m}, {n}]")));
        }
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] += beta * cd[(if cr == 1 { 0 } else { i }) * cc + if cc == 1 { 0 } else { j }];
            }
        }
    }
    Ok(Tensor::from_parts_f32(vec![m, n], out))
}

fn matmul(e: &E, ins: Ins, ctx: &Ctx) -> Result<Tensor> {
    let (a, b) = (e.input(ins, 0)?, e.input(ins, 1)?);
    let (ad, bd) = (e.f32(ins, 0)?, e.f32(ins, 1)?);
    if a.rank() == 0 || b.rank() == 0 {
        return Err(e.err("MatMul inputs must have rank >= 1"));
    }
    let mut ash = a.shape().to_vec();
    let mut bsh = b.shape().to_vec();
    let a1 = ash.len() == 1;
    let b1 = bsh.len() == 1;
    if a1 {
        ash.insert(0, 1);
    }
    if b1 {
        bsh.push(1);
    }
    let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
    let (k2, n) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
    if k != k2 {
        return Err(e.err(format!("inner dimensions differ: {:?} x {:?}", a.shape(), b.shape())));
    }
    let abatch = &ash[..ash.len() - 2];
    let bbatch = &bsh[..bsh.len() - 2];
    let batch = broadcast_shape(abatch, bbatch).ok_or_else(|| e.err(format!("batch dims {abatch:?} and {bbatch:?} do not broadcast")))?;
    let nb: usize = batch.iter().product();
    let mut shape = batch.clone();
    if !a1 {
        shape.push(m);
    }
    if !b1 {
        shape.push(n);
    }
    let total = e.numel(ctx, &shape)?;
    let mut out = vec![0.0f32; total];
    let sa = bcast_strides(abatch, &batch);
    let sb = bcast_strides(bbatch, &batch);
    let mut idx = vec![0usize; batch.len()];
    for bi in 0..nb {
        let (oa, ob) = (dot(&idx, &sa), dot(&idx, &sb));
        kernels::gemm(m, n, k, &ad[oa * m * k..(oa + 1) * m * k], &bd[ob * k * n..(ob + 1) * k * n], &mut out[bi * m * n..(bi + 1) * m * n]);
        incr(&mut idx, &batch);
    }
    Ok(Tensor::from_parts_f32(shape, out))
}

fn dot(idx: &[usize], strides: &[usize]) -> usize {
    idx.iter().zip(strides).map(|(a, b)| a * b).sum()
}

/// Odometer increment of a multi-index.
fn incr(idx: &mut [usize], shape: &[usize]) {
    for d in (0..shape.len()).rev() {
        idx[d] += 1;
        if idx[d] < shape[d] {
            return;
        }
        idx[d] = 0;
    }
}

/// Multidirectional (numpy) broadcast of two shapes.
pub(crate) fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
            let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
            match (da, db) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// Element strides of `shape` laid out in `out` (right-aligned), 0 on broadcast dims.
fn bcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let mut s = vec![0usize; r];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        let oi = i + r - shape.len();
        s[oi] = if shape[i] == 1 && out[oi] != 1 { 0 } else { acc };
        acc *= shape[i];
    }
    s
}

fn broadcast_apply<T: Copy, U>(
    e: &E,
    ctx: &Ctx,
    (ash, ad): (&[usize], &[T]),
    (bsh, bd): (&[usize], &[T]),
    f: impl Fn(T, T) -> U,
) -> Result<(Vec<usize>, Vec<U>)> {
    let shape = broadcast_shape(ash, bsh).ok_or_else(|| e.err(format!("shapes {ash:?} and {bsh:?} do not broadcast")))?;
    let total = e.numel(ctx, &shape)?;
    if ash == bsh {
        return Ok((shape, ad.iter().zip(bd).map(|(&x, &y)| f(x, y)).collect()));
    }
    if bd.len() == 1 && ad.len() == total {
        let y = bd[0];
        return Ok((shape, ad.iter().map(|&x| f(x, y)).collect()));
    }
    let mut out = Vec::with_capacity(total);
    if total == 0 {
        return Ok((shape, out));
    }
    let sa = bcast_strides(ash, &shape);
    let sb = bcast_strides(bsh, &shape);
    let r = shape.len();
    let inner = shape[r - 1];
    let (ia, ib) = (sa[r - 1], sb[r - 1]);
    let outer_shape = &shape[..r - 1];
    let mut idx = vec![0usize; r - 1];
    for _ in 0..total / inner {
        let (oa, ob) = (dot(&idx, &sa[..r - 1]), dot(&idx, &sb[..r - 1]));
        for j in 0..inner {
            out.push(f(ad[oa + j * ia], bd[ob + j * ib]));
        }
        incr(&mut idx, outer_shape);
    }
    Ok((shape, out))
}

fn binary_f32(e: &E, ctx: &Ctx, a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32) -> Result<Tensor> {
    let (ad, bd) = match (a.as_f32(), b.as_f32()) {
        (Some(x), Some(y)) => (x, y),
        _ => return Err(e.err(format!("inputs must both be float32 ({} and {})", a.dtype_name(), b.dtype_name()))),
    };
    let (shape, out) = broadcast_apply(e, ctx, (a.shape(), ad), (b.shape(), bd), f)?;
    Ok(Tensor::from_parts_f32(shape, out))
}

fn binary(e: &E, ctx: &Ctx, ins: Ins, op: BinaryOp) -> Result<Tensor> {
    let (a, b) = (e.input(ins, 0)?, e.input(ins, 1)?);
    match (a.data(), b.data()) {
        (TensorData::I64(ad), TensorData::I64(bd)) => {
            if op == BinaryOp::Div && bd.contains(&0) {
                return Err(e.err("integer division by zero"));
            }
            let f = |x: i64, y: i64| match op {
                BinaryOp::Add => x.wrapping_add(y),
                BinaryOp::Sub => x.wrapping_sub(y),
                BinaryOp::Mul => x.wrapping_mul(y),
                BinaryOp::Div => x.wrapping_div(y),
                BinaryOp::Min => x.min(y),
                BinaryOp::Max => x.max(y),
                BinaryOp::Pow => x.wrapping_pow(y.clamp(0, 64) as u32),
            };
            let (shape, out) = broadcast_apply(e, ctx, (a.shape(), ad), (b.shape(), bd), f)?;
            Ok(Tensor::from_parts_i64(shape, out))
        }
        _ => {
            if a.as_f32().is_none() && op != BinaryOp::Pow {
                return Err(e.err(format!("inputs have different types ({} and {})", a.dtype_name(), b.dtype_name())));
            }
            let bf;
            let b = if op == BinaryOp::Pow && b.as_f32().is_none() {
                bf = Tensor::from_parts_f32(b.shape().to_vec(), b.to_f32_vec());
                &bf
            } else {
                b
            };
            binary_f32(e, ctx, a, b, move |x, y| match op {
                BinaryOp::Add => x + y,
                BinaryOp::Sub => x - y,
                BinaryOp::Mul => x * y,
                BinaryOp::Div => x / y,
                BinaryOp::Min => x.min(y),
                BinaryOp::Max => x.max(y),
                BinaryOp::Pow => x.powf(y),
            })
        }
    }
}

fn softmax(e: &E, ins: Ins, axis: i64, legacy: bool) -> Result<Tensor> {
    let x = e.input(ins, 0)?;
    let d = e.f32(ins, 0)?;
    let r = x.rank();
    let ax = e.axis(axis, r.max(1))?;
    let (outer, n, inner) = if legacy {
        (x.shape()[..ax].iter().product::<usize>(), x.shape()[ax..].iter().product::<usize>(), 1)
    } else {
        (x.shape()[..ax].iter().product(), x.shape().get(ax).copied().unwrap_or(1), x.shape()[ax + 1..].iter().product())
    };
    let mut out = d.to_vec();
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| o * n * inner + j * inner + i;
            let mx = (0..n).map(|j| d[at(j)]).fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0.0f32;
            for j in 0..n {
                let v = (d[at(j)] - mx).exp();
                out[at(j)] = v;
                s += v;
            }
            for j in 0..n {
                out[at(j)] /= s;
            }
        }
    }
    Ok(Tensor::from_parts_f32(x.shape().to_vec(), out))
}
