//! Accuracy predictors for architecture search: ridge regression on standardised features (one
//! block-distillation loss per block, as DONNA fits), scored by leave-one-out Kendall τ-b.

use crate::error::{Error, Result};
use serde::Serialize;

/// Kendall's τ-b of two equally long sequences (ties in either are allowed; 0 when either is
/// constant).
pub fn kendall_tau_b(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let (mut concordant, mut discordant, mut tie_x, mut tie_y) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let (dx, dy) = (x[i] - x[j], y[i] - y[j]);
            if dx == 0.0 && dy == 0.0 {
                continue;
            } else if dx == 0.0 {
                tie_x += 1;
            } else if dy == 0.0 {
                tie_y += 1;
            } else if (dx > 0.0) == (dy > 0.0) {
                concordant += 1;
            } else {
                discordant += 1;
            }
        }
    }
    let (p, q) = ((concordant + discordant + tie_x) as f64, (concordant + discordant + tie_y) as f64);
    if p == 0.0 || q == 0.0 {
        return 0.0;
    }
    (concordant - discordant) as f64 / (p * q).sqrt()
}

/// y ≈ intercept + Σ coef_k · (x_k − mean_k) / scale_k.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ridge {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    pub coef: Vec<f64>,
    pub intercept: f64,
    /// λ relative to the sample count (the standardised Gram matrix's diagonal).
    pub lambda: f64,
}

impl Ridge {
    /// Fits on rows of `features` (all of one length) against `y`.
    pub fn fit(features: &[Vec<f64>], y: &[f64], lambda: f64) -> Result<Ridge> {
        let bad = |msg: String| Err(Error::Input { name: "predictor".into(), msg });
        let n = features.len();
        if n < 2 || y.len() != n {
            return bad(format!("needs at least 2 samples with one target each (got {n} samples, {} targets)", y.len()));
        }
        let k = features[0].len();
        if features.iter().any(|f| f.len() != k) || features.iter().flatten().chain(y).any(|v| !v.is_finite()) || lambda.is_nan() || lambda < 0.0 {
            return bad("every sample needs the same number of finite features, and λ ≥ 0".into());
        }
        let mean: Vec<f64> = (0..k).map(|j| features.iter().map(|f| f[j]).sum::<f64>() / n as f64).collect();
        let scale: Vec<f64> = (0..k)
            .map(|j| {
                let sd = (features.iter().map(|f| (f[j] - mean[j]).powi(2)).sum::<f64>() / n as f64).sqrt();
                if sd > 0.0 { sd } else { 1.0 }
            })
            .collect();
        let z: Vec<Vec<f64>> = features.iter().map(|f| (0..k).map(|j| (f[j] - mean[j]) / scale[j]).collect()).collect();
        let y_mean = y.iter().sum::<f64>() / n as f64;
        let mut xtx = vec![0.0; k * k];
        let mut xty = vec![0.0; k];
        for (row, &t) in z.iter().zip(y) {
            for a in 0..k {
                xty[a] += row[a] * (t - y_mean);
                for b in 0..k {
                    xtx[a * k + b] += row[a] * row[b];
                }
            }
        }
        // Constant features give zero rows; ridge_solve's floor keeps the system solvable.
        let Some(coef) = crate::linalg::ridge_solve(&xtx, &xty, k, 1, lambda) else {
            return bad("the features are degenerate".into());
        };
        Ok(Ridge { mean, scale, coef, intercept: y_mean, lambda })
    }

    pub fn predict(&self, features: &[f64]) -> f64 {
        self.intercept + features.iter().zip(&self.mean).zip(&self.scale).zip(&self.coef).map(|(((x, m), s), c)| c * (x - m) / s).sum::<f64>()
    }
}

/// Leave-one-out: each sample predicted by a ridge fitted on the others, and the τ-b of those
/// predictions against the targets.
pub fn leave_one_out(features: &[Vec<f64>], y: &[f64], lambda: f64) -> Result<(Vec<f64>, f64)> {
    if features.len() < 3 {
        return Err(Error::Input { name: "predictor".into(), msg: format!("leave-one-out needs at least 3 samples (got {})", features.len()) });
    }
    let mut predicted = Vec::with_capacity(features.len());
    for i in 0..features.len() {
        let (f, t): (Vec<Vec<f64>>, Vec<f64>) = features.iter().zip(y).enumerate().filter(|(j, _)| *j != i).map(|(_, (f, t))| (f.clone(), *t)).unzip();
        predicted.push(Ridge::fit(&f, &t, lambda)?.predict(&features[i]));
    }
    let tau = kendall_tau_b(&predicted, y);
    Ok((predicted, tau))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tau_b_matches_scipys_documented_example() {
        // scipy.stats.kendalltau's docstring: x1 = [12, 2, 1, 12, 2], x2 = [1, 4, 7, 1, 0] gives
        // τ-b = -0.47140452079103173 (ties in both).
        let t = kendall_tau_b(&[12.0, 2.0, 1.0, 12.0, 2.0], &[1.0, 4.0, 7.0, 1.0, 0.0]);
        assert!((t + 0.47140452079103173).abs() < 1e-15, "{t}");
        assert_eq!(kendall_tau_b(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), 1.0);
        assert_eq!(kendall_tau_b(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0);
        assert_eq!(kendall_tau_b(&[1.0, 1.0, 1.0], &[3.0, 2.0, 1.0]), 0.0);
    }

    #[test]
    fn ridge_recovers_a_linear_law_and_shrinks_with_lambda() {
        // y = 3 − 2·a + 0.5·b on a grid.
        let f: Vec<Vec<f64>> = (0..12).map(|i| vec![(i % 4) as f64, (i / 4) as f64 * 1.5]).collect();
        let y: Vec<f64> = f.iter().map(|v| 3.0 - 2.0 * v[0] + 0.5 * v[1]).collect();
        let r = Ridge::fit(&f, &y, 0.0).unwrap();
        for (v, t) in f.iter().zip(&y) {
            assert!((r.predict(v) - t).abs() < 1e-9);
        }
        assert!((r.predict(&[10.0, -4.0]) - (3.0 - 20.0 - 2.0)).abs() < 1e-8);
        // A large λ pulls every prediction towards the mean.
        let s = Ridge::fit(&f, &y, 100.0).unwrap();
        let mean = y.iter().sum::<f64>() / 12.0;
        assert!((s.predict(&f[0]) - mean).abs() < 0.05 * (r.predict(&f[0]) - mean).abs());
        let (pred, tau) = leave_one_out(&f, &y, 1e-9).unwrap();
        assert!(pred.iter().zip(&y).all(|(p, t)| (p - t).abs() < 1e-6) && (tau - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bad_predictor_input() {
        assert!(Ridge::fit(&[vec![1.0]], &[1.0], 0.1).is_err());
        assert!(Ridge::fit(&[vec![1.0], vec![1.0, 2.0]], &[1.0, 2.0], 0.1).is_err());
        assert!(Ridge::fit(&[vec![f64::NAN], vec![1.0]], &[1.0, 2.0], 0.1).is_err());
        assert!(leave_one_out(&[vec![1.0], vec![2.0]], &[1.0, 2.0], 0.1).is_err());
    }
}
