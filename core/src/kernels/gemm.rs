//! f32 matrix multiply `C = A * B` (row-major, A: m x k, B: k x n, C: m x n).
//!
//! Blocked over k (`KC`) and n (`NC`), `b` packed into panels, 4 x 8 register blocks; the micro-kernel is explicit
//! SIMD128 on wasm32, 4 x 16 in AVX on x86-64 processors that have it, and plain Rust (auto-vectorised)
//! elsewhere, all with the same bits. [`gemm_naive`] is the reference.

const MR: usize = 4;
const NR: usize = 8;
const KC: usize = 256;
const NC: usize = 512;

/// Dot product with 8 independent partial sums (vectorises on every target); the order of
/// additions differs from a sequential sum by float rounding only.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// Reference triple loop: `c = a * b`.
pub fn gemm_naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f32;
            for p in 0..k {
                s += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = s;
        }
    }
}

/// `c = a * b`. Panics if a slice is shorter than its dimensions say (callers size them).
///
/// Each `KC x NC` block of `b` is first packed into `NR`-wide column panels stored k-major, so
/// the micro-kernel streams `b` contiguously whatever `n` is; `a` is read in place.
pub fn gemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(c.len() >= m * n, "gemm: slice too short");
    c[..m * n].fill(0.0);
    gemm_add(m, n, k, a, b, c);
}

/// `c += a * b`, as [`gemm`].
pub fn gemm_add(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm: slice too short");
    blocked(m, n, k, a, B::Rows(b), c);
}

/// `c += a * b` with `b` (k x n) given as its transpose `bt` (n x k, row-major): the panels are
/// packed from `bt` directly (weight gradients `dy * colsᵀ`, with no transposed copy).
pub fn gemm_add_bt(m: usize, n: usize, k: usize, a: &[f32], bt: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && bt.len() >= k * n && c.len() >= m * n, "gemm: slice too short");
    blocked(m, n, k, a, B::Transposed(bt), c);
}

/// The right operand of [`blocked`]: `b` (k x n) row-major, or its transpose (n x k) row-major.
#[derive(Clone, Copy)]
enum B<'a> {
    Rows(&'a [f32]),
    Transposed(&'a [f32]),
}

/// `c += a * b` in `KC x NC` blocks: every block of `b` packed into `NR`-wide panels (the last
/// one padded with zeros), every `MR x NR` block of `c` from [`micro_4x8`]. Blocks cut by the
/// edges of `c` run the same micro-kernel into a scratch block (missing rows of `a` repeat its
/// first row) and add only their part, so every element sums the same products in the same
/// order wherever it lies. Natively with AVX, pairs of whole panels go through
/// [`micro_4x16_avx`], which forms every sum in that same order: the results are identical.
fn blocked(m: usize, n: usize, k: usize, a: &[f32], b: B, c: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the processor has AVX.
        return unsafe { blocked_avx(m, n, k, a, b, c) };
    }
    blocked_body(m, n, k, a, b, c, false)
}

/// [`blocked_body`] compiled for AVX, with the 4 x 16 micro-kernel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn blocked_avx(m: usize, n: usize, k: usize, a: &[f32], b: B, c: &mut [f32]) {
    blocked_body(m, n, k, a, b, c, true)
}

/// The body of [`blocked`]; `wide` (only where the processor has AVX) takes whole panels two
/// at a time.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn blocked_body(m: usize, n: usize, k: usize, a: &[f32], b: B, c: &mut [f32], wide: bool) {
    if k == 0 || m == 0 || n == 0 {
        return;
    }
    PACK.with(|cell| {
        let mut pack = cell.borrow_mut();
        let mut j0 = 0;
        while j0 < n {
            let nc = NC.min(n - j0);
            let mut k0 = 0;
            while k0 < k {
                let kc = KC.min(k - k0);
                pack_b(b, n, k, (k0, kc), (j0, nc), &mut pack);
                for i in (0..m).step_by(MR) {
                    let rows = MR.min(m - i);
                    let a_rows: [&[f32]; MR] = core::array::from_fn(|r| &a[(i + if r < rows { r } else { 0 }) * k + k0..][..kc]);
                    let mut p = 0;
                    while p * NR < nc {
                        let j = j0 + p * NR;
                        let cols = NR.min(j0 + nc - j);
                        #[cfg(target_arch = "x86_64")]
                        if wide && rows == MR && j + 2 * NR <= j0 + nc {
                            let c_rows: [&mut [f32]; MR] = split_rows(&mut c[i * n + j..], n, 2 * NR);
                            // SAFETY: `wide` only where the processor has AVX.
                            unsafe { micro_4x16_avx(kc, a_rows, &pack[p * kc * NR..(p + 2) * kc * NR], c_rows) };
                            p += 2;
                            continue;
                        }
                        let panel = &pack[p * kc * NR..(p + 1) * kc * NR];
                        if rows == MR && cols == NR {
                            let c_rows: [&mut [f32]; MR] = split_rows(&mut c[i * n + j..], n, NR);
                            micro_4x8(kc, a_rows, panel, c_rows);
                        } else {
                            let mut tmp = [[0.0f32; NR]; MR];
                            micro_4x8(kc, a_rows, panel, tmp.each_mut().map(|r| &mut r[..]));
                            for (r, t) in tmp.iter().enumerate().take(rows) {
                                for (cv, tv) in c[(i + r) * n + j..][..cols].iter_mut().zip(t) {
                                    *cv += tv;
                                }
                            }
                        }
                        p += 1;
                    }
                }
                k0 += kc;
            }
            j0 += nc;
        }
    });
}

/// The first `width` values of `MR` rows `ld` apart, starting at `c[0]`.
fn split_rows(c: &mut [f32], ld: usize, width: usize) -> [&mut [f32]; MR] {
    let (r0, rest) = c.split_at_mut(ld);
    let (r1, rest) = rest.split_at_mut(ld);
    let (r2, r3) = rest.split_at_mut(ld);
    [&mut r0[..width], &mut r1[..width], &mut r2[..width], &mut r3[..width]]
}

/// `c += a * b^T` with `a` m x k and `b` n x k, both row-major: every element is a dot product of
/// two contiguous rows, so neither operand is transposed or packed (weight gradients, where k is
/// the long pixel axis, and matrix products by a weight stored [n, k]). 4 x 2 blocks of rows
/// share their loads; the rest are single [`dot`]s.
pub fn gemm_nt(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= n * k && c.len() >= m * n, "gemm_nt: slice too short");
    let row = |s: &[f32], r: usize| -> *const f32 { s[r * k..(r + 1) * k].as_ptr() };
    let mut i = 0;
    while i + 4 <= m {
        let mut j = 0;
        while j + 2 <= n {
            // SAFETY: rows i..i+4 of a and j..j+2 of b hold k values each (length checks above).
            let v = unsafe { dot_4x2(k, [row(a, i), row(a, i + 1), row(a, i + 2), row(a, i + 3)], [row(b, j), row(b, j + 1)]) };
            for (r, pair) in v.iter().enumerate() {
                c[(i + r) * n + j] += pair[0];
                c[(i + r) * n + j + 1] += pair[1];
            }
            j += 2;
        }
        if j < n {
            for r in i..i + 4 {
                c[r * n + j] += dot(&a[r * k..(r + 1) * k], &b[j * k..(j + 1) * k]);
            }
        }
        i += 4;
    }
    for r in i..m {
        for j in 0..n {
            c[r * n + j] += dot(&a[r * k..(r + 1) * k], &b[j * k..(j + 1) * k]);
        }
    }
}

/// The 8 dot products of 4 rows `a` with 2 rows `b`, `k` values each, in 4 lanes.
///
/// # Safety
/// Every pointer must be valid for reading `k` floats.
#[inline(always)]
unsafe fn dot_4x2(k: usize, a: [*const f32; 4], b: [*const f32; 2]) -> [[f32; 2]; 4] {
    let mut acc = [[[0.0f32; 4]; 2]; 4];
    let full = k / 4 * 4;
    let mut p = 0;
    while p < full {
        let bv: [[f32; 4]; 2] = unsafe { [*(b[0].add(p) as *const [f32; 4]), *(b[1].add(p) as *const [f32; 4])] };
        for (r, ar) in a.iter().enumerate() {
            let av = unsafe { *(ar.add(p) as *const [f32; 4]) };
            for (jj, bj) in bv.iter().enumerate() {
                for l in 0..4 {
                    acc[r][jj][l] += av[l] * bj[l];
                }
            }
        }
        p += 4;
    }
    let mut out = [[0.0f32; 2]; 4];
    for r in 0..4 {
        for jj in 0..2 {
            let mut s = (acc[r][jj][0] + acc[r][jj][2]) + (acc[r][jj][1] + acc[r][jj][3]);
            for q in full..k {
                s += unsafe { *a[r].add(q) * *b[jj].add(q) };
            }
            out[r][jj] = s;
        }
    }
    out
}

thread_local! {
    static PACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Packs rows `k0..k0 + kc` x columns `j0..j0 + nc` of `b` (k x n) into panels of NR columns,
/// each stored as kc consecutive rows of NR values; the last panel is padded with zeros.
fn pack_b(b: B, n: usize, k: usize, (k0, kc): (usize, usize), (j0, nc): (usize, usize), out: &mut Vec<f32>) {
    out.clear();
    out.resize(nc.div_ceil(NR) * NR * kc, 0.0);
    for (panel, j) in out.chunks_exact_mut(kc * NR).zip((j0..j0 + nc).step_by(NR)) {
        let cols = NR.min(j0 + nc - j);
        let rows = panel.chunks_exact_mut(NR);
        match b {
            // Whole panels by fixed-size copies (two vector moves, where a slice copy of a
            // run-time length is a call).
            B::Rows(b) if cols == NR => {
                for (row, src) in rows.zip(b[k0 * n + j..].chunks(n)) {
                    let src: &[f32; NR] = src[..NR].try_into().expect("NR values");
                    row.copy_from_slice(src);
                }
            }
            B::Rows(b) => {
                for (row, src) in rows.zip(b[k0 * n + j..].chunks(n)) {
                    row[..cols].copy_from_slice(&src[..cols]);
                }
            }
            B::Transposed(bt) if cols == NR => {
                let src: [&[f32]; NR] = core::array::from_fn(|jj| &bt[(j + jj) * k + k0..][..kc]);
                for (p, row) in rows.enumerate() {
                    let row: &mut [f32; NR] = row.try_into().expect("NR values");
                    *row = core::array::from_fn(|jj| src[jj][p]);
                }
            }
            B::Transposed(bt) => {
                for jj in 0..cols {
                    for (p, &v) in bt[(j + jj) * k + k0..][..kc].iter().enumerate() {
                        panel[p * NR + jj] = v;
                    }
                }
            }
        }
    }
}

/// `c[r][j] += Σ_p a[r][p] * panel[p][j]` for r < MR, j < NR, p < kc (each sum formed from zero
/// in p order, then added).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
fn micro_4x8(kc: usize, a: [&[f32]; MR], panel: &[f32], c: [&mut [f32]; MR]) {
    let [a0, a1, a2, a3] = a.map(|r| &r[..kc]);
    let mut acc = [[0.0f32; NR]; MR];
    for (brow, (((&x0, &x1), &x2), &x3)) in panel[..kc * NR].chunks_exact(NR).zip(a0.iter().zip(a1).zip(a2).zip(a3)) {
        for (row, av) in acc.iter_mut().zip([x0, x1, x2, x3]) {
            for j in 0..NR {
                row[j] += av * brow[j];
            }
        }
    }
    for (row, crow) in acc.iter().zip(c) {
        for j in 0..NR {
            crow[j] += row[j];
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn micro_4x8(kc: usize, a: [&[f32]; MR], panel: &[f32], c: [&mut [f32]; MR]) {
    use core::arch::wasm32::*;
    assert!(a.iter().all(|r| r.len() >= kc) && panel.len() >= kc * NR && c.iter().all(|r| r.len() >= NR));
    let z = f32x4_splat(0.0);
    let (mut c00, mut c01, mut c10, mut c11) = (z, z, z, z);
    let (mut c20, mut c21, mut c30, mut c31) = (z, z, z, z);
    let (a0, a1, a2, a3) = (a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr());
    let b = panel.as_ptr();
    // SAFETY: p < kc, within every length asserted above.
    unsafe {
        for p in 0..kc {
            let bp = b.add(p * NR);
            let b0 = v128_load(bp as *const v128);
            let b1 = v128_load(bp.add(4) as *const v128);
            let x = f32x4_splat(*a0.add(p));
            c00 = f32x4_add(c00, f32x4_mul(x, b0));
            c01 = f32x4_add(c01, f32x4_mul(x, b1));
            let x = f32x4_splat(*a1.add(p));
            c10 = f32x4_add(c10, f32x4_mul(x, b0));
            c11 = f32x4_add(c11, f32x4_mul(x, b1));
            let x = f32x4_splat(*a2.add(p));
            c20 = f32x4_add(c20, f32x4_mul(x, b0));
            c21 = f32x4_add(c21, f32x4_mul(x, b1));
            let x = f32x4_splat(*a3.add(p));
            c30 = f32x4_add(c30, f32x4_mul(x, b0));
            c31 = f32x4_add(c31, f32x4_mul(x, b1));
        }
        for (cp, (v0, v1)) in c.into_iter().zip([(c00, c01), (c10, c11), (c20, c21), (c30, c31)]) {
            let cp = cp.as_mut_ptr();
            v128_store(cp as *mut v128, f32x4_add(v128_load(cp as *const v128), v0));
            v128_store(cp.add(4) as *mut v128, f32x4_add(v128_load(cp.add(4) as *const v128), v1));
        }
    }
}

/// [`micro_4x8`] over two adjacent panels (`pair`, 2 x kc x NR) into 16 columns of `c`, in AVX:
/// eight 8-lane accumulators, twice the lanes of the portable kernel's eight 4-lane ones in
/// flight. Multiplies and adds stay separate (no FMA), so every sum rounds as in 4 x 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn micro_4x16_avx(kc: usize, a: [&[f32]; MR], pair: &[f32], c: [&mut [f32]; MR]) {
    use std::arch::x86_64::*;
    assert!(a.iter().all(|r| r.len() >= kc) && pair.len() >= 2 * kc * NR && c.iter().all(|r| r.len() >= 2 * NR));
    let z = _mm256_setzero_ps();
    let (mut c00, mut c01, mut c10, mut c11) = (z, z, z, z);
    let (mut c20, mut c21, mut c30, mut c31) = (z, z, z, z);
    let (a0, a1, a2, a3) = (a[0].as_ptr(), a[1].as_ptr(), a[2].as_ptr(), a[3].as_ptr());
    let (p0, p1) = (pair.as_ptr(), pair[kc * NR..].as_ptr());
    // SAFETY: p < kc, within every length asserted above.
    unsafe {
        for p in 0..kc {
            let b0 = _mm256_loadu_ps(p0.add(p * NR));
            let b1 = _mm256_loadu_ps(p1.add(p * NR));
            let x = _mm256_broadcast_ss(&*a0.add(p));
            c00 = _mm256_add_ps(c00, _mm256_mul_ps(x, b0));
            c01 = _mm256_add_ps(c01, _mm256_mul_ps(x, b1));
            let x = _mm256_broadcast_ss(&*a1.add(p));
            c10 = _mm256_add_ps(c10, _mm256_mul_ps(x, b0));
            c11 = _mm256_add_ps(c11, _mm256_mul_ps(x, b1));
            let x = _mm256_broadcast_ss(&*a2.add(p));
            c20 = _mm256_add_ps(c20, _mm256_mul_ps(x, b0));
            c21 = _mm256_add_ps(c21, _mm256_mul_ps(x, b1));
            let x = _mm256_broadcast_ss(&*a3.add(p));
            c30 = _mm256_add_ps(c30, _mm256_mul_ps(x, b0));
            c31 = _mm256_add_ps(c31, _mm256_mul_ps(x, b1));
        }
        for (cp, (v0, v1)) in c.into_iter().zip([(c00, c01), (c10, c11), (c20, c21), (c30, c31)]) {
            let cp = cp.as_mut_ptr();
            _mm256_storeu_ps(cp, _mm256_add_ps(_mm256_loadu_ps(cp), v0));
            _mm256_storeu_ps(cp.add(NR), _mm256_add_ps(_mm256_loadu_ps(cp.add(NR)), v1));
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    /// The AVX path (pairs of panels in 4 x 16) gives the bits of the portable one, over shapes
    /// with ragged rows and columns, several k blocks and several n blocks.
    #[test]
    fn avx_blocks_are_identical_to_the_portable_ones() {
        if !std::arch::is_x86_feature_detected!("avx") {
            return;
        }
        let mut rng = SplitMix(17);
        for (m, n, k) in [(4, 16, 1), (5, 17, 3), (8, 40, 64), (13, 529, 300), (32, 1100, 513), (3, 24, 7)] {
            let a = rng.f32s(m * k);
            let b = rng.f32s(k * n);
            let c0 = rng.f32s(m * n);
            let (mut wide, mut narrow) = (c0.clone(), c0.clone());
            unsafe { blocked_avx(m, n, k, &a, B::Rows(&b), &mut wide) };
            blocked_body(m, n, k, &a, B::Rows(&b), &mut narrow, false);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&wide), bits(&narrow), "{m} x {n} x {k}");
        }
    }
}
