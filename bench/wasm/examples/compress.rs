//! Native side of the compression benchmark (bench/run --compress): prints the JSON of
//! `qplay_bench_wasm::compress_bench`. Arguments: LITE0.onnx CALIB40.npy EVAL.npy (the 10 photos
//! stacked, [10, 3, 224, 224]).
use qplay_bench_wasm::native::{clock, npy, read};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let clock = clock();
    match qplay_bench_wasm::compress_bench(&read(&a[1]), &npy(&a[2]), &npy(&a[3]), &clock) {
        Ok(j) => println!("{j}"),
        Err(e) => panic!("{e}"),
    }
}
