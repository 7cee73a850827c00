//! f32 matrix multiply `C = A * B` (row-major, A: m x k, B: k x n, C: m x n).
//!
//! Blocked over k (`KC`) and n (`NC`), `b` packed into panels, 4 x 8 register blocks; the micro-kernel is explicit
//! SIMD128 on wasm32 and plain Rust (auto-vectorised) elsewhere. [`gemm_naive`] is the reference.

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
    if k == 0 || m == 0 || n == 0 {
        return;
    }
    PACK.with(|cell| {
        let mut pack = cell.borrow_mut();
        let mut j0 = 0;
        while j0 < n {
            let nc = NC.min(n - j0);
            let full = nc / NR * NR;
            let mut k0 = 0;
            while k0 < k {
                let kc = KC.min(k - k0);
                pack_b(&b[k0 * n + j0..], n, kc, full, &mut pack);
                let mut i = 0;
                while i + MR <= m {
                    for (p, j) in (j0..j0 + full).step_by(NR).enumerate() {
                        let panel = &pack[p * kc * NR..(p + 1) * kc * NR];
                        // SAFETY: i+MR <= m, j+NR <= n, k0+kc <= k, the panel holds kc*NR values and
                        // the length checks above keep every access of the micro-kernel in bounds.
                        unsafe { micro_4x8(kc, a.as_ptr().add(i * k + k0), k, panel.as_ptr(), c.as_mut_ptr().add(i * n + j), n) };
                    }
                    if full < nc {
                        edge(MR, nc - full, kc, &a[i * k + k0..], k, &b[k0 * n + j0 + full..], n, &mut c[i * n + j0 + full..], n);
                    }
                    i += MR;
                }
                if i < m {
                    edge(m - i, nc, kc, &a[i * k + k0..], k, &b[k0 * n + j0..], n, &mut c[i * n + j0..], n);
                }
                k0 += kc;
            }
            j0 += nc;
        }
    });
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

/// Packs `kc` rows x `cols` (a multiple of NR) columns of `b` (row stride `ldb`) into panels of
/// NR columns, each stored as kc consecutive rows of NR values.
fn pack_b(b: &[f32], ldb: usize, kc: usize, cols: usize, out: &mut Vec<f32>) {
    out.clear();
    out.reserve(kc * cols);
    for j in (0..cols).step_by(NR) {
        for p in 0..kc {
            out.extend_from_slice(&b[p * ldb + j..p * ldb + j + NR]);
        }
    }
}

/// Scalar block for the ragged edges: `c[mr x nr] += a[mr x kc] * b[kc x nr]`.
#[allow(clippy::too_many_arguments)]
fn edge(mr: usize, nr: usize, kc: usize, a: &[f32], lda: usize, b: &[f32], ldb: usize, c: &mut [f32], ldc: usize) {
    for r in 0..mr {
        for j in 0..nr {
            let mut s = 0.0f32;
            for p in 0..kc {
                s += a[r * lda + p] * b[p * ldb + j];
            }
            c[r * ldc + j] += s;
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[inline(always)]
unsafe fn micro_4x8(kc: usize, a: *const f32, lda: usize, b: *const f32, c: *mut f32, ldc: usize) {
    let mut acc = [[0.0f32; NR]; MR];
    for p in 0..kc {
        let brow = &*(b.add(p * NR) as *const [f32; NR]);
        for (r, row) in acc.iter_mut().enumerate() {
            let av = *a.add(r * lda + p);
            for j in 0..NR {
                row[j] += av * brow[j];
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let crow = &mut *(c.add(r * ldc) as *mut [f32; NR]);
        for j in 0..NR {
            crow[j] += row[j];
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
unsafe fn micro_4x8(kc: usize, a: *const f32, lda: usize, b: *const f32, c: *mut f32, ldc: usize) {
    use core::arch::wasm32::*;
    let z = f32x4_splat(0.0);
    let (mut c00, mut c01, mut c10, mut c11) = (z, z, z, z);
    let (mut c20, mut c21, mut c30, mut c31) = (z, z, z, z);
    let (a0, a1, a2, a3) = (a, a.add(lda), a.add(2 * lda), a.add(3 * lda));
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
    for (r, (v0, v1)) in [(c00, c01), (c10, c11), (c20, c21), (c30, c31)].into_iter().enumerate() {
        let cp = c.add(r * ldc);
        v128_store(cp as *mut v128, f32x4_add(v128_load(cp as *const v128), v0));
        v128_store(cp.add(4) as *mut v128, f32x4_add(v128_load(cp.add(4) as *const v128), v1));
    }
}
