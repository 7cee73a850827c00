//! One AdaRound layer's data and its reconstruction loss with the hand-written gradient: column
//! matrices, depthwise layers channels last, the activation and the squared error.

use super::step::BLOCK;
use super::{Kind, Layer};
use crate::error::{Error, Result};
use crate::kernels::conv::{im2col, ConvGeom};
use crate::kernels::gemm::{gemm_add, gemm_add_bt, gemm_nt};
use crate::kernels::{self, for_each_tap, gemm, vmath};
use crate::tensor::Tensor;

/// Column matrices of a layer's whole calibration set are kept when they fit in this many floats.
const COLUMN_CACHE: usize = 16 << 20;

/// One layer's data: its input and FP32 target per calibration batch.
pub(super) struct Problem<'a> {
    pub(super) xs: Vec<&'a [f32]>,
    pub(super) ts: Vec<&'a [f32]>,
    /// Samples per batch.
    pub(super) items: Vec<usize>,
    /// Per batch: the convolution's geometry (None for dense layers).
    pub(super) geoms: Vec<Option<ConvGeom>>,
    /// Output positions per sample (pixels, or rows of a matrix product).
    pub(super) per_item: Vec<usize>,
    /// Input elements per sample.
    pub(super) in_per_item: Vec<usize>,
    /// Per batch: the column matrices of every sample (convolutions other than 1x1 and
    /// depthwise), or for depthwise layers the inputs and targets channels last, when they fit
    /// in [`COLUMN_CACHE`].
    pub(super) cols: Vec<Option<Vec<f32>>>,
    pub(super) m: usize,
    pub(super) k: usize,
    /// The layer's bias (zeros without one).
    pub(super) bias: Vec<f32>,
    pub(super) lo: Vec<f32>,
    pub(super) hi: Vec<f32>,
}

impl<'a> Problem<'a> {
    pub(super) fn new(l: &'a Layer, xs: &[&'a Tensor], ts: &[&'a Tensor]) -> Result<Self> {
        let err = |msg: String| Error::Quant(format!("AdaRound, node '{}': {msg}", l.name));
        let mut p = Problem {
            xs: Vec::new(),
            ts: Vec::new(),
            items: Vec::new(),
            geoms: Vec::new(),
            per_item: Vec::new(),
            in_per_item: Vec::new(),
            cols: Vec::new(),
            m: l.m,
            k: l.k,
            bias: l.bias.clone().unwrap_or_else(|| vec![0.0; l.m]),
            lo: vec![f32::NEG_INFINITY; l.m],
            hi: vec![f32::INFINITY; l.m],
        };
        if let Some((lo, hi)) = &l.act {
            for c in 0..l.m {
                p.lo[c] = lo[if lo.len() == 1 { 0 } else { c }];
                p.hi[c] = hi[if hi.len() == 1 { 0 } else { c }];
            }
        }
        for (x, t) in xs.iter().zip(ts) {
            let (xd, td) = (x.as_f32().ok_or_else(|| err("input is not float".into()))?, t.as_f32().ok_or_else(|| err("output is not float".into()))?);
            let b = *x.shape().first().ok_or_else(|| err("scalar input".into()))?;
            if b == 0 {
                return Err(err("empty batch".into()));
            }
            let (geom, per_item) = match &l.kind {
                Kind::Conv { window, group, kernel } => {
                    let s = x.shape();
                    if s.len() != 4 || s[1] != group * (l.k / (kernel[0] * kernel[1])) {
                        return Err(err(format!("input shape {s:?} does not match the weight")));
                    }
                    let g = ConvGeom {
                        c_in: s[1],
                        h: s[2],
                        w: s[3],
                        c_out: l.m,
                        kh: kernel[0],
                        kw: kernel[1],
                        stride: window.strides,
                        dilation: window.dilations,
                        pads: crate::exec::resolve_pads(window, [s[2], s[3]], *kernel),
                        group: *group,
                    };
                    let (oh, ow) = g.out_hw().ok_or_else(|| err("kernel does not fit the input".into()))?;
                    (Some(g), oh * ow)
                }
                Kind::Dense { .. } => {
                    if x.shape().last() != Some(&l.k) || xd.len() % (b * l.k) != 0 {
                        return Err(err(format!("input shape {:?} does not match the weight", x.shape())));
                    }
                    (None, xd.len() / (b * l.k))
                }
            };
            if td.len() != b * per_item * l.m || xd.len() % b != 0 {
                return Err(err(format!("output shape {:?} does not match the layer", t.shape())));
            }
            p.xs.push(xd);
            p.ts.push(td);
            p.items.push(b);
            p.geoms.push(geom);
            p.per_item.push(per_item);
            p.in_per_item.push(xd.len() / b);
        }
        // Convolutions other than 1x1 rebuild the same column matrices at every iteration, and
        // depthwise ones transpose the same inputs and targets: do it once when they fit.
        let size = |r: usize| match p.geoms[r] {
            Some(g) if is_depthwise(&g) => p.items[r] * (p.in_per_item[r] + l.m * p.per_item[r]),
            Some(g) if !pointwise(&g) => p.items[r] * g.c_in * g.kh * g.kw * p.per_item[r],
            _ => 0,
        };
        let total: usize = (0..p.xs.len()).map(size).sum();
        for r in 0..p.xs.len() {
            let cache = match p.geoms[r] {
                Some(g) if total <= COLUMN_CACHE && size(r) > 0 => {
                    let per = size(r) / p.items[r];
                    let mut c = vec![0.0f32; size(r)];
                    let ipi = p.in_per_item[r];
                    for (j, c) in c.chunks_exact_mut(per).enumerate() {
                        let x = &p.xs[r][j * ipi..(j + 1) * ipi];
                        if is_depthwise(&g) {
                            let (cx, ct) = c.split_at_mut(ipi);
                            kernels::transpose(x, l.m, g.h * g.w, cx);
                            kernels::transpose(&p.ts[r][j * ct.len()..(j + 1) * ct.len()], l.m, p.per_item[r], ct);
                        } else {
                            columns(&g, x, c);
                        }
                    }
                    Some(c)
                }
                _ => None,
            };
            p.cols.push(cache);
        }
        Ok(p)
    }

    /// Reconstruction loss of weights `wq` ([m, k]) on samples `items` of batch `r`; with
    /// `grad`, adds `∂loss/∂wq` to it.
    pub(super) fn loss(&self, r: usize, items: &[usize], wq: &[f32], grad: Option<&mut [f32]>, ws: &mut Work) -> f64 {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the processor has AVX.
            return unsafe { self.loss_avx(r, items, wq, grad, ws) };
        }
        self.loss_body(r, items, wq, grad, ws)
    }

    /// [`Problem::loss`] compiled for AVX: the same operations in 8 lanes where they vectorise
    /// (each output's sum in the same order, no FMA), so the same bits.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn loss_avx(&self, r: usize, items: &[usize], wq: &[f32], grad: Option<&mut [f32]>, ws: &mut Work) -> f64 {
        self.loss_body(r, items, wq, grad, ws)
    }

    #[inline(always)]
    pub(super) fn loss_body(&self, r: usize, items: &[usize], wq: &[f32], mut grad: Option<&mut [f32]>, ws: &mut Work) -> f64 {
        let (m, k, per) = (self.m, self.k, self.per_item[r]);
        let scale = 1.0 / (items.len() * per) as f32;
        let mut total = 0.0f64;
        match self.geoms[r] {
            Some(g) => {
                let depthwise = is_depthwise(&g);
                let (cg, mg) = (g.c_in / g.group, m / g.group);
                let kk = cg * g.kh * g.kw;
                let ipi = self.in_per_item[r];
                if depthwise {
                    transpose(&wq[..m * kk], m, kk, &mut ws.t);
                }
                for &j in items {
                    let x = &self.xs[r][j * ipi..][..ipi];
                    let t = &self.ts[r][j * m * per..][..m * per];
                    if depthwise {
                        // Channels last: every tap is then a run of m channels, whatever the
                        // image size (Lite0 ends at 7 x 7 with 1,152 channels).
                        let (x, t): (&[f32], &[f32]) = match &self.cols[r] {
                            Some(c) => c[j * (ipi + m * per)..][..ipi + m * per].split_at(ipi),
                            None => {
                                transpose(x, m, g.h * g.w, &mut ws.cols);
                                transpose(t, m, per, &mut ws.tgt);
                                (&ws.cols, &ws.tgt)
                            }
                        };
                        depthwise_nhwc(&g, x, &ws.t, &mut ws.y);
                        total += self.finish(&mut ws.y, t, m, false, scale);
                        if let Some(gr) = grad.as_deref_mut() {
                            ws.rows.clear();
                            ws.rows.resize(kk * m, 0.0);
                            depthwise_nhwc_weight_grad(&g, x, &ws.y, &mut ws.rows);
                            for c in 0..m {
                                for tap in 0..kk {
                                    gr[c * kk + tap] += ws.rows[tap * m + c];
                                }
                            }
                        }
                        continue;
                    }
                    ws.y.resize(m * per, 0.0);
                    // Column matrices [group][kk][per] of this sample: cached, the input itself
                    // (1x1 kernels), or built now.
                    let cols: &[f32] = match (&self.cols[r], pointwise(&g)) {
                        (Some(c), _) => &c[j * g.group * kk * per..][..g.group * kk * per],
                        (None, true) => x,
                        (None, false) => {
                            ws.cols.resize(g.group * kk * per, 0.0);
                            columns(&g, x, &mut ws.cols);
                            &ws.cols
                        }
                    };
                    for grp in 0..g.group {
                        let cg_cols = &cols[grp * kk * per..(grp + 1) * kk * per];
                        let y = &mut ws.y[grp * mg * per..(grp + 1) * mg * per];
                        gemm(mg, per, kk, &wq[grp * mg * kk..(grp + 1) * mg * kk], cg_cols, y);
                    }
                    total += self.finish(&mut ws.y, t, per, true, scale);
                    let Some(gr) = grad.as_deref_mut() else { continue };
                    for grp in 0..g.group {
                        // dy · colsᵀ by the packed GEMM, packing straight from the columns.
                        let cg_cols = &cols[grp * kk * per..(grp + 1) * kk * per];
                        gemm_add_bt(mg, kk, per, &ws.y[grp * mg * per..(grp + 1) * mg * per], cg_cols, &mut gr[grp * mg * kk..(grp + 1) * mg * kk]);
                    }
                }
            }
            None => {
                let ipi = self.in_per_item[r];
                let rows = items.len() * per;
                ws.rows.clear();
                for &j in items {
                    ws.rows.extend_from_slice(&self.xs[r][j * ipi..(j + 1) * ipi]);
                }
                ws.tgt.clear();
                for &j in items {
                    ws.tgt.extend_from_slice(&self.ts[r][j * per * m..(j + 1) * per * m]);
                }
                ws.y.clear();
                ws.y.resize(rows * m, 0.0);
                gemm_nt(rows, m, k, &ws.rows, wq, &mut ws.y);
                let tgt = std::mem::take(&mut ws.tgt);
                total += self.finish(&mut ws.y, &tgt, m, false, scale);
                ws.tgt = tgt;
                if let Some(gr) = grad {
                    transpose(&ws.y, rows, m, &mut ws.t);
                    gemm_add(m, k, rows, &ws.t, &ws.rows, gr);
                }
            }
        }
        total
    }

    /// Adds the bias, applies the activation to the output `y` and the target `t`, and turns `y`
    /// into `∂loss/∂y` (`2 (act(y) - act(t)) scale` where the activation passes the gradient).
    /// `y` is [channel][run] (`channel_major`, convolutions) or [run][channel] (matrix products)
    /// with runs of `run` elements. Returns the loss `Σ (act(y) - act(t))^2 scale`.
    #[inline(always)]
    fn finish(&self, y: &mut [f32], t: &[f32], run: usize, channel_major: bool, scale: f32) -> f64 {
        let two = 2.0 * scale;
        let loss: f64 = if channel_major {
            y.chunks_mut(run).zip(t.chunks(run)).enumerate().map(|(c, (ys, ts))| finish_run(ys, ts, (self.bias[c], self.lo[c], self.hi[c]), two) as f64).sum()
        } else {
            y.chunks_mut(run).zip(t.chunks(run)).map(|(ys, ts)| finish_row(ys, ts, (&self.bias, &self.lo, &self.hi), two) as f64).sum()
        };
        loss * scale as f64
    }
}

/// One output element of [`Problem::finish`]: `(act(y + b) - act(t))^2` and the gradient that
/// replaces `y` (`two` = 2 scale).
#[inline(always)]
pub(super) fn finish_one(y: &mut f32, t: f32, (b, lo, hi): (f32, f32, f32), two: f32) -> f32 {
    let v = *y + b;
    let d = vmath::clamp(v, lo, hi) - vmath::clamp(t, lo, hi);
    *y = if (v > lo) & (v < hi) { two * d } else { 0.0 };
    d * d
}

/// [`finish_one`] over a run of one channel, a block at a time: the elements four at a time by
/// `finish_lanes` in wasm (where the compiler leaves this loop scalar), each block's squares
/// summed by `vmath::sum`.
#[inline(always)]
pub(super) fn finish_run(y: &mut [f32], t: &[f32], c: (f32, f32, f32), two: f32) -> f32 {
    let mut d2 = [0.0f32; BLOCK];
    let mut total = 0.0;
    for (y, t) in y.chunks_mut(BLOCK).zip(t.chunks(BLOCK)) {
        let n = y.len().min(t.len());
        let (y, t, d2) = (&mut y[..n], &t[..n], &mut d2[..n]);
        let done = finish_lanes(y, t, c, two, d2);
        for i in done..n {
            d2[i] = finish_one(&mut y[i], t[i], c, two);
        }
        total += vmath::sum(d2);
    }
    total
}

/// [`finish_one`] on whole vectors of a run in wasm, where the compiler leaves the loop scalar;
/// returns how many elements it did. The same operations in the same order, so the same bits.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn finish_lanes(y: &mut [f32], t: &[f32], (b, lo, hi): (f32, f32, f32), two: f32, d2: &mut [f32]) -> usize {
    use core::arch::wasm32::*;
    let (bv, lov, hiv, twov, zero) = (f32x4_splat(b), f32x4_splat(lo), f32x4_splat(hi), f32x4_splat(two), f32x4_splat(0.0));
    // vmath::clamp's selects: below lo gives lo, then above hi gives hi.
    let clamp = |x: v128| {
        let x = v128_bitselect(lov, x, f32x4_lt(x, lov));
        v128_bitselect(hiv, x, f32x4_gt(x, hiv))
    };
    let n = y.len().min(t.len()).min(d2.len()) / 4 * 4;
    for ((yc, tc), dc) in y[..n].chunks_exact_mut(4).zip(t[..n].chunks_exact(4)).zip(d2[..n].chunks_exact_mut(4)) {
        // SAFETY: each chunk holds 4 floats, one unaligned vector.
        unsafe {
            let v = f32x4_add(v128_load(yc.as_ptr() as *const v128), bv);
            let d = f32x4_sub(clamp(v), clamp(v128_load(tc.as_ptr() as *const v128)));
            let pass = v128_and(f32x4_gt(v, lov), f32x4_lt(v, hiv));
            v128_store(yc.as_mut_ptr() as *mut v128, v128_bitselect(f32x4_mul(twov, d), zero, pass));
            v128_store(dc.as_mut_ptr() as *mut v128, f32x4_mul(d, d));
        }
    }
    n
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn finish_lanes(_: &mut [f32], _: &[f32], _: (f32, f32, f32), _: f32, _: &mut [f32]) -> usize {
    0
}

/// [`finish_one`] over a row holding every channel once.
#[inline(always)]
pub(super) fn finish_row(y: &mut [f32], t: &[f32], (b, lo, hi): (&[f32], &[f32], &[f32]), two: f32) -> f32 {
    let mut d2 = [0.0f32; BLOCK];
    let mut total = 0.0;
    for ((((y, t), b), lo), hi) in y.chunks_mut(BLOCK).zip(t.chunks(BLOCK)).zip(b.chunks(BLOCK)).zip(lo.chunks(BLOCK)).zip(hi.chunks(BLOCK)) {
        let n = y.len();
        let (t, b, lo, hi, d2) = (&t[..n], &b[..n], &lo[..n], &hi[..n], &mut d2[..n]);
        for i in 0..n {
            d2[i] = finish_one(&mut y[i], t[i], (b[i], lo[i], hi[i]), two);
        }
        total += vmath::sum(d2);
    }
    total
}

/// Scratch buffers reused across iterations.
#[derive(Default)]
pub(super) struct Work {
    y: Vec<f32>,
    cols: Vec<f32>,
    rows: Vec<f32>,
    t: Vec<f32>,
    tgt: Vec<f32>,
}

pub(super) fn pointwise(g: &ConvGeom) -> bool {
    g.kh == 1 && g.kw == 1 && g.stride == [1, 1] && g.pads == [0; 4]
}

/// One input channel per group and one output channel per group: computed directly, tap by tap,
/// without column matrices.
pub(super) fn is_depthwise(g: &ConvGeom) -> bool {
    g.group == g.c_in && g.group == g.c_out && g.group > 1
}

/// A depthwise convolution channels last: `x` [h*w][c], taps `w` [kh*kw][c], `y` [oh*ow][c]
/// (resized; no bias).
#[inline(always)]
pub(super) fn depthwise_nhwc(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut Vec<f32>) {
    let (oh, ow) = g.out_hw().unwrap_or((0, 0));
    let c = g.c_out;
    y.clear();
    y.resize(oh * ow * c, 0.0);
    for oy in 0..oh {
        for ox in 0..ow {
            let out = &mut y[(oy * ow + ox) * c..][..c];
            for_each_tap((g.h, g.w), (g.kh, g.kw), g.stride, g.dilation, g.pads, (oy, ox), |tap, pixel| {
                for ((o, &xv), &wv) in out.iter_mut().zip(&x[pixel * c..(pixel + 1) * c]).zip(&w[tap * c..(tap + 1) * c]) {
                    *o += wv * xv;
                }
            });
        }
    }
}

/// Adds `∂loss/∂w` of [`depthwise_nhwc`] to `gw` [kh*kw][c] from the output gradient `dy`
/// [oh*ow][c].
#[inline(always)]
pub(super) fn depthwise_nhwc_weight_grad(g: &ConvGeom, x: &[f32], dy: &[f32], gw: &mut [f32]) {
    let (oh, ow) = g.out_hw().unwrap_or((0, 0));
    let c = g.c_out;
    for oy in 0..oh {
        for ox in 0..ow {
            let d = &dy[(oy * ow + ox) * c..][..c];
            for_each_tap((g.h, g.w), (g.kh, g.kw), g.stride, g.dilation, g.pads, (oy, ox), |tap, pixel| {
                for ((gv, &xv), &dv) in gw[tap * c..(tap + 1) * c].iter_mut().zip(&x[pixel * c..(pixel + 1) * c]).zip(d) {
                    *gv += dv * xv;
                }
            });
        }
    }
}

/// Column matrices [group][cg*kh*kw][out pixels] of one sample (`cols` sized by the caller).
pub(super) fn columns(g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    let (oh, ow) = g.out_hw().unwrap_or((0, 0));
    let cg = g.c_in / g.group;
    let n = cg * g.kh * g.kw * oh * ow;
    for grp in 0..g.group {
        im2col(g, &x[grp * cg * g.h * g.w..(grp + 1) * cg * g.h * g.w], cg, oh, ow, &mut cols[grp * n..(grp + 1) * n]);
    }
}

/// [`kernels::transpose`] into `out`, resized.
pub(super) fn transpose(a: &[f32], rows: usize, cols: usize, out: &mut Vec<f32>) {
    out.resize(rows * cols, 0.0);
    kernels::transpose(a, rows, cols, out);
}
