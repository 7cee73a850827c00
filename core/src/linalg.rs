//! Small dense linear algebra in f64: the symmetric eigen-decomposition (cyclic Jacobi), the SVD
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
/// of the symmetric matrix `a` (row-major n × n), by cyclic Jacobi rotations until the
/// off-diagonal part is below 1e-15 of the norm.
pub fn symmetric_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..60 {
        let off: f64 = (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[i * n + j] * a[i * n + j]).sum::<f64>().sqrt();
        if off <= 1e-15 * norm || norm == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- Jᵀ A J on rows and columns p, q.
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vecs = vec![0.0; n * n];
    for (col, &i) in order.iter().enumerate() {
        for k in 0..n {
            vecs[k * n + col] = v[k * n + i];
        }
    }
    (values, vecs)
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
