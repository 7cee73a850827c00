//! The backward rule of each op: given a node's inputs, outputs and the gradients of its
//! outputs, the gradients of its inputs. Convolutions and matrix products run on the same GEMM
//! kernel as inference. Each rule is checked against central differences in the tests.

use crate::error::{Error, Result};
use crate::exec::resolve_pads;
use crate::graph::{BinaryOp, Node, Op, UnaryOp, ValueId, Window};
use crate::kernels::conv::{im2col, ConvGeom};
use crate::kernels::gemm;
use crate::tensor::Tensor;

type Ins<'a, 'b> = &'a [Option<&'b Tensor>];

/// Adds `d` to the gradient of `v`.
pub(crate) fn accumulate(grads: &mut [Option<Vec<f32>>], v: ValueId, d: Vec<f32>) {
    match grads[v].as_mut() {
        Some(g) => g.iter_mut().zip(&d).for_each(|(a, b)| *a += b),
        None => grads[v] = Some(d),
    }
}

fn err(node: &Node, msg: impl Into<String>) -> Error {
    Error::node(&node.name, &node.op_type, msg)
}

fn input<'b>(node: &Node, ins: Ins<'_, 'b>, i: usize) -> Result<(&'b [usize], &'b [f32])> {
    let t = ins.get(i).copied().flatten().ok_or_else(|| err(node, format!("input {i} is required")))?;
    Ok((t.shape(), t.as_f32().ok_or_else(|| err(node, format!("input {i} must be float32")))?))
}

/// BatchNormalization with the batch's statistics (over every axis but the channel axis 1).
/// Returns the output, the batch mean, `1/sqrt(var + eps)` (biased variance, used to normalize)
/// and the unbiased variance (for the running average, as PyTorch keeps it).
pub(crate) fn batch_norm_train(node: &Node, ins: Ins, eps: f32) -> Result<(Tensor, Vec<f32>, Vec<f32>, Vec<f32>)> {
    let (shape, x) = input(node, ins, 0)?;
    let (_, gamma) = input(node, ins, 1)?;
    let (_, beta) = input(node, ins, 2)?;
    if shape.len() < 2 || gamma.len() != shape[1] || beta.len() != shape[1] {
        return Err(err(node, format!("input {shape:?} and {} scale values do not match", gamma.len())));
    }
    let (n, c, sp) = (shape[0], shape[1], shape[2..].iter().product::<usize>());
    let count = (n * sp) as f64;
    if count < 2.0 {
        return Err(err(node, "training-mode batch statistics need at least two values per channel (use a batch larger than 1)"));
    }
    let mut mean = vec![0.0f32; c];
    let mut inv = vec![0.0f32; c];
    let mut unbiased = vec![0.0f32; c];
    for ch in 0..c {
        let it = (0..n).flat_map(|b| x[(b * c + ch) * sp..(b * c + ch + 1) * sp].iter());
        let m = it.clone().map(|&v| v as f64).sum::<f64>() / count;
        let ss = it.map(|&v| (v as f64 - m).powi(2)).sum::<f64>();
        mean[ch] = m as f32;
        inv[ch] = (1.0 / (ss / count + eps as f64).sqrt()) as f32;
        unbiased[ch] = (ss / (count - 1.0)) as f32;
    }
    let mut y = vec![0.0f32; x.len()];
    for (i, (o, &v)) in y.iter_mut().zip(x).enumerate() {
        let ch = (i / sp) % c;
        *o = gamma[ch] * (v - mean[ch]) * inv[ch] + beta[ch];
    }
    Ok((Tensor::from_parts_f32(shape.to_vec(), y), mean, inv, unbiased))
}

/// The gradients of `node`'s inputs (`None` where not wanted or not differentiable).
/// `outs` are the node's outputs before any activation quantizer; `bn` the batch statistics of
/// a training-mode BatchNormalization.
pub(crate) fn backward(
    node: &Node,
    ins: Ins,
    outs: Ins,
    dys: Vec<Option<Vec<f32>>>,
    want: &[bool],
    bn: Option<&(Vec<f32>, Vec<f32>)>,
) -> Result<Vec<Option<Vec<f32>>>> {
    let mut res: Vec<Option<Vec<f32>>> = vec![None; node.inputs.len()];
    let w = |i: usize| want.get(i).copied().unwrap_or(false);
    let mut dys = dys.into_iter();
    let dy = dys.next().flatten().ok_or_else(|| err(node, "no output gradient"))?;
    let y = || outs.first().copied().flatten().and_then(Tensor::as_f32).ok_or_else(|| err(node, "output missing"));
    match &node.op {
        Op::Conv { window, group } => {
            let (dx, dw, db) = conv(node, ins, &dy, window, *group, [w(0), w(1), w(2)])?;
            res[0] = dx;
            res[1] = dw;
            if res.len() > 2 {
                res[2] = db;
            }
        }
        Op::Gemm { alpha, beta, trans_a, trans_b } => {
            let (ash, a) = input(node, ins, 0)?;
            let (bsh, b) = input(node, ins, 1)?;
            if ash.len() != 2 || bsh.len() != 2 {
                return Err(err(node, "A and B must be matrices"));
            }
            let (m, k) = if *trans_a { (ash[1], ash[0]) } else { (ash[0], ash[1]) };
            let n = if *trans_b { bsh[0] } else { bsh[1] };
            let opa = transposed(a, ash[0], ash[1], *trans_a);
            let opb = transposed(b, bsh[0], bsh[1], *trans_b);
            if w(0) {
                // d op(A) = alpha dY op(B)^T  [m, k]
                let mut d = matmul(&dy, &transposed(&opb, k, n, true), m, n, k);
                scale(&mut d, *alpha);
                res[0] = Some(if *trans_a { transposed(&d, m, k, true) } else { d });
            }
            if w(1) {
                // d op(B) = alpha op(A)^T dY  [k, n]
                let mut d = matmul(&transposed(&opa, m, k, true), &dy, k, m, n);
                scale(&mut d, *alpha);
                res[1] = Some(if *trans_b { transposed(&d, k, n, true) } else { d });
            }
            if w(2) {
                let (csh, _) = input(node, ins, 2)?;
                let mut d = reduce_to(&dy, &[m, n], csh).ok_or_else(|| err(node, format!("C {csh:?} does not broadcast to [{m}, {n}]")))?;
                scale(&mut d, *beta);
                res[2] = Some(d);
            }
        }
        Op::MatMul => {
            let (ash, a) = input(node, ins, 0)?;
            let (bsh, b) = input(node, ins, 1)?;
            if ash.len() < 2 || bsh.len() < 2 {
                return Err(err(node, "gradients of MatMul need inputs of rank 2 or more"));
            }
            let (m, k, n) = (ash[ash.len() - 2], ash[ash.len() - 1], bsh[bsh.len() - 1]);
            if bsh.len() == 2 {
                // [.., m, k] x [k, n]: the leading axes of A are rows.
                let rows = a.len() / k;
                if w(0) {
                    res[0] = Some(matmul(&dy, &transposed(b, k, n, true), rows, n, k));
                }
                if w(1) {
                    res[1] = Some(matmul(&transposed(a, rows, k, true), &dy, k, rows, n));
                }
            } else if ash[..ash.len() - 2] == bsh[..bsh.len() - 2] {
                let batches = a.len() / (m * k);
                let (mut da, mut db) = (vec![0.0; a.len()], vec![0.0; b.len()]);
                for p in 0..batches {
                    let (ap, bp, dp) = (&a[p * m * k..][..m * k], &b[p * k * n..][..k * n], &dy[p * m * n..][..m * n]);
                    if w(0) {
                        da[p * m * k..][..m * k].copy_from_slice(&matmul(dp, &transposed(bp, k, n, true), m, n, k));
                    }
                    if w(1) {
                        db[p * k * n..][..k * n].copy_from_slice(&matmul(&transposed(ap, m, k, true), dp, k, m, n));
                    }
                }
                res[0] = w(0).then_some(da);
                res[1] = w(1).then_some(db);
            } else {
                return Err(err(node, format!("gradients of MatMul with broadcast batch axes ({ash:?} x {bsh:?}) are not supported")));
            }
        }
        Op::BatchNorm { epsilon } => {
            let (shape, x) = input(node, ins, 0)?;
            let (_, gamma) = input(node, ins, 1)?;
            let (c, sp) = (shape[1], shape[2..].iter().product::<usize>());
            let (mean, inv): (Vec<f32>, Vec<f32>) = match bn {
                Some((m, i)) => (m.clone(), i.clone()),
                None => {
                    let (_, m) = input(node, ins, 3)?;
                    let (_, v) = input(node, ins, 4)?;
                    (m.to_vec(), v.iter().map(|&v| 1.0 / (v + epsilon).sqrt()).collect())
                }
            };
            let (mut sum_dy, mut sum_dyx) = (vec![0.0f64; c], vec![0.0f64; c]);
            for (i, (&d, &v)) in dy.iter().zip(x).enumerate() {
                let ch = (i / sp) % c;
                sum_dy[ch] += d as f64;
                sum_dyx[ch] += (d * (v - mean[ch]) * inv[ch]) as f64;
            }
            if w(0) {
                let count = (x.len() / c) as f64;
                let dx = dy
                    .iter()
                    .zip(x)
                    .enumerate()
                    .map(|(i, (&d, &v))| {
                        let ch = (i / sp) % c;
                        let k = gamma[ch] * inv[ch];
                        match bn {
                            // Batch statistics depend on x: the full rule.
                            Some(_) => {
                                let xh = (v - mean[ch]) * inv[ch];
                                (k as f64 * (d as f64 - sum_dy[ch] / count - xh as f64 * sum_dyx[ch] / count)) as f32
                            }
                            None => k * d,
                        }
                    })
                    .collect();
                res[0] = Some(dx);
            }
            if w(1) {
                res[1] = Some(sum_dyx.iter().map(|&v| v as f32).collect());
            }
            if w(2) {
                res[2] = Some(sum_dy.iter().map(|&v| v as f32).collect());
            }
        }
        Op::Unary(u) => {
            let (_, x) = input(node, ins, 0)?;
            let y = y()?;
            res[0] = Some(x.iter().zip(y).zip(&dy).map(|((&x, &y), &d)| d * unary_derivative(*u, x, y)).collect());
        }
        Op::Clip { .. } => {
            // The gradient passes where the bounds did not act.
            let (_, x) = input(node, ins, 0)?;
            res[0] = Some(x.iter().zip(y()?).zip(&dy).map(|((&x, &y), &d)| if x == y { d } else { 0.0 }).collect());
        }
        Op::PRelu => {
            let (xsh, x) = input(node, ins, 0)?;
            let (ssh, s) = input(node, ins, 1)?;
            let (mut dx, mut ds) = (vec![0.0f32; x.len()], vec![0.0f32; s.len()]);
            for_each_broadcast(xsh, ssh, xsh, |o, ia, ib| {
                if x[ia] > 0.0 {
                    dx[ia] += dy[o];
                } else {
                    dx[ia] += dy[o] * s[ib];
                    ds[ib] += dy[o] * x[ia];
                }
            })
            .ok_or_else(|| err(node, "slope does not broadcast"))?;
            res[0] = w(0).then_some(dx);
            res[1] = w(1).then_some(ds);
        }
        Op::Binary(op) => {
            let (ash, a) = input(node, ins, 0)?;
            let (bsh, b) = input(node, ins, 1)?;
            let osh = crate::exec::broadcast_shape(ash, bsh).ok_or_else(|| err(node, "inputs do not broadcast"))?;
            let y = y()?;
            let (mut da, mut db) = (vec![0.0f32; a.len()], vec![0.0f32; b.len()]);
            for_each_broadcast(ash, bsh, &osh, |o, ia, ib| {
                let (x1, x2, d) = (a[ia], b[ib], dy[o]);
                let (ga, gb) = match op {
                    BinaryOp::Add => (1.0, 1.0),
                    BinaryOp::Sub => (1.0, -1.0),
                    BinaryOp::Mul => (x2, x1),
                    BinaryOp::Div => (1.0 / x2, -x1 / (x2 * x2)),
                    BinaryOp::Min => (if x1 <= x2 { 1.0 } else { 0.0 }, if x1 <= x2 { 0.0 } else { 1.0 }),
                    BinaryOp::Max => (if x1 >= x2 { 1.0 } else { 0.0 }, if x1 >= x2 { 0.0 } else { 1.0 }),
                    BinaryOp::Pow => (x2 * x1.powf(x2 - 1.0), if x1 > 0.0 { y[o] * x1.ln() } else { 0.0 }),
                };
                da[ia] += d * ga;
                db[ib] += d * gb;
            })
            .ok_or_else(|| err(node, "inputs do not broadcast"))?;
            res[0] = w(0).then_some(da);
            res[1] = w(1).then_some(db);
        }
        Op::GlobalAveragePool | Op::GlobalMaxPool => {
            let (shape, x) = input(node, ins, 0)?;
            let sp: usize = shape[2..].iter().product();
            let avg = matches!(node.op, Op::GlobalAveragePool);
            let mut dx = vec![0.0f32; x.len()];
            for (p, &d) in dy.iter().enumerate() {
                let plane = &x[p * sp..(p + 1) * sp];
                if avg {
                    dx[p * sp..(p + 1) * sp].iter_mut().for_each(|v| *v = d / sp as f32);
                } else if let Some((j, _)) = plane.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0))) {
                    dx[p * sp + j] = d;
                }
            }
            res[0] = Some(dx);
        }
        Op::AveragePool { window, count_include_pad } => {
            res[0] = Some(pool(node, ins, outs, &dy, window, Some(*count_include_pad))?);
        }
        Op::MaxPool { window } => {
            res[0] = Some(pool(node, ins, outs, &dy, window, None)?);
        }
        Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } | Op::Identity | Op::Dropout => {
            res[0] = Some(dy);
        }
        Op::Transpose { perm } => {
            let (shape, _) = input(node, ins, 0)?;
            let r = shape.len();
            let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..r).rev().collect());
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let mut inv = vec![0usize; r];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            res[0] = Some(permute(&dy, &out_shape, &inv));
        }
        Op::Concat { axis } => {
            let (shape0, _) = input(node, ins, 0)?;
            let r = shape0.len() as i64;
            let ax = if *axis < 0 { axis + r } else { *axis } as usize;
            let outer: usize = shape0[..ax].iter().product();
            let inner: usize = shape0[ax + 1..].iter().product();
            let total: usize = (0..ins.len()).map(|i| input(node, ins, i).map(|(s, _)| s[ax])).sum::<Result<usize>>()?;
            let mut start = 0;
            for (i, slot) in res.iter_mut().enumerate() {
                let (s, _) = input(node, ins, i)?;
                let len = s[ax];
                if w(i) {
                    let mut d = Vec::with_capacity(outer * len * inner);
                    for o in 0..outer {
                        d.extend_from_slice(&dy[(o * total + start) * inner..(o * total + start + len) * inner]);
                    }
                    *slot = Some(d);
                }
                start += len;
            }
        }
        Op::Softmax { axis, legacy } => {
            let (shape, _) = input(node, ins, 0)?;
            let y = y()?;
            let r = shape.len() as i64;
            let ax = if *axis < 0 { axis + r } else { *axis } as usize;
            let (dim, inner) = if *legacy { (shape[ax..].iter().product::<usize>(), 1) } else { (shape[ax], shape[ax + 1..].iter().product::<usize>()) };
            let outer = y.len() / (dim * inner).max(1);
            let mut dx = vec![0.0f32; y.len()];
            for o in 0..outer {
                for i in 0..inner {
                    let at = |j: usize| (o * dim + j) * inner + i;
                    let s: f32 = (0..dim).map(|j| dy[at(j)] * y[at(j)]).sum();
                    for j in 0..dim {
                        dx[at(j)] = y[at(j)] * (dy[at(j)] - s);
                    }
                }
            }
            res[0] = Some(dx);
        }
        _ => return Err(err(node, "training through this op is not supported yet (no gradient rule)")),
    }
    Ok(res)
}

/// d f(x) / dx of each unary op, from the input `x` and output `y`.
fn unary_derivative(u: UnaryOp, x: f32, y: f32) -> f32 {
    match u {
        UnaryOp::Relu => (x > 0.0) as u8 as f32,
        UnaryOp::LeakyRelu(a) => {
            if x > 0.0 {
                1.0
            } else {
                a
            }
        }
        UnaryOp::Sigmoid => y * (1.0 - y),
        UnaryOp::HardSigmoid { alpha, beta } => {
            let v = alpha * x + beta;
            if v > 0.0 && v < 1.0 {
                alpha
            } else {
                0.0
            }
        }
        UnaryOp::HardSwish => {
            if x < -3.0 {
                0.0
            } else if x > 3.0 {
                1.0
            } else {
                (2.0 * x + 3.0) / 6.0
            }
        }
        UnaryOp::Tanh => 1.0 - y * y,
        UnaryOp::Exp => y,
        UnaryOp::Log => 1.0 / x,
        UnaryOp::Sqrt => 0.5 / y,
        UnaryOp::Neg => -1.0,
        UnaryOp::Abs => x.signum() * (x != 0.0) as u8 as f32,
        UnaryOp::Reciprocal => -y * y,
        UnaryOp::Floor | UnaryOp::Ceil => 0.0,
        UnaryOp::Erf => std::f32::consts::FRAC_2_SQRT_PI * (-x * x).exp(),
        UnaryOp::Softplus => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Elu(a) => {
            if x > 0.0 {
                1.0
            } else {
                y + a
            }
        }
        UnaryOp::Gelu => {
            let phi = (-0.5 * x * x).exp() / (2.0 * std::f32::consts::PI).sqrt();
            0.5 * (1.0 + crate::kernels::erf(x / std::f32::consts::SQRT_2)) + x * phi
        }
    }
}

fn scale(v: &mut [f32], s: f32) {
    if s != 1.0 {
        v.iter_mut().for_each(|x| *x *= s);
    }
}

/// `a` ([rows, cols]) transposed when `t`, else copied.
fn transposed(a: &[f32], rows: usize, cols: usize, t: bool) -> Vec<f32> {
    if !t {
        return a.to_vec();
    }
    let mut out = vec![0.0f32; rows * cols];
    crate::kernels::transpose(a, rows, cols, &mut out);
    out
}

/// `a [m, k] * b [k, n]` on the inference GEMM kernel.
fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    gemm(m, n, k, a, b, &mut c);
    c
}

/// Sums `d` (of shape `from`) over the axes `to` broadcasts along; `None` if it does not.
fn reduce_to(d: &[f32], from: &[usize], to: &[usize]) -> Option<Vec<f32>> {
    let mut out = vec![0.0f32; to.iter().product()];
    for_each_broadcast(from, to, from, |o, _, ib| out[ib] += d[o])?;
    Some(out)
}

/// Calls `f(out_index, a_index, b_index)` for every element of `out` (the broadcast shape of
/// `a` and `b`), `None` when the shapes do not broadcast to `out`.
fn for_each_broadcast(a: &[usize], b: &[usize], out: &[usize], mut f: impl FnMut(usize, usize, usize)) -> Option<()> {
    let r = out.len();
    if a.len() > r || b.len() > r {
        return None;
    }
    let strides = |s: &[usize]| -> Option<Vec<usize>> {
        let mut st = vec![0usize; r];
        let mut acc = 1;
        for i in (0..s.len()).rev() {
            let oi = i + r - s.len();
            if s[i] != out[oi] && s[i] != 1 {
                return None;
            }
            st[oi] = if s[i] == 1 { 0 } else { acc };
            acc *= s[i];
        }
        Some(st)
    };
    let (sa, sb) = (strides(a)?, strides(b)?);
    let total: usize = out.iter().product();
    let mut idx = vec![0usize; r];
    let (mut ia, mut ib) = (0usize, 0usize);
    for o in 0..total {
        f(o, ia, ib);
        // Advance the multi-index (last axis fastest), keeping both offsets.
        for ax in (0..r).rev() {
            idx[ax] += 1;
            ia += sa[ax];
            ib += sb[ax];
            if idx[ax] < out[ax] {
                break;
            }
            ia -= sa[ax] * out[ax];
            ib -= sb[ax] * out[ax];
            idx[ax] = 0;
        }
    }
    Some(())
}

/// `x` (of `shape`) with its axes permuted: output axis `i` is input axis `perm[i]`.
fn permute(x: &[f32], shape: &[usize], perm: &[usize]) -> Vec<f32> {
    let r = shape.len();
    let mut in_strides = vec![1usize; r];
    for i in (0..r.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * shape[i + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let st: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let mut out = Vec::with_capacity(x.len());
    let mut idx = vec![0usize; r];
    let mut off = 0usize;
    for _ in 0..x.len() {
        out.push(x[off]);
        for ax in (0..r).rev() {
            idx[ax] += 1;
            off += st[ax];
            if idx[ax] < out_shape[ax] {
                break;
            }
            off -= st[ax] * out_shape[ax];
            idx[ax] = 0;
        }
    }
    out
}

/// Convolution: gradients of the input, weight and bias (as wanted).
#[allow(clippy::type_complexity)]
fn conv(node: &Node, ins: Ins, dy: &[f32], window: &Window, group: usize, want: [bool; 3]) -> Result<(Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<f32>>)> {
    let (xs, x) = input(node, ins, 0)?;
    let (ws, wt) = input(node, ins, 1)?;
    if xs.len() != 4 || ws.len() != 4 {
        return Err(err(node, "only 2-D convolutions have gradients"));
    }
    let (n, c, h, wi) = (xs[0], xs[1], xs[2], xs[3]);
    let (m, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let g = ConvGeom { c_in: c, h, w: wi, c_out: m, kh, kw, stride: window.strides, dilation: window.dilations, pads: resolve_pads(window, [h, wi], [kh, kw]), group };
    let (oh, ow) = g.out_hw().ok_or_else(|| err(node, "kernel does not fit"))?;
    let (hw, mg, kk) = (oh * ow, m / group, cg * kh * kw);
    let pointwise = kh == 1 && kw == 1 && g.stride == [1, 1] && g.pads == [0; 4];
    let (isz, osz, gsz) = (c * h * wi, m * hw, cg * h * wi);
    let mut dx = want[0].then(|| vec![0.0f32; x.len()]);
    let mut dw = want[1].then(|| vec![0.0f32; wt.len()]);
    // W^T per group: [kk, mg].
    let wt_t: Vec<Vec<f32>> = if want[0] { (0..group).map(|grp| transposed(&wt[grp * mg * kk..(grp + 1) * mg * kk], mg, kk, true)).collect() } else { vec![] };
    let mut cols = vec![0.0f32; if pointwise { 0 } else { kk * hw }];
    for b in 0..n {
        for grp in 0..group {
            let xg = &x[b * isz + grp * gsz..][..gsz];
            let dyg = &dy[b * osz + grp * mg * hw..][..mg * hw];
            let cm: &[f32] = if pointwise {
                xg
            } else {
                im2col(&g, xg, cg, oh, ow, &mut cols);
                &cols
            };
            if let Some(dw) = dw.as_mut() {
                let d = matmul(dyg, &transposed(cm, kk, hw, true), mg, hw, kk);
                dw[grp * mg * kk..][..mg * kk].iter_mut().zip(&d).for_each(|(a, b)| *a += b);
            }
            if let Some(dx) = dx.as_mut() {
                let dcols = matmul(&wt_t[grp], dyg, kk, mg, hw);
                let dxg = &mut dx[b * isz + grp * gsz..][..gsz];
                if pointwise {
                    dxg.iter_mut().zip(&dcols).for_each(|(a, b)| *a += b);
                } else {
                    col2im(&g, &dcols, cg, oh, ow, dxg);
                }
            }
        }
    }
    let db = want[2].then(|| (0..m).map(|ch| (0..n).map(|b| dy[b * osz + ch * hw..][..hw].iter().sum::<f32>()).sum()).collect());
    Ok((dx, dw, db))
}

/// The adjoint of [`im2col`]: adds each column entry back onto the input pixel it was read from.
fn col2im(g: &ConvGeom, cols: &[f32], cg: usize, oh: usize, ow: usize, dx: &mut [f32]) {
    let hw = oh * ow;
    for c in 0..cg {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &cols[((c * g.kh + ky) * g.kw + kx) * hw..][..hw];
                for oy in 0..oh {
                    let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.pads[0] as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    for ox in 0..ow {
                        let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize - g.pads[1] as isize;
                        if ix >= 0 && ix < g.w as isize {
                            dx[(c * g.h + iy as usize) * g.w + ix as usize] += row[oy * ow + ox];
                        }
                    }
                }
            }
        }
    }
}

/// AveragePool (`avg = Some(count_include_pad)`) or MaxPool: the windows are those of the
/// forward pass (its output shape gives their number).
fn pool(node: &Node, ins: Ins, outs: Ins, dy: &[f32], window: &Window, avg: Option<bool>) -> Result<Vec<f32>> {
    let (xs, x) = input(node, ins, 0)?;
    let ys = outs.first().copied().flatten().map(Tensor::shape).ok_or_else(|| err(node, "output missing"))?;
    if xs.len() != 4 || ys.len() != 4 {
        return Err(err(node, "only 2-D pooling has gradients"));
    }
    let k = window.kernel.ok_or_else(|| err(node, "kernel_shape is required"))?;
    let (nc, h, wi, oh, ow) = (xs[0] * xs[1], xs[2], xs[3], ys[2], ys[3]);
    let pads = resolve_pads(window, [h, wi], k);
    let (ph, pw) = ((h + pads[0] + pads[2]) as isize, (wi + pads[1] + pads[3]) as isize);
    let mut dx = vec![0.0f32; x.len()];
    let mut cells = Vec::with_capacity(k[0] * k[1]);
    for p in 0..nc {
        let plane = &x[p * h * wi..(p + 1) * h * wi];
        let dplane = &mut dx[p * h * wi..(p + 1) * h * wi];
        for oy in 0..oh {
            for ox in 0..ow {
                let d = dy[(p * oh + oy) * ow + ox];
                let y0 = (oy * window.strides[0]) as isize - pads[0] as isize;
                let x0 = (ox * window.strides[1]) as isize - pads[1] as isize;
                cells.clear();
                let mut padded = 0usize;
                for ky in 0..k[0] {
                    let iy = y0 + (ky * window.dilations[0]) as isize;
                    for kx in 0..k[1] {
                        let ix = x0 + (kx * window.dilations[1]) as isize;
                        if iy + (pads[0] as isize) < ph && ix + (pads[1] as isize) < pw {
                            padded += 1;
                        }
                        if iy >= 0 && ix >= 0 && iy < h as isize && ix < wi as isize {
                            cells.push(iy as usize * wi + ix as usize);
                        }
                    }
                }
                match avg {
                    Some(include_pad) => {
                        let div = if include_pad { padded } else { cells.len() };
                        if div > 0 {
                            for &i in &cells {
                                dplane[i] += d / div as f32;
                            }
                        }
                    }
                    None => {
                        // The first maximum gets the gradient.
                        let mut best: Option<usize> = None;
                        for &i in &cells {
                            if best.is_none_or(|b| plane[i] > plane[b]) {
                                best = Some(i);
                            }
                        }
                        if let Some(b) = best {
                            dplane[b] += d;
                        }
                    }
                }
            }
        }
    }
    Ok(dx)
}
