//! Losses over a model output viewed as `[batch, classes, positions]` (positions = the product of
//! any axes after the class axis; 1 for a classifier): each returns the mean loss over samples
//! (and positions) and its gradient with respect to the output.

use crate::error::{Error, Result};

/// Softmax over the class axis of `[batch, k, positions]` data, at temperature `t`.
fn softmax(x: &[f32], k: usize, pos: usize, t: f32) -> Vec<f64> {
    let mut p = vec![0.0f64; x.len()];
    for (b, chunk) in x.chunks(k * pos).enumerate() {
        for j in 0..pos {
            let mx = (0..k).map(|c| chunk[c * pos + j]).fold(f32::NEG_INFINITY, f32::max) as f64;
            let mut z = 0.0;
            for c in 0..k {
                let e = ((chunk[c * pos + j] as f64 - mx) / t as f64).exp();
                p[b * k * pos + c * pos + j] = e;
                z += e;
            }
            for c in 0..k {
                p[b * k * pos + c * pos + j] /= z;
            }
        }
    }
    p
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
    let p = softmax(logits, k, pos, 1.0);
    let count = (b * pos) as f64;
    let mut loss = 0.0;
    let mut grad: Vec<f32> = p.iter().map(|&v| (v / count) as f32).collect();
    for (i, &l) in labels.iter().enumerate() {
        let (bi, j) = (i / pos, i % pos);
        if l < 0 || l as usize >= k {
            return Err(Error::Input { name: "labels".into(), msg: format!("label {l} is outside the model's {k} classes") });
        }
        let at = bi * k * pos + l as usize * pos + j;
        loss -= p[at].max(1e-300).ln();
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
    let ps = softmax(student, k, pos, t);
    let pt = softmax(teacher, k, pos, t);
    let count = (b * pos) as f64;
    let t2 = (t * t) as f64;
    let loss = pt.iter().zip(&ps).filter(|(&a, _)| a > 0.0).map(|(&a, &s)| a * (a.ln() - s.max(1e-300).ln())).sum::<f64>() * t2 / count;
    // d/ds_i of T^2 KL = T (p_s - p_t).
    let grad = ps.iter().zip(&pt).map(|(&s, &a)| (t as f64 * (s - a) / count) as f32).collect();
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
