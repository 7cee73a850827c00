//! The integer engine's wide path: Conv/Gemm steps whose input, weights or output are wider
//! than 8 bits (see the parent module's notes), and the planning of every step's weights.

use super::values::relayout;
use super::{check_size, im2row, pad_rows, Linear, LinearKind, QTensor, Val};
use crate::error::{Error, Result};
use crate::kernels::int8::{depthwise_nhwc, dot_gemm_packed, DwGeom, PackedWeights};
use crate::onnx::Limits;

/// The weights of a step on the wide path as planes of at most 9 bits, `w = Σ_i plane_i << 8i`
/// (one plane for weights of up to 8 bits, two above), in the layout of the kernel that reads them.
#[derive(Debug, Clone)]
pub(super) enum WidePlanes {
    Gemm(Vec<PackedWeights>),
    /// Depthwise: [taps][C] per plane.
    Depthwise(Vec<Vec<i16>>),
}

impl WidePlanes {
    fn len(&self) -> usize {
        match self {
            WidePlanes::Gemm(p) => p.len(),
            WidePlanes::Depthwise(p) => p.len(),
        }
    }

    fn gemm(&self, i: usize) -> Result<&PackedWeights> {
        match self {
            WidePlanes::Gemm(p) => Ok(&p[i]),
            WidePlanes::Depthwise(_) => Err(Error::Graph("a convolution step without packed weights".into())),
        }
    }

    /// Bytes the planes occupy.
    pub(super) fn bytes(&self) -> usize {
        match self {
            WidePlanes::Gemm(p) => p.iter().map(PackedWeights::bytes).sum(),
            WidePlanes::Depthwise(p) => p.iter().map(|v| v.len() * 2).sum(),
        }
    }
}

/// Longest row on the wide path: planes hold |v| <= 256, so a row's sum of products stays
/// below 2^31.
pub(super) const WIDE_MAX_K: usize = 1 << 15;

/// Splits values of up to 17 bits into two planes, `v = hi * 256 + lo` with `lo` in 0..=255.
fn split_planes(v: &[i32]) -> Vec<Vec<i16>> {
    vec![v.iter().map(|&x| (x & 0xFF) as i16).collect(), v.iter().map(|&x| (x >> 8) as i16).collect()]
}

/// The weights of a step in its kernel's layout (`rows`: [m][kp], or [taps][C] depthwise):
/// packed i16 for the 8-bit path, planes for the wide path.
pub(super) fn step_weights(rows: &[i32], m: usize, kp: usize, depthwise: bool, wide: bool) -> (Vec<i16>, Option<PackedWeights>, Option<WidePlanes>) {
    let narrow: Vec<i16> = rows.iter().map(|&v| v as i16).collect();
    match (wide, depthwise) {
        (false, true) => (narrow, None, None),
        (false, false) => (Vec::new(), Some(PackedWeights::new(m, kp, &narrow)), None),
        (true, _) => {
            let planes = if rows.iter().any(|&v| !(-256..=255).contains(&v)) { split_planes(rows) } else { vec![narrow] };
            let planes = if depthwise { WidePlanes::Depthwise(planes) } else { WidePlanes::Gemm(planes.iter().map(|p| PackedWeights::new(m, kp, p)).collect()) };
            (Vec::new(), None, Some(planes))
        }
    }
}

/// Runs a Conv/Gemm step on the wide path (see the module's notes), a tile of output rows at a
/// time: every pair of an input plane and a weight plane through the 8-bit kernels, the sums
/// shifted into i64, then `round_half_even(clamp((acc + ib) * sx sw / sy + b / sy, lo, hi))` in
/// f64, while the tile is in cache.
pub(super) fn run_linear_wide(l: &Linear, planes: &WidePlanes, x: &Val, limits: &Limits) -> Result<Val> {
    let (shape, nhwc, enc, xs) = match x {
        Val::Q(q) => (q.shape.clone(), q.nhwc, q.enc, vec![q.v.clone()]),
        Val::W(q) => (q.shape.clone(), q.nhwc, q.enc, split_planes(&q.v)),
        Val::F(_) => return Err(Error::Graph("a convolution's input is not quantized".into())),
    };
    let conv = matches!(l.kind, LinearKind::Conv { .. });
    // Convolutions read channels-last planes.
    let xs: Vec<Vec<i16>> = xs.into_iter().map(|v| if conv { relayout(QTensor { shape: shape.clone(), nhwc, v, enc }, true).v } else { v }).collect();
    let m = l.m.max(1);
    let gemm = |i: usize| planes.gemm(i);
    // Rows of at most this many outputs per tile (a depthwise tile is one image).
    let rows_per_tile = (TILE_OUTPUTS / m).max(4);
    // The output's shape, the tiles (image, first output pixel, pixels) and a function writing
    // one plane pair's sums over one tile.
    type Sums<'a> = Box<dyn Fn(&[i16], usize, (usize, usize, usize), &mut [i32]) -> Result<()> + 'a>;
    let tiles = |images: usize, p: usize, chunk: usize| -> Vec<(usize, usize, usize)> { (0..images).flat_map(|b| (0..p).step_by(chunk.max(1)).map(move |f| (b, f, chunk.min(p - f)))).collect() };
    let (out_shape, tiles, sums): (Vec<usize>, Vec<(usize, usize, usize)>, Sums) = match &l.kind {
        LinearKind::Gemm => {
            let p = l.gemm_rows(&shape)?;
            (vec![p, l.m], tiles(1, p, rows_per_tile), Box::new(move |x: &[i16], wi: usize, (_, f, r): (usize, usize, usize), out: &mut [i32]| {
                dot_gemm_packed(r, &pad_rows(&x[f * l.k..], r, l.k, l.kp), gemm(wi)?, out);
                Ok(())
            }))
        }
        LinearKind::Conv { kh, kw, depthwise, window } => {
            let (depthwise, kh, kw) = (*depthwise, *kh, *kw);
            let (geom, oh, ow) = l.conv_geometry(&shape, (kh, kw), depthwise, window)?;
            let (n, c, h, w, stride, dilation, pads) = (shape[0], geom.c_in, geom.h, geom.w, geom.stride, geom.dilation, geom.pads);
            let p = oh * ow;
            let direct = kh == 1 && kw == 1 && stride == [1, 1] && pads == [0; 4] && c == l.kp;
            let tiles = if depthwise { (0..n).map(|b| (b, 0, p)).collect() } else { tiles(n, p, rows_per_tile) };
            (vec![n, l.m, oh, ow], tiles, Box::new(move |x: &[i16], wi: usize, (b, f, r): (usize, usize, usize), out: &mut [i32]| {
                let xb = &x[b * h * w * c..(b + 1) * h * w * c];
                if let WidePlanes::Depthwise(wp) = planes {
                    depthwise_nhwc(&DwGeom { h, w, c, oh, ow, kh, kw, stride, dilation, pads }, xb, &wp[wi], out);
                } else if depthwise {
                    return Err(Error::Graph("a depthwise step without depthwise weights".into()));
                } else if direct {
                    dot_gemm_packed(r, &xb[f * c..], gemm(wi)?, out);
                } else {
                    let mut rows = vec![0i16; r * l.kp];
                    im2row(&geom, xb, ow, l.kp, f, &mut rows);
                    dot_gemm_packed(r, &rows, gemm(wi)?, out);
                }
                Ok(())
            }))
        }
    };
    let total: usize = out_shape.iter().product();
    check_size(limits, total)?;
    let (sx, sy) = (enc.scale() as f64, l.out.scale() as f64);
    let mult: Vec<f64> = l.sw.iter().map(|&sw| sx * sw as f64 / sy).collect();
    let add: Vec<f64> = l.bias.iter().map(|&b| b as f64 / sy).collect();
    let (lo, hi) = l.bounds();
    let (lo, hi): (Vec<f64>, Vec<f64>) = (lo.iter().map(|&v| v as f64).collect(), hi.iter().map(|&v| v as f64).collect());
    let ib: Vec<i64> = l.ibias.iter().map(|&b| b as i64).collect();
    let most = tiles.iter().map(|t| t.2).max().unwrap_or(0) * m;
    let (mut acc, mut part) = (vec![0i64; most], vec![0i32; most]);
    let mut v = vec![0i32; total];
    let per_image = total / out_shape[0].max(1);
    for &(b, f, r) in &tiles {
        let (acc, part) = (&mut acc[..r * m], &mut part[..r * m]);
        for (xi, xp) in xs.iter().enumerate() {
            for wi in 0..planes.len() {
                sums(xp, wi, (b, f, r), part)?;
                let shift = 8 * (xi + wi);
                if xi + wi == 0 {
                    for (a, &s) in acc.iter_mut().zip(part.iter()) {
                        *a = s as i64;
                    }
                } else {
                    for (a, &s) in acc.iter_mut().zip(part.iter()) {
                        *a += (s as i64) << shift;
                    }
                }
            }
        }
        let at = if conv { b * per_image + f * m } else { f * m };
        for (row, o) in acc.chunks_exact(m).zip(v[at..at + r * m].chunks_exact_mut(m)) {
            for j in 0..m {
                let y = ((row[j] + ib[j]) as f64 * mult[j] + add[j]).clamp(lo[j], hi[j]);
                // Half to even by the add of 1.5 * 2^52 (|y| < 2^51): no rounding call on SSE2.
                o[j] = ((y + ROUND_MAGIC_F64) - ROUND_MAGIC_F64) as i32;
            }
        }
    }
    Ok(if l.out.wide() {
        Val::W(QTensor { shape: out_shape, nhwc: conv, v, enc: l.out })
    } else {
        Val::Q(QTensor { shape: out_shape, nhwc: conv, v: v.iter().map(|&x| x as i16).collect(), enc: l.out })
    })
}

/// Outputs per tile of the wide path (its i64 sums stay in the L2 cache).
const TILE_OUTPUTS: usize = 8 << 10;

/// 1.5 * 2^52: `(y + M) - M` rounds an f64 `y` with |y| < 2^51 to an integer, half to even.
const ROUND_MAGIC_F64: f64 = 6_755_399_441_055_744.0;

