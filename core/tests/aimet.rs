//! qplay's quantization simulation against AIMET 2.42's own exports (tests/aimet, copied from
//! shared/samples/aimet): encodings of every quantized tensor and the resulting accuracy, with
//! AIMET's calibration data (first 256 rows of the digits training split, 8 batches of 32).

use qplay_core::npy::read_npy;
use qplay_core::passes::bn_fold::fold_batch_norms;
use qplay_core::quant::{QuantSim, QuantSimConfig};
use qplay_core::{load_model, Limits, Tensor};
use serde_json::Value;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const MOBILENET: &[u8] = include_bytes!("../../assets/models/digits_mobilenet.onnx");
const MLP: &[u8] = include_bytes!("../../assets/models/digits_mlp.onnx");
const TRAIN_X: &[u8] = include_bytes!("../../assets/data/digits_train_x.npy");
const TEST_X: &[u8] = include_bytes!("../../assets/data/digits_test_x.npy");
const TEST_Y: &[u8] = include_bytes!("../../assets/data/digits_test_y.npy");

fn digits(bytes: &[u8], rows: usize, flat: bool) -> Tensor {
    let t = read_npy(bytes, 1 << 24).unwrap();
    let d = t.as_f32().unwrap()[..rows * 64].to_vec();
    Tensor::f32(if flat { vec![rows, 64] } else { vec![rows, 1, 8, 8] }, d).unwrap()
}

fn calib_batches(flat: bool) -> Vec<Tensor> {
    let all = digits(TRAIN_X, 256, flat).to_f32_vec();
    all.chunks(32 * 64).map(|c| Tensor::f32(if flat { vec![32, 64] } else { vec![32, 1, 8, 8] }, c.to_vec()).unwrap()).collect()
}

fn sim(model: &[u8], flat: bool, config: QuantSimConfig) -> QuantSim {
    let (g, _) = load_model(model, &Limits::default()).unwrap();
    let (g, report) = fold_batch_norms(g);
    assert!(report.unfolded.is_empty(), "every BN folds: {:?}", report.unfolded);
    let mut s = QuantSim::new(g, config).unwrap();
    s.calibrate(&calib_batches(flat)).unwrap();
    s
}

/// Every AIMET encoding has a qplay twin with the same name: scale within 1e-5 relative,
/// identical offsets, bit-widths and kinds; and qplay quantizes nothing AIMET does not.
fn compare(ours: &Value, aimet: &Value, what: &str) {
    for kind in ["activation_encodings", "param_encodings"] {
        let a = aimet[kind].as_array().unwrap();
        let o = ours[kind].as_array().unwrap();
        let names = |v: &Vec<Value>| {
            let mut n: Vec<String> = v.iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
            n.sort();
            n
        };
        assert_eq!(names(o), names(a), "{what} {kind}: quantized tensors");
        for ae in a {
            let name = ae["name"].as_str().unwrap();
            let oe = o.iter().find(|e| e["name"] == ae["name"]).unwrap();
            for k in ["bw", "enc_type", "is_sym", "dtype"] {
                assert_eq!(oe[k], ae[k], "{what} {name}: {k}");
            }
            let (os, as_) = (oe["scale"].as_array().unwrap(), ae["scale"].as_array().unwrap());
            assert_eq!(os.len(), as_.len(), "{what} {name}: channels");
            for (c, (x, y)) in os.iter().zip(as_).enumerate() {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!((x - y).abs() <= 1e-5 * y.abs(), "{what} {name}[{c}]: scale {x} vs AIMET {y}");
            }
            assert_eq!(oe["offset"], ae["offset"], "{what} {name}: offsets");
        }
    }
}

fn aimet_json(path: &str) -> Value {
    serde_json::from_str(path).unwrap()
}

macro_rules! aimet_case {
    ($name:ident, $model:expr, $flat:expr, $file:literal, $w:expr, $pc:expr) => {
        #[test]
        fn $name() {
            let s = sim($model, $flat, QuantSimConfig { weight_bits: $w, act_bits: 8, per_channel: $pc, mode: qplay_core::quant::Mode::Aimet, ..Default::default() });
            let aimet = aimet_json(include_str!(concat!("../../tests/aimet/", $file)));
            compare(&s.to_aimet_json(), &aimet, $file);
        }
    };
}

aimet_case!(encodings_mobilenet_w8a8_pt, MOBILENET, false, "digits_mobilenet/w8a8_pt/digits_mobilenet_w8a8_pt.encodings", 8, false);
aimet_case!(encodings_mobilenet_w8a8_pc, MOBILENET, false, "digits_mobilenet/w8a8_pc/digits_mobilenet_w8a8_pc.encodings", 8, true);
aimet_case!(encodings_mobilenet_w4a8_pc, MOBILENET, false, "digits_mobilenet/w4a8_pc/digits_mobilenet_w4a8_pc.encodings", 4, true);
aimet_case!(encodings_mlp_w8a8_pt, MLP, true, "digits_mlp/w8a8_pt/digits_mlp_w8a8_pt.encodings", 8, false);
aimet_case!(encodings_mlp_w8a8_pc, MLP, true, "digits_mlp/w8a8_pc/digits_mlp_w8a8_pc.encodings", 8, true);
aimet_case!(encodings_mlp_w4a8_pc, MLP, true, "digits_mlp/w4a8_pc/digits_mlp_w4a8_pc.encodings", 4, true);

fn accuracy(model: &[u8], flat: bool, config: QuantSimConfig) -> f64 {
    let s = sim(model, flat, config);
    let mut ex = s.executor().unwrap();
    let y = ex.run(vec![digits(TEST_X, 450, flat)]).unwrap().remove(0).to_f32_vec();
    let labels = read_npy(TEST_Y, 1 << 20).unwrap().to_i64_vec();
    let correct = y
        .chunks(10)
        .zip(&labels)
        .filter(|(r, &l)| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as i64 == l)
        .count();
    100.0 * correct as f64 / labels.len() as f64
}

/// AIMET's accuracy for the same recipe, from its results.json.
fn aimet_accuracy(results: &str, recipe: &str) -> f64 {
    100.0 * aimet_json(results)[recipe]["accuracy"].as_f64().unwrap()
}

#[test]
fn digits_accuracy_within_0_3_points_of_aimet() {
    let mob = include_str!("../../tests/aimet/digits_mobilenet/results.json");
    let mlp = include_str!("../../tests/aimet/digits_mlp/results.json");
    for (model, flat, results, recipe, config) in [
        (MOBILENET, false, mob, "w8a8_pt", QuantSimConfig { weight_bits: 8, act_bits: 8, per_channel: false, mode: qplay_core::quant::Mode::Aimet, ..Default::default() }),
        (MOBILENET, false, mob, "w8a8_pc", QuantSimConfig { weight_bits: 8, act_bits: 8, per_channel: true, mode: qplay_core::quant::Mode::Aimet, ..Default::default() }),
        (MLP, true, mlp, "w8a8_pt", QuantSimConfig { weight_bits: 8, act_bits: 8, per_channel: false, mode: qplay_core::quant::Mode::Aimet, ..Default::default() }),
        (MLP, true, mlp, "w8a8_pc", QuantSimConfig { weight_bits: 8, act_bits: 8, per_channel: true, mode: qplay_core::quant::Mode::Aimet, ..Default::default() }),
    ] {
        let ours = accuracy(model, flat, config);
        let theirs = aimet_accuracy(results, recipe);
        println!("{recipe}: qplay {ours:.2} % vs AIMET {theirs:.2} %");
        assert!((ours - theirs).abs() <= 0.3, "{recipe}: qplay {ours:.2} % vs AIMET {theirs:.2} %");
    }
}

#[test]
fn bad_configurations_are_refused() {
    let (g, _) = load_model(MOBILENET, &Limits::default()).unwrap();
    for bits in [1, 17] {
        let e = QuantSim::new(g.clone(), QuantSimConfig { weight_bits: bits, act_bits: 8, per_channel: false, mode: qplay_core::quant::Mode::Aimet, ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains(&format!("bit-width {bits}")), "{e}");
    }
    let mut s = QuantSim::new(g.clone(), QuantSimConfig { mode: qplay_core::quant::Mode::Aimet, ..Default::default() }).unwrap();
    assert!(s.calibrate(&[]).unwrap_err().to_string().contains("empty"));
    let mut nan = digits(TRAIN_X, 4, false).to_f32_vec();
    nan[5] = f32::NAN;
    let e = s.calibrate(&[Tensor::f32(vec![4, 1, 8, 8], nan).unwrap()]).unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
}

#[test]
fn per_layer_analysis_is_consistent() {
    let s = sim(MOBILENET, false, QuantSimConfig { weight_bits: 8, act_bits: 8, per_channel: false, mode: qplay_core::quant::Mode::Aimet, ..Default::default() });
    let x = digits(TEST_X, 450, false);
    let a = qplay_core::quant::analysis::analyze(&s, std::slice::from_ref(&x)).unwrap();
    // One row per activation encoding, named as in the export.
    let names: Vec<&str> = a.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names.len(), s.to_aimet_json()["activation_encodings"].as_array().unwrap().len() - 14, "minus the 14 Clip bound constants");
    assert!(names.contains(&"input") && names.contains(&"logits"));
    // The model input on [0, 1] quantized with step 1/255: SQNR well above 40 dB.
    let input = a.layers.iter().find(|l| l.name == "input").unwrap();
    assert!(input.sqnr_db > 40.0, "{input:?}");
    // End-to-end SQNR equals the one computed from the two models' outputs directly.
    let fp = {
        let (g, _) = load_model(MOBILENET, &Limits::default()).unwrap();
        let mut e = qplay_core::Executor::new(g, Limits::default()).unwrap();
        e.run(vec![x.clone()]).unwrap().remove(0).to_f32_vec()
    };
    let q = s.executor().unwrap().run(vec![x]).unwrap().remove(0).to_f32_vec();
    let direct = qplay_core::metrics::sqnr_db(&fp, &q);
    assert!((a.logits_sqnr_db - direct).abs() < 0.05, "{} vs {direct}", a.logits_sqnr_db);
    let logits = a.layers.iter().find(|l| l.name == "logits").unwrap();
    assert!((logits.sqnr_db - direct).abs() < 0.05);
    assert_eq!(a.weights.len(), 8);
    assert!(a.weights.iter().all(|w| w.min.len() == w.max.len() && w.min.iter().zip(&w.max).all(|(a, b)| a <= b)));
}

#[test]
fn skipped_layers_stay_in_float() {
    let config = QuantSimConfig { skip: vec!["/fc/Gemm".into()], mode: qplay_core::quant::Mode::Aimet, ..Default::default() };
    let s = sim(MOBILENET, false, config);
    let j = s.to_aimet_json();
    let names = |k: &str| j[k].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert!(!names("param_encodings").contains(&"fc.weight".to_string()));
    assert!(!names("activation_encodings").contains(&"logits".to_string()));
    assert_eq!(names("param_encodings").len(), 7);
    // The simulation and the integer engine still run (the skipped Gemm in float).
    let x = digits(TEST_X, 450, false);
    let y = s.executor().unwrap().run(vec![x.clone()]).unwrap().remove(0);
    let yi = qplay_core::exec::int8::Int8Executor::new(&s).unwrap().run(vec![x]).unwrap().remove(0);
    let labels = read_npy(TEST_Y, 1 << 20).unwrap().to_i64_vec();
    assert!(qplay_core::metrics::accuracy(&y.to_f32_vec(), &labels, 10) > 0.96);
    assert!(qplay_core::metrics::accuracy(&yi.to_f32_vec(), &labels, 10) > 0.96);
    let (g, _) = load_model(MOBILENET, &Limits::default()).unwrap();
    let e = QuantSim::new(g, QuantSimConfig { skip: vec!["nope".into()], mode: qplay_core::quant::Mode::Aimet, ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("'nope'"));
}

/// AIMET 0.6.1 files (name-keyed maps) import to the same encodings as the 1.0.0 export.
#[test]
fn import_061_and_100_agree() {
    let v1: Value = aimet_json(include_str!("../../tests/aimet/digits_mobilenet/w8a8_pc/digits_mobilenet_w8a8_pc.encodings"));
    let to_061 = |list: &Value| -> Value {
        let mut m = serde_json::Map::new();
        for e in list.as_array().unwrap() {
            let encs: Vec<Value> = e["scale"]
                .as_array()
                .unwrap()
                .iter()
                .zip(e["offset"].as_array().unwrap())
                .map(|(s, o)| {
                    let (s, o) = (s.as_f64().unwrap(), o.as_f64().unwrap());
                    let n = ((1u64 << e["bw"].as_u64().unwrap()) - 1) as f64;
                    serde_json::json!({"bitwidth": e["bw"], "is_symmetric": if e["is_sym"].as_bool().unwrap() { "True" } else { "False" },
                        "scale": s, "offset": o, "min": s * o, "max": s * (o + n)})
                })
                .collect();
            m.insert(e["name"].as_str().unwrap().to_string(), Value::Array(encs));
        }
        Value::Object(m)
    };
    let v061 = serde_json::json!({"version": "0.6.1", "activation_encodings": to_061(&v1["activation_encodings"]), "param_encodings": to_061(&v1["param_encodings"])});
    let config = QuantSimConfig { per_channel: true, mode: qplay_core::quant::Mode::Aimet, ..Default::default() };
    let (g, _) = load_model(MOBILENET, &Limits::default()).unwrap();
    let (g, _) = fold_batch_norms(g);
    let mut a = QuantSim::new(g.clone(), config.clone()).unwrap();
    a.import_aimet_json(&v1.to_string()).unwrap();
    let mut b = QuantSim::new(g, config).unwrap();
    b.import_aimet_json(&v061.to_string()).unwrap();
    assert_eq!(a.params, b.params);
    assert_eq!(a.acts, b.acts);
    // and export -> import of qplay's own encodings is lossless
    let mut c = QuantSim::new(a.graph().clone(), a.config().clone()).unwrap();
    c.import_aimet_json(&a.to_aimet_json().to_string()).unwrap();
    assert_eq!(a.params, c.params);
    assert_eq!(a.acts, c.acts);
}

#[test]
fn per_channel_needs_a_channel_axis() {
    // A Gemm whose weight is a scalar constant has no output-channel axis.
    use prost::Message;
    use qplay_core::onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto};
    let vi = |n: &str| ValueInfoProto { name: Some(n.into()), ..Default::default() };
    let m = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(GraphProto {
            node: vec![NodeProto { op_type: Some("MatMul".into()), name: Some("mm".into()), input: vec!["x".into(), "w".into()], output: vec!["y".into()], ..Default::default() }],
            initializer: vec![TensorProto { name: Some("w".into()), dims: vec![], data_type: Some(1), float_data: vec![0.5], ..Default::default() }],
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let (g, _) = load_model(&m.encode_to_vec(), &Limits::default()).unwrap();
    let e = QuantSim::new(g.clone(), QuantSimConfig { per_channel: true, mode: qplay_core::quant::Mode::Aimet, ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("no channel axis") && e.to_string().contains("'w'"), "{e}");
    assert!(QuantSim::new(g, QuantSimConfig { mode: qplay_core::quant::Mode::Aimet, ..Default::default() }).is_ok(), "per-tensor is fine");
}

/// Bias correction removes the mean output shift that weight quantization causes: measured on
/// the first convolution (whose input is the model input, the same in both models), against the
/// FP32 model as it was before the correction.
#[test]
fn bias_correction_removes_the_mean_shift() {
    use qplay_core::quant::bias_correction::correct_biases;
    let config = QuantSimConfig { weight_bits: 4, per_channel: false, ..Default::default() };
    let x = digits(TRAIN_X, 256, false);
    let channel_means = |g: qplay_core::Graph| -> Vec<f64> {
        let id = g.find_value("/features/features.0/Conv_output_0").unwrap();
        let mut ex = qplay_core::Executor::with_fusion(g, Limits::default(), false).unwrap();
        let mut out = Vec::new();
        ex.run_with_hook(vec![x.clone()], &mut |v, t| {
            if v == id {
                out = t.to_f32_vec();
            }
            Ok(())
        })
        .unwrap();
        let per = 64;
        let ch = out.len() / (256 * per);
        (0..ch).map(|c| (0..256).flat_map(|n| out[(n * ch + c) * per..(n * ch + c + 1) * per].iter()).map(|&v| v as f64).sum::<f64>() / (256 * per) as f64).collect()
    };
    let mut s = sim(MOBILENET, false, config);
    let fp = channel_means(s.graph().clone());
    let gap = |q: &[f64]| q.iter().zip(&fp).map(|(a, b)| (a - b).abs()).sum::<f64>() / fp.len() as f64;
    let before = gap(&channel_means(sim_weights_graph(&s)));
    let report = correct_biases(&mut s, &[x.clone()]).unwrap();
    assert_eq!(report.layers.len(), 8);
    let after = gap(&channel_means(sim_weights_graph(&s)));
    // What remains comes from zero padding at the borders of the 8x8 images, which the correction ignores.
    assert!(after < before * 0.2, "mean shift {before} -> {after}");
}

/// The graph the simulation runs, weights quantized (activations left to the caller).
fn sim_weights_graph(s: &QuantSim) -> qplay_core::Graph {
    let mut g = s.graph().clone();
    for p in &s.params {
        let t = g.consts[p.value].take().unwrap();
        let shape = t.shape().to_vec();
        let mut d = t.into_f32().unwrap();
        let per = d.len() / p.encodings.len();
        for (i, v) in d.iter_mut().enumerate() {
            *v = p.encodings[if p.encodings.len() == 1 { 0 } else { i / per }].qdq(*v);
        }
        g.consts[p.value] = Some(Tensor::f32(shape, d).unwrap());
    }
    g
}

/// The histogram of a quantized activation over calibration samples: the min-max encoding
/// covers every value (nothing clipped), the counts add up, the observed range sits inside the
/// encoding's (to half a step).
#[test]
fn activation_histogram_over_calibration_data() {
    let s = sim(MOBILENET, false, QuantSimConfig { weight_bits: 8, act_bits: 8, per_channel: false, mode: qplay_core::quant::Mode::Aimet, ..Default::default() });
    let calib = calib_batches(false);
    let h = qplay_core::quant::analysis::activation_histogram(&s, &calib, "logits", 50).unwrap();
    assert_eq!(h.counts.len(), 50);
    assert_eq!(h.counts.iter().sum::<u64>(), h.total);
    assert_eq!(h.total, 256 * 10);
    assert_eq!(h.clipped, 0);
    // AIMET rounds the offset to the grid: the range may move by up to half a step.
    let half = (h.enc_max - h.enc_min) / 255.0 / 2.0;
    assert!(h.enc_min - half <= h.lo && h.hi <= h.enc_max + half, "{h:?}");
    let e = qplay_core::quant::analysis::activation_histogram(&s, &calib, "nope", 50).unwrap_err();
    assert!(e.to_string().contains("'nope'"));
}

/// qplay's default placement loses nothing against the AIMET-compatible one on the digits
/// models: per bit-width and granularity, logits SQNR against FP32 (450 test digits) at least the
/// AIMET-mode figure (within 0.05 dB), and accuracy within one test sample (0.23 points).
#[test]
fn digits_default_mode_loses_nothing_against_aimet_mode() {
    use qplay_core::quant::Mode;
    for (name, model, flat) in [("digits_mobilenet", MOBILENET, false), ("digits_mlp", MLP, true)] {
        let x = digits(TEST_X, 450, flat);
        let (g, _) = load_model(model, &Limits::default()).unwrap();
        let fp = qplay_core::Executor::new(g, Limits::default()).unwrap().run(vec![x.clone()]).unwrap().remove(0).to_f32_vec();
        let labels = read_npy(TEST_Y, 1 << 20).unwrap().to_i64_vec();
        for (wb, pc) in [(8, false), (8, true), (4, false), (4, true)] {
            let [(q_db, q_acc), (a_db, a_acc)] = [Mode::Qplay, Mode::Aimet].map(|mode| {
                let s = sim(model, flat, QuantSimConfig { weight_bits: wb, act_bits: 8, per_channel: pc, mode, ..Default::default() });
                let y = s.executor().unwrap().run(vec![x.clone()]).unwrap().remove(0).to_f32_vec();
                (qplay_core::metrics::sqnr_db(&fp, &y), 100.0 * qplay_core::metrics::accuracy(&y, &labels, 10))
            });
            println!("{name} W{wb}A8 {}: qplay mode {q_db:.2} dB {q_acc:.2} %, AIMET mode {a_db:.2} dB {a_acc:.2} %", if pc { "per-channel" } else { "per-tensor" });
            assert!(q_db >= a_db - 0.05, "{name} W{wb} pc={pc}: {q_db} vs {a_db} dB");
            assert!(q_acc >= a_acc - 0.23, "{name} W{wb} pc={pc}: {q_acc} vs {a_acc} %");
        }
    }
}
