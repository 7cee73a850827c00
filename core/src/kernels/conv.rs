//! 2-D convolution over one NCHW image: im2col + [`gemm`] for the general case, the input used
//! as the column matrix directly for 1x1/stride-1/unpadded kernels, and a channels-last direct
//! loop for depthwise convolutions. [`conv2d_naive`] is the reference.

use super::gemm::gemm;

/// Geometry of one convolution (one image; batch is looped by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// [top, left, bottom, right]
    pub pads: [usize; 4],
    pub group: usize,
}

impl ConvGeom {
    /// Output height and width; `None` when the kernel does not fit.
    pub fn out_hw(&self) -> Option<(usize, usize)> {
        let eh = self.dilation[0] * (self.kh.checked_sub(1)?) + 1;
        let ew = self.dilation[1] * (self.kw.checked_sub(1)?) + 1;
        let ph = self.h + self.pads[0] + self.pads[2];
        let pw = self.w + self.pads[1] + self.pads[3];
        if ph < eh || pw < ew || self.stride[0] == 0 || self.stride[1] == 0 {
            return None;
        }
        Some(((ph - eh) / self.stride[0] + 1, (pw - ew) / self.stride[1] + 1))
    }
    fn is_depthwise(&self) -> bool {
        self.group == self.c_in && self.group == self.c_out && self.group > 1
    }
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pads == [0; 4]
    }
    /// Elements of the scratch buffer this geometry needs.
    pub fn scratch_len(&self) -> usize {
        if self.is_depthwise() {
            let (oh, ow) = self.out_hw().unwrap_or((0, 0));
            return self.c_in * (self.h * self.w + oh * ow + self.kh * self.kw);
        }
        if self.is_pointwise() {
            return 0;
        }
        let (oh, ow) = self.out_hw().unwrap_or((0, 0));
        (self.c_in / self.group) * self.kh * self.kw * oh * ow
    }
}

/// Reference: direct 7-loop convolution. `weight` is [c_out, c_in/group, kh, kw].
pub fn conv2d_naive(g: &ConvGeom, input: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let (oh, ow) = g.out_hw().expect("conv geometry");
    let cg = g.c_in / g.group;
    let mg = g.c_out / g.group;
    for m in 0..g.c_out {
        let grp = m / mg;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = bias.map_or(0.0, |b| b[m]);
                for c in 0..cg {
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.pads[0] as isize;
                            let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize - g.pads[1] as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            let ci = grp * cg + c;
                            s += weight[((m * cg + c) * g.kh + ky) * g.kw + kx]
                                * input[(ci * g.h + iy as usize) * g.w + ix as usize];
                        }
                    }
                }
                out[(m * oh + oy) * ow + ox] = s;
            }
        }
    }
}

/// Fast convolution of one image. `scratch` is grown as needed and reused across calls.
pub fn conv2d(g: &ConvGeom, input: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [f32], scratch: &mut Vec<f32>) {
    let (oh, ow) = g.out_hw().expect("conv geometry");
    let hw = oh * ow;
    if g.is_depthwise() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the processor has AVX.
            unsafe { depthwise_avx(g, input, weight, out, oh, ow, scratch) };
        } else {
            depthwise(g, input, weight, out, oh, ow, scratch);
        }
        #[cfg(not(target_arch = "x86_64"))]
        depthwise(g, input, weight, out, oh, ow, scratch);
    } else {
        let cg = g.c_in / g.group;
        let mg = g.c_out / g.group;
        let kk = cg * g.kh * g.kw;
        for grp in 0..g.group {
            let x = &input[grp * cg * g.h * g.w..(grp + 1) * cg * g.h * g.w];
            let wg = &weight[grp * mg * kk..(grp + 1) * mg * kk];
            let o = &mut out[grp * mg * hw..(grp + 1) * mg * hw];
            if g.is_pointwise() {
                gemm(mg, hw, kk, wg, x, o);
            } else {
                let need = kk * hw;
                if scratch.len() < need {
                    scratch.resize(need, 0.0);
                }
                im2col(g, x, cg, oh, ow, &mut scratch[..need]);
                gemm(mg, hw, kk, wg, &scratch[..need], o);
            }
        }
    }
    if let Some(b) = bias {
        for (m, &bv) in b.iter().enumerate().take(g.c_out) {
            for v in &mut out[m * hw..(m + 1) * hw] {
                *v += bv;
            }
        }
    }
}

/// Column matrix [cg*kh*kw, oh*ow] of one group's input.
pub(crate) fn im2col(g: &ConvGeom, x: &[f32], cg: usize, oh: usize, ow: usize, col: &mut [f32]) {
    let hw = oh * ow;
    for c in 0..cg {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &mut col[((c * g.kh + ky) * g.kw + kx) * hw..][..hw];
                let (xlo, xhi) = valid_range(ow, g.stride[1], kx * g.dilation[1], g.pads[1], g.w);
                for oy in 0..oh {
                    let dst = &mut row[oy * ow..(oy + 1) * ow];
                    let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.pads[0] as isize;
                    if iy < 0 || iy >= g.h as isize || xlo >= xhi {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &x[(c * g.h + iy as usize) * g.w..][..g.w];
                    dst[..xlo].fill(0.0);
                    dst[xhi..].fill(0.0);
                    let off = kx * g.dilation[1];
                    if g.stride[1] == 1 {
                        let s0 = xlo + off - g.pads[1];
                        dst[xlo..xhi].copy_from_slice(&src[s0..s0 + (xhi - xlo)]);
                    } else {
                        for (ox, d) in dst.iter_mut().enumerate().take(xhi).skip(xlo) {
                            *d = src[ox * g.stride[1] + off - g.pads[1]];
                        }
                    }
                }
            }
        }
    }
}

/// Output positions `o` in `lo..hi` whose input index `o*stride + off - pad` lies in `0..len`.
fn valid_range(out_len: usize, stride: usize, off: usize, pad: usize, len: usize) -> (usize, usize) {
    // o*stride + off >= pad  and  o*stride + off < pad + len
    let lo = if off >= pad { 0 } else { (pad - off).div_ceil(stride) };
    let hi = if pad + len > off { ((pad + len - off - 1) / stride + 1).min(out_len) } else { 0 };
    (lo.min(out_len), hi.max(lo.min(out_len)))
}

/// Depthwise inputs at least this wide go to [`depthwise_rows`]; narrower ones to the
/// channels-last kernel, whose transposes are cheap on small maps and whose inner loops run over
/// channels (measured on EfficientNet-Lite0's shapes: rows win from 56 columns, lose at 28).
const ROW_MIN: usize = 48;

/// A depthwise convolution, by rows for wide inputs, channels last for narrow ones.
#[inline(always)]
fn depthwise(g: &ConvGeom, input: &[f32], weight: &[f32], out: &mut [f32], oh: usize, ow: usize, scratch: &mut Vec<f32>) {
    if g.w >= ROW_MIN && g.dilation == [1, 1] {
        depthwise_rows(g, input, weight, out, oh, ow, scratch);
    } else {
        depthwise_channels_last(g, input, weight, out, oh, ow, scratch);
    }
}

/// [`depthwise`] compiled for AVX: its loops vectorise over 8 independent outputs instead of 4,
/// each summing its taps in the same order, so the results are identical.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn depthwise_avx(g: &ConvGeom, input: &[f32], weight: &[f32], out: &mut [f32], oh: usize, ow: usize, scratch: &mut Vec<f32>) {
    depthwise(g, input, weight, out, oh, ow, scratch)
}

/// Depthwise convolution in place in NCHW, one output row at a time: each tap adds
/// `w * input row` to the output row (a contiguous multiply-add), the row staying in L1 across
/// the taps. With a horizontal stride `s` > 1 each channel is first split into its `s` column
/// phases (columns `p, p+s, p+2s, ...`) so that the taps still read contiguous runs. Border columns are
/// cut with [`valid_range`] (computed once per layer), border rows skipped.
#[inline(always)]
fn depthwise_rows(g: &ConvGeom, input: &[f32], weight: &[f32], out: &mut [f32], oh: usize, ow: usize, scratch: &mut Vec<f32>) {
    let (hw, taps, sx) = (g.h * g.w, g.kh * g.kw, g.stride[1]);
    // Per kx: output columns lo..hi and where they start in phase `first % sx` at `first / sx`.
    let cols: Vec<(usize, usize, usize, usize)> = (0..g.kw)
        .map(|kx| {
            let (lo, hi) = valid_range(ow, sx, kx, g.pads[1], g.w);
            let first = if lo < hi { lo * sx + kx - g.pads[1] } else { 0 };
            (lo, hi, first % sx, first / sx)
        })
        .collect();
    let pw = g.w.div_ceil(sx);
    let plane = g.h * pw;
    if sx > 1 && scratch.len() < sx * plane {
        scratch.resize(sx * plane, 0.0);
    }
    for ch in 0..g.c_in {
        let (x, wc) = (&input[ch * hw..(ch + 1) * hw], &weight[ch * taps..(ch + 1) * taps]);
        if sx > 1 {
            for (iy, src) in x.chunks_exact(g.w).enumerate() {
                for p in 0..sx {
                    let dst = &mut scratch[p * plane + iy * pw..p * plane + (iy + 1) * pw];
                    for (d, &v) in dst.iter_mut().zip(src.iter().skip(p).step_by(sx)) {
                        *d = v;
                    }
                }
            }
        }
        for oy in 0..oh {
            let row = &mut out[(ch * oh + oy) * ow..(ch * oh + oy + 1) * ow];
            row.fill(0.0);
            for ky in 0..g.kh {
                let iy = (oy * g.stride[0] + ky) as isize - g.pads[0] as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let iy = iy as usize;
                let (src, phase_len): (&[f32], usize) = if sx == 1 { (&x[iy * g.w..(iy + 1) * g.w], 0) } else { (&scratch[iy * pw..], plane) };
                for (kx, &(lo, hi, phase, start)) in cols.iter().enumerate() {
                    if lo >= hi {
                        continue;
                    }
                    let wv = wc[ky * g.kw + kx];
                    let s0 = phase * phase_len + start;
                    for (d, &v) in row[lo..hi].iter_mut().zip(&src[s0..s0 + (hi - lo)]) {
                        *d += wv * v;
                    }
                }
            }
        }
    }
}

/// Depthwise convolution computed channels-last: the input and the weights are transposed to
/// [H][W][C] and [tap][C] (in `scratch`), each output pixel accumulates its taps over a contiguous
/// run of C channels (long, vectorised inner loops even for 7x7 maps), and the result is
/// transposed back to [C][H][W].
#[inline(always)]
fn depthwise_channels_last(g: &ConvGeom, input: &[f32], weight: &[f32], out: &mut [f32], oh: usize, ow: usize, scratch: &mut Vec<f32>) {
    let (c, hw, taps) = (g.c_in, g.h * g.w, g.kh * g.kw);
    let need = c * (hw + oh * ow + taps);
    if scratch.len() < need {
        scratch.resize(need, 0.0);
    }
    let (xt, rest) = scratch.split_at_mut(c * hw);
    let (yt, wt) = rest.split_at_mut(c * oh * ow);
    let wt = &mut wt[..c * taps];
    for ch in 0..c {
        for p in 0..hw {
            xt[p * c + ch] = input[ch * hw + p];
        }
        for t in 0..taps {
            wt[t * c + ch] = weight[ch * taps + t];
        }
    }
    // Per output pixel: the valid taps once, then blocks of 16 channels accumulated over all
    // taps in registers (four SIMD128 vectors after auto-vectorisation), the rest one by one.
    let mut taps_at: Vec<(usize, usize)> = Vec::with_capacity(taps);
    let full = c / 16 * 16;
    for oy in 0..oh {
        for ox in 0..ow {
            taps_at.clear();
            super::for_each_tap((g.h, g.w), (g.kh, g.kw), g.stride, g.dilation, g.pads, (oy, ox), |t, px| taps_at.push((t * c, px * c)));
            let y = &mut yt[(oy * ow + ox) * c..(oy * ow + ox + 1) * c];
            for c0 in (0..full).step_by(16) {
                let mut acc = [0.0f32; 16];
                for &(wo, xo) in &taps_at {
                    let (xs, ws) = (&xt[xo + c0..xo + c0 + 16], &wt[wo + c0..wo + c0 + 16]);
                    for l in 0..16 {
                        acc[l] += xs[l] * ws[l];
                    }
                }
                y[c0..c0 + 16].copy_from_slice(&acc);
            }
            for (ch, yv) in y.iter_mut().enumerate().skip(full) {
                *yv = taps_at.iter().map(|&(wo, xo)| xt[xo + ch] * wt[wo + ch]).sum();
            }
        }
    }
    let ohw = oh * ow;
    for ch in 0..c {
        for p in 0..ohw {
            out[ch * ohw + p] = yt[p * c + ch];
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    /// The AVX build of the depthwise kernels gives the bits of the portable one: by rows (wide
    /// inputs, strides 1 and 2) and channels last (narrow ones).
    #[test]
    fn avx_depthwise_is_identical_to_the_portable_one() {
        if !std::arch::is_x86_feature_detected!("avx") {
            return;
        }
        let mut rng = SplitMix(23);
        for (c, hw, k, stride, pad) in [(8, 56, 3, 1, 1), (5, 57, 5, 2, 2), (24, 7, 3, 1, 1), (11, 14, 5, 2, 2)] {
            let g = ConvGeom { c_in: c, h: hw, w: hw, c_out: c, kh: k, kw: k, stride: [stride; 2], dilation: [1; 2], pads: [pad; 4], group: c };
            let (oh, ow) = g.out_hw().unwrap();
            let (x, w) = (rng.f32s(c * hw * hw), rng.f32s(c * k * k));
            let (mut wide, mut narrow) = (vec![0.0; c * oh * ow], vec![0.0; c * oh * ow]);
            unsafe { depthwise_avx(&g, &x, &w, &mut wide, oh, ow, &mut Vec::new()) };
            depthwise(&g, &x, &w, &mut narrow, oh, ow, &mut Vec::new());
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&wide), bits(&narrow), "{c} channels, {hw} x {hw}, {k} x {k}, stride {stride}");
        }
    }
}
