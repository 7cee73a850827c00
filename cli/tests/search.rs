//! `qplay search` end to end on the digits space, small settings: the written models score in
//! onnxruntime what pareto.json says, the front beats the width-scaled baselines, the cache of
//! steps A–B serves another objective, and bad settings are refused.

mod common;

use common::{interop_check, json, root, tmp};
use serde_json::Value;
use std::process::Command;

/// Small enough for CI: 4 blocks per block, 6 architectures, one epoch each, the cheapest
/// point of the front finetuned for 3 epochs, one baseline.
const SMALL: &[&str] = &["--library", "4", "--architectures", "6", "--bkd-epochs", "1", "--finetune-epochs", "1", "--final-epochs", "3", "--population", "8", "--generations", "5", "--timings", "3"];
/// Search only (steps C), on the cache.
const AGAIN: &[&str] = &["--final-models", "0", "--no-baselines"];

fn search(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_qplay")).arg("search").args(args).current_dir(root()).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn the_search_writes_a_front_that_onnxruntime_confirms() {
    let dir = tmp("search-digits");
    let d = dir.to_str().unwrap();
    let (ok, stdout, stderr) = search(&[&["--out", d, "--json", "--objective", "macs", "--final-models", "1", "--baselines", "0.25"], SMALL].concat());
    assert!(ok, "{stderr}");
    println!("{stderr}");
    let front: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(front, json(&dir.join("pareto.json")));
    let front = front.as_array().unwrap().clone();
    assert_eq!(front.len(), 1);
    let predictor = json(&dir.join("predictor.json"));
    assert_eq!(predictor["n_architectures"], 6);
    assert!(predictor["kendall_tau"].as_f64().unwrap().abs() <= 1.0);
    let reference = json(&dir.join("reference.json"));
    let baselines = json(&dir.join("baselines.json"));
    // onnxruntime on the written files: each accuracy as reported (±1 sample of 450), MACs equal.
    let x = root().join("assets/data/digits_test_x.npy");
    let y = root().join("assets/data/digits_test_y.npy");
    let ort = interop_check("check_search.py", &[d, x.to_str().unwrap(), y.to_str().unwrap()], "search");
    println!("onnxruntime: {ort}");
    for m in front.iter().chain([&reference]).chain(baselines.as_array().unwrap()) {
        let f = m["onnx"].as_str().unwrap();
        let (ours, theirs) = (m["accuracy"].as_f64().unwrap(), ort[f]["accuracy"].as_f64().unwrap());
        assert!((ours - theirs).abs() <= 100.0 / 450.0 + 1e-9, "{f}: qplay {ours} vs onnxruntime {theirs}");
        assert_eq!(m["macs"], ort[f]["macs"], "{f}");
    }
    for p in &front {
        assert!(p["latency_ms"].as_f64().unwrap() > 0.0 && p["predicted_accuracy"].as_f64().is_some() && p["arch"].as_array().unwrap().len() == 3, "{p}");
    }
    // The cheapest point of the front is at most half the reference's MACs.
    assert!(front[0]["macs"].as_u64().unwrap() * 2 <= reference["macs"].as_u64().unwrap());

    // Another objective reuses steps A–B (the cache), measures a latency table and searches:
    // the whole front, sorted by predicted latency.
    let (ok, stdout, stderr) = search(&[&["--out", d, "--objective", "latency-fp32", "--json"], SMALL, AGAIN].concat());
    assert!(ok && stderr.contains("reusing the block library"), "{stderr}");
    let again: Value = serde_json::from_str(stdout.trim()).unwrap();
    let again = again.as_array().unwrap();
    assert!(again.len() >= 2 && again.iter().all(|p| p["accuracy"].is_null()), "{again:?}");
    for w in again.windows(2) {
        let f = |p: &Value, k: &str| p[k].as_f64().unwrap();
        assert!(f(&w[0], "predicted_latency_ms") < f(&w[1], "predicted_latency_ms") && f(&w[0], "predicted_accuracy") < f(&w[1], "predicted_accuracy"));
    }
    let table = dir.join("latency-fp32.json");
    assert!(json(&table)["blocks"].as_array().unwrap().len() == 3);
    // An imported table: the same engine is accepted, another engine or another space refused.
    let (ok, _, stderr) = search(&[&["--out", d, "--objective", "latency-fp32", "--latency-table", table.to_str().unwrap()], SMALL, AGAIN].concat());
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = search(&[&["--out", d, "--objective", "latency-int8", "--latency-table", table.to_str().unwrap()], SMALL, AGAIN].concat());
    assert!(!ok && stderr.contains("fp32 engine"), "{stderr}");
    let mut other = json(&table);
    other["space"]["stem_ch"] = 8.into();
    let other_path = tmp("other-space.json");
    std::fs::write(&other_path, other.to_string()).unwrap();
    let (ok, _, stderr) = search(&[&["--out", d, "--objective", "latency-fp32", "--latency-table", other_path.to_str().unwrap()], SMALL, AGAIN].concat());
    assert!(!ok && stderr.contains("space"), "{stderr}");
}

#[test]
fn bad_settings_are_refused() {
    for (args, msg) in [(&["--population", "0"][..], "--population"), (&["--generations", "0"], "--generations"), (&["--baselines", "1.5"], "--baselines"), (&["--space", "imagenet"], "imagenet")] {
        let (ok, _, stderr) = search(&[&["--out", tmp("search-bad").to_str().unwrap()], args].concat());
        assert!(!ok && stderr.contains(msg), "{args:?}: {stderr}");
    }
}
