//! AdaRound's step over a layer's rounding variables: the soft-rounded weights and Adam.

use super::{GAMMA, ZETA};
use crate::kernels::vmath;

/// `σ(v)`.
#[inline(always)]
pub(super) fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + vmath::exp(-v))
}

/// The soft-rounded weight `W̃` of a rounding variable `v` with `s = σ(v)` over
/// `floor = ⌊W/Δ⌋` with encoding `(Δ, offset, steps)`, and its derivatives: `∂W̃/∂v`, `∂h/∂v`,
/// and `h`.
#[inline(always)]
pub(super) fn soft(s: f32, floor: f32, (d, o, qm): (f32, f32, f32)) -> (f32, f32, f32, f32) {
    let hr = s * (ZETA - GAMMA) + GAMMA;
    let h = vmath::clamp(hr, 0.0, 1.0);
    let q = floor + h - o;
    let wq = (vmath::clamp(q, 0.0, qm) + o) * d;
    let hm = if (0.0..=1.0).contains(&hr) { (ZETA - GAMMA) * s * (1.0 - s) } else { 0.0 };
    let dm = if (0.0..=qm).contains(&q) { d * hm } else { 0.0 };
    (wq, dm, hm, h)
}

/// Adam's constants for one step, its bias corrections folded into `step` (lr / (1 - β1^t))
/// and `c2` (1 / (1 - β2^t)).
pub(super) struct Adam {
    pub(super) b1: f32,
    pub(super) b2: f32,
    pub(super) eps: f32,
    pub(super) step: f32,
    pub(super) c2: f32,
}

/// One Adam step on a row of rounding variables sharing encoding `e`, from the reconstruction
/// gradient `grad` (with respect to the weights) and, with `reg = Some((λ, β))`, the
/// regulariser's; then `σ(v)` and the weights at the new values. Returns the sum of the
/// regulariser's terms `1 - |2h - 1|^β` before the step (0 without it).
///
/// The work goes block by block of [`BLOCK`] weights in three short passes (gradient, Adam, new
/// weights) through buffers on the stack: one long loop body chains exp, ln, sqrt and divisions
/// into a latency the processor cannot hide, while short ones overlap their iterations.
#[allow(clippy::too_many_arguments)]
pub(super) fn step_row(v: &mut [f32], sg: &mut [f32], floor: &[f32], m1: &mut [f32], m2: &mut [f32], grad: &[f32], wq: &mut [f32], e: (f32, f32, f32), reg: Option<(f32, f32)>, a: &Adam) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the processor has AVX-512F.
        return unsafe { step_row_avx512(v, sg, floor, m1, m2, grad, wq, e, reg, a) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2.
        return unsafe { step_row_avx2(v, sg, floor, m1, m2, grad, wq, e, reg, a) };
    }
    step_row_lanes(v, sg, floor, m1, m2, grad, wq, e, reg, a)
}

/// [`step_row_lanes`] in 8 lanes natively where the processor has AVX2. Without FMA (and Rust
/// does not fuse a multiply and an add by itself) every operation rounds as in 4 lanes: the
/// results are identical, which the tests check.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn step_row_avx2(v: &mut [f32], sg: &mut [f32], floor: &[f32], m1: &mut [f32], m2: &mut [f32], grad: &[f32], wq: &mut [f32], e: (f32, f32, f32), reg: Option<(f32, f32)>, a: &Adam) -> f32 {
    step_row_lanes(v, sg, floor, m1, m2, grad, wq, e, reg, a)
}

/// [`step_row_lanes`] in 16 lanes where the processor has AVX-512F, identical for the same
/// reason.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
fn step_row_avx512(v: &mut [f32], sg: &mut [f32], floor: &[f32], m1: &mut [f32], m2: &mut [f32], grad: &[f32], wq: &mut [f32], e: (f32, f32, f32), reg: Option<(f32, f32)>, a: &Adam) -> f32 {
    step_row_lanes(v, sg, floor, m1, m2, grad, wq, e, reg, a)
}

/// The body of [`step_row`], inlined into each target's version.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn step_row_lanes(v: &mut [f32], sg: &mut [f32], floor: &[f32], m1: &mut [f32], m2: &mut [f32], grad: &[f32], wq: &mut [f32], e: (f32, f32, f32), reg: Option<(f32, f32)>, a: &Adam) -> f32 {
    let (mut gb, mut tb) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
    let mut total = 0.0;
    let blocks = v.chunks_mut(BLOCK).zip(sg.chunks_mut(BLOCK)).zip(floor.chunks(BLOCK)).zip(m1.chunks_mut(BLOCK)).zip(m2.chunks_mut(BLOCK)).zip(grad.chunks(BLOCK)).zip(wq.chunks_mut(BLOCK));
    for ((((((v, sg), floor), m1), m2), grad), wq) in blocks {
        let n = v.len();
        let (sg, floor, m1, m2, grad, wq) = (&mut sg[..n], &floor[..n], &mut m1[..n], &mut m2[..n], &grad[..n], &mut wq[..n]);
        let (gb, tb) = (&mut gb[..n], &mut tb[..n]);
        if let Some((lam, beta)) = reg {
            for i in 0..n {
                let (_, dm, hm, h) = soft(sg[i], floor[i], e);
                // d/dh of λ (1 - |2h - 1|^β), with |u|^(β-1) as exp((β-1) ln|u|).
                let u = 2.0 * h - 1.0;
                let au = u.abs();
                let pw = if au > 0.0 { vmath::exp((beta - 1.0) * vmath::ln(au)) } else { 0.0 };
                tb[i] = 1.0 - pw * au;
                gb[i] = grad[i] * dm - lam * beta * pw * 2.0 * hm * if u < 0.0 { -1.0 } else { 1.0 };
            }
            total += vmath::sum(tb);
        } else {
            for i in 0..n {
                gb[i] = grad[i] * soft(sg[i], floor[i], e).1;
            }
        }
        for i in 0..n {
            let g = gb[i];
            m1[i] = a.b1 * m1[i] + (1.0 - a.b1) * g;
            m2[i] = a.b2 * m2[i] + (1.0 - a.b2) * g * g;
            v[i] -= a.step * m1[i] / ((m2[i] * a.c2).sqrt() + a.eps);
        }
        for i in 0..n {
            sg[i] = sigmoid(v[i]);
            wq[i] = soft(sg[i], floor[i], e).0;
        }
    }
    total
}

/// Weights per block of [`step_row`].
pub(super) const BLOCK: usize = 256;

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    /// The AVX2 and AVX-512 builds of the step give the same bits as the 4-lane one (on a
    /// processor with them).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn step_row_is_identical_in_8_and_16_lanes() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let mut rng = SplitMix(11);
        let n = 1000;
        let v0: Vec<f32> = rng.f32s(n).iter().map(|x| 4.0 * x).collect();
        let floor: Vec<f32> = (0..n).map(|i| (i % 17) as f32 - 8.0).collect();
        let grad: Vec<f32> = rng.f32s(n).iter().map(|x| 0.1 * x).collect();
        let a = Adam { b1: 0.9, b2: 0.999, eps: 1e-8, step: 1e-3 / 0.1, c2: 1.0 / 0.001 };
        for reg in [None, Some((0.01, 7.5))] {
            let run = |lanes: usize| {
                let (mut v, mut sg) = (v0.clone(), v0.iter().map(|&x| sigmoid(x)).collect::<Vec<_>>());
                let (mut m1, mut m2, mut wq) = (vec![0.01; n], vec![1e-4; n], vec![0.0; n]);
                let args = (&mut v, &mut sg, &floor, &mut m1, &mut m2, &grad, &mut wq);
                let round = match lanes {
                    16 => unsafe { step_row_avx512(args.0, args.1, args.2, args.3, args.4, args.5, args.6, (0.05, -3.0, 15.0), reg, &a) },
                    8 => unsafe { step_row_avx2(args.0, args.1, args.2, args.3, args.4, args.5, args.6, (0.05, -3.0, 15.0), reg, &a) },
                    _ => step_row_lanes(args.0, args.1, args.2, args.3, args.4, args.5, args.6, (0.05, -3.0, 15.0), reg, &a),
                };
                (round.to_bits(), [v, sg, m1, m2, wq].map(|x| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>()))
            };
            assert_eq!(run(8), run(4), "{reg:?}");
            if avx512 {
                assert_eq!(run(16), run(4), "{reg:?}");
            }
        }
    }
}
