//! Bias correction (Nagel et al., "Data-Free Quantization", ICCV 2019, sec. 4.2): quantizing a
//! layer's weights shifts the expected value of its output, `E[(W_q - W) x] = (W_q - W) E[x]`,
//! and that bias propagates to every later layer. For each Conv/Gemm with quantized weights the
//! shift per output channel, `Σ_{c,kh,kw} (W_q - W)[m,c,kh,kw] · E[x_c]`, is subtracted from its
//! bias; padding effects at the borders are ignored. Activation encodings must be recalibrated
//! afterwards. `E[x]` comes from one of:
//! - empirical ([`correct_biases`]): measured per input channel on the calibration data as the
//!   quantized model sees it;
//! - analytical ([`correct_biases_analytical`], data-free, AIMET 1.x's BN-based flavour): the
//!   input is `act(y)` with `y ~ N(β, γ²)` per channel from the BatchNorm folded into the layer
//!   that produced it (scaled by equalization): no activation `E = β`; ReLU
//!   `E = β Φ(β/|γ|) + |γ| φ(β/|γ|)`; Clip(lo, hi) (ReLU6 and qplay's per-channel bounds)
//!   `E = lo + R(β - lo) - R(β - hi)` with `R(μ)` the ReLU expectation of `N(μ, γ²)`. Layers whose
//!   input has no such statistics are left alone.

use super::sim::QuantSim;
use crate::passes::bn_fold::OutputStats;
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::{Op, ValueId};
use crate::tensor::Tensor;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct BiasCorrectionReport {
    /// (layer node, mean absolute correction) per corrected layer.
    pub layers: Vec<(String, f32)>,
    pub samples: usize,
}

/// Adds the per-channel sums of an [N, C, ...] tensor (or [N, C]) into `acc`.
fn channel_sums(t: &Tensor, acc: &mut [f64], count: &mut u64) {
    let Some(d) = t.as_f32() else { return };
    let c = acc.len();
    let shape = t.shape();
    if shape.len() < 2 || shape[1] != c {
        return;
    }
    let sp: usize = shape[2..].iter().product();
    for b in 0..shape[0] {
        for (ch, a) in acc.iter_mut().enumerate() {
            *a += d[(b * c + ch) * sp..(b * c + ch + 1) * sp].iter().map(|&x| x as f64).sum::<f64>();
        }
    }
    *count += (shape[0] * sp) as u64;
}

struct Layer {
    name: String,
    input: ValueId,
    bias: ValueId,
    /// Per output channel m and input channel c: Σ_k (W_q - W)[m, c, k].
    delta: Vec<Vec<f64>>,
    depthwise: bool,
    in_channels: usize,
}

/// Every Conv (plain or depthwise) and Gemm of `sim` with quantized weights and a constant bias.
fn layers(sim: &QuantSim, q_graph: &crate::graph::Graph) -> Vec<Layer> {
    let g = sim.graph();
    let mut layers = Vec::new();
    for n in &g.nodes {
        let (Some(x), Some(w), Some(b)) = (n.inputs.first().copied().flatten(), n.inputs.get(1).copied().flatten(), n.inputs.get(2).copied().flatten()) else { continue };
        if sim.param_encodings_of(w).is_none() || g.consts[x].is_some() {
            continue;
        }
        let (Some(wf), Some(wq)) = (g.consts[w].as_ref(), q_graph.consts[w].as_ref()) else { continue };
        let (Some(a), Some(q)) = (wf.as_f32(), wq.as_f32()) else { continue };
        let (delta, depthwise, cin): (Vec<Vec<f64>>, bool, usize) = match &n.op {
            Op::Conv { group, .. } if wf.rank() == 4 => {
                let (m, cg, k) = (wf.shape()[0], wf.shape()[1], wf.shape()[2] * wf.shape()[3]);
                let dw = *group > 1 && cg == 1 && *group == m;
                if *group != 1 && !dw {
                    continue;
                }
                let d = (0..m).map(|o| (0..cg).map(|c| (0..k).map(|t| (q[(o * cg + c) * k + t] - a[(o * cg + c) * k + t]) as f64).sum()).collect()).collect();
                (d, dw, if dw { m } else { cg })
            }
            Op::Gemm { trans_a: false, trans_b, alpha, beta } if *alpha == 1.0 && *beta == 1.0 && wf.rank() == 2 => {
                let (r, c) = (wf.shape()[0], wf.shape()[1]);
                let (m, k) = if *trans_b { (r, c) } else { (c, r) };
                let at = |o: usize, i: usize| if *trans_b { o * k + i } else { i * m + o };
                ((0..m).map(|o| (0..k).map(|i| (q[at(o, i)] - a[at(o, i)]) as f64).collect()).collect(), false, k)
            }
            _ => continue,
        };
        if g.consts[b].as_ref().map(Tensor::len) != Some(delta.len()) {
            continue;
        }
        layers.push(Layer { name: n.name.clone(), input: x, bias: b, delta, depthwise, in_channels: cin });
    }
    layers
}

/// Subtracts `(W_q - W) E[x]` from each layer's bias, `E[x]` from `mean_of` (None: left alone).
fn apply(sim: &mut QuantSim, layers: &[Layer], mean_of: &dyn Fn(&Layer) -> Option<Vec<f64>>, samples: usize) -> Result<BiasCorrectionReport> {
    let mut report = BiasCorrectionReport { samples, ..Default::default() };
    for l in layers {
        let Some(mean) = mean_of(l).filter(|m| m.len() == l.in_channels) else { continue };
        let shift: Vec<f64> = l
            .delta
            .iter()
            .enumerate()
            .map(|(o, row)| if l.depthwise { row[0] * mean[o] } else { row.iter().zip(&mean).map(|(d, m)| d * m).sum() })
            .collect();
        let mean_abs = (shift.iter().map(|v| v.abs()).sum::<f64>() / shift.len().max(1) as f64) as f32;
        sim.adjust_bias(l.bias, &shift)?;
        report.layers.push((l.name.clone(), mean_abs));
    }
    Ok(report)
}

/// Analytical bias correction (see the module doc) from the output statistics of the layers
/// whose BatchNorm was folded (`BnFoldReport::output_stats`, or `CleReport::output_stats` after
/// equalization). `sim` must be calibrated (its weight encodings are used).
pub fn correct_biases_analytical(sim: &mut QuantSim, stats: &[OutputStats]) -> Result<BiasCorrectionReport> {
    let (q_graph, _) = sim.simulated_graph()?;
    let layers = layers(sim, &q_graph);
    let g = sim.graph().clone();
    let producer = |v: ValueId| g.nodes.iter().find(|n| n.outputs.contains(&v));
    let stats_of = |v: ValueId| producer(v).and_then(|p| stats.iter().find(|s| s.node == p.name));
    let mean_of = |l: &Layer| -> Option<Vec<f64>> {
        if let Some(s) = stats_of(l.input) {
            return Some(s.mean.iter().map(|&m| m as f64).collect());
        }
        let act = producer(l.input)?;
        let y = act.inputs.first().copied().flatten()?;
        let s = stats_of(y)?;
        let (lo, hi) = crate::exec::activation_bounds(&g, act, s.mean.len())?;
        let at = |v: &[f32], c: usize| v[if v.len() == 1 { 0 } else { c }] as f64;
        Some((0..s.mean.len()).map(|c| clipped_normal_mean(s.mean[c] as f64, s.std[c] as f64, at(&lo, c), at(&hi, c))).collect())
    };
    apply(sim, &layers, &mean_of, 0)
}

/// `E[relu(X)]` for `X ~ N(mu, sigma^2)`.
fn relu_mean(mu: f64, sigma: f64) -> f64 {
    if sigma <= 0.0 {
        return mu.max(0.0);
    }
    let z = mu / sigma;
    let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let cdf = 0.5 * (1.0 + crate::kernels::erf((z / std::f64::consts::SQRT_2) as f32) as f64);
    mu * cdf + sigma * pdf
}

/// `E[clip(X, lo, hi)]` for `X ~ N(mu, sigma^2)`: `clip(x, lo, hi) = lo + relu(x - lo) - relu(x - hi)`.
fn clipped_normal_mean(mu: f64, sigma: f64, lo: f64, hi: f64) -> f64 {
    let lower = if lo.is_finite() { lo + relu_mean(mu - lo, sigma) } else { mu };
    lower - if hi.is_finite() { relu_mean(mu - hi, sigma) } else { 0.0 }
}

/// Empirical bias correction (see the module doc). `sim` must be calibrated.
pub fn correct_biases(sim: &mut QuantSim, samples: &[Tensor]) -> Result<BiasCorrectionReport> {
    if samples.is_empty() {
        return Err(Error::Quant("bias correction needs calibration samples".into()));
    }
    let (q_graph, act) = sim.simulated_graph()?;
    let layers = layers(sim, &q_graph);
    // Per-channel means of each layer's input in the quantized model.
    let mut sums: HashMap<ValueId, (Vec<f64>, u64)> = layers.iter().map(|l| (l.input, (vec![0.0; l.in_channels], 0))).collect();
    let mut qexec = Executor::with_fusion(q_graph, sim.limits().clone(), false)?;
    for x in samples {
        qexec.run_with_hook(vec![x.clone()], &mut |id, t| {
            if let Some(e) = act[id] {
                e.qdq_tensor(t);
            }
            if let Some((a, c)) = sums.get_mut(&id) {
                channel_sums(t, a, c);
            }
            Ok(())
        })?;
    }
    let mean_of = |l: &Layer| -> Option<Vec<f64>> {
        let (s, count) = &sums[&l.input];
        (*count > 0).then(|| s.iter().map(|v| v / *count as f64).collect())
    };
    apply(sim, &layers, &mean_of, samples.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closed forms against a numerical integration of the normal density.
    #[test]
    fn clipped_normal_means() {
        let numeric = |mu: f64, sigma: f64, lo: f64, hi: f64| {
            let n = 200_000;
            let (a, b) = (mu - 10.0 * sigma, mu + 10.0 * sigma);
            let h = (b - a) / n as f64;
            (0..n)
                .map(|i| {
                    let x = a + (i as f64 + 0.5) * h;
                    x.clamp(lo, hi) * (-0.5 * ((x - mu) / sigma).powi(2)).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt()) * h
                })
                .sum::<f64>()
        };
        for (mu, sigma, lo, hi) in [(0.5, 1.0, 0.0, f64::INFINITY), (-2.0, 0.7, 0.0, 6.0), (5.5, 2.0, 0.0, 6.0), (0.3, 0.1, 0.0, 0.25), (1.0, 3.0, f64::NEG_INFINITY, f64::INFINITY)] {
            let (e, n) = (clipped_normal_mean(mu, sigma, lo, hi), numeric(mu, sigma, lo, hi));
            assert!((e - n).abs() < 1e-5 * (1.0 + n.abs()), "N({mu}, {sigma}^2) clipped to [{lo}, {hi}]: {e} vs {n}");
        }
        assert_eq!(clipped_normal_mean(2.0, 0.0, 0.0, 6.0), 2.0);
    }
}
