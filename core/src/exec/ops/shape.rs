//! Shape and layout ops: Reshape's target, Transpose, Concat, Split, Pad, Gather, Slice.

use super::{incr, Ctx, Ins, E};
use crate::error::Result;
use crate::graph::PadMode;
use crate::tensor::{checked_numel, Tensor, TensorData};

/// Split along `axis` into the node's outputs: sizes from the attribute or input 1, else equal
/// parts (the last one smaller when the axis does not divide, as opset 18 allows).
pub(super) fn split_op(e: &E, ins: Ins, axis: i64, attr: Option<&[i64]>) -> Result<Vec<Tensor>> {
    let x = e.input(ins, 0)?;
    let a = e.axis(axis, x.rank())?;
    let len = x.shape()[a];
    let parts = e.node.outputs.len();
    let sizes: Vec<usize> = match (attr, e.opt(ins, 1)) {
        (Some(s), _) => s.iter().map(|&v| v as usize).collect(),
        (None, Some(t)) => t.to_i64_vec().iter().map(|&v| usize::try_from(v).map_err(|_| e.err(format!("negative split size {v}")))).collect::<Result<_>>()?,
        (None, None) => {
            let each = len.div_ceil(parts.max(1));
            (0..parts).map(|i| each.min(len.saturating_sub(i * each))).collect()
        }
    };
    if sizes.len() != parts || sizes.iter().sum::<usize>() != len {
        return Err(e.err(format!("split sizes {sizes:?} must be one per output ({parts}) and add up to the axis length {len}")));
    }
    let outer: usize = x.shape()[..a].iter().product();
    let inner: usize = x.shape()[a + 1..].iter().product();
    let mut start = 0;
    let mut outs = Vec::with_capacity(parts);
    for &s in &sizes {
        let mut shape = x.shape().to_vec();
        shape[a] = s;
        let pick = |row: usize| (row * len + start) * inner..(row * len + start + s) * inner;
        outs.push(match x.data() {
            TensorData::F32(d) => Tensor::from_parts_f32(shape, (0..outer).flat_map(|r| d[pick(r)].iter().copied()).collect()),
            TensorData::I64(d) => Tensor::from_parts_i64(shape, (0..outer).flat_map(|r| d[pick(r)].iter().copied()).collect()),
        });
        start += s;
    }
    Ok(outs)
}

pub(super) fn reshape_dims(e: &E, from: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let total: usize = from.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*from.get(i).ok_or_else(|| e.err(format!("shape entry {i} is 0 but the input has rank {}", from.len())))?),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(e.err(format!("invalid shape {spec:?}"))),
        }
    }
    let known = checked_numel(&out).ok_or_else(|| e.err(format!("shape {spec:?} overflows")))?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(e.err(format!("cannot reshape {from:?} ({total} elements) to {spec:?}")));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(e.err(format!("cannot reshape {from:?} ({total} elements) to {spec:?}")));
    }
    Ok(out)
}

pub(super) fn transpose(e: &E, x: &Tensor, perm: Option<&[usize]>) -> Result<Tensor> {
    let r = x.rank();
    let perm: Vec<usize> = match perm {
        Some(p) => p.to_vec(),
        None => (0..r).rev().collect(),
    };
    let mut seen = vec![false; r];
    if perm.len() != r || perm.iter().any(|&p| p >= r || std::mem::replace(&mut seen[p], true)) {
        return Err(e.err(format!("perm {perm:?} is not a permutation of {r} axes")));
    }
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    Ok(match x.data() {
        TensorData::F32(_) => {
            let v = x.view_f32().ok_or_else(|| e.err("bad tensor"))?.permuted_axes(perm);
            Tensor::from_parts_f32(shape, v.iter().copied().collect())
        }
        TensorData::I64(_) => {
            let v = x.view_i64().ok_or_else(|| e.err("bad tensor"))?.permuted_axes(perm);
            Tensor::from_parts_i64(shape, v.iter().copied().collect())
        }
    })
}

pub(super) fn concat(e: &E, ctx: &Ctx, ins: Ins, axis: i64) -> Result<Tensor> {
    let ts: Vec<&Tensor> = ins.iter().flatten().copied().collect();
    let first = *ts.first().ok_or_else(|| e.err("needs at least one input"))?;
    let ax = e.axis(axis, first.rank())?;
    let mut shape = first.shape().to_vec();
    shape[ax] = 0;
    for t in &ts {
        if t.rank() != first.rank()
            || t.shape().iter().enumerate().any(|(i, &d)| i != ax && d != first.shape()[i])
            || std::mem::discriminant(t.data()) != std::mem::discriminant(first.data())
        {
            return Err(e.err(format!("inputs {:?} and {:?} cannot be concatenated on axis {ax}", first.shape(), t.shape())));
        }
        shape[ax] += t.shape()[ax];
    }
    e.numel(ctx, &shape)?;
    let outer: usize = shape[..ax].iter().product();
    let inner: usize = shape[ax + 1..].iter().product();
    fn cat<T: Copy>(parts: &[(&[T], usize)], outer: usize) -> Vec<T> {
        let mut out = Vec::new();
        for o in 0..outer {
            for (d, chunk) in parts {
                out.extend_from_slice(&d[o * chunk..(o + 1) * chunk]);
            }
        }
        out
    }
    Ok(match first.data() {
        TensorData::F32(_) => {
            let parts: Vec<(&[f32], usize)> = ts.iter().map(|t| (t.as_f32().unwrap_or(&[]), t.shape()[ax] * inner)).collect();
            Tensor::from_parts_f32(shape, cat(&parts, outer))
        }
        TensorData::I64(_) => {
            let parts: Vec<(&[i64], usize)> = ts.iter().map(|t| (t.as_i64().unwrap_or(&[]), t.shape()[ax] * inner)).collect();
            Tensor::from_parts_i64(shape, cat(&parts, outer))
        }
    })
}

pub(super) fn pad(e: &E, ctx: &Ctx, ins: Ins, mode: PadMode, attr_pads: Option<&[i64]>, attr_value: f32) -> Result<Tensor> {
    let x = e.input(ins, 0)?;
    let xd = e.f32(ins, 0)?;
    let r = x.rank();
    let raw: Vec<i64> = match attr_pads {
        Some(p) => p.to_vec(),
        None => e.input(ins, 1)?.to_i64_vec(),
    };
    let value = match e.opt(ins, 2) {
        Some(t) if !t.is_empty() => t.to_f32_vec()[0],
        _ => attr_value,
    };
    let axes: Vec<usize> = match e.opt(ins, 3) {
        Some(t) => t.to_i64_vec().iter().map(|&a| e.axis(a, r)).collect::<Result<_>>()?,
        None => (0..r).collect(),
    };
    if raw.len() != 2 * axes.len() {
        return Err(e.err(format!("pads has {} values for {} axes", raw.len(), axes.len())));
    }
    let mut begin = vec![0i64; r];
    let mut end = vec![0i64; r];
    for (i, &a) in axes.iter().enumerate() {
        begin[a] = raw[i];
        end[a] = raw[i + axes.len()];
    }
    let mut shape = Vec::with_capacity(r);
    for i in 0..r {
        let d = x.shape()[i] as i64 + begin[i] + end[i];
        if d < 0 {
            return Err(e.err(format!("pads {raw:?} make axis {i} negative")));
        }
        if mode != PadMode::Constant && x.shape()[i] == 0 && d > 0 {
            return Err(e.err("cannot reflect or edge-pad an empty axis"));
        }
        if mode == PadMode::Reflect && (begin[i] >= x.shape()[i] as i64 || end[i] >= x.shape()[i] as i64) && (begin[i] > 0 || end[i] > 0) {
            return Err(e.err(format!("reflect pads must be smaller than axis {i} ({})", x.shape()[i])));
        }
        shape.push(d as usize);
    }
    let total = e.numel(ctx, &shape)?;
    let mut out = Vec::with_capacity(total);
    let strides: Vec<usize> = (0..r).map(|i| x.shape()[i + 1..].iter().product()).collect();
    let mut idx = vec![0usize; r];
    for _ in 0..total {
        let mut off = 0usize;
        let mut inside = true;
        for d in 0..r {
            let n = x.shape()[d] as i64;
            let mut s = idx[d] as i64 - begin[d];
            if s < 0 || s >= n {
                match mode {
                    PadMode::Constant => {
                        inside = false;
                        break;
                    }
                    PadMode::Edge => s = s.clamp(0, n - 1),
                    PadMode::Reflect => {
                        s = if s < 0 { -s } else { 2 * (n - 1) - s };
                    }
                }
            }
            off += s as usize * strides[d];
        }
        out.push(if inside { xd[off] } else { value });
        incr(&mut idx, &shape);
    }
    Ok(Tensor::from_parts_f32(shape, out))
}

pub(super) fn gather(e: &E, ctx: &Ctx, ins: Ins, axis: i64) -> Result<Tensor> {
    let x = e.input(ins, 0)?;
    let idx_t = e.input(ins, 1)?;
    let ax = e.axis(axis, x.rank())?;
    let n = x.shape()[ax] as i64;
    let idx: Vec<usize> = idx_t
        .to_i64_vec()
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + n } else { i };
            if (0..n).contains(&j) { Ok(j as usize) } else { Err(e.err(format!("index {i} is out of range for axis {ax} of size {n}"))) }
        })
        .collect::<Result<_>>()?;
    let mut shape = x.shape()[..ax].to_vec();
    shape.extend_from_slice(idx_t.shape());
    shape.extend_from_slice(&x.shape()[ax + 1..]);
    e.numel(ctx, &shape)?;
    let outer: usize = x.shape()[..ax].iter().product();
    let inner: usize = x.shape()[ax + 1..].iter().product();
    fn g<T: Copy>(d: &[T], outer: usize, n: usize, inner: usize, idx: &[usize]) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &i in idx {
                out.extend_from_slice(&d[(o * n + i) * inner..(o * n + i + 1) * inner]);
            }
        }
        out
    }
    Ok(match x.data() {
        TensorData::F32(d) => Tensor::from_parts_f32(shape, g(d, outer, n as usize, inner, &idx)),
        TensorData::I64(d) => Tensor::from_parts_i64(shape, g(d, outer, n as usize, inner, &idx)),
    })
}

pub(super) fn slice(e: &E, ctx: &Ctx, ins: Ins, attrs: Option<&crate::graph::SliceAttrs>) -> Result<Tensor> {
    let x = e.input(ins, 0)?;
    let r = x.rank();
    let (starts, ends, axes, steps) = match attrs {
        Some(a) => (a.starts.clone(), a.ends.clone(), a.axes.clone(), None),
        None => (e.input(ins, 1)?.to_i64_vec(), e.input(ins, 2)?.to_i64_vec(), e.opt(ins, 3).map(Tensor::to_i64_vec), e.opt(ins, 4).map(Tensor::to_i64_vec)),
    };
    let axes: Vec<usize> = match axes {
        Some(v) => v.iter().map(|&a| e.axis(a, r)).collect::<Result<_>>()?,
        None => (0..starts.len()).collect(),
    };
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(e.err("starts, ends, axes and steps must have the same length"));
    }
    let mut st = vec![0i64; r];
    let mut sp = vec![1i64; r];
    let mut shape = x.shape().to_vec();
    for i in 0..starts.len() {
        let a = *axes.get(i).ok_or_else(|| e.err("bad axes"))?;
        if a >= r {
            return Err(e.err("axis out of range"));
        }
        let n = x.shape()[a] as i64;
        let step = steps[i];
        if step == 0 {
            return Err(e.err("step 0 is invalid"));
        }
        let fix = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
        let (s, en) = if step > 0 {
            (fix(starts[i]).clamp(0, n), fix(ends[i]).clamp(0, n))
        } else {
            (fix(starts[i]).clamp(-1, n - 1), fix(ends[i]).clamp(-1, n - 1))
        };
        let len = if step > 0 { (en - s + step - 1).div_euclid(step).max(0) } else { (s - en + (-step) - 1).div_euclid(-step).max(0) };
        st[a] = s;
        sp[a] = step;
        shape[a] = len as usize;
    }
    let total = e.numel(ctx, &shape)?;
    let strides: Vec<usize> = (0..r).map(|i| x.shape()[i + 1..].iter().product()).collect();
    let mut offs = Vec::with_capacity(total);
    let mut idx = vec![0usize; r];
    for _ in 0..total {
        offs.push((0..r).map(|d| (st[d] + idx[d] as i64 * sp[d]) as usize * strides[d]).sum::<usize>());
        incr(&mut idx, &shape);
    }
    Ok(match x.data() {
        TensorData::F32(d) => Tensor::from_parts_f32(shape, offs.iter().map(|&o| d[o]).collect()),
        TensorData::I64(d) => Tensor::from_parts_i64(shape, offs.iter().map(|&o| d[o]).collect()),
    })
}
