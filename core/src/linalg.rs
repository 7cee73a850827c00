//! Small dense linear algebra in f64: the symmetric eigen-decomposition (Householder + QL), the SVD
//! built on it, and ridge least squares (Cholesky). Sizes here are a layer's weight matrix, at
//! most a few thousand on a side.

/// `A = U · diag(s) · Vt` with `k = min(rows, cols)` singular values in decreasing order.
/// `u` is rows × k and `vt` is k × cols, both row-major.
#[derive(Debug, Clone)]
pub struct Svd {
    pub rows: usize,
    pub cols: usize,
    pub u: Vec<f64>,
    pub s: Vec<f64>,
    pub vt: Vec<f64>,
}

/// Eigenvalues (decreasing) and eigenvectors (the columns of the row-major n × n matrix returned)
/// of the symmetric matrix `a` (row-major n × n): Householder reduction to tridiagonal form,
/// then the implicit QL iteration with Wilkinson-style shifts (the EISPACK tred2/tql2 scheme),
/// O(n³) with small constants.
pub fn symmetric_eigen(a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    if n == 0 {
        return (vec![], vec![]);
    }
    let mut v = a;
    let mut d = vec![0.0; n];
    let mut e = vec![0.0; n];
    tridiagonalize(&mut v, &mut d, &mut e, n);
    ql_implicit(&mut v, &mut d, &mut e, n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[j].total_cmp(&d[i]));
    let values = order.iter().map(|&i| d[i]).collect();
    let mut vecs = vec![0.0; n * n];
    for k in 0..n {
        for (col, &i) in order.iter().enumerate() {
            vecs[k * n + col] = v[k * n + i];
        }
    }
    (values, vecs)
}

/// Householder reduction of the symmetric `v` (n × n, row-major) to tridiagonal form: on return
/// `d` is the diagonal, `e[1..]` the sub-diagonal and `v` the orthogonal transformation.
fn tridiagonalize(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    let at = |i: usize, j: usize| i * n + j;
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
    }
    for i in (1..n).rev() {
        let scale: f64 = d[..i].iter().map(|x| x.abs()).sum();
        let mut h = 0.0;
        if scale == 0.0 {
            e[i] = d[i - 1];
            for j in 0..i {
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
                v[at(j, i)] = 0.0;
            }
        } else {
            for dk in d[..i].iter_mut() {
                *dk /= scale;
                h += *dk * *dk;
            }
            let f = d[i - 1];
            let g = if f > 0.0 { -h.sqrt() } else { h.sqrt() };
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            e[..i].fill(0.0);
            for j in 0..i {
                let f = d[j];
                v[at(j, i)] = f;
                let mut g = e[j] + v[at(j, j)] * f;
                for k in j + 1..i {
                    g += v[at(k, j)] * d[k];
                    e[k] += v[at(k, j)] * f;
                }
                e[j] = g;
            }
            let mut f = 0.0;
            for j in 0..i {
                e[j] /= h;
                f += e[j] * d[j];
            }
            let hh = f / (h + h);
            for j in 0..i {
                e[j] -= hh * d[j];
            }
            for j in 0..i {
                let (f, g) = (d[j], e[j]);
                for k in j..i {
                    v[at(k, j)] -= f * e[k] + g * d[k];
                }
                d[j] = v[at(i - 1, j)];
                v[at(i, j)] = 0.0;
            }
        }
        d[i] = h;
    }
    // Accumulate the transformations.
    for i in 0..n - 1 {
        v[at(n - 1, i)] = v[at(i, i)];
        v[at(i, i)] = 1.0;
        let h = d[i + 1];
        if h != 0.0 {
            for k in 0..=i {
                d[k] = v[at(k, i + 1)] / h;
            }
            for j in 0..=i {
                let g: f64 = (0..=i).map(|k| v[at(k, i + 1)] * v[at(k, j)]).sum();
                for k in 0..=i {
                    v[at(k, j)] -= g * d[k];
                }
            }
        }
        for k in 0..=i {
            v[at(k, i + 1)] = 0.0;
        }
    }
    for j in 0..n {
        d[j] = v[at(n - 1, j)];
        v[at(n - 1, j)] = 0.0;
    }
    v[at(n - 1, n - 1)] = 1.0;
    e[0] = 0.0;
}

/// The implicit QL iteration on the tridiagonal (`d`, `e`) from [`tridiagonalize`], applying its
/// rotations to `v`: on return `d` holds the eigenvalues and `v`'s columns the eigenvectors.
fn ql_implicit(v: &mut [f64], d: &mut [f64], e: &mut [f64], n: usize) {
    let at = |i: usize, j: usize| i * n + j;
    for i in 1..n {
        e[i - 1] = e[i];
    }
    e[n - 1] = 0.0;
    let (mut f, mut tst1) = (0.0f64, 0.0f64);
    let eps = f64::EPSILON;
    for l in 0..n {
        tst1 = tst1.max(d[l].abs() + e[l].abs());
        let mut m = l;
        while m < n - 1 && e[m].abs() > eps * tst1 {
            m += 1;
        }
        if m > l {
            for _iter in 0..100 {
                let g = d[l];
                let mut p = (d[l + 1] - g) / (2.0 * e[l]);
                let mut r = p.hypot(1.0);
                if p < 0.0 {
                    r = -r;
                }
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                let dl1 = d[l + 1];
                let h = g - d[l];
                for di in d.iter_mut().take(n).skip(l + 2) {
                    *di -= h;
                }
                f += h;
                p = d[m];
                let (mut c, mut c2, mut c3) = (1.0, 1.0, 1.0);
                let el1 = e[l + 1];
                let (mut s, mut s2) = (0.0, 0.0);
                for i in (l..m).rev() {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    let g = c * e[i];
                    let h = c * p;
                    r = p.hypot(e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    for k in 0..n {
                        let h = v[at(k, i + 1)];
                        v[at(k, i + 1)] = s * v[at(k, i)] + c * h;
                        v[at(k, i)] = c * v[at(k, i)] - s * h;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
                if e[l].abs() <= eps * tst1 {
                    break;
                }
            }
        }
        d[l] += f;
        e[l] = 0.0;
    }
}

/// The thin SVD of the row-major `rows × cols` matrix `a`: the eigen-decomposition of the smaller
/// Gram matrix gives V (or U) and the singular values, and the other side is `A·V/s` (or
/// `Aᵀ·U/s`). A singular value of zero leaves its column of U (or row of Vt) zero.
pub fn svd(a: &[f64], rows: usize, cols: usize) -> Svd {
    let k = rows.min(cols);
    if cols <= rows {
        // G = AᵀA (cols × cols) = V S² Vᵀ.
        let mut g = vec![0.0; cols * cols];
        for r in 0..rows {
            let row = &a[r * cols..(r + 1) * cols];
            for i in 0..cols {
                let x = row[i];
                if x == 0.0 {
                    continue;
                }
                for j in i..cols {
                    g[i * cols + j] += x * row[j];
                }
            }
        }
        for i in 0..cols {
            for j in 0..i {
                g[i * cols + j] = g[j * cols + i];
            }
        }
        let (e, v) = symmetric_eigen(g, cols);
        let s: Vec<f64> = e.iter().map(|&x| x.max(0.0).sqrt()).collect();
        let mut u = vec![0.0; rows * k];
        for r in 0..rows {
            let row = &a[r * cols..(r + 1) * cols];
            for j in 0..k {
                if s[j] > 0.0 {
                    u[r * k + j] = (0..cols).map(|c| row[c] * v[c * cols + j]).sum::<f64>() / s[j];
                }
            }
        }
        let mut vt = vec![0.0; k * cols];
        for j in 0..k {
            for c in 0..cols {
                vt[j * cols + c] = v[c * cols + j];
            }
        }
        Svd { rows, cols, u, s, vt }
    } else {
        let mut t = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = a[r * cols + c];
            }
        }
        let d = svd(&t, cols, rows);
        // Aᵀ = U' S V'ᵀ  =>  A = V' S U'ᵀ.
        let mut u = vec![0.0; rows * k];
        for j in 0..k {
            for r in 0..rows {
                u[r * k + j] = d.vt[j * rows + r];
            }
        }
        let mut vt = vec![0.0; k * cols];
        for j in 0..k {
            for c in 0..cols {
                vt[j * cols + c] = d.u[c * k + j];
            }
        }
        Svd { rows, cols, u, s: d.s, vt }
    }
}

impl Svd {
    /// The rank-`r` factors `L` (rows × r) and `R` (r × cols), row-major, with `L·R` the best
    /// rank-r approximation: the singular values are split evenly, `L = U√s`, `R = √s·Vt`.
    pub fn factors(&self, r: usize) -> (Vec<f64>, Vec<f64>) {
        let k = self.s.len();
        let r = r.min(k);
        let mut l = vec![0.0; self.rows * r];
        let mut rt = vec![0.0; r * self.cols];
        for j in 0..r {
            let d = self.s[j].sqrt();
            for i in 0..self.rows {
                l[i * r + j] = self.u[i * k + j] * d;
            }
            for c in 0..self.cols {
                rt[j * self.cols + c] = self.vt[j * self.cols + c] * d;
            }
        }
        (l, rt)
    }
}

/// Solves `(XᵀX + λ·I)·B = XᵀY` for B (features × outputs) from the Gram matrix `xtx`
/// (features × features) and `xty` (features × outputs), both row-major, by Cholesky. `λ` is
/// `ridge` times the mean diagonal of XᵀX (so it does not depend on the data's scale), plus a
/// tiny floor that keeps a rank-deficient system solvable. Returns None if it is not positive
/// definite even then.
pub fn ridge_solve(xtx: &[f64], xty: &[f64], features: usize, outputs: usize, ridge: f64) -> Option<Vec<f64>> {
    let n = features;
    let mean_diag = (0..n).map(|i| xtx[i * n + i]).sum::<f64>() / n.max(1) as f64;
    let lambda = ridge * mean_diag + 1e-12 * mean_diag.max(1e-30);
    let mut l = xtx.to_vec();
    for i in 0..n {
        l[i * n + i] += lambda;
    }
    // In-place Cholesky, lower triangle.
    for j in 0..n {
        let mut d = l[j * n + j];
        for k in 0..j {
            d -= l[j * n + k] * l[j * n + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        l[j * n + j] = d;
        for i in j + 1..n {
            let mut s = l[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            l[i * n + j] = s / d;
        }
    }
    let mut b = xty.to_vec();
    for o in 0..outputs {
        // L z = y, then Lᵀ x = z.
        for i in 0..n {
            let mut s = b[i * outputs + o];
            for k in 0..i {
                s -= l[i * n + k] * b[k * outputs + o];
            }
            b[i * outputs + o] = s / l[i * n + i];
        }
        for i in (0..n).rev() {
            let mut s = b[i * outputs + o];
            for k in i + 1..n {
                s -= l[k * n + i] * b[k * outputs + o];
            }
            b[i * outputs + o] = s / l[i * n + i];
        }
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
        let mut r = crate::rng::SplitMix(seed);
        r.f32s(rows * cols).into_iter().map(|x| x as f64 - 0.5).collect()
    }

    fn product(l: &[f64], r: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|t| l[i * k + t] * r[t * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn svd_reconstructs_and_is_orthogonal() {
        for (m, n) in [(7, 4), (4, 9), (12, 12), (1, 5)] {
            let a = matrix(m, n, (m * 31 + n) as u64);
            let d = svd(&a, m, n);
            let (l, r) = d.factors(m.min(n));
            let back = product(&l, &r, m, m.min(n), n);
            let err = a.iter().zip(&back).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(err < 1e-10, "{m}x{n}: {err}");
            assert!(d.s.windows(2).all(|w| w[0] >= w[1]));
            let k = m.min(n);
            // Vt rows are orthonormal.
            for i in 0..k {
                for j in 0..k {
                    let dot: f64 = (0..n).map(|c| d.vt[i * n + c] * d.vt[j * n + c]).sum();
                    assert!((dot - (i == j) as u8 as f64).abs() < 1e-10);
                }
            }
        }
    }

    #[test]
    fn truncation_error_is_the_dropped_singular_values() {
        // Eckart–Young: ‖A − A_r‖²_F = Σ_{j ≥ r} s_j².
        let (m, n, r) = (10, 6, 3);
        let a = matrix(m, n, 5);
        let d = svd(&a, m, n);
        let (l, rt) = d.factors(r);
        let back = product(&l, &rt, m, r, n);
        let err: f64 = a.iter().zip(&back).map(|(x, y)| (x - y).powi(2)).sum();
        let dropped: f64 = d.s[r..].iter().map(|s| s * s).sum();
        assert!((err - dropped).abs() < 1e-10 * dropped.max(1.0));
    }

    #[test]
    fn ridge_without_regularisation_is_least_squares() {
        // Y = X·B exactly, so the solution recovers B.
        let (rows, f, o) = (30, 4, 2);
        let x = matrix(rows, f, 9);
        let b: Vec<f64> = vec![1.0, -2.0, 0.5, 3.0, 0.0, 1.5, -1.0, 2.0];
        let y = product(&x, &b, rows, f, o);
        let mut xtx = vec![0.0; f * f];
        let mut xty = vec![0.0; f * o];
        for r in 0..rows {
            for i in 0..f {
                for j in 0..f {
                    xtx[i * f + j] += x[r * f + i] * x[r * f + j];
                }
                for j in 0..o {
                    xty[i * o + j] += x[r * f + i] * y[r * o + j];
                }
            }
        }
        let got = ridge_solve(&xtx, &xty, f, o, 0.0).unwrap();
        for (g, w) in got.iter().zip(&b) {
            assert!((g - w).abs() < 1e-8);
        }
    }
}
