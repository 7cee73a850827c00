//! Export: the QDQ model from `qplay quantize --out` runs in onnxruntime (Python, CPU; passes
//! onnx's full checker) and agrees with qplay's simulation; the FP32 transformed model from
//! `--fp32-out` plus the encodings JSON reproduce the simulation when loaded back; and the
//! encodings survive export -> import unchanged; and, layer by layer, each exported layer run by
//! onnxruntime on qplay's simulated inputs agrees with qplay's simulated output within one step.

mod common;

use common::*;
use serde_json::Value;

/// Quantizes `model`, evaluates the exported FP32 model + encodings in qplay, and checks the
/// QDQ export in onnxruntime on the same inputs. Returns the checker's JSON.
/// `default`, `literal`: the largest difference allowed (in output quantization steps) from
/// onnxruntime's default session, which fuses the QDQ graph into its integer kernels, and from
/// the graph executed as written in float; `None`: top-1 on 90% of the samples and, as written,
/// the yardstick below. Where a bound is given, every top-1 must agree.
fn export_case(model: &str, calib: &str, x: &str, args: &[&str], tag: &str, default: Option<f64>, literal: Option<f64>) -> Value {
    let (enc, q, f, sim) = (tmp(&format!("{tag}.json")), tmp(&format!("{tag}.qdq.onnx")), tmp(&format!("{tag}.fp32.onnx")), tmp(&format!("{tag}.sim.npy")));
    let mut a = vec!["quantize", model, "--calib", calib, "--encodings", enc.to_str().unwrap(), "--out", q.to_str().unwrap(), "--fp32-out", f.to_str().unwrap()];
    a.extend_from_slice(args);
    qplay(&a);
    qplay(&["eval", f.to_str().unwrap(), "--data", x, "--encodings", enc.to_str().unwrap(), "--output", sim.to_str().unwrap()]);
    // Lossless round trip: quantizing the exported FP32 model again with the imported encodings
    // re-exports identical encodings.
    let enc2 = tmp(&format!("{tag}.again.json"));
    let again = qplay(&["quantize", f.to_str().unwrap(), "--import", enc.to_str().unwrap(), "--encodings", enc2.to_str().unwrap()]);
    assert!(again.contains("imported"), "{again}");
    let (e1, e2) = (json(&enc), json(&enc2));
    assert_eq!(e1["param_encodings"], e2["param_encodings"], "{tag}: weight encodings after a round trip");
    assert_eq!(e1["activation_encodings"], e2["activation_encodings"], "{tag}: activation encodings after a round trip");

    let out = interop_check("check_qdq.py", &[q.to_str().unwrap(), x, sim.to_str().unwrap(), enc.to_str().unwrap()], tag);
    println!("{tag}: {out}");
    check_layers(f.to_str().unwrap(), q.to_str().unwrap(), x, enc.to_str().unwrap(), tag, 1e-3);
    let lit = &out["literal"];
    let paths: &[(&str, Option<f64>)] = if fused_exact(&out) { &[("optimized", default), ("literal", literal)] } else { &[("literal", literal)] };
    for &(path, bound) in paths {
        let r = &out[path];
        assert!(r["max_steps"].as_f64().unwrap() <= bound.unwrap_or(f64::INFINITY) + 1e-3, "{tag}: {path}: {out}");
        assert!(r["top1_agreement"].as_f64().unwrap() >= if bound.is_some() { 1.0 } else { 0.9 }, "{tag}: {path}: {out}");
    }
    // As written in float, qplay differs from onnxruntime no more than onnxruntime differs from
    // itself when the input moves by 1e-6 (capped at 60 dB: shallow models agree to the last bit).
    let yardstick = lit["self_sqnr_db"].as_f64().unwrap().min(60.0);
    assert!(lit["sqnr_db"].as_f64().unwrap() >= yardstick - 3.0, "{tag}: {out}");
    out
}

#[test]
fn qdq_export_runs_in_onnxruntime_digits() {
    let calib = digits_calib();
    let calib = calib.to_str().unwrap();
    let x = "assets/data/digits_test_x.npy";
    for mode in ["qplay", "aimet"] {
        for recipe in ["none", "dfq"] {
            for pc in [false, true] {
                let mut args = vec!["--mode", mode, "--recipe", recipe];
                if pc {
                    args.push("--per-channel");
                }
                // qplay mode simulates onnxruntime's integer kernels, AIMET mode AIMET's float
                // simulation, which the graph as written computes.
                let default = (mode == "qplay").then_some(1.0);
                export_case("assets/models/digits_mobilenet.onnx", calib, x, &args, &format!("digits_{mode}_{recipe}_{}", if pc { "pc" } else { "pt" }), default, Some(1.0));
            }
        }
    }
    // 4-bit weights in the 8-bit containers.
    export_case("assets/models/digits_mobilenet.onnx", calib, x, &["--weight-bits", "4", "--per-channel"], "digits_w4a8", Some(1.0), Some(1.0));
    let flat = |name: &str, rows: usize| {
        let t = qplay_core::npy::read_npy(&std::fs::read(root().join(format!("assets/data/{name}.npy"))).unwrap(), 1 << 24).unwrap();
        let p = tmp(&format!("{name}_flat.npy"));
        std::fs::write(&p, qplay_core::npy::write_npy_f32(&[rows, 64], &t.to_f32_vec()[..rows * 64])).unwrap();
        p
    };
    let (calib, x) = (flat("digits_train_x", 256), flat("digits_test_x", 450));
    export_case("assets/models/digits_mlp.onnx", calib.to_str().unwrap(), x.to_str().unwrap(), &["--per-channel"], "mlp", Some(1.0), Some(1.0));
}

/// Lite0 in qplay mode: onnxruntime's default session (its integer kernels) computes what qplay
/// simulates, on all ten photos. The graph executed as written sums in float: being 49
/// convolutions deep, an activation lands on the other side of a rounding boundary now and then,
/// and that one-step difference propagates, so single logits end a few steps apart. onnxruntime
/// diverges from itself just as much when the input moves by 1e-6, which is the yardstick for
/// that path; a low-confidence photo may then change its top-1.
#[test]
fn qdq_export_runs_in_onnxruntime_lite0() {
    let (x, _) = eval_set();
    let calib = root().join("tests/aimet/efficientnet_lite0/calib40.npy");
    for recipe in ["none", "dfq"] {
        for pc in [false, true] {
            let mut args = vec!["--recipe", recipe];
            if pc {
                args.push("--per-channel");
            }
            export_case("assets/models/efficientnet_lite0.onnx", calib.to_str().unwrap(), x.to_str().unwrap(), &args, &format!("lite0_{recipe}_{}", if pc { "pc" } else { "pt" }), Some(1.0), None);
        }
    }
}
