//! Helpers shared by the CLI integration tests.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn qplay(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_qplay")).args(args).current_dir(root()).output().expect("run qplay");
    assert!(o.status.success(), "qplay {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qplay-quantize-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Writes `bytes` to `p` through a file of this thread's own and a rename, so that tests running
/// in parallel (which share these inputs) never read a half-written file.
pub fn write_atomic(p: &Path, bytes: &[u8]) {
    let part = p.with_extension(format!("part-{:?}", std::thread::current().id()).replace(['(', ')'], ""));
    std::fs::write(&part, bytes).unwrap();
    std::fs::rename(&part, p).unwrap();
}

pub fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// The 10 reference inputs and onnxruntime logits stacked into [10, ...] arrays (sorted by name,
/// the order of AIMET's evaluation set).
pub fn eval_set() -> (PathBuf, PathBuf) {
    let dir = root().join("tests/reference/efficientnet_lite0");
    let mut stems: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str().and_then(|f| f.strip_suffix(".input.npy")).map(str::to_string))
        .collect();
    stems.sort();
    assert_eq!(stems.len(), 10);
    let stack = |suffix: &str, out: &str| {
        let mut data = Vec::new();
        let mut shape = Vec::new();
        for s in &stems {
            let t = qplay_core::npy::read_npy(&std::fs::read(dir.join(format!("{s}.{suffix}.npy"))).unwrap(), 1 << 24).unwrap();
            shape = t.shape().to_vec();
            data.extend(t.to_f32_vec());
        }
        shape[0] = stems.len();
        let p = tmp(out);
        write_atomic(&p, &qplay_core::npy::write_npy_f32(&shape, &data));
        p
    };
    (stack("input", "x.npy"), stack("logits", "ref.npy"))
}

/// AIMET's digits calibration set (the first 256 training rows) as one [256, 1, 8, 8] .npy.
pub fn digits_calib() -> PathBuf {
    let calib = tmp("calib256.npy");
    let t = qplay_core::npy::read_npy(&std::fs::read(root().join("assets/data/digits_train_x.npy")).unwrap(), 1 << 24).unwrap();
    write_atomic(&calib, &qplay_core::npy::write_npy_f32(&[256, 1, 8, 8], &t.to_f32_vec()[..256 * 64]));
    calib
}

pub fn eval_json(args: &[&str]) -> Value {
    serde_json::from_str(&qplay(args)).unwrap()
}

/// Whether onnxruntime's fused integer kernels sum exactly on this CPU, from a checker's JSON
/// ("fused_exact", see tests/interop/ort_u8s8.py). Where they do not (AVX2 without VNNI: pairs
/// of uint8 x int8 products saturate at 16 bits), only the QDQ graph as written is compared.
pub fn fused_exact(checker: &Value) -> bool {
    let exact = checker["fused_exact"].as_bool().expect("the checker reports fused_exact");
    if !exact {
        println!("onnxruntime's fused U8S8 kernels saturate on this CPU: its optimized path is not compared");
    }
    exact
}

/// Runs one of the onnxruntime checks in tests/interop and returns the JSON line it prints.
pub fn interop_check(script: &str, args: &[&str], tag: &str) -> Value {
    let o = Command::new(std::env::var("QPLAY_PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(format!("tests/interop/{script}"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run python3 (set QPLAY_PYTHON to a Python with onnx and onnxruntime)");
    assert!(o.status.success(), "{tag}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every layer of the QDQ export, run by onnxruntime (as written, and fused into its integer
/// kernels) on qplay's own simulated inputs to that layer, agrees with qplay's simulated output
/// within one output step: the exported model computes what qplay simulates, one layer at a time
/// (on the first samples, from `qplay eval --dump`), give or take `slack` steps of float
/// rounding (float32's relative 6e-8 is 0.004 of a 16-bit step at the range's end).
pub fn check_layers(fp32: &str, qdq: &str, x: &str, enc: &str, tag: &str, slack: f64) {
    let t = qplay_core::npy::read_npy(&std::fs::read(root().join(x)).unwrap(), 1 << 26).unwrap();
    let rows = t.shape()[0].min(if t.len() / t.shape()[0] > 10_000 { 2 } else { 16 });
    let per = t.len() / t.shape()[0];
    let mut shape = t.shape().to_vec();
    shape[0] = rows;
    let head = tmp(&format!("{tag}.head.npy"));
    std::fs::write(&head, qplay_core::npy::write_npy_f32(&shape, &t.to_f32_vec()[..rows * per])).unwrap();
    let dump = tmp(&format!("{tag}.dump"));
    qplay(&["eval", fp32, "--data", head.to_str().unwrap(), "--encodings", enc, "--dump", dump.to_str().unwrap()]);
    let out = interop_check("check_layers.py", &[qdq, dump.to_str().unwrap(), enc], tag);
    println!("{tag} layer by layer: {out}");
    assert!(out["layers"].as_u64().unwrap() >= 2, "{tag}: {out}");
    let keys: &[&str] = if fused_exact(&out) { &["literal_max_steps", "optimized_max_steps"] } else { &["literal_max_steps"] };
    for k in keys {
        assert!(out[k].as_f64().unwrap() <= 1.0 + slack, "{tag}: {k}: {out}");
    }
    let _ = std::fs::remove_dir_all(dump);
}
