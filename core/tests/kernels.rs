//! Fast kernels against their naive references: proptest natively, and a seeded sweep that runs
//! both natively and in wasm32 (where the SIMD128 micro-kernel is the one under test).

use qplay_core::kernels::gemm::{gemm_add, gemm_add_bt, gemm_nt};
use qplay_core::kernels::{conv2d, conv2d_naive, gemm, gemm_naive, ConvGeom};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// Deterministic generator, so wasm and native see the same cases.
use qplay_core::rng::SplitMix as Rng;

/// Float kernels may sum in a different order: allow 1e-5 of the magnitude of the terms.
fn check_close(what: &str, fast: &[f32], naive: &[f32], k_terms: usize) {
    assert_eq!(fast.len(), naive.len());
    let tol = 1e-5 * (k_terms.max(1) as f32);
    for (i, (a, b)) in fast.iter().zip(naive).enumerate() {
        assert!((a - b).abs() <= tol, "{what}: element {i}: fast {a} vs naive {b} (tol {tol})");
    }
}

fn check_gemm(m: usize, n: usize, k: usize, seed: u64) {
    let mut r = Rng(seed);
    let a = r.f32s(m * k);
    let b = r.f32s(k * n);
    let mut c1 = vec![f32::NAN; m * n];
    let mut c2 = vec![0.0; m * n];
    gemm(m, n, k, &a, &b, &mut c1);
    gemm_naive(m, n, k, &a, &b, &mut c2);
    check_close(&format!("gemm {m}x{n}x{k}"), &c1, &c2, k);
    // a * (b^T)^T with gemm_nt: b transposed to n x k first.
    let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
    let mut c3 = vec![0.0; m * n];
    gemm_nt(m, n, k, &a, &bt, &mut c3);
    check_close(&format!("gemm_nt {m}x{n}x{k}"), &c3, &c2, k);
    // gemm_add_bt packs b from its transpose: the same products in the same order as gemm.
    let mut c4 = vec![0.0; m * n];
    gemm_add_bt(m, n, k, &a, &bt, &mut c4);
    assert!(c4.iter().zip(&c1).all(|(x, y)| x.to_bits() == y.to_bits()), "gemm_add_bt {m}x{n}x{k} differs from gemm");
    // Both accumulate: a second call doubles the product.
    gemm_nt(m, n, k, &a, &bt, &mut c3);
    gemm_add(m, n, k, &a, &b, &mut c1);
    let twice: Vec<f32> = c2.iter().map(|v| 2.0 * v).collect();
    check_close(&format!("gemm_nt twice {m}x{n}x{k}"), &c3, &twice, 2 * k);
    check_close(&format!("gemm_add {m}x{n}x{k}"), &c1, &twice, 2 * k);
}

#[allow(clippy::too_many_arguments)]
fn check_conv(g: ConvGeom, with_bias: bool, seed: u64) {
    let Some((oh, ow)) = g.out_hw() else { return };
    let mut r = Rng(seed);
    let x = r.f32s(g.c_in * g.h * g.w);
    let w = r.f32s(g.c_out * (g.c_in / g.group) * g.kh * g.kw);
    let b = r.f32s(g.c_out);
    let bias = with_bias.then_some(b.as_slice());
    let mut y1 = vec![f32::NAN; g.c_out * oh * ow];
    let mut y2 = vec![0.0; g.c_out * oh * ow];
    let mut scratch = vec![f32::NAN; 7]; // dirty scratch must not leak into results
    conv2d(&g, &x, &w, bias, &mut y1, &mut scratch);
    conv2d_naive(&g, &x, &w, bias, &mut y2);
    check_close(&format!("{g:?}"), &y1, &y2, (g.c_in / g.group) * g.kh * g.kw + 1);
}

fn random_geom(r: &mut Rng) -> ConvGeom {
    let depthwise = r.below(3) == 0;
    let group = if depthwise { 1 + r.below(6) } else { [1, 1, 2, 3][r.below(4)] };
    let (c_in, c_out) = if depthwise { (group, group) } else { (group * (1 + r.below(5)), group * (1 + r.below(5))) };
    let k = [1, 1, 2, 3, 3, 5][r.below(6)];
    ConvGeom {
        c_in,
        h: 1 + r.below(12),
        w: 1 + r.below(12),
        c_out,
        kh: k,
        kw: [k, 1 + r.below(3)][r.below(2)],
        stride: [1 + r.below(2), 1 + r.below(3)],
        dilation: [1 + r.below(2), 1 + r.below(2)],
        pads: [r.below(3), r.below(3), r.below(3), r.below(3)],
        group,
    }
}

#[test]
fn gemm_matches_naive_on_seeded_sizes() {
    let mut r = Rng(1);
    for case in 0..300 {
        let (m, n, k) = (1 + r.below(19), 1 + r.below(40), r.below(70));
        check_gemm(m, n, k, case);
    }
    // Sizes that cross the KC/NC blocking.
    check_gemm(9, 530, 300, 7);
    check_gemm(4, 8, 257, 8);
}

#[test]
fn conv_matches_naive_on_seeded_geometries() {
    let mut r = Rng(2);
    for case in 0..400 {
        let g = random_geom(&mut r);
        check_conv(g, case % 2 == 0, case);
    }
}

/// Depthwise convolutions on maps wide enough for the row kernel (48 columns or more)
/// and with more than 16 channels (the channels-last kernel's blocks), against the naive loop.
#[test]
fn depthwise_sweep_wide_maps_and_many_channels() {
    let mut r = Rng(5);
    for case in 0..60 {
        let wide = case % 2 == 0;
        let c = if wide { 1 + r.below(20) } else { 15 + r.below(30) };
        let k = [3, 5][r.below(2)];
        let (h, w) = if wide { (14 + r.below(30), 48 + r.below(30)) } else { (1 + r.below(9), 1 + r.below(9)) };
        let pad = r.below(3);
        let g = ConvGeom { c_in: c, h, w, c_out: c, kh: k, kw: k, stride: [1 + r.below(2), 1 + r.below(2)], dilation: [1, 1], pads: [pad, r.below(3), pad, r.below(3)], group: c };
        if g.out_hw().is_some() {
            check_conv(g, case % 3 == 0, case as u64);
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn gemm_agrees(m in 1usize..24, n in 1usize..70, k in 0usize..300, seed in any::<u64>()) {
            check_gemm(m, n, k, seed);
        }

        #[test]
        fn conv_agrees(
            group in 1usize..4, cg in 1usize..4, mg in 1usize..4, depthwise in any::<bool>(),
            h in 1usize..14, w in 1usize..14, kh in 1usize..6, kw in 1usize..6,
            sh in 1usize..4, sw in 1usize..4, dh in 1usize..3, dw in 1usize..3,
            pads in proptest::array::uniform4(0usize..4), bias in any::<bool>(), seed in any::<u64>(),
        ) {
            let (c_in, c_out) = if depthwise { (group * 2, group * 2) } else { (group * cg, group * mg) };
            let group = if depthwise { group * 2 } else { group };
            let g = ConvGeom { c_in, h, w, c_out, kh, kw, stride: [sh, sw], dilation: [dh, dw], pads, group };
            check_conv(g, bias, seed);
        }
    }
}

#[test]
fn dot_matches_sequential_sum() {
    let mut r = Rng(3);
    for n in 0..100 {
        let (a, b) = (r.f32s(n), r.f32s(n));
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let got = qplay_core::kernels::dot(&a, &b);
        assert!((got - want).abs() <= 1e-5 * n.max(1) as f32, "n={n}: {got} vs {want}");
    }
}

#[test]
fn transpose_matches_its_definition() {
    let mut r = Rng(5);
    for (rows, cols) in [(0, 5), (1, 1), (1, 40), (40, 1), (15, 17), (16, 16), (33, 70), (96, 49)] {
        let a = r.f32s(rows * cols);
        let mut out = vec![f32::NAN; rows * cols];
        qplay_core::kernels::transpose(&a, rows, cols, &mut out);
        for i in 0..rows {
            for j in 0..cols {
                assert_eq!(out[j * rows + i].to_bits(), a[i * cols + j].to_bits(), "{rows}x{cols} at ({i}, {j})");
            }
        }
    }
}

mod int8 {
    use super::Rng;
    use qplay_core::kernels::int8::{depthwise_nhwc, depthwise_nhwc_naive, depthwise_requant, dot_gemm, dot_gemm_naive, dot_gemm_requant, dot_gemm_rows, padded, requantize, DwGeom, PackedWeights, Requant};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Activations in [-255, 255] (q - zero point), weights in [-128, 127].
    fn ints(r: &mut Rng, n: usize, lo: i32, hi: i32) -> Vec<i16> {
        (0..n).map(|_| (lo + r.below((hi - lo + 1) as usize) as i32) as i16).collect()
    }

    /// Random requantization parameters of `m` channels, with per-channel bounds (a fused clip)
    /// or shared ones.
    fn requant(r: &mut Rng, m: usize) -> Requant {
        let f = |r: &mut Rng, lo: f32, hi: f32| (0..m).map(|_| lo + (hi - lo) * r.below(1 << 20) as f32 / (1 << 20) as f32).collect::<Vec<f32>>();
        let shared = r.below(2) == 0;
        let lo: Vec<i32> = (0..m).map(|j| if shared || j % 3 == 0 { 0 } else { r.below(40) as i32 }).collect();
        let hi: Vec<i32> = (0..m).map(|j| if shared || j % 3 == 0 { 255 } else { 200 + r.below(56) as i32 }).collect();
        let bias: Vec<i32> = (0..m).map(|_| r.below(1 << 16) as i32 - (1 << 15)).collect();
        let zp = r.below(256) as i32 - 128;
        // Centered bounds: the grid indices shifted by the zero point.
        let (lo, hi): (Vec<i32>, Vec<i32>) = (lo.iter().map(|v| v - zp).collect(), hi.iter().map(|v| v - zp).collect());
        Requant::new(&f(r, 1e-5, 3e-3), &bias, &f(r, -130.0, 130.0), &lo, &hi)
    }

    pub fn check_dot_gemm(p: usize, m: usize, k: usize, seed: u64) {
        check_dot_gemm_weights(p, m, k, seed, (-128, 127));
    }

    /// [`check_dot_gemm`] with weights in `lo..=hi` (4-bit ones are stored two per byte).
    pub fn check_dot_gemm_weights(p: usize, m: usize, k: usize, seed: u64, (lo, hi): (i32, i32)) {
        let mut r = Rng(seed);
        let kp = padded(k);
        let mut x = ints(&mut r, p * kp, -255, 255);
        let mut w = ints(&mut r, m * kp, lo, hi);
        for row in x.chunks_mut(kp).chain(w.chunks_mut(kp)) {
            row[k..].fill(0);
        }
        let (mut a, mut b) = (vec![7; p * m], vec![0; p * m]);
        dot_gemm(p, m, kp, &x, &w, &mut a);
        dot_gemm_naive(p, m, kp, &x, &w, &mut b);
        assert_eq!(a, b, "dot_gemm {p}x{m}x{k}");
        // The portable kernel (what targets without vectors run) too.
        let mut c = vec![7; p * m];
        dot_gemm_rows(p, m, kp, &x, &w, &mut c);
        assert_eq!(c, b, "dot_gemm_rows {p}x{m}x{k}");
        // Fused requantization: the same as the naive sums requantized by the scalar loop.
        let rq = requant(&mut r, m);
        let mut want = vec![0i16; p * m];
        requantize(&b, &rq, &mut want);
        let mut got = vec![9i16; p * m];
        let packed = PackedWeights::new(m, kp, &w);
        dot_gemm_requant(p, &x, &packed, &rq, &mut got);
        assert_eq!(got, want, "dot_gemm_requant {p}x{m}x{k}");
        #[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64"))]
        {
            let four = w.iter().all(|v| (-8..=7).contains(v));
            assert_eq!(packed.is_4bit(), four, "4-bit weights, and only they, are packed two per byte");
            let base = m.div_ceil(8) * 8 * kp * if four { 1 } else { 4 } / 2;
            // The relaxed build also keeps the weights as i8 in groups of 4, and a sum per channel.
            #[cfg(all(target_arch = "wasm32", feature = "relaxed"))]
            let base = base + m.div_ceil(8) * 8 * (kp + 4);
            assert_eq!(packed.bytes(), base);
        }
    }

    pub fn check_depthwise(g: DwGeom, seed: u64) {
        let mut r = Rng(seed);
        let x = ints(&mut r, g.h * g.w * g.c, -255, 255);
        let w = ints(&mut r, g.kh * g.kw * g.c, -128, 127);
        let (mut a, mut b) = (vec![7; g.oh * g.ow * g.c], vec![0; g.oh * g.ow * g.c]);
        depthwise_nhwc(&g, &x, &w, &mut a);
        depthwise_nhwc_naive(&g, &x, &w, &mut b);
        assert_eq!(a, b, "{g:?}");
        let rq = requant(&mut r, g.c);
        let mut want = vec![0i16; b.len()];
        requantize(&b, &rq, &mut want);
        let mut got = vec![9i16; b.len()];
        depthwise_requant(&g, 1, &x, &w, &rq, &mut got);
        assert_eq!(got, want, "depthwise_requant {g:?}");
        // Two images in a row: each as on its own.
        let x2: Vec<i16> = x.iter().rev().copied().collect();
        let mut b2 = vec![0; b.len()];
        depthwise_nhwc_naive(&g, &x2, &w, &mut b2);
        let mut want2 = want.clone();
        want2.resize(2 * b.len(), 0);
        requantize(&b2, &rq, &mut want2[b.len()..]);
        let mut got2 = vec![9i16; 2 * b.len()];
        depthwise_requant(&g, 2, &[x, x2].concat(), &w, &rq, &mut got2);
        assert_eq!(got2, want2, "depthwise_requant of two images {g:?}");
    }

    pub fn dw_geom(r: &mut Rng) -> Option<DwGeom> {
        let (h, w, k) = (1 + r.below(9), 1 + r.below(9), [1, 3, 5][r.below(3)]);
        let (stride, dilation) = ([1 + r.below(2), 1 + r.below(2)], [1 + r.below(2), 1]);
        let pads = [r.below(3), r.below(3), r.below(3), r.below(3)];
        let eh = (k - 1) * dilation[0] + 1;
        let ew = (k - 1) * dilation[1] + 1;
        if h + pads[0] + pads[2] < eh || w + pads[1] + pads[3] < ew {
            return None;
        }
        let oh = (h + pads[0] + pads[2] - eh) / stride[0] + 1;
        let ow = (w + pads[1] + pads[3] - ew) / stride[1] + 1;
        Some(DwGeom { h, w, c: 1 + r.below(20), oh, ow, kh: k, kw: k, stride, dilation, pads })
    }

    #[test]
    fn dot_gemm_is_bit_exact_on_seeded_sizes() {
        let mut r = Rng(11);
        for case in 0..300 {
            check_dot_gemm(1 + r.below(9), 1 + r.below(11), 1 + r.below(300), case);
        }
        check_dot_gemm(3, 5, 4608, 1); // long K: sums stay exact in i32
    }

    /// Weights of 4 bits (their range, and one sign only), unpacked from nibbles in the kernel.
    #[test]
    fn four_bit_weights_are_bit_exact() {
        let mut r = Rng(13);
        for case in 0..200 {
            let range = [(-8, 7), (-8, -1), (0, 7)][case as usize % 3];
            check_dot_gemm_weights(1 + r.below(9), 1 + r.below(19), 1 + r.below(300), case, range);
        }
    }

    #[test]
    fn depthwise_is_bit_exact_on_seeded_geometries() {
        let mut r = Rng(12);
        for case in 0..300 {
            if let Some(g) = dw_geom(&mut r) {
                check_depthwise(g, case);
            }
        }
    }

    /// The requantization against its definition written with the standard library's rounding:
    /// add the integer bias, scale, add, clamp to the channel's bounds, round half to even.
    #[test]
    fn requantize_rounds_half_to_even_within_bounds() {
        let mut r = Rng(13);
        let m = 13;
        let f = |r: &mut Rng, lo: f32, hi: f32| (0..m).map(|_| lo + (hi - lo) * r.below(1 << 20) as f32 / (1 << 20) as f32).collect::<Vec<f32>>();
        let (mut mult, mut add) = (f(&mut r, 1e-5, 3e-3), f(&mut r, -130.0, 130.0));
        let lo: Vec<i32> = (0..m).map(|j| if j % 2 == 0 { 0 } else { r.below(40) as i32 }).collect();
        let hi: Vec<i32> = (0..m).map(|j| if j % 2 == 0 { 255 } else { 200 + r.below(56) as i32 }).collect();
        // Exact half steps: acc * 0.5 + 0.0 lands on k + 0.5 for odd acc.
        (mult[0], add[0], mult[1], add[1]) = (0.5, 0.0, 0.25, 100.5);
        let mut bias: Vec<i32> = (0..m).map(|_| r.below(2001) as i32 - 1000).collect();
        (bias[0], bias[1]) = (0, 0);
        let rq = Requant::new(&mult, &bias, &add, &lo, &hi);
        let rows = 400;
        let mut acc: Vec<i32> = (0..rows * m).map(|_| r.below(1 << 20) as i32 - (1 << 19)).collect();
        for (i, a) in acc.iter_mut().enumerate().take(20 * m) {
            *a = (i / m) as i32 * 2 + 1;
        }
        let mut got = vec![0i16; rows * m];
        requantize(&acc, &rq, &mut got);
        for (i, (&a, &g)) in acc.iter().zip(&got).enumerate() {
            let j = i % m;
            let want = ((a + bias[j]) as f32 * mult[j] + add[j]).clamp(lo[j] as f32, hi[j] as f32).round_ties_even() as i32;
            assert_eq!(g as i32, want, "acc {a}, channel {j}");
        }
        // 3 * 0.5 = 1.5 -> 2 and 5 * 0.5 = 2.5 -> 2; 0.25 * 2 + 100.5 = 101.0, 0.25 * 6 + 100.5 = 102.0.
        assert_eq!((got[m] as i32, got[2 * m] as i32), (2, 2));
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod prop {
        use proptest::prelude::*;
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]
            #[test]
            fn dot_gemm_agrees(p in 1usize..12, m in 1usize..12, k in 1usize..200, seed in any::<u64>()) {
                super::check_dot_gemm(p, m, k, seed);
            }
            #[test]
            fn depthwise_agrees(seed in any::<u64>()) {
                let mut r = super::Rng(seed);
                if let Some(g) = super::dw_geom(&mut r) {
                    super::check_depthwise(g, seed);
                }
            }
        }
    }
}
