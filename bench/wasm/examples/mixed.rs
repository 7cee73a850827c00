//! Native side of the mixed-precision latency benchmark (bench/run --mixed): searches with
//! `qplay_bench_wasm::mixed_points`, then times every point with `qplay_bench_wasm::mixed_time`.
//! Arguments: LITE0.onnx CALIB40.npy EVAL.npy (the 10 photos stacked) INPUT.npy RUNS. Prints one
//! JSON object: the search's, each point with its "native" timing.
use qplay_bench_wasm::native::{clock, npy, read};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let clock = clock();
    let model = read(&a[1]);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let search = qplay_bench_wasm::mixed_points(&model, &npy(&a[2]), &npy(&a[3]), threads, &clock).unwrap_or_else(|e| panic!("{e}"));
    let mut j: serde_json::Value = serde_json::from_str(&search).expect("JSON");
    let (input, runs) = (npy(&a[4]), a[5].parse().expect("RUNS"));
    for p in j["points"].as_array_mut().expect("points") {
        let t = qplay_bench_wasm::mixed_time(&model, &p["encodings"].to_string(), &input, runs, &clock).unwrap_or_else(|e| panic!("{e}"));
        p["native"] = serde_json::from_str(&t).expect("JSON");
    }
    println!("{j}");
}
