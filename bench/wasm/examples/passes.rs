//! Native side of the passes benchmark (bench/run --passes): prints the JSON of
//! `qplay_bench_wasm::passes_bench`. Arguments: LITE0.onnx DIGITS.onnx DIGITS_TRAIN_X.npy LITE0_CALIB.npy
//! ITERATIONS.
use qplay_bench_wasm::native::{clock, npy, read};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let calib = npy(&a[3]);
    let clock = clock();
    let iterations = a[5].parse().expect("iterations");
    match qplay_bench_wasm::passes_bench(&read(&a[1]), &read(&a[2]), &calib[..256 * 64], &npy(&a[4]), iterations, &clock) {
        Ok(j) => println!("{j}"),
        Err(e) => panic!("{e}"),
    }
}
