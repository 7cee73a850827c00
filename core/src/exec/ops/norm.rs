//! InstanceNormalization and LayerNormalization: `scale * (x - mean) / sqrt(var + eps) + bias`
//! over each (sample, channel)'s spatial values, or over the trailing axes from `axis`.
//! Means and variances are accumulated in f64.

use super::{Ctx, Ins, E};
use crate::error::Result;
use crate::tensor::Tensor;

/// Normalizes each of the `groups` consecutive runs of `len` values of `x` in place.
fn normalize(x: &mut [f32], len: usize, eps: f32, mut affine: impl FnMut(usize, usize) -> (f32, f32)) {
    for (gi, run) in x.chunks_mut(len.max(1)).enumerate() {
        let mean = run.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        let var = run.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / len as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (i, v) in run.iter_mut().enumerate() {
            let (s, b) = affine(gi, i);
            *v = ((*v as f64 - mean) * inv) as f32 * s + b;
        }
    }
}

pub(super) fn instance_norm(e: &E, ins: Ins, eps: f32) -> Result<Tensor> {
    let x = e.input(ins, 0)?;
    if x.rank() < 3 {
        return Err(e.err(format!("input must be [N, C, spatial...], got {:?}", x.shape())));
    }
    let c = x.shape()[1];
    let (scale, bias) = (e.f32(ins, 1)?, e.f32(ins, 2)?);
    if scale.len() != c || bias.len() != c {
        return Err(e.err(format!("scale and bias must have {c} values (one per channel), got {} and {}", scale.len(), bias.len())));
    }
    let sp: usize = x.shape()[2..].iter().product();
    let mut y = e.f32(ins, 0)?.to_vec();
    normalize(&mut y, sp, eps, |g, _| (scale[g % c], bias[g % c]));
    Ok(Tensor::from_parts_f32(x.shape().to_vec(), y))
}

pub(super) fn layer_norm(e: &E, _ctx: &Ctx, ins: Ins, axis: i64, eps: f32) -> Result<Tensor> {
    let x = e.input(ins, 0)?;
    let axis = e.axis(axis, x.rank())?;
    let len: usize = x.shape()[axis..].iter().product();
    let scale = e.f32(ins, 1)?;
    let bias = match e.opt(ins, 2) {
        Some(_) => Some(e.f32(ins, 2)?),
        None => None,
    };
    let fits = |n: usize| n == len || n == 1;
    if !fits(scale.len()) || bias.is_some_and(|b| !fits(b.len())) {
        return Err(e.err(format!("scale and bias must have {len} values (the normalized axes {:?})", &x.shape()[axis..])));
    }
    let pick = |v: &[f32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    let mut y = e.f32(ins, 0)?.to_vec();
    normalize(&mut y, len, eps, |_, i| (pick(scale, i), bias.map_or(0.0, |b| pick(b, i))));
    Ok(Tensor::from_parts_f32(x.shape().to_vec(), y))
}
