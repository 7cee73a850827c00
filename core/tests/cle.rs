//! Cross-layer equalization against AIMET 2.42: per-output-channel weight ranges of every
//! convolution after `equalize_model` (tests/aimet/<model>/conv_weight_ranges.json, "after_cle").

use qplay_core::passes::cle::{conv_ranges, equalize};
use qplay_core::{load_model, Limits};
use serde_json::Value;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn check(model: &[u8], ranges: &str, what: &str) -> (usize, usize) {
    let (g, _) = load_model(model, &Limits::default()).unwrap();
    let (g, report) = equalize(g);
    let aimet: Value = serde_json::from_str(ranges).unwrap();
    let after = &aimet["after_cle"];
    let ours = conv_ranges(&g);
    assert_eq!(ours.len(), after.as_object().unwrap().len(), "{what}: conv count");
    let mut worst = 0.0f64;
    for r in &ours {
        let a = &after[&r.node];
        for (key, vals) in [("min", &r.min), ("max", &r.max)] {
            let theirs: Vec<f64> = a[key].as_array().unwrap_or_else(|| panic!("{what}: {} missing", r.node)).iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(theirs.len(), vals.len());
            for (c, (&x, &y)) in vals.iter().zip(&theirs).enumerate() {
                let rel = (x as f64 - y).abs() / y.abs().max(1e-12);
                worst = worst.max(rel);
                assert!(rel <= 1e-4, "{what} {} channel {c} {key}: qplay {x} vs AIMET {y}", r.node);
            }
        }
    }
    println!("{what}: {} groups, {} sets, {} ReLU6 replaced, {} absorptions, worst relative difference {worst:.2e}", report.groups.len(), report.sets.len(), report.relu6_replaced.len(), report.absorbed.len());
    (report.relu6_replaced.len(), report.sets.len())
}

#[test]
fn cle_matches_aimet_on_digits_mobilenet() {
    let (relu6, sets) = check(
        include_bytes!("../../assets/models/digits_mobilenet.onnx"),
        include_str!("../../tests/aimet/digits_mobilenet/conv_weight_ranges.json"),
        "digits_mobilenet",
    );
    assert_eq!(relu6, 6, "AIMET leaves 1 of 7 Clips (the one before the pooling)");
    assert_eq!(sets, 3, "three depthwise-separable triplets");
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn cle_matches_aimet_on_efficientnet_lite0() {
    let model = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/models/efficientnet_lite0.onnx")).unwrap();
    let ranges = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/aimet/efficientnet_lite0/conv_weight_ranges.json")).unwrap();
    let (relu6, _) = check(&model, &ranges, "efficientnet_lite0");
    assert_eq!(relu6, 32, "AIMET leaves 1 of 33 Clips");
}

/// qplay's function-preserving equalization leaves the FP32 model's function intact
/// (AIMET's replaces ReLU6 by ReLU: 2.31 dB against the original on these photos).
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn preserving_cle_keeps_the_fp32_function() {
    use qplay_core::passes::cle::{equalize_with, CleMode};
    use qplay_core::Executor;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../");
    let model = std::fs::read(format!("{root}assets/models/efficientnet_lite0.onnx")).unwrap();
    let (g, _) = load_model(&model, &Limits::default()).unwrap();
    let (eq, report) = equalize_with(g.clone(), CleMode::Preserving);
    assert!(report.relu6_replaced.is_empty() && report.sets.len() >= 18, "{} sets", report.sets.len());
    let mut orig = Executor::new(g, Limits::default()).unwrap();
    let mut after = Executor::new(eq, Limits::default()).unwrap();
    let (mut sig, mut err) = (0.0f64, 0.0f64);
    let mut inputs: Vec<qplay_core::Tensor> = Vec::new();
    for stem in ["astronaut", "camera", "chelsea", "china", "coffee", "flower", "hubble_deep_field", "ihc", "retina", "rocket"] {
        let b = std::fs::read(format!("{root}tests/reference/efficientnet_lite0/{stem}.input.npy")).unwrap();
        inputs.push(qplay_core::npy::read_npy(&b, 1 << 24).unwrap());
    }
    // and the calibration samples
    let calib = qplay_core::npy::read_npy(&std::fs::read(format!("{root}tests/aimet/efficientnet_lite0/calib40.npy")).unwrap(), 1 << 23).unwrap().to_f32_vec();
    for c in calib.chunks(3 * 224 * 224) {
        inputs.push(qplay_core::Tensor::f32(vec![1, 3, 224, 224], c.to_vec()).unwrap());
    }
    for x in inputs {
        let a = orig.run(vec![x.clone()]).unwrap().remove(0).to_f32_vec();
        let b = after.run(vec![x]).unwrap().remove(0).to_f32_vec();
        assert_eq!(qplay_core::metrics::argmax(&a), qplay_core::metrics::argmax(&b), "top-1 unchanged");
        for (p, q) in a.iter().zip(&b) {
            sig += (*p as f64).powi(2);
            err += ((p - q) as f64).powi(2);
        }
    }
    let db = 10.0 * (sig / err).log10();
    println!("FP32 after qplay's equalization vs original: {db:.1} dB over 50 inputs");
    assert!(db >= 80.0, "{db} dB");
}
