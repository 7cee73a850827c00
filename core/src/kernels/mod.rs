//! Kernels: plain functions over slices and shapes. Each fast path has a naive twin used as
//! the reference in tests.

pub mod conv;
pub mod gemm;
pub mod int8;
pub mod pool;

pub use conv::{conv2d, conv2d_naive, ConvGeom};
pub use gemm::{dot, gemm, gemm_naive};

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
