//! Resize and Upsample: nearest and linear interpolation, one axis at a time (both are
//! separable), with ONNX's coordinate transformations computed in f32 as onnxruntime does.

use super::{Ctx, Ins, E};
use crate::error::Result;
use crate::graph::{CoordMode, NearestMode, Op, ResizeMode};
use crate::tensor::Tensor;

/// `op` is the node's `Op::Resize`.
pub(super) fn resize(e: &E, ctx: &Ctx, ins: Ins, op: &Op) -> Result<Tensor> {
    let Op::Resize { mode, coord, nearest, scales: attr_scales, scales_input } = op else { return Err(e.err("not a Resize")) };
    let (mode, coord, nearest, scales_input, attr_scales) = (*mode, *coord, *nearest, *scales_input, attr_scales.as_deref());
    let x = e.input(ins, 0)?;
    let r = x.rank();
    let nonempty = |i: usize| e.opt(ins, i).filter(|t| !t.is_empty());
    let (out_shape, scales): (Vec<usize>, Vec<f32>) = if let Some(sizes) = nonempty(scales_input + 1) {
        if nonempty(scales_input).is_some() {
            return Err(e.err("give scales or sizes, not both"));
        }
        let sizes = sizes.to_i64_vec();
        if sizes.len() != r {
            return Err(e.err(format!("sizes has {} values for an input of rank {r}", sizes.len())));
        }
        let shape = sizes.iter().map(|&s| usize::try_from(s).map_err(|_| e.err(format!("negative size {s}")))).collect::<Result<Vec<_>>>()?;
        let scales = shape.iter().zip(x.shape()).map(|(&o, &i)| o as f32 / i.max(1) as f32).collect();
        (shape, scales)
    } else {
        let scales = match attr_scales {
            Some(s) => s.to_vec(),
            None => nonempty(scales_input).ok_or_else(|| e.err("needs scales or sizes"))?.to_f32_vec(),
        };
        if scales.len() != r {
            return Err(e.err(format!("scales has {} values for an input of rank {r}", scales.len())));
        }
        if scales.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
            return Err(e.err(format!("scales {scales:?} must be positive")));
        }
        // onnxruntime truncates the f32 product.
        let shape = x.shape().iter().zip(&scales).map(|(&d, &s)| (d as f32 * s) as usize).collect();
        (shape, scales)
    };
    e.numel(ctx, &out_shape)?;
    if mode == ResizeMode::Linear && x.is_empty() {
        return Err(e.err("cannot interpolate an empty tensor"));
    }
    let mut cur = e.f32(ins, 0)?.to_vec();
    let mut shape = x.shape().to_vec();
    for axis in 0..r {
        let (n_in, n_out) = (shape[axis], out_shape[axis]);
        if n_in == n_out && scales[axis] == 1.0 {
            continue;
        }
        if n_in == 0 && n_out > 0 {
            return Err(e.err(format!("cannot resize an empty axis {axis} to {n_out}")));
        }
        let taps: Vec<[(usize, f32); 2]> = (0..n_out).map(|j| source(j, n_in, n_out, scales[axis], mode, coord, nearest)).collect();
        let outer: usize = shape[..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let mut next = vec![0.0f32; outer * n_out * inner];
        for o in 0..outer {
            for (j, &[(i0, w0), (i1, w1)]) in taps.iter().enumerate() {
                let dst = &mut next[(o * n_out + j) * inner..][..inner];
                let a = &cur[(o * n_in + i0) * inner..][..inner];
                if w1 == 0.0 {
                    dst.copy_from_slice(a);
                } else {
                    let b = &cur[(o * n_in + i1) * inner..][..inner];
                    for ((d, &p), &q) in dst.iter_mut().zip(a).zip(b) {
                        *d = w0 * p + w1 * q;
                    }
                }
            }
        }
        cur = next;
        shape[axis] = n_out;
    }
    Ok(Tensor::from_parts_f32(shape, cur))
}

/// The input coordinate of output index `j` along an axis of `n_in` -> `n_out` samples.
fn original(j: usize, n_in: usize, n_out: usize, scale: f32, coord: CoordMode) -> f32 {
    let x = j as f32;
    match coord {
        CoordMode::HalfPixel => (x + 0.5) / scale - 0.5,
        CoordMode::HalfPixelSymmetric => {
            let adjustment = n_out as f32 / (scale * n_in as f32);
            let center = n_in as f32 / 2.0;
            center * (1.0 - adjustment) + (x + 0.5) / scale - 0.5
        }
        CoordMode::PytorchHalfPixel if n_out > 1 => (x + 0.5) / scale - 0.5,
        CoordMode::PytorchHalfPixel => 0.0,
        CoordMode::AlignCorners if n_out > 1 => x * (n_in as f32 - 1.0) / (n_out as f32 - 1.0),
        CoordMode::AlignCorners => 0.0,
        CoordMode::Asymmetric => x / scale,
        CoordMode::TfHalfPixelForNn => (x + 0.5) / scale,
    }
}

/// The (at most two) input samples output index `j` reads, with their weights.
fn source(j: usize, n_in: usize, n_out: usize, scale: f32, mode: ResizeMode, coord: CoordMode, nearest: NearestMode) -> [(usize, f32); 2] {
    let last = n_in.saturating_sub(1);
    let x = original(j, n_in, n_out, scale, coord);
    match mode {
        ResizeMode::Nearest => {
            let i = match nearest {
                NearestMode::RoundPreferFloor if x == x.floor() + 0.5 => x.floor(),
                NearestMode::RoundPreferFloor | NearestMode::RoundPreferCeil => x.round(),
                NearestMode::Floor => x.floor(),
                NearestMode::Ceil => x.ceil(),
                NearestMode::Simple if scale < 1.0 => x.ceil(),
                NearestMode::Simple => x.trunc(),
            };
            [((i.max(0.0) as usize).min(last), 1.0), (0, 0.0)]
        }
        ResizeMode::Linear => {
            let x = x.clamp(0.0, last as f32);
            let i0 = (x as usize).min(last);
            let i1 = (i0 + 1).min(last);
            if i0 == i1 {
                return [(i0, 1.0), (0, 0.0)];
            }
            let f = x - i0 as f32;
            [(i0, 1.0 - f), (i1, f)]
        }
    }
}
