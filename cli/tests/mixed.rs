//! `qplay mixed-precision`: on the digits MobileNet, BOPs from AIMET's own MAC count, the phase-1
//! table, a non-dominated rising curve that beats every uniform candidate, the chosen point
//! reproduced by `qplay eval`, and bad input refused; on EfficientNet-Lite0, the curve against
//! AIMET 2.42's AMP; a point with 16-bit layers exported as QDQ and run by onnxruntime; and a
//! held-out model.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

const MODEL: &str = "assets/models/digits_mobilenet.onnx";
const X_TEST: &str = "assets/data/digits_test_x.npy";
const Y_TEST: &str = "assets/data/digits_test_y.npy";

fn mixed(tag: &str, extra: &[&str]) -> (Value, Value, Vec<Value>, String, String) {
    let (pareto, report, enc, t) = (tmp(&format!("{tag}.pareto.json")), tmp(&format!("{tag}.report.json")), tmp(&format!("{tag}.e.json")), tmp(&format!("{tag}.t.onnx")));
    let calib = digits_calib();
    let mut args = vec!["mixed-precision", MODEL, "--calib", calib.to_str().unwrap(), "--eval-data", X_TEST, "--labels", Y_TEST, "--per-channel", "--json"];
    args.extend_from_slice(&["--pareto", pareto.to_str().unwrap(), "--report", report.to_str().unwrap(), "--encodings", enc.to_str().unwrap(), "--fp32-out", t.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let chosen: Value = serde_json::from_str(qplay(&args).trim()).unwrap();
    let curve = json(&pareto).as_array().unwrap().clone();
    (chosen, json(&report), curve, enc.to_str().unwrap().to_string(), t.to_str().unwrap().to_string())
}

#[test]
fn the_curve_is_non_dominated_beats_uniform_bit_widths_and_its_points_evaluate_as_reported() {
    let (chosen, report, curve, enc, t) = mixed("digits", &["--target-bops", "0.75"]);
    // BOPs count MACs as AIMET 2.42 does (its mac_dict for this model).
    let aimet: Value = serde_json::from_str(&std::fs::read_to_string(root().join("tests/aimet/amp/digits_mobilenet/amp_binary_drop0.5.json")).unwrap()).unwrap();
    let macs: Vec<(String, u64)> = report["layers"].as_array().unwrap().iter().map(|l| (l["name"].as_str().unwrap().to_string(), l["macs"].as_u64().unwrap())).collect();
    let want = aimet["mac_dict"].as_object().unwrap();
    assert_eq!(macs.len(), want.len(), "{macs:?}");
    for (name, m) in &macs {
        assert_eq!(Some(*m), want[name].as_u64(), "{name}");
    }
    // Uniform candidates: W4A8 is half of W8A8's BOPs, W8A16 twice, W16A16 four times.
    let uniform: Vec<(String, f64, f64)> = report["uniform"].as_array().unwrap().iter().map(|u| (u["candidate"].as_str().unwrap().to_string(), u["point"]["relative_bops"].as_f64().unwrap(), u["point"]["score"].as_f64().unwrap())).collect();
    let bops: Vec<(&str, f64)> = uniform.iter().map(|(c, b, _)| (c.as_str(), *b)).collect();
    assert_eq!(bops, vec![("W4A8", 0.5), ("W8A8", 1.0), ("W8A16", 2.0), ("W16A16", 4.0)]);
    // Phase 1 covers every group at every candidate.
    let groups = report["groups"].as_array().unwrap().len();
    let table = report["sensitivity"].as_array().unwrap();
    assert!(groups >= 8, "{groups} groups");
    assert_eq!(table.len(), groups);
    assert!(table.iter().all(|row| row.as_array().unwrap().len() == 4));
    // The curve: cheapest first, every point scoring more than any cheaper one.
    for w in curve.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(a["relative_bops"].as_f64() < b["relative_bops"].as_f64() && a["score"].as_f64() < b["score"].as_f64(), "{a} then {b}");
    }
    // At every uniform candidate's BOPs the curve scores at least as well.
    for (c, b, s) in &uniform {
        let best = curve.iter().filter(|p| p["relative_bops"].as_f64().unwrap() <= b + 1e-12).map(|p| p["score"].as_f64().unwrap()).fold(f64::MIN, f64::max);
        assert!(best >= *s, "{c}: the curve's best {best} at {b} BOPs vs uniform {s}");
    }
    // At the BOPs of the point AIMET 2.42's AMP chose (its BOPs are relative to W16A16), the
    // curve scores at least as well.
    let (ab, asc) = (4.0 * aimet["chosen_point"]["relative_bitops"].as_f64().unwrap(), aimet["chosen_point"]["phase2_score"].as_f64().unwrap());
    let best = curve.iter().filter(|p| p["relative_bops"].as_f64().unwrap() <= ab + 1e-9).map(|p| p["score"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    println!("at AIMET's {ab:.4} BOPs: qplay {best:.2} %, AIMET {asc:.2} %");
    assert!(best >= asc, "at {ab} BOPs: qplay {best} vs AIMET {asc}");
    // The chosen point: the best at most 0.75 of W8A8's BOPs, within 1 point of uniform W8A8.
    let w8a8 = uniform[1].2;
    let (cb, cs) = (chosen["relative_bops"].as_f64().unwrap(), chosen["score"].as_f64().unwrap());
    println!("chosen: {cb:.4} BOPs, {cs:.2} % (uniform W8A8 {w8a8:.2} %); curve {}", curve.iter().map(|p| format!("{:.3}:{:.2}", p["relative_bops"], p["score"])).collect::<Vec<_>>().join(" "));
    assert!(cb <= 0.75 && cs >= w8a8 - 1.0, "{chosen}");
    assert!(chosen["bits"].as_object().unwrap().values().any(|b| b[0] == 4), "some layer at 4 bits: {chosen}");
    // The written encodings and model evaluate to the reported score, each tensor at its bits.
    let e: Value = serde_json::from_str(&std::fs::read_to_string(&enc).unwrap()).unwrap();
    let bws: std::collections::BTreeSet<u64> = e["param_encodings"].as_array().unwrap().iter().map(|p| p["bw"].as_u64().unwrap()).collect();
    assert!(bws.len() >= 2, "weights at several bit-widths: {bws:?}");
    let got = 100.0 * eval_json(&["eval", &t, "--data", X_TEST, "--labels", Y_TEST, "--encodings", &enc, "--json"])["accuracy"].as_f64().unwrap();
    assert!((got - cs).abs() < 1e-9, "qplay eval {got} vs reported {cs}");
}

#[test]
fn bad_settings_get_one_line_errors() {
    let calib = digits_calib();
    let c = calib.to_str().unwrap();
    let base = ["mixed-precision", MODEL, "--calib", c, "--eval-data", X_TEST, "--labels", Y_TEST];
    for (extra, code, says) in [
        (vec!["--target-bops", "0.8", "--candidates", "w4a8,w3x"], 2, "'w3x' is not a candidate"),
        (vec!["--target-bops", "0.8", "--candidates", "w4a32"], 2, "bit-width 32 is not supported"),
        (vec![], 2, "give one target"),
        (vec!["--target-bops", "0.1"], 1, "below the cheapest point (0.5000)"),
        (vec!["--target-bops=-1"], 2, "is not a positive number"),
        (vec!["--target-latency-ms", "0"], 2, "is not a positive number"),
        (vec!["--target-latency-ms", "1", "--mode", "aimet"], 2, "runs --mode qplay only"),
        (vec!["--target-latency-ms", "0.000001"], 1, "below the fastest point"),
    ] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(&extra);
        let o = Command::new(env!("CARGO_BIN_EXE_qplay")).args(&args).current_dir(root()).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
        assert_eq!(o.status.code(), Some(code), "{extra:?}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert!(errors.len() == 1 && errors[0].contains(says), "{extra:?}: {err}");
    }
}

/// A latency budget: the integer engine is timed per layer group at each candidate, every point
/// of the curve gets the latency that table predicts, and the chosen point is the best-scoring
/// one predicted within the budget, then timed whole.
#[test]
fn a_latency_budget_picks_the_best_point_predicted_within_it() {
    let (chosen, report, curve, ..) = mixed("digits-latency", &["--target-latency-ms", "1000"]);
    let table = &report["latency_table"];
    let (groups, cands) = (report["groups"].as_array().unwrap().len(), report["candidates"].as_array().unwrap().len());
    let ms = table["ms"].as_array().unwrap();
    assert_eq!(ms.len(), groups);
    assert!(ms.iter().all(|row| row.as_array().unwrap().len() == cands && row.as_array().unwrap().iter().all(|t| t.as_f64().unwrap() >= 0.0)), "{table}");
    assert!(table["total_ms"].as_array().unwrap().iter().all(|t| t.as_f64().unwrap() > 0.0), "{table}");
    let lat = |p: &Value| p["latency_ms"].as_f64().unwrap();
    assert!(curve.iter().all(|p| lat(p) > 0.0), "every point has a predicted latency");
    // A uniform point's prediction is its candidate's column of the table.
    for (u, c) in report["uniform"].as_array().unwrap().iter().zip(0..cands) {
        let sum: f64 = ms.iter().map(|row| row[c].as_f64().unwrap()).sum::<f64>() + table["other_ms"][c].as_f64().unwrap();
        assert!((lat(&u["point"]) - sum).abs() < 1e-9, "{u}");
    }
    // Every point is within 1000 ms: the best score of the curve is chosen, and timed whole.
    let best = curve.iter().map(|p| p["score"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    assert_eq!(chosen["score"].as_f64().unwrap(), best, "{chosen}");
    assert!(chosen["measured_latency_ms"].as_f64().unwrap() > 0.0, "{chosen}");
}

/// AdaRound candidates (each layer rounded from its FP32 input): uniform W4A8 is above nearest
/// rounding's, the chosen point takes the learned 4-bit weights into the written model and
/// encodings, which evaluate to the reported score.
#[test]
fn adaround_candidates_carry_their_learned_weights_into_the_written_point() {
    let score = |p: &Value| p["score"].as_f64().unwrap();
    let w4a8 = |r: &Value| score(&r["uniform"][0]["point"]);
    let (_, nearest, ..) = mixed("digits-nearest", &["--target-bops", "0.75", "--candidates", "w4a8,w8a8"]);
    let (chosen, ada, _, enc, t) = mixed("digits-ada", &["--target-bops", "0.75", "--candidates", "w4a8,w8a8", "--adaround-iters", "300"]);
    println!("uniform W4A8: nearest {:.2} %, AdaRound {:.2} %; chosen {chosen}", w4a8(&nearest), w4a8(&ada));
    assert!(w4a8(&ada) > w4a8(&nearest) + 0.5, "AdaRound {} vs nearest {}", w4a8(&ada), w4a8(&nearest));
    assert!(chosen["bits"].as_object().unwrap().values().any(|b| b[0] == 4), "{chosen}");
    let got = 100.0 * eval_json(&["eval", &t, "--data", X_TEST, "--labels", Y_TEST, "--encodings", &enc, "--json"])["accuracy"].as_f64().unwrap();
    assert!((got - score(&chosen)).abs() < 1e-9, "qplay eval {got} vs reported {}", score(&chosen));
}

/// EfficientNet-Lite0 against AIMET 2.42's AMP on the same 40 calibration and 10 evaluation
/// photos, scored by the pooled logits SQNR: at each point AIMET chose for its targets, and at
/// every point of its brute-force Pareto list, the curve scores at least as well.
#[test]
fn lite0_curve_meets_or_beats_every_point_of_aimets() {
    let (x, reference) = eval_set();
    let pareto = tmp("lite0-amp.pareto.json");
    let args = ["mixed-precision", "assets/models/efficientnet_lite0.onnx", "--calib", "tests/aimet/efficientnet_lite0/calib40.npy", "--eval-data", x.to_str().unwrap(), "--reference", reference.to_str().unwrap()];
    let chosen: Value = serde_json::from_str(qplay(&[&args[..], &["--per-channel", "--lookahead", "2", "--target-bops", "2.53", "--pareto", pareto.to_str().unwrap(), "--json"]].concat()).trim()).unwrap();
    let curve = json(&pareto).as_array().unwrap().clone();
    let best = |b: f64| curve.iter().filter(|p| p["relative_bops"].as_f64().unwrap() <= b + 1e-9).map(|p| p["score"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    for w in curve.windows(2) {
        assert!(w[0]["relative_bops"].as_f64() < w[1]["relative_bops"].as_f64() && w[0]["score"].as_f64() < w[1]["score"].as_f64());
    }
    for run in ["amp_binary_target20", "amp_binary_target30", "amp_binary_target40", "amp_binary_drop1_belowbest", "amp_bruteforce_dropnone"] {
        let a = json(&root().join(format!("tests/aimet/amp/efficientnet_lite0/{run}.json")));
        // AIMET's BOPs are relative to W16A16 (4 × W8A8's).
        let (ab, asc) = (4.0 * a["chosen_point"]["relative_bitops"].as_f64().unwrap(), a["chosen_point"]["phase2_score"].as_f64().unwrap());
        println!("{run}: at {ab:.3} BOPs qplay {:.2} dB, AIMET {asc:.2} dB", best(ab));
        assert!(best(ab) >= asc, "{run}: at {ab} BOPs qplay {} vs AIMET {asc}", best(ab));
    }
    let brute = json(&root().join("tests/aimet/amp/efficientnet_lite0/amp_bruteforce_dropnone.json"));
    let list = brute["pareto_list"].as_array().unwrap();
    assert_eq!(list.len(), 429);
    for p in list {
        let (ab, asc) = (4.0 * p["relative_bitops"].as_f64().unwrap(), p["phase2_score"].as_f64().unwrap());
        assert!(best(ab) >= asc, "AIMET's Pareto point at {ab} BOPs: qplay {} vs AIMET {asc}", best(ab));
    }
    // The chosen point is the best within the budget.
    assert!(chosen["relative_bops"].as_f64().unwrap() <= 2.53 && chosen["score"].as_f64().unwrap() == best(2.53), "{chosen}");
}

/// A point with 16-bit layers (weights and activations) exports as QDQ that onnxruntime runs as
/// qplay simulates it: each layer within one output step, the whole model with every top-1 equal.
#[test]
fn a_point_with_16_bit_layers_exports_as_qdq_that_onnxruntime_runs() {
    let (qdq, sim, reference) = (tmp("digits16.qdq.onnx"), tmp("digits16.sim.npy"), tmp("digits16.fp32.npy"));
    // Scored by SQNR against FP32 (accuracy saturates below 16 bits).
    qplay(&["eval", MODEL, "--data", X_TEST, "--output", reference.to_str().unwrap()]);
    let (pareto, enc, t) = (tmp("digits16.pareto.json"), tmp("digits16.e.json"), tmp("digits16.t.onnx"));
    let calib = digits_calib();
    let args = ["mixed-precision", MODEL, "--calib", calib.to_str().unwrap(), "--eval-data", X_TEST, "--reference", reference.to_str().unwrap(), "--per-channel", "--lookahead", "1", "--target-bops", "3", "--json"];
    let chosen: Value = serde_json::from_str(qplay(&[&args[..], &["--pareto", pareto.to_str().unwrap(), "--encodings", enc.to_str().unwrap(), "--fp32-out", t.to_str().unwrap(), "--out", qdq.to_str().unwrap()]].concat()).trim()).unwrap();
    let (enc, t) = (enc.to_str().unwrap().to_string(), t.to_str().unwrap().to_string());
    let bits: Vec<&Value> = chosen["bits"].as_object().unwrap().values().collect();
    assert!(bits.iter().any(|b| b[0] == 16) && bits.iter().any(|b| b[1] == 16) && bits.iter().any(|b| b[0] != 16), "{chosen}");
    qplay(&["eval", &t, "--data", X_TEST, "--encodings", &enc, "--output", sim.to_str().unwrap()]);
    // Layer by layer, on qplay's simulated inputs to each layer: within one output step.
    check_layers(&t, qdq.to_str().unwrap(), X_TEST, &enc, "digits16", 0.02);
    // The whole model: a 16-bit step is small enough that float32 rounding moves outputs by a
    // few steps through the layers; qplay is as close to onnxruntime as onnxruntime is to itself
    // on inputs moved by 1e-6, and every top-1 agrees.
    let c = interop_check("check_qdq.py", &[qdq.to_str().unwrap(), X_TEST, sim.to_str().unwrap(), &enc], "digits16");
    println!("16-bit QDQ in onnxruntime: {c}");
    let lit = &c["literal"];
    assert!(lit["sqnr_db"].as_f64().unwrap() >= lit["self_sqnr_db"].as_f64().unwrap().min(60.0) - 3.0 && lit["top1_agreement"].as_f64().unwrap() == 1.0, "{c}");
}

/// A model the search was never tuned on (the held-out MobileNetV2-style net, scored by SQNR
/// against its FP32 outputs): the curve rises, no uniform candidate beats it at its own BOPs, and
/// the point for 0.75 of W8A8's BOPs mixes 4- and 8-bit weights above uniform W4A8.
#[test]
fn held_out_model_curve_is_above_every_uniform_candidate() {
    let (model, x) = ("tests/heldout/mbv2_mini.onnx", "tests/heldout/calib.npy");
    let (reference, pareto, report) = (tmp("mbv2.ref.npy"), tmp("mbv2.pareto.json"), tmp("mbv2.report.json"));
    qplay(&["eval", model, "--data", x, "--output", reference.to_str().unwrap()]);
    let args = ["mixed-precision", model, "--calib", x, "--eval-data", x, "--reference", reference.to_str().unwrap(), "--per-channel", "--target-bops", "0.75", "--json"];
    let chosen: Value = serde_json::from_str(qplay(&[&args[..], &["--pareto", pareto.to_str().unwrap(), "--report", report.to_str().unwrap()]].concat()).trim()).unwrap();
    let curve = json(&pareto).as_array().unwrap().clone();
    for w in curve.windows(2) {
        assert!(w[0]["relative_bops"].as_f64() < w[1]["relative_bops"].as_f64() && w[0]["score"].as_f64() < w[1]["score"].as_f64(), "{} then {}", w[0], w[1]);
    }
    let best = |b: f64| curve.iter().filter(|p| p["relative_bops"].as_f64().unwrap() <= b + 1e-9).map(|p| p["score"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    let uniform: Vec<(String, f64, f64)> = json(&report)["uniform"].as_array().unwrap().iter().map(|u| (u["candidate"].as_str().unwrap().to_string(), u["point"]["relative_bops"].as_f64().unwrap(), u["point"]["score"].as_f64().unwrap())).collect();
    assert_eq!(uniform.len(), 4);
    for (c, b, s) in &uniform {
        assert!(best(*b) >= *s, "{c}: curve {} vs uniform {s}", best(*b));
    }
    let (cb, cs) = (chosen["relative_bops"].as_f64().unwrap(), chosen["score"].as_f64().unwrap());
    println!("held-out mbv2_mini: at {cb:.3} BOPs {cs:.2} dB; uniform {uniform:?}");
    let ws: std::collections::BTreeSet<u64> = chosen["bits"].as_object().unwrap().values().map(|b| b[0].as_u64().unwrap()).collect();
    assert!(cb <= 0.75 && cs > uniform[0].2 + 3.0 && ws.contains(&4) && ws.contains(&8), "{chosen}");
}
