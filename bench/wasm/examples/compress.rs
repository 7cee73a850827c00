//! Native side of the compression benchmark (bench/run --compress): prints the JSON of
//! `qplay_bench_wasm::compress_bench`. Arguments: LITE0.onnx CALIB40.npy EVAL.npy (the 10 photos
//! stacked, [10, 3, 224, 224]).
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let read = |p: &str| std::fs::read(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let npy = |p: &str| qplay_core::npy::read_npy(&read(p), 1 << 26).expect(".npy").to_f32_vec();
    let start = std::time::Instant::now();
    let clock = || start.elapsed().as_secs_f64() * 1e3;
    match qplay_bench_wasm::compress_bench(&read(&a[1]), &npy(&a[2]), &npy(&a[3]), &clock) {
        Ok(j) => println!("{j}"),
        Err(e) => panic!("{e}"),
    }
}
