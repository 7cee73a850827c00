//! Native side of the passes benchmark (bench/run --passes): prints the JSON of
//! `qplay_bench_wasm::passes_bench`. Arguments: LITE0.onnx DIGITS.onnx DIGITS_TRAIN_X.npy ITERATIONS.
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let read = |p: &str| std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let calib = qplay_core::npy::read_npy(&read(&a[3]), 1 << 26).expect("calibration .npy").to_f32_vec();
    let start = std::time::Instant::now();
    let clock = || start.elapsed().as_secs_f64() * 1e3;
    let iterations = a[4].parse().expect("iterations");
    match qplay_bench_wasm::passes_bench(&read(&a[1]), &read(&a[2]), &calib[..256 * 64], iterations, &clock) {
        Ok(j) => println!("{j}"),
        Err(e) => panic!("{e}"),
    }
}
