//! `qplay quantize` and `qplay eval` against AIMET 2.42 on EfficientNet-Lite0 (tests/aimet,
//! copied from shared/samples/aimet): the same 40 calibration samples must give AIMET's
//! encodings, and evaluating must give AIMET's logits SQNR.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn compare_encodings(ours: &Value, aimet: &Value, what: &str) {
    for kind in ["activation_encodings", "param_encodings"] {
        let (o, a) = (ours[kind].as_array().unwrap(), aimet[kind].as_array().unwrap());
        assert_eq!(o.len(), a.len(), "{what} {kind}: count");
        for ae in a {
            let name = ae["name"].as_str().unwrap();
            let oe = o.iter().find(|e| e["name"] == ae["name"]).unwrap_or_else(|| panic!("{what}: no encoding for {name}"));
            assert_eq!(oe["offset"], ae["offset"], "{what} {name}: offsets");
            assert_eq!((oe["bw"].clone(), oe["is_sym"].clone(), oe["enc_type"].clone()), (ae["bw"].clone(), ae["is_sym"].clone(), ae["enc_type"].clone()), "{what} {name}");
            for (x, y) in oe["scale"].as_array().unwrap().iter().zip(ae["scale"].as_array().unwrap()) {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!((x - y).abs() <= 1e-5 * y, "{what} {name}: scale {x} vs AIMET {y}");
            }
        }
    }
}

#[test]
fn lite0_encodings_and_sqnr_match_aimet() {
    let aimet_dir = root().join("tests/aimet/efficientnet_lite0");
    let results = json(&aimet_dir.join("results.json"));
    let (x, reference) = eval_set();
    let (x, reference) = (x.to_str().unwrap(), reference.to_str().unwrap());
    for (recipe, per_channel) in [("w8a8_pt", false), ("w8a8_pc", true)] {
        let enc = tmp(&format!("{recipe}.json"));
        let calib = aimet_dir.join("calib40.npy");
        let mut args = vec!["quantize", "assets/models/efficientnet_lite0.onnx", "--mode", "aimet", "--calib", calib.to_str().unwrap(), "--encodings", enc.to_str().unwrap()];
        if per_channel {
            args.push("--per-channel");
        }
        qplay(&args);
        let aimet_enc = aimet_dir.join(recipe).join(format!("efficientnet_lite0_{recipe}.encodings"));
        compare_encodings(&json(&enc), &json(&aimet_enc), recipe);

        let aimet_sqnr = results[recipe]["sqnr_db_pooled"].as_f64().unwrap();
        for (label, e, tol) in [("qplay's encodings", &enc, 0.5), ("AIMET's encodings", &aimet_enc, 0.1)] {
            let out: Value = serde_json::from_str(&qplay(&["eval", "assets/models/efficientnet_lite0.onnx", "--data", x, "--reference", reference, "--encodings", e.to_str().unwrap(), "--json"])).unwrap();
            let sqnr = out["sqnr_db"].as_f64().unwrap();
            println!("{recipe} with {label}: SQNR {sqnr:.3} dB (AIMET {aimet_sqnr:.3} dB), top-1 agreement {}", out["top1_agreement"]);
            assert!((sqnr - aimet_sqnr).abs() <= tol, "{recipe} with {label}: SQNR {sqnr} vs AIMET {aimet_sqnr}");
            assert_eq!(out["top1_agreement"].as_f64().unwrap(), results[recipe]["top1_agreement_with_fp32"].as_f64().unwrap());
        }

        // The integer engine runs the same encodings: per image, the same top-1 as the
        // simulation, and an end-to-end SQNR within 0.2 dB of it (per-layer rounding differences
        // of one step accumulate over 49 convolutions; see exec/int8.rs).
        let e = enc.to_str().unwrap();
        let sim: Value = serde_json::from_str(&qplay(&["eval", "assets/models/efficientnet_lite0.onnx", "--data", x, "--reference", reference, "--encodings", e, "--json"])).unwrap();
        let int: Value = serde_json::from_str(&qplay(&["eval", "assets/models/efficientnet_lite0.onnx", "--data", x, "--reference", reference, "--encodings", e, "--int8", "--json"])).unwrap();
        println!("{recipe}: integer engine SQNR {:.3} dB vs simulation {:.3} dB", int["sqnr_db"], sim["sqnr_db"]);
        assert!((int["sqnr_db"].as_f64().unwrap() - sim["sqnr_db"].as_f64().unwrap()).abs() <= 0.2);
        let sim_logits = tmp("sim_logits.npy");
        let int_logits = tmp("int_logits.npy");
        for stem in ["astronaut", "camera", "chelsea", "china", "coffee", "flower", "hubble_deep_field", "ihc", "retina", "rocket"] {
            let input = format!("tests/reference/efficientnet_lite0/{stem}.input.npy");
            qplay(&["run", "assets/models/efficientnet_lite0.onnx", "--input", &input, "--encodings", e, "--output", sim_logits.to_str().unwrap()]);
            qplay(&["run", "assets/models/efficientnet_lite0.onnx", "--input", &input, "--encodings", e, "--int8", "--output", int_logits.to_str().unwrap()]);
            let load = |p: &Path| qplay_core::npy::read_npy(&std::fs::read(p).unwrap(), 1 << 20).unwrap().to_f32_vec();
            assert_eq!(qplay_core::metrics::argmax(&load(&sim_logits)), qplay_core::metrics::argmax(&load(&int_logits)), "{recipe} {stem}: top-1");
        }
    }
}

/// qplay's default placement fuses depthwise convolutions with their ReLU6: per-channel W8A8
/// EfficientNet-Lite0 reaches onnxruntime's level (17.44 dB), far above AIMET's 9.51 dB.
#[test]
fn lite0_per_channel_default_mode_beats_aimet() {
    let (x, reference) = eval_set();
    let enc = tmp("qplay_pc.json");
    let calib = root().join("tests/aimet/efficientnet_lite0/calib40.npy");
    qplay(&["quantize", "assets/models/efficientnet_lite0.onnx", "--per-channel", "--calib", calib.to_str().unwrap(), "--encodings", enc.to_str().unwrap()]);
    let out: Value = serde_json::from_str(&qplay(&[
        "eval", "assets/models/efficientnet_lite0.onnx", "--data", x.to_str().unwrap(), "--reference", reference.to_str().unwrap(),
        "--encodings", enc.to_str().unwrap(), "--json",
    ]))
    .unwrap();
    let sqnr = out["sqnr_db"].as_f64().unwrap();
    println!("W8A8 per-channel, qplay placement: {sqnr:.2} dB, top-1 agreement {}", out["top1_agreement"]);
    assert!(sqnr >= 17.0, "{sqnr} dB");
}

#[test]
fn digits_quantize_then_eval() {
    let calib = digits_calib();
    let enc = tmp("digits.json");
    let report = tmp("digits_report.json");
    qplay(&["quantize", "assets/models/digits_mobilenet.onnx", "--mode", "aimet", "--calib", calib.to_str().unwrap(), "--encodings", enc.to_str().unwrap(), "--report", report.to_str().unwrap()]);
    assert_eq!(json(&report)["bn_fold"]["folded"], 7);
    let out: Value = serde_json::from_str(&qplay(&[
        "eval", "assets/models/digits_mobilenet.onnx", "--data", "assets/data/digits_test_x.npy",
        "--labels", "assets/data/digits_test_y.npy", "--encodings", enc.to_str().unwrap(), "--json",
    ]))
    .unwrap();
    let aimet = json(&root().join("tests/aimet/digits_mobilenet/results.json"))["w8a8_pt"]["accuracy"].as_f64().unwrap();
    assert!((out["accuracy"].as_f64().unwrap() - aimet).abs() <= 0.003, "{out} vs AIMET {aimet}");
    assert_eq!(out["n"], 450);
}

#[test]
fn bad_encodings_files_are_refused_whole() {
    let cases = [
        ("not json", "{", "not valid JSON"),
        ("unknown tensor", r#"{"version":"1.0.0","activation_encodings":[{"name":"ghost","bw":8,"dtype":"INT","enc_type":"PER_TENSOR","is_sym":false,"offset":[0],"scale":[0.1]}],"param_encodings":[]}"#, "'ghost'"),
        ("wrong channel count", r#"{"version":"1.0.0","quantizer_args":{"per_channel_quantization":true},"activation_encodings":[],"param_encodings":[{"name":"features.0.weight","bw":8,"dtype":"INT","enc_type":"PER_CHANNEL","is_sym":true,"offset":[-128,-128],"scale":[0.1,0.1]}]}"#, "features.0.weight"),
        ("bad scale", r#"{"version":"1.0.0","activation_encodings":[{"name":"input","bw":8,"dtype":"INT","enc_type":"PER_TENSOR","is_sym":false,"offset":[0],"scale":[-1]}],"param_encodings":[]}"#, "'input'"),
    ];
    for (what, text, expect) in cases {
        let p = tmp("bad.json");
        std::fs::write(&p, text).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_qplay"))
            .args(["run", "assets/models/digits_mobilenet.onnx", "--input", "tests/reference/digits_mobilenet.input_first32.npy", "--encodings", p.to_str().unwrap()])
            .current_dir(root())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains(expect) && err.lines().count() == 1, "{what}: {err}");
    }
}

/// DFQ (BN fold + cross-layer equalization): AIMET-compatible mode reproduces AIMET's figures;
/// qplay's default function-preserving equalization rescues per-tensor W8A8 on Lite0.
#[test]
fn dfq_on_lite0_and_digits() {
    let (x, reference) = eval_set();
    let (x, reference) = (x.to_str().unwrap(), reference.to_str().unwrap());
    let calib = root().join("tests/aimet/efficientnet_lite0/calib40.npy");
    let aimet = json(&root().join("tests/aimet/efficientnet_lite0/results.json"));
    let mut sqnr = std::collections::HashMap::new();
    for (mode, recipe) in [("aimet", "dfq"), ("qplay", "dfq"), ("qplay", "none")] {
        let enc = tmp(&format!("lite0_{mode}_{recipe}.json"));
        qplay(&["quantize", "assets/models/efficientnet_lite0.onnx", "--recipe", recipe, "--mode", mode, "--calib", calib.to_str().unwrap(), "--encodings", enc.to_str().unwrap()]);
        let out = eval_json(&["eval", "assets/models/efficientnet_lite0.onnx", "--data", x, "--reference", reference, "--encodings", enc.to_str().unwrap(), "--recipe", recipe, "--json"]);
        println!("Lite0 W8A8 per-tensor, {mode} mode, recipe {recipe}: {:.2} dB, top-1 agreement {}", out["sqnr_db"], out["top1_agreement"]);
        // The integer engine runs the equalized model too (per-channel clip bounds fused in its
        // requantization): within 0.2 dB of the simulation.
        let int8 = eval_json(&["eval", "assets/models/efficientnet_lite0.onnx", "--data", x, "--reference", reference, "--encodings", enc.to_str().unwrap(), "--recipe", recipe, "--int8", "--json"]);
        assert!((int8["sqnr_db"].as_f64().unwrap() - out["sqnr_db"].as_f64().unwrap()).abs() <= 0.2, "{mode} {recipe}: int8 {} vs sim {}", int8["sqnr_db"], out["sqnr_db"]);
        sqnr.insert((mode, recipe), (out["sqnr_db"].as_f64().unwrap(), out["top1_agreement"].as_f64().unwrap()));
    }
    let (a_db, a_top1) = (aimet["w8a8_pt_cle"]["sqnr_db_pooled"].as_f64().unwrap(), aimet["w8a8_pt_cle"]["top1_agreement_with_fp32"].as_f64().unwrap());
    let (db, top1) = sqnr[&("aimet", "dfq")];
    assert!(db >= a_db - 0.5 && top1 >= a_top1, "AIMET mode dfq {db} dB / {top1} vs AIMET {a_db} / {a_top1}");
    let (db, _) = sqnr[&("qplay", "dfq")];
    assert!(db >= 9.5, "qplay dfq per-tensor {db} dB (AIMET's per-channel figure is 9.51)");
    assert!(db > sqnr[&("qplay", "none")].0 + 3.0, "equalization pays off per-tensor");

    let calib = digits_calib();
    let aimet_acc = json(&root().join("tests/aimet/digits_mobilenet/results.json"))["w8a8_pt_cle"]["accuracy"].as_f64().unwrap();
    for mode in ["aimet", "qplay"] {
        let enc = tmp(&format!("digits_{mode}_dfq.json"));
        qplay(&["quantize", "assets/models/digits_mobilenet.onnx", "--recipe", "dfq", "--mode", mode, "--calib", calib.to_str().unwrap(), "--encodings", enc.to_str().unwrap()]);
        let out = eval_json(&[
            "eval", "assets/models/digits_mobilenet.onnx", "--data", "assets/data/digits_test_x.npy", "--labels", "assets/data/digits_test_y.npy",
            "--encodings", enc.to_str().unwrap(), "--recipe", "dfq", "--json",
        ]);
        let acc = out["accuracy"].as_f64().unwrap();
        println!("digits W8A8 per-tensor dfq, {mode} mode: {:.2} % (AIMET {:.2} %)", acc * 100.0, aimet_acc * 100.0);
        assert!(acc >= aimet_acc - 0.003, "{mode}: {acc} vs AIMET {aimet_acc}");
    }
}

/// Bias correction, both flavours, on EfficientNet-Lite0 W8A8 per-tensor after qplay's DFQ: the
/// corrected biases live in the model written by --fp32-out, evaluated with its encodings.
#[test]
fn bias_correction_improves_lite0_dfq() {
    let (x, reference) = eval_set();
    let calib = root().join("tests/aimet/efficientnet_lite0/calib40.npy");
    let mut sqnr = Vec::new();
    for bc in [None, Some("empirical"), Some("analytical")] {
        let tag = bc.unwrap_or("off");
        let (enc, model) = (tmp(&format!("bc_{tag}.json")), tmp(&format!("bc_{tag}.onnx")));
        let mut args = vec!["quantize", "assets/models/efficientnet_lite0.onnx", "--recipe", "dfq", "--calib", calib.to_str().unwrap(), "--encodings", enc.to_str().unwrap(), "--fp32-out", model.to_str().unwrap()];
        if let Some(b) = bc {
            args.extend(["--bias-correction", b]);
        }
        qplay(&args);
        let out = eval_json(&["eval", model.to_str().unwrap(), "--data", x.to_str().unwrap(), "--reference", reference.to_str().unwrap(), "--encodings", enc.to_str().unwrap(), "--json"]);
        println!("Lite0 W8A8 per-tensor, qplay DFQ, bias correction {tag}: {:.2} dB, top-1 agreement {}", out["sqnr_db"].as_f64().unwrap(), out["top1_agreement"]);
        sqnr.push(out["sqnr_db"].as_f64().unwrap());
    }
    assert!(sqnr[1] > sqnr[0] + 0.5 && sqnr[2] > sqnr[0] + 0.5, "{sqnr:?}");
}

/// Equalizing only the layer sets where it measurably helps (`--cle measured`): on
/// EfficientNet-Lite0 the chosen mix is at least as good as the better of "no set" and "every set"
/// on the 10 sample photos, per-tensor and per-channel (where equalizing every set loses).
#[test]
fn measured_equalization_on_lite0() {
    let (x, reference) = eval_set();
    let calib = root().join("tests/aimet/efficientnet_lite0/calib40.npy");
    for pc in [false, true] {
        let mut db = Vec::new();
        for cle in ["none", "all", "measured"] {
            let tag = format!("cle_{cle}_{pc}");
            let (enc, model, report) = (tmp(&format!("{tag}.json")), tmp(&format!("{tag}.onnx")), tmp(&format!("{tag}.report.json")));
            let mut args = vec!["quantize", "assets/models/efficientnet_lite0.onnx", "--calib", calib.to_str().unwrap(), "--encodings", enc.to_str().unwrap()];
            args.extend(["--fp32-out", model.to_str().unwrap(), "--report", report.to_str().unwrap()]);
            args.extend(if cle == "none" { ["--recipe", "none"] } else { ["--recipe", "dfq"] });
            if cle == "measured" {
                args.extend(["--cle", "measured"]);
            }
            if pc {
                args.push("--per-channel");
            }
            println!("{}", qplay(&args).trim());
            let out = eval_json(&["eval", model.to_str().unwrap(), "--data", x.to_str().unwrap(), "--reference", reference.to_str().unwrap(), "--encodings", enc.to_str().unwrap(), "--json"]);
            let s = out["sqnr_db"].as_f64().unwrap();
            println!("Lite0 W8A8 {}, equalization {cle}: {s:.2} dB, top-1 agreement {}", if pc { "per-channel" } else { "per-tensor" }, out["top1_agreement"]);
            db.push(s);
            if cle == "measured" {
                let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
                let sel = &r["cle_selection"];
                let sets = sel["sets"].as_array().unwrap();
                assert_eq!(sel["evaluations"].as_u64().unwrap() as usize, sets.len() + 2);
                for s in sets {
                    let (w, wo) = (s["with_db"].as_f64().unwrap(), s["without_db"].as_f64().unwrap());
                    // The choice follows the measurement.
                    assert_eq!(s["equalized"].as_bool().unwrap(), w > wo, "{s}");
                }
            }
        }
        assert!(db[2] >= db[0].max(db[1]) - 0.2, "measured {} vs none {} / all {}", db[2], db[0], db[1]);
    }
}
