//! `qplay train`: QAT of the digits models (shipped and held out) at W4A4 and W4A8, scored by
//! `qplay eval` and by onnxruntime on the QDQ export; a pruned model recovered by distillation
//! without labels; bad input refused with one-line errors.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

const Y_TRAIN: &str = "assets/data/digits_train_y.npy";
const Y_TEST: &str = "assets/data/digits_test_y.npy";

/// The digits train and test inputs as the model takes them: [N, 1, 8, 8], or [N, 64] (`flat`).
fn digits(flat: bool) -> (String, String) {
    if !flat {
        return ("assets/data/digits_train_x.npy".into(), "assets/data/digits_test_x.npy".into());
    }
    let conv = |split: &str| {
        let t = qplay_core::npy::read_npy(&std::fs::read(root().join(format!("assets/data/digits_{split}_x.npy"))).unwrap(), 1 << 24).unwrap();
        let p = tmp(&format!("digits_{split}_flat.npy"));
        write_atomic(&p, &qplay_core::npy::write_npy_f32(&[t.shape()[0], 64], &t.to_f32_vec()));
        p.to_str().unwrap().to_string()
    };
    (conv("train"), conv("test"))
}

fn accuracy(model: &str, x: &str, extra: &[&str]) -> f64 {
    let mut a = vec!["eval", model, "--data", x, "--labels", Y_TEST, "--json"];
    a.extend_from_slice(extra);
    100.0 * eval_json(&a)["accuracy"].as_f64().unwrap()
}

/// `qplay train --json` with `args`; returns its JSON.
fn train(model: &str, x: &str, tx: &str, args: &[&str]) -> Value {
    let mut a = vec!["train", model, "--data", x, "--eval-data", tx, "--eval-labels", Y_TEST, "--json"];
    a.extend_from_slice(args);
    let v: Value = serde_json::from_str(&qplay(&a)).unwrap();
    println!("{model} {args:?}: {v}");
    v
}

/// QAT at W4A4 per channel from min-max: within 1.5 points of FP32 and well above PTQ; the
/// score is what `qplay eval` measures with the written encodings, and the QDQ model from
/// `quantize --import` gives the same top-1 in onnxruntime.
fn qat_w4a4(model: &str, flat: bool, tag: &str, epochs: usize, lr: &str, extra: &[&str]) {
    let (x, tx) = digits(flat);
    let fp32 = accuracy(model, &tx, &[]);
    let (out, enc) = (tmp(&format!("{tag}.qat.onnx")), tmp(&format!("{tag}.qat.json")));
    let epochs_arg = epochs.to_string();
    let mut args = vec!["--labels", Y_TRAIN, "--qat", "--weight-bits", "4", "--act-bits", "4", "--per-channel", "--epochs", &epochs_arg, "--lr", lr, "--out", out.to_str().unwrap(), "--encodings", enc.to_str().unwrap()];
    args.extend_from_slice(extra);
    let v = train(model, &x, &tx, &args);
    let (score, ptq) = (v["score"].as_f64().unwrap(), v["score_before"].as_f64().unwrap());
    println!("{tag}: FP32 {fp32:.2} %, W4A4 PTQ {ptq:.2} %, QAT {score:.2} %");
    assert_eq!(v["epochs"], epochs);
    assert!(score >= fp32 - 1.5, "{tag}: QAT {score:.2} % vs FP32 {fp32:.2} %");
    assert!(score > ptq + 1.0, "{tag}: QAT {score:.2} % vs PTQ {ptq:.2} %");
    let (o, e) = (out.to_str().unwrap(), enc.to_str().unwrap());
    assert_eq!(accuracy(o, &tx, &["--encodings", e]), score, "{tag}: qplay eval disagrees");
    let qdq = tmp(&format!("{tag}.qat.qdq.onnx"));
    qplay(&["quantize", o, "--import", e, "--out", qdq.to_str().unwrap()]);
    let sim = tmp(&format!("{tag}.qat.sim.npy"));
    qplay(&["eval", o, "--data", &tx, "--encodings", e, "--output", sim.to_str().unwrap()]);
    let c = Command::new(std::env::var("QPLAY_PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["tests/interop/check_qdq.py", qdq.to_str().unwrap(), &tx, sim.to_str().unwrap(), e])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let c: Value = serde_json::from_slice(&c.stdout).unwrap();
    println!("{tag}: QDQ in onnxruntime {c}");
    let path = if fused_exact(&c) { "optimized" } else { "literal" };
    assert!(c[path]["max_steps"].as_f64().unwrap() <= 1.0 + 1e-3, "{tag}: {c}");
    assert_eq!(c[path]["top1_agreement"].as_f64(), Some(1.0), "{tag}: {c}");
}

#[test]
fn qat_w4a4_per_channel_recovers_the_shipped_digits_models() {
    qat_w4a4("assets/models/digits_mobilenet.onnx", false, "mobilenet", 30, "3e-3", &[]);
    qat_w4a4("assets/models/digits_mlp.onnx", true, "mlp", 30, "3e-3", &[]);
}

/// BatchNorm kept in QAT (batch statistics, re-estimated, then folded into the weights and
/// their per-channel scales): the written model and encodings score what training reported,
/// and the QDQ export gives the same top-1 in onnxruntime.
#[test]
fn qat_with_batchnorm_kept_and_reestimated() {
    qat_w4a4("assets/models/digits_mobilenet.onnx", false, "mobilenet_bn_kept", 10, "1e-3", &["--bn", "keep"]);
}

#[test]
fn a_held_out_residual_model_trains_from_scratch_then_quantizes_by_qat() {
    // Untrained (seeded random weights, tests/heldout/make_models.py): 10 % before.
    let (x, tx) = digits(false);
    let trained = tmp("resnet.fp32.onnx");
    let v = train("tests/heldout/digits_resnet.onnx", &x, &tx, &["--labels", Y_TRAIN, "--epochs", "15", "--lr", "3e-3", "--out", trained.to_str().unwrap()]);
    assert!(v["score_before"].as_f64().unwrap() < 20.0, "{v}");
    assert!(v["score"].as_f64().unwrap() >= 95.0, "{v}");
    assert!(v["final_loss"].as_f64().unwrap() < 0.1, "{v}");
    qat_w4a4(trained.to_str().unwrap(), false, "resnet", 30, "3e-3", &[]);
}

#[test]
fn qat_w4a8_is_at_least_adaround_at_w4a8() {
    for (model, flat, tag) in [("assets/models/digits_mobilenet.onnx", false, "mobilenet"), ("assets/models/digits_mlp.onnx", true, "mlp")] {
        let (x, tx) = digits(flat);
        let (enc, fp32) = (tmp(&format!("{tag}.ada.json")), tmp(&format!("{tag}.ada.onnx")));
        qplay(&["quantize", model, "--calib", &x, "--recipe", "adaround", "--weight-bits", "4", "--per-channel", "--adaround-iters", "2000", "--encodings", enc.to_str().unwrap(), "--fp32-out", fp32.to_str().unwrap()]);
        let ada = accuracy(fp32.to_str().unwrap(), &tx, &["--encodings", enc.to_str().unwrap()]);
        let v = train(model, &x, &tx, &["--labels", Y_TRAIN, "--qat", "--weight-bits", "4", "--act-bits", "8", "--per-channel", "--epochs", "30", "--lr", "3e-3"]);
        let qat = v["score"].as_f64().unwrap();
        println!("{tag}: W4A8 AdaRound {ada:.2} %, QAT {qat:.2} %");
        assert!(qat >= ada, "{tag}: QAT {qat:.2} % below AdaRound's {ada:.2} %");
    }
}

#[test]
fn a_pruned_model_recovers_by_distillation_without_labels() {
    let (x, tx) = digits(false);
    let model = "assets/models/digits_mobilenet.onnx";
    let fp32 = accuracy(model, &tx, &[]);
    let pruned = tmp("pruned.onnx");
    // Scored by SQNR against the original on training samples: no labels anywhere.
    qplay(&["compress", model, "--calib", &digits_calib().to_string_lossy(), "--method", "channel-pruning", "--target-macs", "0.5", "--out", pruned.to_str().unwrap(), "-q"]);
    let v = train(pruned.to_str().unwrap(), &x, &tx, &["--teacher", model, "--epochs", "20"]);
    let (before, after) = (v["score_before"].as_f64().unwrap(), v["score"].as_f64().unwrap());
    println!("pruned to 0.5 MACs: {before:.2} % -> distilled {after:.2} % (FP32 {fp32:.2} %)");
    assert!(after >= fp32 - 1.0, "{after:.2} % vs FP32 {fp32:.2} %");
    assert!(after > before, "{v}");
}

#[test]
fn bad_input_gets_one_line_errors_and_keeps_the_model() {
    let m = "assets/models/digits_mobilenet.onnx";
    let x = "assets/data/digits_train_x.npy";
    let short = tmp("labels_short.npy");
    write_atomic(&short, &qplay_core::npy::write_npy_f32(&[10], &[1.0; 10]));
    let big = tmp("labels_big.npy");
    let mut l = vec![0.0f32; 1347];
    l[5] = 12.0;
    write_atomic(&big, &qplay_core::npy::write_npy_f32(&[1347], &l));
    let kept = tmp("diverged.onnx");
    let three = three_class_model();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_qplay")).args(args).current_dir(root()).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).trim().to_string())
    };
    for (args, code, says) in [
        (vec!["train", m, "--data", x, "--labels", short.to_str().unwrap()], 1, "10 labels for 1347 training samples"),
        (vec!["train", m, "--data", x, "--labels", big.to_str().unwrap()], 1, "label 12 is outside the model's 10 classes"),
        (vec!["train", m, "--data", x, "--teacher", &three], 1, "the teacher's output per sample is [3], the model's is [10]"),
        (vec!["train", m, "--data", x, "--teacher", "tests/heldout/resnet_mini.onnx"], 1, "resnet_mini.onnx"),
        (vec!["train", m, "--data", x], 2, "training needs --labels"),
        (vec!["train", m, "--data", x, "--labels", Y_TRAIN, "--lr=-1"], 2, "--lr -1 is not a positive number"),
        (vec!["train", m, "--data", x, "--labels", Y_TRAIN, "--epochs", "0"], 2, "--epochs and --batch must be at least 1"),
        (vec!["train", m, "--data", x, "--labels", Y_TRAIN, "--qat", "--bn", "keep"], 1, "keeping BatchNormalization in QAT needs per-channel weights"),
        (vec!["train", m, "--data", x, "--labels", Y_TRAIN, "--qat", "--per-channel", "--bn", "keep", "--micro-batch", "1"], 1, "fold BatchNorm instead"),
        (vec!["train", m, "--data", x, "--labels", Y_TRAIN, "--optimizer", "sgd", "--lr", "1e4", "--epochs", "2", "--out", kept.to_str().unwrap()], 1, "training diverged in epoch 1"),
    ] {
        let (got, err) = run(&args);
        assert_eq!(got, Some(code), "{args:?}: {err}");
        // One line says what is wrong (progress lines of finished stages may come before it).
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert!(errors.len() == 1 && errors[0].contains(says), "{args:?}: {err}");
    }
    // A diverged run keeps the last good weights: here the starting ones, scoring as the original.
    let (_, tx) = digits(false);
    assert_eq!(accuracy(kept.to_str().unwrap(), &tx, &[]), accuracy(m, &tx, &[]));
}

/// A [N, 1, 8, 8] -> [N, 3] model (Flatten, Gemm): a teacher whose outputs do not fit.
fn three_class_model() -> String {
    use prost::Message;
    use qplay_core::onnx::proto::{attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto};
    let node = |op: &str, ins: &[&str], out: &str, attribute: Vec<AttributeProto>| NodeProto {
        op_type: Some(op.into()),
        name: Some(out.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        attribute,
        ..Default::default()
    };
    let vi = |n: &str| ValueInfoProto { name: Some(n.into()), ..Default::default() };
    let trans_b = AttributeProto { name: Some("transB".into()), r#type: Some(AttributeType::Int as i32), i: Some(1), ..Default::default() };
    let w = TensorProto { name: Some("w".into()), dims: vec![3, 64], data_type: Some(1), float_data: (0..192).map(|i| (i % 7) as f32 * 0.01).collect(), ..Default::default() };
    let m = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(GraphProto {
            name: Some("three".into()),
            node: vec![node("Flatten", &["input"], "f", vec![]), node("Gemm", &["f", "w"], "y", vec![trans_b])],
            initializer: vec![w],
            input: vec![vi("input")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = tmp("three_classes.onnx");
    write_atomic(&p, &m.encode_to_vec());
    p.to_str().unwrap().to_string()
}
