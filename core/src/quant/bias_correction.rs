//! Bias correction (Nagel et al., "Data-Free Quantization", ICCV 2019, sec. 4.2): quantizing a
//! layer's weights shifts the expected value of its output, `E[(W_q - W) x] = (W_q - W) E[x]`,
//! and that bias propagates to every later layer. For each Conv/Gemm with quantized weights the
//! shift per output channel, `Σ_{c,kh,kw} (W_q - W)[m,c,kh,kw] · E[x_c]`, is subtracted from its
//! bias. `E[x]` is measured per input channel on the calibration data as the quantized model sees
//! it (the empirical flavour; the analytical one would take it from BatchNorm statistics); padding
//! effects at the borders are ignored. Activation encodings must be recalibrated afterwards.

use super::sim::QuantSim;
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::{Op, ValueId};
use crate::onnx::Limits;
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

/// Corrects the biases of `sim`'s layers in place (see the module doc). `sim` must be calibrated.
pub fn correct_biases(sim: &mut QuantSim, samples: &[Tensor]) -> Result<BiasCorrectionReport> {
    if samples.is_empty() {
        return Err(Error::Quant("bias correction needs calibration samples".into()));
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
    let (q_graph, act) = sim.simulated_graph()?;
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
    // Per-channel means of each layer's input in the quantized model.
    let mut sums: HashMap<ValueId, (Vec<f64>, u64)> = layers.iter().map(|l| (l.input, (vec![0.0; l.in_channels], 0))).collect();
    let mut qexec = Executor::with_fusion(q_graph, Limits::default(), false)?;
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
    let mut report = BiasCorrectionReport { samples: samples.len(), ..Default::default() };
    for l in &layers {
        let (s, count) = &sums[&l.input];
        if *count == 0 {
            continue;
        }
        let mean: Vec<f64> = s.iter().map(|v| v / *count as f64).collect();
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
