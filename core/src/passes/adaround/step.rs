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

/// What the next step needs of one rounding variable, from `s = σ(v)`: the soft-rounded weight
/// `W̃`, `∂W̃/∂v`, and with `reg = Some((λ, β))` the regulariser's gradient with respect to `v`
/// and its term `1 - |2h - 1|^β` (both 0 without it).
#[inline(always)]
pub(super) fn prepare(s: f32, floor: f32, e: (f32, f32, f32), reg: Option<(f32, f32)>) -> (f32, f32, f32, f32) {
    let (wq, dm, hm, h) = soft(s, floor, e);
    let Some((lam, beta)) = reg else { return (wq, dm, 0.0, 0.0) };
    // d/dh of λ (1 - |2h - 1|^β), with |u|^(β-1) as exp((β-1) ln|u|).
    let u = 2.0 * h - 1.0;
    let au = u.abs();
    let pw = if au > 0.0 { vmath::exp((beta - 1.0) * vmath::ln(au)) } else { 0.0 };
    (wq, dm, lam * beta * pw * 2.0 * hm * if u < 0.0 { -1.0 } else { 1.0 }, 1.0 - pw * au)
}

/// [`prepare`] over a row of rounding variables `v` sharing encoding `e`: fills `wq`, `dm` and
/// `rg`, and returns the sum of the regulariser's terms (0 without it).
#[allow(clippy::too_many_arguments)]
pub(super) fn prepare_row(v: &[f32], floor: &[f32], wq: &mut [f32], dm: &mut [f32], rg: &mut [f32], e: (f32, f32, f32), reg: Option<(f32, f32)>) -> f32 {
    let mut total = 0.0;
    let mut tb = [0.0f32; BLOCK];
    for (i0, v) in (0..v.len()).step_by(BLOCK).zip(v.chunks(BLOCK)) {
        for (i, &vi) in v.iter().enumerate() {
            let (w, d, r, t) = prepare(sigmoid(vi), floor[i0 + i], e, reg);
            (wq[i0 + i], dm[i0 + i], rg[i0 + i], tb[i]) = (w, d, r, t);
        }
        total += vmath::sum(&tb[..v.len()]);
    }
    total
}

/// One Adam step on a row of rounding variables sharing encoding `e`, from the reconstruction
/// gradient `grad` (with respect to the weights), `∂W̃/∂v` in `dm` and, when `reg_now`, the
/// regulariser's gradient in `rg`; then, at the new values, the weights `wq` and what the next
/// step needs ([`prepare`] with `next`, the regulariser's `(λ, β)` of the next step). Returns
/// the sum of the regulariser's terms at the new values (0 without `next`).
///
/// The work goes block by block of [`BLOCK`] weights in three short passes (gradient, Adam, new
/// weights) through buffers on the stack: one long loop body chains exp, ln, sqrt and divisions
/// into a latency the processor cannot hide, while short ones overlap their iterations.
#[allow(clippy::too_many_arguments)]
pub(super) fn step_row(v: &mut [f32], floor: &[f32], m: (&mut [f32], &mut [f32]), grad: &[f32], out: (&mut [f32], &mut [f32], &mut [f32]), e: (f32, f32, f32), reg_now: bool, next: Option<(f32, f32)>, a: &Adam) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2.
        return unsafe { step_row_avx2(v, floor, m, grad, out, e, reg_now, next, a) };
    }
    step_row_lanes(v, floor, m, grad, out, e, reg_now, next, a)
}

/// [`step_row_lanes`] in 8 lanes natively where the processor has AVX2. Without FMA (and Rust
/// does not fuse a multiply and an add by itself) every operation rounds as in 4 lanes: the
/// results are identical, which the tests check.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn step_row_avx2(v: &mut [f32], floor: &[f32], m: (&mut [f32], &mut [f32]), grad: &[f32], out: (&mut [f32], &mut [f32], &mut [f32]), e: (f32, f32, f32), reg_now: bool, next: Option<(f32, f32)>, a: &Adam) -> f32 {
    step_row_lanes(v, floor, m, grad, out, e, reg_now, next, a)
}

/// The body of [`step_row`], inlined into each target's version.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn step_row_lanes(v: &mut [f32], floor: &[f32], (m1, m2): (&mut [f32], &mut [f32]), grad: &[f32], (wq, dm, rg): (&mut [f32], &mut [f32], &mut [f32]), e: (f32, f32, f32), reg_now: bool, next: Option<(f32, f32)>, a: &Adam) -> f32 {
    let (mut gb, mut tb) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
    let mut total = 0.0;
    let blocks = v.chunks_mut(BLOCK).zip(floor.chunks(BLOCK)).zip(m1.chunks_mut(BLOCK)).zip(m2.chunks_mut(BLOCK)).zip(grad.chunks(BLOCK)).zip(wq.chunks_mut(BLOCK)).zip(dm.chunks_mut(BLOCK)).zip(rg.chunks_mut(BLOCK));
    for (((((((v, floor), m1), m2), grad), wq), dm), rg) in blocks {
        let n = v.len();
        let (floor, m1, m2, grad, wq, dm, rg) = (&floor[..n], &mut m1[..n], &mut m2[..n], &grad[..n], &mut wq[..n], &mut dm[..n], &mut rg[..n]);
        let (gb, tb) = (&mut gb[..n], &mut tb[..n]);
        if reg_now {
            for i in 0..n {
                gb[i] = grad[i] * dm[i] - rg[i];
            }
        } else {
            for i in 0..n {
                gb[i] = grad[i] * dm[i];
            }
        }
        for i in 0..n {
            let g = gb[i];
            m1[i] = a.b1 * m1[i] + (1.0 - a.b1) * g;
            m2[i] = a.b2 * m2[i] + (1.0 - a.b2) * g * g;
            v[i] -= a.step * m1[i] / ((m2[i] * a.c2).sqrt() + a.eps);
        }
        if let Some(next) = next {
            for i in 0..n {
                (wq[i], dm[i], rg[i], tb[i]) = prepare(sigmoid(v[i]), floor[i], e, Some(next));
            }
            total += vmath::sum(tb);
        } else {
            for i in 0..n {
                let (w, d, _, _) = prepare(sigmoid(v[i]), floor[i], e, None);
                (wq[i], dm[i]) = (w, d);
            }
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

    /// The AVX2 build of the step gives the same bits as the 4-lane one (on a processor with AVX2).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn step_row_is_identical_in_8_lanes() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut rng = SplitMix(11);
        let n = 1000;
        let v0: Vec<f32> = rng.f32s(n).iter().map(|x| 4.0 * x).collect();
        let floor: Vec<f32> = (0..n).map(|i| (i % 17) as f32 - 8.0).collect();
        let grad: Vec<f32> = rng.f32s(n).iter().map(|x| 0.1 * x).collect();
        let a = Adam { b1: 0.9, b2: 0.999, eps: 1e-8, step: 1e-3 / 0.1, c2: 1.0 / 0.001 };
        for (reg_now, next) in [(false, None), (false, Some((0.01, 7.5))), (true, Some((0.01, 7.0)))] {
            let run = |avx: bool| {
                let mut v = v0.clone();
                let (mut m1, mut m2, mut wq, mut dm, mut rg) = (vec![0.01; n], vec![1e-4; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                prepare_row(&v, &floor, &mut wq, &mut dm, &mut rg, (0.05, -3.0, 15.0), reg_now.then_some((0.01, 8.0)));
                let (m, out) = ((&mut m1[..], &mut m2[..]), (&mut wq[..], &mut dm[..], &mut rg[..]));
                let round = if avx {
                    unsafe { step_row_avx2(&mut v, &floor, m, &grad, out, (0.05, -3.0, 15.0), reg_now, next, &a) }
                } else {
                    step_row_lanes(&mut v, &floor, m, &grad, out, (0.05, -3.0, 15.0), reg_now, next, &a)
                };
                (round.to_bits(), [v, m1, m2, wq, dm, rg].map(|x| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>()))
            };
            assert_eq!(run(true), run(false), "{reg_now} {next:?}");
        }
    }
}
