//! Losses over a model output viewed as `[batch, classes, positions]` (positions = the product of
//! any axes after the class axis; 1 for a classifier): each returns the mean loss over samples
//! (and positions) and its gradient with respect to the output.

use crate::error::{Error, Result};

/// Log-softmax over the class axis of `[batch, k, positions]` data, at temperature `t`.
fn log_softmax(x: &[f32], k: usize, pos: usize, t: f32) -> Vec<f64> {
    let mut lp = vec![0.0f64; x.len()];
    for (b, chunk) in x.chunks(k * pos).enumerate() {
        for j in 0..pos {
            let mx = (0..k).map(|c| chunk[c * pos + j]).fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = (0..k).map(|c| ((chunk[c * pos + j] as f64 - mx) / t as f64).exp()).sum();
            for c in 0..k {
                lp[b * k * pos + c * pos + j] = (chunk[c * pos + j] as f64 - mx) / t as f64 - z.ln();
            }
        }
    }
    lp
}

/// The layout `[batch, k, positions]` of an output of `shape`.
pub fn layout(shape: &[usize]) -> Result<(usize, usize, usize)> {
    match shape {
        [b, k, rest @ ..] => Ok((*b, *k, rest.iter().product())),
        _ => Err(Error::Input { name: "output".into(), msg: format!("a loss needs an output with a batch and a class axis, got shape {shape:?}") }),
    }
}

/// Cross-entropy of softmax(logits) against one class index per sample (and position).
pub fn cross_entropy(logits: &[f32], shape: &[usize], labels: &[i64]) -> Result<(f64, Vec<f32>)> {
    let (b, k, pos) = layout(shape)?;
    if labels.len() != b * pos {
        return Err(Error::Input { name: "labels".into(), msg: format!("{} labels for {} outputs", labels.len(), b * pos) });
    }
    let lp = log_softmax(logits, k, pos, 1.0);
    let count = (b * pos) as f64;
    let mut loss = 0.0;
    let mut grad: Vec<f32> = lp.iter().map(|&v| (v.exp() / count) as f32).collect();
    for (i, &l) in labels.iter().enumerate() {
        let (bi, j) = (i / pos, i % pos);
        if l < 0 || l as usize >= k {
            return Err(Error::Input { name: "labels".into(), msg: format!("label {l} is outside the model's {k} classes") });
        }
        let at = bi * k * pos + l as usize * pos + j;
        loss -= lp[at];
        grad[at] -= (1.0 / count) as f32;
    }
    Ok((loss / count, grad))
}

/// Knowledge distillation: `T^2 * KL(softmax(teacher/T) || softmax(student/T))`, averaged over
/// samples and positions (Hinton et al.; the `T^2` keeps gradients comparable across T).
pub fn distillation(student: &[f32], shape: &[usize], teacher: &[f32], t: f32) -> Result<(f64, Vec<f32>)> {
    let (b, k, pos) = layout(shape)?;
    if teacher.len() != student.len() {
        return Err(Error::Input { name: "teacher".into(), msg: format!("the teacher gives {} values where the model gives {}", teacher.len(), student.len()) });
    }
    if !(t > 0.0 && t.is_finite()) {
        return Err(Error::Input { name: "temperature".into(), msg: format!("{t} is not a positive temperature") });
    }
    let ls = log_softmax(student, k, pos, t);
    let lt = log_softmax(teacher, k, pos, t);
    let count = (b * pos) as f64;
    let t2 = (t * t) as f64;
    let loss = lt.iter().zip(&ls).map(|(&a, &s)| a.exp() * (a - s)).sum::<f64>() * t2 / count;
    // d/ds_i of T^2 KL = T (p_s - p_t).
    let grad = ls.iter().zip(&lt).map(|(&s, &a)| (t as f64 * (s.exp() - a.exp()) / count) as f32).collect();
    Ok((loss, grad))
}

/// Mean squared error against `target`.
pub fn mse(y: &[f32], target: &[f32]) -> Result<(f64, Vec<f32>)> {
    if y.len() != target.len() || y.is_empty() {
        return Err(Error::Input { name: "target".into(), msg: format!("{} target values for {} outputs", target.len(), y.len()) });
    }
    let n = y.len() as f64;
    let loss = y.iter().zip(target).map(|(&a, &b)| ((a - b) as f64).powi(2)).sum::<f64>() / n;
    Ok((loss, y.iter().zip(target).map(|(&a, &b)| (2.0 * (a - b) as f64 / n) as f32).collect()))
}

/// The per-channel noise-to-signal ratio of blockwise distillation (DONNA): the mean over
/// channels c of mean((y_c − t_c)²) / (σ²_c + ε), on `[batch, channels, positions]` outputs.
/// `inv_var` holds 1 / (σ²_c + ε) per channel, from [`channel_weights`].
pub fn nsr(y: &[f32], shape: &[usize], target: &[f32], inv_var: &[f64]) -> Result<(f64, Vec<f32>)> {
    let (b, c, pos) = layout(shape)?;
    if y.len() != target.len() || y.len() != b * c * pos || y.is_empty() || inv_var.len() != c {
        return Err(Error::Input { name: "target".into(), msg: format!("{} target values and {} channel variances for an output of shape {shape:?}", target.len(), inv_var.len()) });
    }
    let per_channel = (b * pos) as f64;
    let (mut loss, mut grad) = (0.0f64, vec![0.0f32; y.len()]);
    for (i, (&a, &t)) in y.iter().zip(target).enumerate() {
        let w = inv_var[i / pos % c] / (c as f64 * per_channel);
        let d = (a - t) as f64;
        loss += d * d * w;
        grad[i] = (2.0 * d * w) as f32;
    }
    Ok((loss, grad))
}

/// 1 / (σ²_c + ε) for each channel of outputs stacked as `[samples, channels, positions]`, σ²
/// over samples and positions; ε is 10⁻³ of the mean variance (plus 10⁻¹²), so that a dead
/// channel (σ² = 0) weighs at most a thousand times an average one.
pub fn channel_weights(target: &[f32], channels: usize, positions: usize) -> Vec<f64> {
    let mut sum = vec![(0.0f64, 0.0f64, 0usize); channels];
    for (i, &v) in target.iter().enumerate() {
        let s = &mut sum[i / positions.max(1) % channels.max(1)];
        (s.0, s.1, s.2) = (s.0 + v as f64, s.1 + (v as f64).powi(2), s.2 + 1);
    }
    let var: Vec<f64> = sum.iter().map(|&(s, q, n)| if n == 0 { 0.0 } else { (q / n as f64 - (s / n as f64).powi(2)).max(0.0) }).collect();
    let eps = 1e-3 * var.iter().sum::<f64>() / channels.max(1) as f64 + 1e-12;
    var.iter().map(|v| 1.0 / (v + eps)).collect()
}
