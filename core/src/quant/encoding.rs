//! Quantization encodings exactly as AIMET computes them (aimet-onnx 2.42,
//! `quantization_utils.cpp:getComputedEncodings`, `trim_functions.cpp:quantizeValueCpu`; see
//! tests/aimet/SEMANTICS.md). `Δ` is the scale, `o <= 0` the integer offset, `n = 2^bw - 1`.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Smallest scale AIMET allows (2^-23).
pub const MIN_SCALE: f64 = 1.0 / 8_388_608.0;

/// Symmetric (signed grid `[-2^(b-1), 2^(b-1)-1]`) or asymmetric (unsigned grid `[0, 2^b-1]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuantScheme {
    Symmetric,
    Asymmetric,
}

/// One quantization grid: values `(q + offset) * scale` for integers `q` in `0..=2^bw-1`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Encoding {
    pub bw: u8,
    /// Δ, as AIMET exports it (computed in f64).
    pub scale: f64,
    pub offset: i64,
    pub symmetric: bool,
    /// Round grid positions half to even (ONNX QuantizeLinear, qplay mode's activations) instead
    /// of AIMET's half up.
    #[serde(default)]
    pub ties_even: bool,
}

/// Checks a bit-width (2 to 16).
pub fn check_bits(bw: u32) -> Result<u8> {
    if (2..=16).contains(&bw) {
        Ok(bw as u8)
    } else {
        Err(Error::Quant(format!("bit-width {bw} is not supported (2 to 16)")))
    }
}

impl Encoding {
    /// AIMET's min-max encoding of the observed range `[mn, mx]`:
    /// the range is widened to include 0; symmetric: `Δ = max(mx/⌊n/2⌋, -mn/(n-⌊n/2⌋))`,
    /// `o = -(n-⌊n/2⌋)`; asymmetric: `Δ = (mx-mn)/n`, `o = clamp(round(mn/Δ), -n, 0)`;
    /// then `Δ >= 2^-23`.
    pub fn from_min_max(mn: f32, mx: f32, bw: u8, scheme: QuantScheme) -> Result<Encoding> {
        if !mn.is_finite() || !mx.is_finite() {
            return Err(Error::Quant(format!("observed range [{mn}, {mx}] is not finite (NaN or infinity in the data)")));
        }
        let lim = 0.99 * f32::MAX as f64;
        let mn = (mn as f64).min(0.0).max(-lim);
        let mx = (mx as f64).max(0.0).min(lim);
        let n = ((1u64 << bw) - 1) as f64;
        match scheme {
            QuantScheme::Symmetric => {
                let npos = (n / 2.0).floor();
                let nneg = n - npos;
                let pos_div = if bw == 2 { npos + 1.0 } else { npos };
                let scale = (mx / pos_div).max(-mn / nneg).max(MIN_SCALE);
                Ok(Encoding { bw, scale, offset: -(nneg as i64), symmetric: true, ties_even: false })
            }
            QuantScheme::Asymmetric => {
                let scale = ((mx - mn) / n).max(MIN_SCALE);
                let offset = (mn / scale).round().clamp(-n, 0.0) as i64;
                Ok(Encoding { bw, scale, offset, symmetric: false, ties_even: false })
            }
        }
    }

    /// Number of steps `n = 2^bw - 1`.
    pub fn steps(&self) -> i64 {
        (1i64 << self.bw) - 1
    }
    /// Lowest representable value `Δ * o`.
    pub fn min(&self) -> f32 {
        (self.scale * self.offset as f64) as f32
    }
    /// Highest representable value `Δ * (o + n)`.
    pub fn max(&self) -> f32 {
        (self.scale * (self.offset + self.steps()) as f64) as f32
    }

    /// Quantize-dequantize in f32 as AIMET: `x_c = clamp(x, min, max)`, `q = round(x_c/Δ - o)`
    /// (ties away from zero, i.e. up, as the argument is >= 0; half to even with `ties_even`),
    /// result `(q + o) * Δ`.
    pub fn qdq(&self, x: f32) -> f32 {
        let q = if self.ties_even { self.grid::<true>().index(x) } else { self.grid::<false>().index(x) };
        (q + self.offset as f32) * self.scale as f32
    }

    /// The integer grid index `q` in `0..=n` that [`Encoding::qdq`] maps `x` to.
    pub fn quantize(&self, x: f32) -> i32 {
        (if self.ties_even { self.grid::<true>().index(x) } else { self.grid::<false>().index(x) }) as i32
    }

    fn grid<const EVEN: bool>(&self) -> Grid<EVEN> {
        let o = self.offset as f32;
        let (lo, hi) = if EVEN { (o, o + self.steps() as f32) } else { (self.min(), self.max()) };
        Grid { lo, hi, d: self.scale as f32, o }
    }

    /// `out[i] = quantize(xs[i]) + shift` (bit-identical to [`Encoding::quantize`] per element),
    /// in a loop the compiler vectorizes: the integer engine's input quantization.
    pub fn quantize_slice(&self, xs: &[f32], shift: i32, out: &mut [i16]) {
        fn go<const E: bool>(g: Grid<E>, xs: &[f32], shift: i32, out: &mut [i16]) {
            for (r, &x) in out.iter_mut().zip(xs) {
                *r = (g.index(x) as i32 + shift) as i16;
            }
        }
        if self.ties_even { go(self.grid::<true>(), xs, shift, out) } else { go(self.grid::<false>(), xs, shift, out) }
    }

    /// `out[i] = quantize(a[i] * sa + b[i] * sb) + shift`: the integer engine's Add of two
    /// quantized tensors, bit-identical to calling [`Encoding::quantize`] per element, in a loop
    /// the compiler vectorizes.
    pub fn quantize_sum(&self, a: &[i16], sa: f32, b: &[i16], sb: f32, shift: i32, out: &mut [i16]) {
        fn go<const E: bool>(g: Grid<E>, a: &[i16], sa: f32, b: &[i16], sb: f32, shift: i32, out: &mut [i16]) {
            for ((r, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *r = (g.index(x as f32 * sa + y as f32 * sb) as i32 + shift) as i16;
            }
        }
        if self.ties_even { go(self.grid::<true>(), a, sa, b, sb, shift, out) } else { go(self.grid::<false>(), a, sa, b, sb, shift, out) }
    }

    /// Quantize-dequantize a float tensor in place (other dtypes are left alone).
    pub fn qdq_tensor(&self, t: &mut crate::tensor::Tensor) {
        if let Some(d) = t.as_f32() {
            let mut v = d.to_vec();
            self.qdq_slice(&mut v);
            *t = crate::tensor::Tensor::from_parts_f32(t.shape().to_vec(), v);
        }
    }

    /// Quantize-dequantize a slice in place.
    pub fn qdq_slice(&self, xs: &mut [f32]) {
        fn go<const E: bool>(g: Grid<E>, xs: &mut [f32]) {
            for x in xs {
                *x = (g.index(*x) + g.o) * g.d;
            }
        }
        if self.ties_even { go(self.grid::<true>(), xs) } else { go(self.grid::<false>(), xs) }
    }
}

/// An encoding's grid in f32, with its rounding of ties. The bounds `lo`, `hi` are values for
/// AIMET's rounding and grid indices (`o`, `o + n`) for ONNX's.
#[derive(Clone, Copy)]
struct Grid<const EVEN: bool> {
    lo: f32,
    hi: f32,
    d: f32,
    o: f32,
}

impl<const EVEN: bool> Grid<EVEN> {
    /// The rounded grid position of `x`. AIMET: `round(clamp(x, min, max) / Δ - o)`, ties up.
    /// ONNX QuantizeLinear: `round(x / Δ)` half to even, saturated, plus the zero point `-o`:
    /// rounding before the shift matters at ties when the zero point is odd, and the sum is
    /// exact where `x / Δ - o` in f32 may not be.
    #[inline(always)]
    fn index(&self, x: f32) -> f32 {
        if EVEN {
            round_half_even(clamp_select(x / self.d, self.lo, self.hi)) - self.o
        } else {
            round_half_away(clamp_select(x, self.lo, self.hi) / self.d - self.o)
        }
    }
}

/// `f32::round_ties_even` for grid positions (|x| < 2^22) without the libm call it costs where
/// SSE4.1 is not assumed: adding 1.5 * 2^23 leaves the rounded value in the mantissa (the trick
/// of the integer kernels' requantization), and subtracting it back is exact.
#[inline(always)]
fn round_half_even(x: f32) -> f32 {
    use crate::kernels::int8::ROUND_MAGIC;
    (x + ROUND_MAGIC) - ROUND_MAGIC
}

/// `x` clamped to `[lo, hi]` by compare-and-select (vectorises in wasm, where `f32::clamp`'s
/// NaN rules cost several instructions); NaN stays NaN.
#[inline(always)]
fn clamp_select(x: f32, lo: f32, hi: f32) -> f32 {
    let x = if x < lo { lo } else { x };
    if hi < x { hi } else { x }
}

/// `f32::round` (ties away from zero) for the non-negative grid positions `x/Δ - o`, without
/// the libm call it costs in wasm: floor, then up when the remainder is at least a half (exact:
/// `x - floor(x)` is representable). Slightly negative inputs (rounding noise at the bottom of
/// the range) give -0 or 0 as `round` does.
#[inline(always)]
fn round_half_away(x: f32) -> f32 {
    let f = x.floor();
    if x - f >= 0.5 { f + 1.0 } else { f }
}

/// SQNR-based range search over a density (AIMET's tf_enhanced, after
/// `TfEnhancedEncodingAnalyzer.cpp`): among candidate grids, the one minimising
/// `3 * saturation cost + quantization cost` (squared error at bin mid-points, weighted by the
/// density) wins; the first minimum is kept.
/// Candidates — asymmetric: the observed grid `(Δ_obs, o_obs)` and, for `f = 1/16 .. 17/16` and
/// `i = 0 .. 20`, `Δ = f Δ_obs`, `o = trunc(-n + n i / 20)`, clamped to the observed range when
/// it does not cover it; symmetric: `Δ = f * absmax / (n/2)` for `f = 0.01 .. 1.01`.
/// Not bit-exact with AIMET 2.42 (whose binary differs in details, see SEMANTICS.md section 3).
pub fn sqnr_search(h: &super::observer::Histogram, bw: u8, scheme: QuantScheme) -> Result<Encoding> {
    if h.saw_nan {
        return Err(Error::Quant("NaN in the calibration data".into()));
    }
    let pdf = h.density();
    let first = pdf.iter().position(|&p| p > 0.0);
    let last = pdf.iter().rposition(|&p| p > 0.0);
    let (Some(first), Some(last)) = (first, last) else {
        return Encoding::from_min_max(0.0, 0.0, bw, scheme);
    };
    let mn = (h.lo + first as f64 * h.bin).min(0.0);
    let mut mx = (h.lo + last as f64 * h.bin).max(0.0);
    if mx < mn + 0.01 {
        mx = mn + 0.01;
    }
    let n = ((1u64 << bw) - 1) as f64;
    let mids: Vec<(f64, f64)> = pdf.iter().enumerate().filter(|(_, &p)| p > 0.0).map(|(i, &p)| (h.lo + (i as f64 + 0.5) * h.bin, p)).collect();
    let cost = |d: f64, o: f64| -> f64 {
        let (qmin, qmax) = (d * o, d * (o + n));
        let (mut sat, mut quant) = (0.0, 0.0);
        for &(m, p) in &mids {
            if m < qmin {
                sat += p * (m - qmin).powi(2);
            } else if m > qmax {
                sat += p * (m - qmax).powi(2);
            } else {
                let q = ((m / d) - o).round() + o;
                quant += p * (m - q * d).powi(2);
            }
        }
        3.0 * sat + quant
    };
    let mut best: Option<(f64, f64, f64)> = None;
    let mut consider = |d: f64, o: f64| {
        if !(d > 0.0) || !d.is_finite() {
            return;
        }
        let c = cost(d, o);
        if best.is_none_or(|(bc, _, _)| c < bc) {
            best = Some((c, d, o));
        }
    };
    match scheme {
        QuantScheme::Symmetric => {
            let absmax = mn.abs().max(mx.abs());
            let dmax = absmax / (n / 2.0);
            let o = (-n / 2.0).floor();
            for f in 1..=101 {
                consider(f as f64 * 0.01 * dmax, o);
            }
        }
        QuantScheme::Asymmetric => {
            let d_obs = (mx - mn) / n;
            let o_obs = (mn / d_obs).round();
            consider(d_obs, o_obs);
            for f in 1..=17 {
                for i in 0..=20 {
                    let d = f as f64 / 16.0 * d_obs;
                    let o = (-n + n * i as f64 / 20.0).trunc();
                    let (cmin, cmax) = (d * o, d * (o + n));
                    if cmin <= mn && cmax >= mx {
                        continue;
                    }
                    let (nmin, nmax) = (cmin.max(mn), cmax.min(mx));
                    let nd = (nmax - nmin) / n;
                    consider(nd, (nmin / nd).round());
                }
            }
        }
    }
    let (_, d, o) = best.ok_or_else(|| Error::Quant("no valid encoding candidate".into()))?;
    let scale = d.max(MIN_SCALE);
    Ok(Encoding { bw, scale, offset: o.clamp(-n, 0.0) as i64, symmetric: scheme == QuantScheme::Symmetric, ties_even: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::observer::{Histogram, Percentile};

    /// Ties: AIMET's rounding goes up, `ties_even` (ONNX QuantizeLinear) to the even neighbour;
    /// everything else rounds to nearest in both, in the scalar and the slice functions alike.
    #[test]
    fn ties_round_up_or_to_even() {
        let up = Encoding::from_min_max(0.0, 255.0, 8, QuantScheme::Asymmetric).unwrap();
        assert_eq!(up.scale, 1.0);
        let even = Encoding { ties_even: true, ..up };
        let xs = [0.5f32, 1.5, 2.5, 3.5, 2.4999998, 2.5000002, 254.5, 300.0, -3.0];
        let q = |e: &Encoding| xs.iter().map(|&x| e.quantize(x)).collect::<Vec<_>>();
        assert_eq!(q(&up), [1, 2, 3, 4, 2, 3, 255, 255, 0]);
        assert_eq!(q(&even), [0, 2, 2, 4, 2, 3, 254, 255, 0]);
        // An odd zero point (127): ONNX rounds x / Δ to even before adding it, so the tie
        // -100.5 goes to -100 (index 27), where rounding the shifted 26.5 to even gives 26.
        let odd = Encoding::from_min_max(-127.0, 128.0, 8, QuantScheme::Asymmetric).unwrap();
        assert_eq!((odd.scale, odd.offset), (1.0, -127));
        let odd_even = Encoding { ties_even: true, ..odd };
        let ys = [-100.5f32, -99.5, 78.5, 0.5, -127.5, 128.5, 1e-7];
        assert_eq!(ys.map(|y| odd_even.quantize(y)), [27, 27, 205, 127, 0, 255, 127]);
        assert_eq!(ys.map(|y| odd.quantize(y)), [27, 28, 206, 128, 0, 255, 127]);
        for e in [up, even, odd, odd_even] {
            let xs = [&xs[..], &ys].concat();
            let q = |e: &Encoding| xs.iter().map(|&x| e.quantize(x)).collect::<Vec<_>>();
            let mut v = xs.to_vec();
            e.qdq_slice(&mut v);
            assert_eq!(v, xs.iter().map(|&x| e.qdq(x)).collect::<Vec<_>>());
            let mut s = vec![0i16; xs.len()];
            e.quantize_slice(&xs, 0, &mut s);
            assert_eq!(s.iter().map(|&v| v as i32).collect::<Vec<_>>(), q(&e));
        }
    }

    /// The vectorized Add equals `quantize` per element.
    #[test]
    fn quantize_sum_equals_quantize_per_element() {
        let mut r = crate::rng::SplitMix(3);
        let enc = Encoding::from_min_max(-3.7, 9.1, 8, QuantScheme::Asymmetric).unwrap();
        let a: Vec<i16> = (0..5000).map(|_| r.below(511) as i16 - 255).collect();
        let b: Vec<i16> = (0..5000).map(|_| r.below(511) as i16 - 255).collect();
        let (sa, sb, shift) = (0.031_f32, 0.047_f32, -17);
        let want: Vec<i16> = a.iter().zip(&b).map(|(&x, &y)| (enc.quantize(x as f32 * sa + y as f32 * sb) + shift) as i16).collect();
        let mut got = vec![7i16; a.len()];
        enc.quantize_sum(&a, sa, &b, sb, shift, &mut got);
        assert_eq!(got, want);
        // And the plain quantization of floats, across the range and beyond it.
        let xs: Vec<f32> = (0..5000).map(|_| (r.below(1 << 20) as f32 / (1 << 20) as f32) * 16.0 - 5.0).collect();
        let want: Vec<i16> = xs.iter().map(|&x| (enc.quantize(x) + shift) as i16).collect();
        enc.quantize_slice(&xs, shift, &mut got);
        assert_eq!(got, want);
    }

    /// The libm-free rounding equals `f32::round` on the grid positions qdq produces, including
    /// ties and the values just below them, and qdq equals AIMET's formula written with libm.
    #[test]
    fn rounding_equals_round_half_away() {
        let mut r = crate::rng::SplitMix(9);
        let mut xs: Vec<f32> = (0..200_000).map(|_| (r.next() >> 40) as f32 / (1u64 << 24) as f32 * 300.0 - 1e-6).collect();
        for k in 0..300 {
            let t = k as f32 + 0.5;
            xs.extend([t, f32::from_bits(t.to_bits() - 1), f32::from_bits(t.to_bits() + 1), k as f32, 0.49999997]);
        }
        for &x in &xs {
            assert_eq!(round_half_away(x), x.round() + 0.0, "{x}");
        }
        let e = Encoding::from_min_max(-3.7, 11.2, 8, QuantScheme::Asymmetric).unwrap();
        let (lo, hi, d, o) = (e.min(), e.max(), e.scale as f32, e.offset as f32);
        for &x in &xs {
            let x = x * 0.06 - 5.0;
            assert_eq!(e.qdq(x), ((x.clamp(lo, hi) / d - o).round() + o) * d, "{x}");
        }
    }

    #[test]
    fn min_max_follows_aimet_rules() {
        // asymmetric: [0, 1] -> scale 1/255, offset 0
        let e = Encoding::from_min_max(0.0, 1.0, 8, QuantScheme::Asymmetric).unwrap();
        assert_eq!((e.scale, e.offset), (1.0 / 255.0, 0));
        // symmetric: max/127 or |min|/128, offset -128
        let e = Encoding::from_min_max(-1.0, 0.5, 8, QuantScheme::Symmetric).unwrap();
        assert_eq!((e.scale, e.offset), (1.0 / 128.0, -128));
        // an all-zero tensor gets the smallest scale
        let e = Encoding::from_min_max(0.0, 0.0, 8, QuantScheme::Asymmetric).unwrap();
        assert_eq!((e.scale, e.offset), (MIN_SCALE, 0));
        // ties go up: with scale 1 and offset -128, -0.5 -> 0 and 2.5 -> 3
        let e = Encoding { bw: 8, scale: 1.0, offset: -128, symmetric: true, ties_even: false };
        assert_eq!((e.qdq(-0.5), e.qdq(-1.5), e.qdq(2.5), e.qdq(1000.0)), (0.0, -1.0, 3.0, 127.0));
        assert!(Encoding::from_min_max(f32::NAN, 1.0, 8, QuantScheme::Asymmetric).is_err());
    }

    #[test]
    fn sqnr_search_clips_heavy_tails_at_low_bit_widths() {
        // Laplace-distributed values (a typical pre-activation): at 4 bits the best grid clips
        // the tails; min-max spends its 16 levels on rare extremes.
        let xs: Vec<f32> = (1..100_000)
            .map(|i| {
                let u = (i as f64 * 0.618_033_988_75).fract().max(1e-9);
                let v = -(u.ln());
                (if i % 2 == 0 { v } else { -v }) as f32
            })
            .collect();
        let mut h = Histogram::default();
        h.observe(&xs);
        let e = sqnr_search(&h, 4, QuantScheme::Asymmetric).unwrap();
        let absmax = xs.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let mm = Encoding::from_min_max(-absmax, absmax, 4, QuantScheme::Asymmetric).unwrap();
        assert!(e.max() < 0.8 * absmax, "range [{}, {}] vs absmax {absmax}", e.min(), e.max());
        let err = |e: &Encoding| xs.iter().map(|&x| ((x - e.qdq(x)) as f64).powi(2)).sum::<f64>();
        assert!(err(&e) < 0.8 * err(&mm), "{} vs {}", err(&e), err(&mm));
    }

    #[test]
    fn percentile_drops_the_extremes() {
        let xs: Vec<f32> = (0..10_001).map(|i| i as f32).collect();
        let mut p = Percentile::default();
        p.observe(&xs, 99.0);
        assert_eq!(p.range(), (100.0, 9900.0));
    }
}
