//! `qplay compress`: each compressed model runs in onnxruntime with qplay's outputs and the MACs
//! onnx's own shape inference counts; at AIMET 2.42's settings (the shared figures in
//! tests/aimet/compression) qplay's score is at least AIMET's; EfficientNet-Lite0, which AIMET
//! cannot prune as it is, is pruned through its depthwise chains and residual blocks; a compressed
//! model is quantized in the same flow and its QDQ export runs in onnxruntime; bad settings get
//! one-line errors.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

/// Checks `compressed` (from `original`) in onnxruntime on `x` against qplay's own outputs, and
/// returns the checker's JSON.
fn onnxruntime_check(original: &str, compressed: &str, x: &str, tag: &str) -> Value {
    let ours = tmp(&format!("{tag}.out.npy"));
    qplay(&["eval", compressed, "--data", x, "--output", ours.to_str().unwrap()]);
    let v = interop_check("check_compressed.py", &[original, compressed, x, ours.to_str().unwrap()], tag);
    assert!(v["max_rel_diff"].as_f64().unwrap() <= 1e-4, "{tag}: {v}");
    v
}

/// Runs `qplay compress --json` with `args`, writing the model; returns (its JSON, the model).
fn compress(model: &str, args: &[&str], tag: &str) -> (Value, String) {
    let out = tmp(&format!("{tag}.onnx"));
    let mut a = vec!["compress", model, "--json", "--out", out.to_str().unwrap()];
    a.extend_from_slice(args);
    let v: Value = serde_json::from_str(&qplay(&a)).unwrap();
    println!("{tag}: {v}");
    (v, out.to_str().unwrap().to_string())
}

/// AIMET's final score (accuracy in %, or pooled SQNR in dB) and MAC ratio in one of the
/// shared result files.
fn aimet(file: &str) -> (f64, f64) {
    let j = json(&root().join("tests/aimet/compression").join(file));
    let stage = j["stages"].as_array().unwrap().last().unwrap().clone();
    let m = &stage["final_metrics"];
    (m["accuracy_pct"].as_f64().or_else(|| m["pooled_logits_sqnr_db"].as_f64()).unwrap(), stage["aimet_stats"]["mac_compression_ratio"].as_f64().unwrap())
}

/// The per-layer search beats the uniform-ratio baseline (every layer at the one ratio that
/// meets the target, which meets it too): the delivered model scores higher, and its ratios
/// are not all one.
fn beats_uniform(v: &Value, target: f64, tag: &str) {
    let u = &v["uniform"];
    assert!(u["macs_ratio"].as_f64().unwrap() <= target + 1e-9, "{tag}: {u}");
    assert!(v["score"].as_f64().unwrap() > u["score"].as_f64().unwrap(), "{tag}: {} not above the uniform ratio's {}", v["score"], u["score"]);
    let ratios: Vec<&Value> = v["layers"].as_array().unwrap().iter().map(|l| &l["ratio"]).collect();
    assert!(ratios.iter().any(|r| *r != ratios[0]), "{tag}: the uniform model was delivered");
}

#[test]
fn digits_compression_beats_aimet_and_runs_in_onnxruntime() {
    let calib = digits_calib();
    let model = "assets/models/digits_mobilenet.onnx";
    let x = "assets/data/digits_test_x.npy";
    let eval = ["--eval-data", x, "--labels", "assets/data/digits_test_y.npy"];
    for (method, target, file) in [
        ("spatial-svd", "0.75", "digits_mobilenet/ssvd_t0.75.json"),
        ("spatial-svd", "0.5", "digits_mobilenet/ssvd_t0.5.json"),
        ("channel-pruning", "0.75", "digits_mobilenet/cp_t0.75.json"),
        ("channel-pruning", "0.5", "digits_mobilenet/cp_t0.5.json"),
    ] {
        let (aimet_score, aimet_ratio) = aimet(file);
        // AIMET's settings: the first conv ignored, 10 candidates, the 256 calibration digits.
        for skip in [true, false] {
            let tag = format!("digits-{method}-{target}-{skip}");
            let mut args = vec!["--calib", calib.to_str().unwrap(), "--method", method, "--target-macs", target];
            args.extend_from_slice(&eval);
            if skip {
                args.extend_from_slice(&["--skip", "/features/features.0/Conv"]);
            }
            let (v, out) = compress(model, &args, &tag);
            let t: f64 = target.parse().unwrap();
            let score = v["score"].as_f64().unwrap();
            assert!(score >= aimet_score, "{tag}: {score} < AIMET's {aimet_score} (at MAC ratio {aimet_ratio})");
            beats_uniform(&v, t, &tag);
            // The score printed is the compressed model's own, as `qplay eval` measures it.
            let e = eval_json(&["eval", &out, "--data", x, "--labels", "assets/data/digits_test_y.npy", "--json"]);
            assert!((e["accuracy"].as_f64().unwrap() * 100.0 - score).abs() < 1e-9, "{tag}: {e}");
            let c = onnxruntime_check(model, &out, x, &tag);
            assert!(c["macs_ratio"].as_f64().unwrap() <= t + 0.02, "{tag}: {c}");
            assert!((c["macs_ratio"].as_f64().unwrap() - v["macs_ratio"].as_f64().unwrap()).abs() < 1e-9, "{tag}: qplay's MAC count {v} vs {c}");
        }
    }
}

#[test]
fn weight_svd_splits_convs_and_gemms() {
    let calib = digits_calib();
    let mlp_x = "tests/reference/digits_mlp.input_first32.npy";
    for (model, x) in [("assets/models/digits_mobilenet.onnx", calib.to_str().unwrap()), ("assets/models/digits_mlp.onnx", mlp_x)] {
        let tag = format!("wsvd-{}", model.rsplit('/').next().unwrap());
        let (v, out) = compress(model, &["--calib", x, "--method", "weight-svd", "--target-macs", "0.6", "--rank-multiple", "4"], &tag);
        let c = onnxruntime_check(model, &out, x, &tag);
        assert!(c["macs_ratio"].as_f64().unwrap() <= 0.62, "{tag}: {c}");
        assert!(c["nodes"].as_u64().unwrap() > 0);
        // Ranks rounded up to a multiple of 4 (or the layer's full rank).
        for l in v["layers"].as_array().unwrap() {
            let (k, of) = (l["kept"].as_u64().unwrap(), l["of"].as_u64().unwrap());
            assert!(k % 4 == 0 || k == of, "{tag}: {l}");
        }
    }
}

#[test]
fn lite0_pruning_goes_through_depthwise_and_residual_blocks() {
    let (x, reference) = eval_set();
    let model = "assets/models/efficientnet_lite0.onnx";
    let calib = "tests/aimet/efficientnet_lite0/calib40.npy";
    let (v, out) = compress(model, &["--calib", calib, "--method", "channel-pruning", "--target-macs", "0.75", "--candidates", "5", "--eval-data", x.to_str().unwrap(), "--reference", reference.to_str().unwrap(), "--report", tmp("lite0-cp.json").to_str().unwrap()], "lite0-cp");
    // AIMET fails on this model; with the 4 convs after its Pad ignored it reaches 10.97 dB (10
    // candidates; qplay gets 5 here, which keeps the test short).
    let (aimet_score, _) = aimet("efficientnet_lite0/cp_t0.75_ignorepad.json");
    assert!(v["score"].as_f64().unwrap() >= aimet_score, "{v}");
    // One ratio for every layer (22.2 dB) beats AIMET's selection, refined (about 20 dB); the
    // per-layer search from the uniform ratio beats both (23.7 dB measured).
    beats_uniform(&v, 0.75, "lite0-cp");
    let c = onnxruntime_check(model, &out, x.to_str().unwrap(), "lite0-cp");
    assert!(c["macs_ratio"].as_f64().unwrap() <= 0.77, "{c}");
    let report = json(&tmp("lite0-cp.json"));
    let layers = report["layers"].as_array().unwrap();
    // Residual groups (channels feeding several convs through the Adds) were candidates, and
    // depthwise chains were pruned with their producer and consumer.
    let has = |l: &Value, what: &str| l["also"].as_array().is_some_and(|a| a.iter().any(|n| n.as_str().unwrap().contains(what)));
    assert!(layers.iter().any(|l| has(l, "expand")), "no residual group: {layers:?}");
    assert!(layers.iter().filter(|l| !l["ratio"].is_null()).any(|l| has(l, "depthwise")), "no depthwise chain pruned");
    // The sensitivity table is layers x candidates.
    let table = &report["table"];
    assert_eq!(table["scores"].as_array().unwrap().len(), layers.len());
    assert!(table["scores"].as_array().unwrap().iter().all(|r| r.as_array().unwrap().len() == 4));
}

#[test]
fn cost_model_counts_what_onnx_counts() {
    for model in ["assets/models/digits_mobilenet.onnx", "assets/models/efficientnet_lite0.onnx", "assets/models/digits_mlp.onnx"] {
        let j: Value = serde_json::from_str(&qplay(&["inspect", model, "--json"])).unwrap();
        let x = match model {
            m if m.contains("lite0") => eval_set().0,
            m if m.contains("mlp") => root().join("tests/reference/digits_mlp.input_first32.npy"),
            _ => root().join("assets/data/digits_test_x.npy"),
        };
        let c = onnxruntime_check(model, model, x.to_str().unwrap(), "cost");
        assert_eq!(j["macs"].as_u64(), c["macs_original"].as_u64(), "{model}");
        let per_layer: u64 = j["layers"].as_array().unwrap().iter().map(|l| l["macs"].as_u64().unwrap()).sum();
        assert_eq!(per_layer, j["macs"].as_u64().unwrap());
        assert_eq!(j["weight_bytes"]["32"].as_u64().unwrap(), 4 * j["parameters"].as_u64().unwrap(), "{model}");
    }
}

#[test]
fn bad_settings_get_one_line_errors() {
    let calib = digits_calib();
    let c = calib.to_str().unwrap();
    let mlp = "tests/reference/digits_mlp.input_first32.npy";
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_qplay")).args(args).current_dir(root()).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).trim().to_string())
    };
    let m = "assets/models/digits_mobilenet.onnx";
    for (args, code, says) in [
        (vec!["compress", m, "--calib", c, "--method", "spatial-svd", "--target-macs", "0"], 2, "not in (0, 1]"),
        (vec!["compress", m, "--calib", c, "--method", "spatial-svd", "--target-macs", "1.5"], 2, "not in (0, 1]"),
        (vec!["compress", m, "--calib", c, "--method", "spatial-svd", "--target-macs", "0.5", "--skip", "nope"], 2, "--skip 'nope'"),
        (vec!["compress", "assets/models/digits_mlp.onnx", "--calib", mlp, "--method", "spatial-svd", "--target-macs", "0.5"], 1, "nothing to compress with spatial-svd"),
        (vec!["compress", "assets/models/digits_mlp.onnx", "--calib", mlp, "--method", "channel-pruning", "--target-macs", "0.5"], 1, "nothing to compress with channel-pruning"),
        (vec!["compress", "assets/models/efficientnet_lite0.onnx", "--calib", c, "--method", "channel-pruning", "--target-macs", "0.5"], 1, "do not fit the model's input"),
    ] {
        let (got, err) = run(&args);
        assert_eq!(got, Some(code), "{args:?}: {err}");
        // One line says what is wrong (clap may add its pointer to --help below it).
        let mut lines = err.lines().filter(|l| !l.trim().is_empty());
        assert!(lines.next().is_some_and(|l| l.contains(says)), "{args:?}: {err}");
        assert!(lines.all(|l| l.starts_with("For more information")), "{args:?}: {err}");
    }
}

#[test]
fn svd_then_pruning_beats_aimets_two_stages_and_quantizes_in_the_same_flow() {
    // AIMET's run: spatial SVD to 0.75, then channel pruning of that model to 0.66 (0.495 overall).
    let calib = digits_calib();
    let (aimet_score, _) = aimet("digits_mobilenet/ssvd_cp_t0.75_0.66.json");
    let x = "assets/data/digits_test_x.npy";
    let (qdq, enc, transformed) = (tmp("svd-pruning.qdq.onnx"), tmp("svd-pruning.enc.json"), tmp("svd-pruning.t.onnx"));
    // In the same flow, the compressed model is equalized (DFQ) and quantized W8A8 per channel.
    let quant = ["--quantize", "--recipe", "dfq", "--per-channel", "--qdq-out", qdq.to_str().unwrap(), "--encodings", enc.to_str().unwrap(), "--transformed-out", transformed.to_str().unwrap()];
    let mut args = vec!["--calib", calib.to_str().unwrap(), "--method", "svd+pruning", "--svd-target", "0.75", "--target-macs", "0.495", "--eval-data", x, "--labels", "assets/data/digits_test_y.npy", "--skip", "/features/features.0/Conv"];
    args.extend_from_slice(&quant);
    let (v, out) = compress("assets/models/digits_mobilenet.onnx", &args, "svd-pruning");
    assert!(v["score"].as_f64().unwrap() >= aimet_score, "{v} vs AIMET's {aimet_score}");
    // The quantized score is what `qplay eval` measures on the transformed model with the
    // encodings, and it stays within a point of the compressed FP32 model's.
    let q = v["quantized_score"].as_f64().unwrap();
    let (t, e) = (transformed.to_str().unwrap(), enc.to_str().unwrap());
    let ev = eval_json(&["eval", t, "--data", x, "--labels", "assets/data/digits_test_y.npy", "--encodings", e, "--json"]);
    assert!((ev["accuracy"].as_f64().unwrap() * 100.0 - q).abs() < 1e-9, "{ev} vs {v}");
    assert!(q >= v["score"].as_f64().unwrap() - 1.0, "{v}");
    // The QDQ export runs in onnxruntime with qplay's simulated outputs, within one output step
    // and with every top-1 equal: in its default session (fused integer kernels) where those are
    // exact on this CPU, as written otherwise.
    let sim = tmp("svd-pruning.sim.npy");
    qplay(&["eval", t, "--data", x, "--encodings", e, "--output", sim.to_str().unwrap()]);
    let c = interop_check("check_qdq.py", &[qdq.to_str().unwrap(), x, sim.to_str().unwrap(), e], "svd-pruning");
    println!("svd-pruning quantized: {c}");
    let path = if fused_exact(&c) { "optimized" } else { "literal" };
    assert!(c[path]["max_steps"].as_f64().unwrap() <= 1.0 + 1e-3, "{c}");
    assert_eq!(c[path]["top1_agreement"].as_f64(), Some(1.0), "{c}");
    // Both stages' layers are listed: the SVD's, then the pruned halves of the split layers.
    let names: Vec<&str> = v["layers"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert!(names.iter().any(|n| n.ends_with("Conv.0")), "{names:?}");
    let c = onnxruntime_check("assets/models/digits_mobilenet.onnx", &out, x, "svd-pruning");
    assert!(c["macs_ratio"].as_f64().unwrap() <= 0.495 + 0.02, "{c}");
}

/// Architectures the compression code was not written against (tests/heldout/make_models.py): a
/// ResNet with projection shortcuts and BatchNorm nodes, and a MobileNetV2 with ReLU6, folded
/// BatchNorm and inverted residual blocks. Unlabelled: SQNR against the FP32 model on --calib.
#[test]
fn heldout_models_compress_and_the_search_beats_one_ratio() {
    let calib = "tests/heldout/calib.npy";
    for model in ["tests/heldout/resnet_mini.onnx", "tests/heldout/mbv2_mini.onnx"] {
        for method in ["channel-pruning", "spatial-svd"] {
            let tag = format!("{}-{method}", model.rsplit('/').next().unwrap());
            let (v, out) = compress(model, &["--calib", calib, "--method", method, "--target-macs", "0.5"], &tag);
            beats_uniform(&v, 0.5, &tag);
            let c = onnxruntime_check(model, &out, calib, &tag);
            assert!(c["macs_ratio"].as_f64().unwrap() <= 0.52, "{tag}: {c}");
        }
    }
}
