//! Native side of the training benchmark (bench/run --train): prints the JSON of
//! `qplay_bench_wasm::train_bench` with this process's peak resident memory. Arguments:
//! LITE0.onnx CALIB40.npy EPOCHS.
use qplay_bench_wasm::native::{clock, npy, read};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let calib = npy(&a[2]);
    let clock = clock();
    let epochs = a[3].parse().expect("epochs");
    let j = qplay_bench_wasm::train_bench(&read(&a[1]), &calib, epochs, &clock).unwrap_or_else(|e| panic!("{e}"));
    // VmHWM: the peak resident set, in kB.
    let peak_kb: f64 = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(f64::NAN);
    let mut v: serde_json::Value = serde_json::from_str(&j).expect("json");
    v["peak_memory_mb"] = (peak_kb / 1024.0).into();
    println!("{v}");
}
