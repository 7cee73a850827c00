//! ONNX bytes -> load -> validate -> plan (constant folding, fusion). Any input must end in Ok or a
//! typed error: no panic, no hang, no allocation beyond the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qplay_core::{load_model, Executor, Limits};

fuzz_target!(|bytes: &[u8]| {
    let limits = Limits::default();
    if let Ok((graph, _info)) = load_model(bytes, &limits) {
        let _ = Executor::new(graph, limits);
    }
});
