//! Kernels: plain functions over slices and shapes. Each fast path has a naive twin used as
//! the reference in tests.

pub mod conv;
pub mod gemm;
pub mod int8;
#[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"))]
pub mod lanes;
pub mod pool;
pub mod vmath;

pub use conv::{conv2d, conv2d_naive, ConvGeom};
pub use gemm::{dot, gemm, gemm_naive};

/// Calls `f(tap, pixel)` for every kernel tap of output position (`oy`, `ox`) that lands inside the
/// `h x w` input (padding taps are skipped): `tap = ky * kw + kx`, `pixel = iy * w + ix`. Shared by
/// the channels-last kernels, which then touch a contiguous run of channels per call.
#[inline(always)]
pub fn for_each_tap(
    (h, w): (usize, usize),
    (kh, kw): (usize, usize),
    stride: [usize; 2],
    dilation: [usize; 2],
    pads: [usize; 4],
    (oy, ox): (usize, usize),
    mut f: impl FnMut(usize, usize),
) {
    for ky in 0..kh {
        let iy = (oy * stride[0] + ky * dilation[0]) as isize - pads[0] as isize;
        if iy < 0 || iy >= h as isize {
            continue;
        }
        for kx in 0..kw {
            let ix = (ox * stride[1] + kx * dilation[1]) as isize - pads[1] as isize;
            if ix < 0 || ix >= w as isize {
                continue;
            }
            f(ky * kw + kx, iy as usize * w + ix as usize);
        }
    }
}

/// `out[c * rows + r] = a[r * cols + c]`: `a` ([rows, cols]) transposed into `out` ([cols, rows]),
/// in tiles of 16 x 16 so that the strided writes stay within a few cache lines (a plain double
/// loop writes each value to another line).
pub fn transpose(a: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    const T: usize = 16;
    assert!(a.len() >= rows * cols && out.len() >= rows * cols, "transpose: bad sizes");
    for r0 in (0..rows).step_by(T) {
        let r1 = (r0 + T).min(rows);
        for c0 in (0..cols).step_by(T) {
            let c1 = (c0 + T).min(cols);
            for r in r0..r1 {
                for (c, &v) in (c0..c1).zip(&a[r * cols + c0..r * cols + c1]) {
                    // SAFETY: c < cols and r < rows, so c * rows + r < rows * cols <= out.len().
                    unsafe { *out.get_unchecked_mut(c * rows + r) = v };
                }
            }
        }
    }
}

/// Error function from the Chebyshev fit of erfc (Numerical Recipes' `erfcc`),
/// fractional error below 1.2e-7 everywhere, evaluated in f64.
pub fn erf(x: f32) -> f32 {
    let z = (x as f64).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * (-z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
        .exp();
    let v = 1.0 - r;
    (if x >= 0.0 { v } else { -v }) as f32
}
