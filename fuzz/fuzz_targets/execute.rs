//! ONNX bytes -> load -> run on a tiny input, in float and through the INT8 simulation and the
//! integer engine. The input's values come from the model bytes, so runs are reproducible.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qplay_core::exec::int8::Int8Executor;
use qplay_core::graph::Dim;
use qplay_core::quant::{QuantSim, QuantSimConfig};
use qplay_core::{load_model, Executor, Graph, Limits, Tensor};

/// Small limits: intermediate tensors stay tiny so every execution is fast.
fn limits() -> Limits {
    Limits { max_tensor_elements: 1 << 16, max_total_bytes: 8 << 20, max_nodes: 512, ..Limits::default() }
}

/// One f32 tensor per graph input, symbolic dimensions set to 1; None when an input is large or
/// of unknown rank.
fn inputs(g: &Graph, seed: &[u8]) -> Option<Vec<Tensor>> {
    let mut k = 0usize;
    g.inputs
        .iter()
        .map(|&v| {
            let dims = g.values[v].ty.as_ref()?.dims.as_ref()?;
            let shape: Vec<usize> = dims.iter().map(|d| if let Dim::Fixed(n) = d { *n } else { 1 }).collect();
            let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&n| n <= 4096)?;
            let data = (0..n)
                .map(|_| {
                    k += 1;
                    f32::from(seed.get(k % seed.len().max(1)).copied().unwrap_or(0)) / 32.0 - 4.0
                })
                .collect();
            Tensor::f32(shape, data).ok()
        })
        .collect()
}

fuzz_target!(|bytes: &[u8]| {
    let Ok((graph, _)) = load_model(bytes, &limits()) else { return };
    let Some(xs) = inputs(&graph, bytes) else { return };
    if let Ok(mut exec) = Executor::new(graph.clone(), limits()) {
        let _ = exec.run(xs.clone());
    }
    let Ok(mut sim) = QuantSim::new(graph, QuantSimConfig::default()) else { return };
    sim.set_limits(limits());
    if xs.len() != 1 || sim.calibrate(&xs).is_err() {
        return;
    }
    if let Ok(mut sx) = sim.executor() {
        let _ = sx.run(xs.clone());
    }
    if let Ok(mut int8) = Int8Executor::new(&sim) {
        let _ = int8.run(xs);
    }
});
