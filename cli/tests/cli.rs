//! The `qplay` binary as users and scripts call it: golden outputs through the CLI, image
//! preprocessing against the reference tensors, and one-line errors on bad files.

use prost::Message;
use qplay_core::npy::read_npy;
use qplay_core::onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn qplay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qplay")).args(args).current_dir(root()).output().expect("run qplay")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qplay-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn load_f32(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let t = read_npy(&std::fs::read(p).unwrap(), 1 << 26).unwrap();
    (t.shape().to_vec(), t.to_f32_vec())
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0
}

/// Acceptance: `qplay run --input --output` matches onnxruntime within 1e-4 * max|ref|, top-1 equal.
#[test]
fn run_matches_onnxruntime_on_every_reference_input() {
    let mut cases: Vec<(String, String, String)> = Vec::new();
    for stem in ["astronaut", "camera", "chelsea", "china", "coffee", "flower", "hubble_deep_field", "ihc", "retina", "rocket"] {
        cases.push((
            "assets/models/efficientnet_lite0.onnx".into(),
            format!("tests/reference/efficientnet_lite0/{stem}.input.npy"),
            format!("tests/reference/efficientnet_lite0/{stem}.logits.npy"),
        ));
    }
    for m in ["digits_mobilenet", "digits_mlp"] {
        cases.push((format!("assets/models/{m}.onnx"), format!("tests/reference/{m}.input_first32.npy"), format!("tests/reference/{m}.logits_first32.npy")));
    }
    for (i, (model, input, reference)) in cases.iter().enumerate() {
        let out = tmp(&format!("y{i}.npy"));
        let o = qplay(&["run", model, "--input", input, "--output", out.to_str().unwrap()]);
        assert!(o.status.success(), "{model} {input}: {}", String::from_utf8_lossy(&o.stderr));
        let (ys, y) = load_f32(&out);
        let (rs, r) = load_f32(&root().join(reference));
        assert_eq!(ys, rs);
        let scale = r.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = y.iter().zip(&r).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-4 * scale, "{input}: max |diff| {diff} > 1e-4 * {scale}");
        let k = *rs.last().unwrap();
        for (yr, rr) in y.chunks(k).zip(r.chunks(k)) {
            assert_eq!(argmax(yr), argmax(rr), "{input}: top-1");
        }
    }
}

/// `--image --preprocess`: PNGs decode losslessly, so the tensor must equal the reference input;
/// JPEG decoders may differ by one grey level, so for those only the prediction is compared.
#[test]
fn image_preprocessing_matches_the_reference_tensors() {
    let top5: serde_json::Value = serde_json::from_slice(&std::fs::read(root().join("tests/reference/efficientnet_lite0/top5.json")).unwrap()).unwrap();
    for file in ["chelsea.png", "coffee.png", "camera.png", "rocket.jpg", "china.jpg"] {
        let out = tmp(&format!("{file}.npy"));
        let o = qplay(&[
            "run", "assets/models/efficientnet_lite0.onnx", "--image", &format!("assets/images/{file}"),
            "--preprocess", "assets/models/efficientnet_lite0.json", "--output", out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{file}: {}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        let want = &top5[file]["top5"][0];
        let (_, y) = load_f32(&out);
        assert_eq!(argmax(&y) as u64, want["index"].as_u64().unwrap(), "{file}");
        assert!(stdout.contains(want["name"].as_str().unwrap()), "{file}: class name printed: {stdout}");
    }
    // The preprocessed tensor itself, through the library, for lossless PNGs (decoded with the
    // same `image` crate the CLI uses).
    let pre = qplay_core::preprocess::Preprocess::from_json(&std::fs::read_to_string(root().join("assets/models/efficientnet_lite0.json")).unwrap()).unwrap();
    for stem in ["chelsea", "camera", "coffee"] {
        let img = image::load_from_memory(&std::fs::read(root().join(format!("assets/images/{stem}.png"))).unwrap()).unwrap().to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let x = pre.apply(img.as_raw(), w, h).unwrap().to_f32_vec();
        let (_, r) = load_f32(&root().join(format!("tests/reference/efficientnet_lite0/{stem}.input.npy")));
        let diff = x.iter().zip(&r).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff < 1e-5, "{stem}.png preprocessing differs by {diff}");
    }
}

#[test]
fn inspect_json_describes_the_model() {
    let o = qplay(&["inspect", "assets/models/efficientnet_lite0.onnx", "--json"]);
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["opset"], 13);
    assert_eq!(j["inputs"][0]["shape"], serde_json::json!(["1", "3", "224", "224"]));
    assert_eq!(j["op_counts"]["Conv"], 49);
    assert_eq!(j["op_counts"]["BatchNormalization"], 49);
    assert_eq!(j["op_counts"]["Clip"], 33);
    assert_eq!(j["nodes"], 143);
    let o = qplay(&["inspect", "assets/models/digits_mobilenet.onnx", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["parameters"], 9034, "PyTorch's count in shared/samples/README.md");
}

fn tiny_model(node: NodeProto, init: Vec<TensorProto>) -> Vec<u8> {
    let vi = |n: &str| ValueInfoProto { name: Some(n.into()), ..Default::default() };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(GraphProto { node: vec![node], initializer: init, input: vec![vi("x")], output: vec![vi("y")], ..Default::default() }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Acceptance: bad files exit non-zero with one line naming what is wrong, and never panic.
#[test]
fn inspect_rejects_bad_files_with_one_line() {
    let lite0 = std::fs::read(root().join("assets/models/efficientnet_lite0.onnx")).unwrap();
    let unknown = tiny_model(
        NodeProto { op_type: Some("Frobnicate".into()), name: Some("n0".into()), input: vec!["x".into()], output: vec!["y".into()], ..Default::default() },
        vec![],
    );
    let mismatch = tiny_model(
        NodeProto { op_type: Some("Add".into()), name: Some("add".into()), input: vec!["x".into(), "W".into()], output: vec!["y".into()], ..Default::default() },
        vec![TensorProto { name: Some("W".into()), dims: vec![3, 3], data_type: Some(1), raw_data: Some(vec![0; 12]), ..Default::default() }],
    );
    let random: Vec<u8> = (0u32..5000).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.onnx", vec![], "empty"),
        ("random.onnx", random, "not an ONNX model"),
        ("truncated.onnx", lite0[..lite0.len() / 2].to_vec(), "not an ONNX model: protobuf decoding failed at byte"),
        ("photo.onnx", std::fs::read(root().join("assets/images/chelsea.png")).unwrap(), "looks like a PNG image"),
        ("unknown.onnx", unknown, "'Frobnicate'"),
        ("mismatch.onnx", mismatch, "raw_data has 12 bytes"),
    ];
    for (name, bytes, expect) in cases {
        let p = tmp(name);
        std::fs::write(&p, bytes).unwrap();
        let o = qplay(&["inspect", p.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: one line: {err}");
        assert!(err.starts_with("qplay: error: ") && err.contains(expect), "{name}: {err}");
        assert!(!err.contains("panicked"));
    }
    // A closed pipe ends the output quietly: no panic message.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_qplay"))
        .args(["inspect", "assets/models/efficientnet_lite0.onnx"])
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.is_empty(), "{:?} {err}", o.status);
    let o = qplay(&["inspect", "does/not/exist.onnx"]);
    assert_eq!(o.status.code(), Some(1));
    let o = qplay(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
    // --dump writes the simulation's activations: it needs encodings, and not the integer engine.
    let o = qplay(&["eval", "assets/models/digits_mlp.onnx", "--data", "assets/data/digits_test_x.npy", "--dump", "/nonexistent/d"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--dump needs --encodings"));
}

/// Each subcommand's help lists its own flags (with defaults and value names); a misspelt flag
/// exits 2 with clap's suggestion; `--version` and `help <cmd>` work.
#[test]
fn help_is_per_command_and_typos_get_a_suggestion() {
    let o = qplay(&["quantize", "--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in ["--per-channel", "--calib <X.npy|DIR>", "--adaround-iters <N>", "[default: 10000]", "dfq+adaround", "--max-model-mb <MB>"] {
        assert!(help.contains(flag), "quantize --help lacks {flag}: {help}");
    }
    for other in ["--dump", "--profile", "--int8", "--reference"] {
        assert!(!help.contains(other), "quantize --help shows {other}, which is not quantize's");
    }
    assert_eq!(qplay(&["help", "quantize"]).stdout, o.stdout, "`qplay help quantize` is `qplay quantize --help`");

    let o = qplay(&["quantize", "m.onnx", "--per-chanel"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("'--per-chanel'") && err.contains("similar argument exists: '--per-channel'"), "{err}");

    let o = qplay(&["--version"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("qplay {}", env!("CARGO_PKG_VERSION")));
    // Flags that do not combine are usage errors too.
    let o = qplay(&["run", "assets/models/digits_mlp.onnx", "--input", "x.npy", "--int8"]);
    assert_eq!(o.status.code(), Some(2), "--int8 without --encodings");
}

/// `qplay completions SHELL` prints a script the shell accepts (bash is checked with `bash -n`).
#[test]
fn completion_scripts() {
    let o = qplay(&["completions", "bash"]);
    assert!(o.status.success());
    let script = String::from_utf8_lossy(&o.stdout);
    assert!(script.contains("quantize") && script.contains("--per-channel"), "the script completes subcommands and flags");
    let p = tmp("qplay.bash");
    std::fs::write(&p, &o.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&p).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
    for shell in ["zsh", "fish"] {
        let o = qplay(&["completions", shell]);
        assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("per-channel"), "{shell}");
    }
    assert_eq!(qplay(&["completions", "tcsh"]).status.code(), Some(2));
}

/// AdaRound's progress: to a pipe, one plain line per stage (each AdaRounded layer, then
/// calibration) and no carriage return; under a pseudo-terminal, a live bar with an ETA; nothing
/// with --quiet.
#[test]
fn progress_is_plain_in_logs_and_a_bar_on_terminals() {
    let report = tmp("ada_report.json");
    let args = [
        "quantize", "assets/models/digits_mobilenet.onnx", "--calib", "assets/data/digits_train_x.npy",
        "--recipe", "adaround", "--adaround-iters", "300", "--report", report.to_str().unwrap(),
    ];
    let o = qplay(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(!log.contains('\r'), "no carriage returns in a log: {log:?}");
    let layers = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&report).unwrap()).unwrap()["adaround"]["layers"].as_array().unwrap().len();
    // digits_mobilenet: 7 convolutions and the classifier's Gemm (shared/samples/README.md).
    assert_eq!(layers, 8);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), layers + 1, "one line per stage: {log}");
    for (i, line) in lines[..layers].iter().enumerate() {
        assert!(line.starts_with(&format!("adaround {}/{layers}: 300/300 iterations in ", i + 1)), "{line}");
    }
    assert!(lines[layers].starts_with("calibrate: 43/43 batches"), "{}", lines[layers]);

    let mut quiet = args.to_vec();
    quiet.push("--quiet");
    let o = qplay(&quiet);
    assert!(o.status.success() && o.stderr.is_empty(), "--quiet: {}", String::from_utf8_lossy(&o.stderr));

    // `script` (util-linux) gives the command a pseudo-terminal.
    let cmd = std::iter::once(env!("CARGO_BIN_EXE_qplay").to_string()).chain(args.iter().map(|a| a.to_string())).collect::<Vec<_>>().join(" ");
    let o = Command::new("script").args(["-qec", &cmd, "/dev/null"]).current_dir(root()).output().expect("run script");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(screen.contains("ETA ") && screen.contains("adaround 1/8 ["), "a bar with an ETA: {screen}");
}

/// Limits as flags: a model over --max-model-mb is refused from its size alone (a sparse 4 GiB
/// file would take seconds and 4 GiB to read), and tensors over --max-tensor-elements fail with
/// one line naming the limit.
#[test]
fn limit_flags() {
    let big = tmp("huge.onnx");
    std::fs::File::create(&big).unwrap().set_len(4 << 30).unwrap();
    let o = qplay(&["inspect", big.to_str().unwrap(), "--max-model-mb", "1"]);
    std::fs::remove_file(&big).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("4294967296 bytes, over the limit of 1048576 bytes (--max-model-mb)"), "{err}");

    let o = qplay(&["inspect", "assets/models/efficientnet_lite0.onnx", "--max-model-mb", "4"]);
    assert_eq!(o.status.code(), Some(1), "Lite0 is about 19 MB");
    assert!(qplay(&["inspect", "assets/models/efficientnet_lite0.onnx", "--max-model-mb", "40"]).status.success());

    let o = qplay(&["run", "assets/models/digits_mlp.onnx", "--input", "tests/reference/digits_mlp.input_first32.npy", "--max-tensor-elements", "1000"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.lines().count() == 1 && err.contains("limit of 1000 elements"), "{err}");
    let o = qplay(&["eval", "assets/models/digits_mlp.onnx", "--data", "assets/data/digits_train_x.npy", "--output", "/dev/null", "--max-memory-mb", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(1) && err.contains("initializers over the limit of 0 bytes"), "{err}");
}

/// Every resize mode, filter, colour order and layout of the preprocessing JSON against
/// Pillow/numpy (tests/reference/preprocess/make.py). Photos are PNG (lossless decoding).
#[test]
fn preprocessing_modes_match_pillow() {
    let dir = root().join("tests/reference/preprocess");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    cases.sort();
    assert_eq!(cases.len(), 6);
    for json in cases {
        let text = std::fs::read_to_string(&json).unwrap();
        let photo: serde_json::Value = serde_json::from_str(&text).unwrap();
        let photo = photo["image"].as_str().unwrap();
        let path = if photo == "tiny.png" { dir.join(photo) } else { root().join("assets/images").join(photo) };
        let img = image::load_from_memory(&std::fs::read(path).unwrap()).unwrap().to_rgb8();
        let pre = qplay_core::preprocess::Preprocess::from_json(&text).unwrap();
        let x = pre.apply(img.as_raw(), img.width() as usize, img.height() as usize).unwrap();
        let (shape, r) = load_f32(&json.with_extension("npy"));
        assert_eq!(x.shape(), &shape[..], "{}", json.display());
        let diff = x.to_f32_vec().iter().zip(&r).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        // Pillow resamples float images with float32 weights.
        assert!(diff < 2e-4, "{}: differs from Pillow by {diff}", json.display());
    }
}

/// The digits test set as 8x8 grey PNGs, one folder per class (and, for calibration, a flat folder
/// of training photos named `<class>_<n>.png`): `eval --data DIR --preprocess` takes the labels
/// from the folders and must give the accuracy of the same data as .npy; `quantize --calib DIR`
/// calibrates on the photos; a broken photo or a folder without --preprocess is refused.
#[test]
fn photo_folders_as_data_sets() {
    let base = tmp("digit_photos");
    let _ = std::fs::remove_dir_all(&base);
    let load = |p: &str| read_npy(&std::fs::read(root().join(p)).unwrap(), 1 << 24).unwrap();
    let (x, y) = (load("assets/data/digits_test_x.npy").to_f32_vec(), load("assets/data/digits_test_y.npy").to_i64_vec());
    let png = |pixels: &[f32], path: &Path| {
        // Pixels are k/16 for k in 0..=16: stored as the integers k.
        let img = image::GrayImage::from_raw(8, 8, pixels.iter().map(|&v| (v * 16.0).round() as u8).collect()).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        img.save(path).unwrap();
    };
    for (i, (px, &c)) in x.chunks(64).zip(&y).enumerate() {
        png(px, &base.join(format!("test/{c}/{i:03}.png")));
    }
    let train = load("assets/data/digits_train_x.npy").to_f32_vec();
    let train_y = load("assets/data/digits_train_y.npy").to_i64_vec();
    for (i, px) in train.chunks(64).take(64).enumerate() {
        png(px, &base.join(format!("calib/{}_{i:03}.png", train_y[i])));
    }
    let settings = base.join("digits.json");
    std::fs::write(&settings, r#"{"shape": [1, 1, 8, 8], "color": "GRAY", "resize": {"mode": "stretch"}, "scale": 0.0625}"#).unwrap();
    let s = settings.to_str().unwrap();
    let model = "assets/models/digits_mobilenet.onnx";
    let json = |args: &[&str]| -> serde_json::Value {
        let o = qplay(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let photos = json(&["eval", model, "--data", base.join("test").to_str().unwrap(), "--preprocess", s, "--json"]);
    let arrays = json(&["eval", model, "--data", "assets/data/digits_test_x.npy", "--labels", "assets/data/digits_test_y.npy", "--json"]);
    assert_eq!(photos["n"], 450);
    assert_eq!(photos["accuracy"], arrays["accuracy"], "photos {photos} vs arrays {arrays}");

    let enc = tmp("photo_calib.json");
    let o = qplay(&["quantize", model, "--calib", base.join("calib").to_str().unwrap(), "--preprocess", s, "--encodings", enc.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("from 64 calibration samples"), "{}", String::from_utf8_lossy(&o.stdout));
    let q = json(&["eval", model, "--data", base.join("test").to_str().unwrap(), "--preprocess", s, "--encodings", enc.to_str().unwrap(), "--json"]);
    assert!(q["accuracy"].as_f64().unwrap() > arrays["accuracy"].as_f64().unwrap() - 0.03, "W8A8 on photo calibration: {q}");

    std::fs::write(base.join("calib/broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let o = qplay(&["quantize", model, "--calib", base.join("calib").to_str().unwrap(), "--preprocess", s]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(1) && err.lines().count() == 1 && err.contains("broken.png: cannot decode image"), "{err}");
    let o = qplay(&["eval", model, "--data", base.join("test").to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(2), "photos need --preprocess: {}", String::from_utf8_lossy(&o.stderr));
    // An .npy whose samples are not the model's input shape: the error names the file.
    let flat = base.join("flat.npy");
    std::fs::write(&flat, qplay_core::npy::write_npy_f32(&[450, 64], &x)).unwrap();
    let o = qplay(&["quantize", model, "--calib", flat.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(1) && err.lines().count() == 1 && err.contains("flat.npy: samples of shape [64] do not fit the model's input 'input' [N, 1, 8, 8]"), "{err}");
}
