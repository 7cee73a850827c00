//! Branch-free `exp`, `ln` and sums that the compiler vectorises (SSE2 natively, SIMD128 in
//! wasm), for loops over millions of elements per step (AdaRound's rounding variables). The
//! library's `expf`/`powf` are calls per element, and in wasm they are software routines.
//! Accuracy: a few ulp against the library (tests below), over the ranges the callers use.

/// `2^23 + 2^22`: adding it rounds a float below 2^22 in magnitude to an integer held in the
/// low mantissa bits.
const ROUNDER: f32 = 12_582_912.0;

/// `x` limited to `[lo, hi]` by two selects. Unlike `f32::clamp` it has no check that `lo <= hi`
/// (an early exit that stops vectorisation) and it maps to `f32x4.pmin/pmax` in wasm, where
/// `f32::min/max` have no single-instruction form.
#[inline(always)]
pub fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    let x = if x < lo { lo } else { x };
    if x > hi {
        hi
    } else {
        x
    }
}

/// `e^x`, for any finite `x` (clamped to [-87, 88]: results stay finite and normal).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = clamp(x, -87.0, 88.0);
    // x = n ln2 + r, |r| <= ln2 / 2, with ln2 split in two for an exact n ln2.
    let t = x * std::f32::consts::LOG2_E + ROUNDER;
    let n = t - ROUNDER;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from n's bits in t (two's complement in the low mantissa bits).
    let n_bits = (t.to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32);
    y * f32::from_bits((n_bits + 127).wrapping_shl(23) as u32)
}

/// Natural logarithm of a positive normal `x` (0 and subnormals give about -88, never NaN).
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    let bits = clamp(x, f32::MIN_POSITIVE, f32::MAX).to_bits() as i32;
    // x = m 2^e with m in [sqrt(1/2), sqrt(2)).
    let e0 = (bits >> 23) - 126;
    let m0 = f32::from_bits(((bits & 0x007f_ffff) | 0x3f00_0000) as u32); // in [0.5, 1)
    let small = m0 < std::f32::consts::FRAC_1_SQRT_2;
    let e = (if small { e0 - 1 } else { e0 }) as f32;
    let z = if small { m0 + m0 - 1.0 } else { m0 - 1.0 };
    let mut p = 7.037_683_6e-2f32;
    p = p * z - 1.151_461e-1;
    p = p * z + 1.167_699_9e-1;
    p = p * z - 1.242_014_1e-1;
    p = p * z + 1.424_932_3e-1;
    p = p * z - 1.666_805_8e-1;
    p = p * z + 2.000_071_5e-1;
    p = p * z - 2.499_999_4e-1;
    p = p * z + 3.333_333e-1;
    let zz = z * z;
    // ln2 split in two, as in exp.
    let y = z * zz * p - e * 2.121_944_4e-4 - 0.5 * zz;
    z + y + e * 0.693_359_4
}

/// Sum with 8 independent partial sums, so that it vectorises (the order differs from a
/// sequential sum by rounding only).
pub fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + rest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i32).abs_diff(b.to_bits() as i32)
    }

    #[test]
    fn exp_matches_the_library() {
        let mut worst = 0;
        for i in -86_000..87_900 {
            let x = i as f32 * 1e-3 + 0.000_37;
            worst = worst.max(ulps(exp(x), x.exp()));
        }
        assert!(worst <= 3, "exp: {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e4) < 1e-37 && exp(-1e4) >= 0.0);
        assert!(exp(1e4).is_finite() && exp(1e4) > 1e38);
    }

    #[test]
    fn ln_matches_the_library() {
        let mut worst = 0;
        for i in 1..200_000 {
            let x = i as f32 * 5e-6 + 1e-7;
            let (a, b) = (ln(x), x.ln());
            // Absolute error near x = 1, where ln's relative error is not meaningful.
            if (a - b).abs() > 1e-7 {
                worst = worst.max(ulps(a, b));
            }
        }
        assert!(worst <= 3, "ln: {worst} ulp");
        for x in [1e-30f32, 3.5e-20, 0.25, 7.0, 1e20] {
            assert!(ulps(ln(x), x.ln()) <= 3, "ln({x}) = {} against {}", ln(x), x.ln());
        }
        assert!(ln(0.0) < -87.0 && ln(0.0).is_finite());
    }

    #[test]
    fn sum_equals_a_sequential_sum_in_f64() {
        let a: Vec<f32> = (0..1003).map(|i| ((i * 37) % 101) as f32 * 0.01 - 0.5).collect();
        let exact: f64 = a.iter().map(|&v| v as f64).sum();
        assert!((sum(&a) as f64 - exact).abs() < 1e-4);
        assert_eq!(sum(&[]), 0.0);
    }
}
