//! Data shared by the integration tests: the bundled digits models and AIMET's calibration and
//! evaluation split of the digits data.
#![allow(dead_code)]

use qplay_core::npy::read_npy;
use qplay_core::Tensor;

pub const MOBILENET: &[u8] = include_bytes!("../../../assets/models/digits_mobilenet.onnx");
pub const MLP: &[u8] = include_bytes!("../../../assets/models/digits_mlp.onnx");
pub const TRAIN_X: &[u8] = include_bytes!("../../../assets/data/digits_train_x.npy");
pub const TEST_X: &[u8] = include_bytes!("../../../assets/data/digits_test_x.npy");
pub const TEST_Y: &[u8] = include_bytes!("../../../assets/data/digits_test_y.npy");

/// The first `rows` samples of a digits .npy, as [rows, 64] (`flat`, the MLP) or [rows, 1, 8, 8].
pub fn digits(bytes: &[u8], rows: usize, flat: bool) -> Tensor {
    let t = read_npy(bytes, 1 << 24).unwrap();
    let d = t.as_f32().unwrap()[..rows * 64].to_vec();
    Tensor::f32(if flat { vec![rows, 64] } else { vec![rows, 1, 8, 8] }, d).unwrap()
}

/// AIMET's calibration set: the first 256 training rows in 8 batches of 32.
pub fn calib_batches(flat: bool) -> Vec<Tensor> {
    let all = digits(TRAIN_X, 256, flat).to_f32_vec();
    all.chunks(32 * 64).map(|c| Tensor::f32(if flat { vec![32, 64] } else { vec![32, 1, 8, 8] }, c.to_vec()).unwrap()).collect()
}

/// The 450-sample test split and its labels.
pub fn test_set(flat: bool) -> (Tensor, Vec<i64>) {
    (digits(TEST_X, 450, flat), read_npy(TEST_Y, 1 << 20).unwrap().to_i64_vec())
}

/// Accuracy in percent of [N, 10] logits against `labels`.
pub fn accuracy_pct(logits: &[f32], labels: &[i64]) -> f64 {
    100.0 * qplay_core::metrics::accuracy(logits, labels, 10)
}
