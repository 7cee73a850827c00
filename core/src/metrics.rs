//! Comparison metrics between reference (FP32) and test (quantized) outputs.

/// Index of the largest value (first one on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Pooled SQNR in dB: `10 log10(Σ r² / Σ (r - y)²)` over all elements (infinite when equal).
pub fn sqnr_db(reference: &[f32], test: &[f32]) -> f64 {
    let (mut sig, mut err) = (0.0f64, 0.0f64);
    for (&r, &y) in reference.iter().zip(test) {
        sig += (r as f64) * (r as f64);
        err += ((r - y) as f64).powi(2);
    }
    if err == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (sig / err).log10()
    }
}

/// Fraction of rows (of `k` values each) whose argmax agrees.
pub fn top1_agreement(reference: &[f32], test: &[f32], k: usize) -> f64 {
    let rows = reference.len() / k.max(1);
    if rows == 0 {
        return 0.0;
    }
    let same = reference.chunks(k).zip(test.chunks(k)).filter(|(a, b)| argmax(a) == argmax(b)).count();
    same as f64 / rows as f64
}

/// Fraction of rows whose argmax equals the label.
pub fn accuracy(logits: &[f32], labels: &[i64], k: usize) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let correct = logits.chunks(k.max(1)).zip(labels).filter(|(r, &l)| argmax(r) as i64 == l).count();
    correct as f64 / labels.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqnr_of_known_noise() {
        // signal power 4 per element, error power 0.04 -> 20 dB
        assert!((sqnr_db(&[2.0, -2.0], &[2.2, -2.2]) - 20.0).abs() < 1e-4);
        assert!(sqnr_db(&[1.0], &[1.0]).is_infinite());
    }

    #[test]
    fn agreement_and_accuracy() {
        let r = [0.0, 1.0, 5.0, 0.0];
        let t = [0.0, 1.0, 0.0, 5.0];
        assert_eq!(top1_agreement(&r, &t, 2), 0.5);
        assert_eq!(accuracy(&r, &[1, 1], 2), 0.5);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }
}

/// Intersection over union of the maps thresholded at `threshold` (`> threshold` is foreground),
/// e.g. a text detector's probability map against the FP32 one. Two empty maps agree fully (1).
pub fn iou_at(reference: &[f32], test: &[f32], threshold: f32) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (&r, &t) in reference.iter().zip(test) {
        let (a, b) = (r > threshold, t > threshold);
        inter += (a && b) as usize;
        union += (a || b) as usize;
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

#[cfg(test)]
mod iou_tests {
    #[test]
    fn iou_counts_thresholded_pixels() {
        // Foreground {1, 2} against {2, 3}: one shared of three.
        assert!((super::iou_at(&[0.1, 0.9, 0.8, 0.2], &[0.0, 0.2, 0.9, 0.7], 0.5) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(super::iou_at(&[0.0; 3], &[0.1; 3], 0.5), 1.0);
    }
}
