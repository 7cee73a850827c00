//! Latency in the user's own browser: FP32 and (once quantized) INT8 on the last input, timed in
//! the worker.

use crate::bridge;
use crate::protocol::Request;
use crate::state::{AppState, Busy};
use leptos::prelude::*;

#[component]
pub fn SpeedPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let busy = move || state.busy.get() != Busy::Idle;
    let has_input = move || state.classification.with(Option::is_some) || state.digits.with(Option::is_some);
    move || {
        has_input().then(|| {
            view! {
                <section class="panel" aria-labelledby="speed-h">
                    <h2 id="speed-h"><span class="step">"6"</span>"Speed in this browser"</h2>
                    <p class="explain">"Times 10 runs of the FP32 model and, once quantized, of the integer engine on the last input, in the worker (one thread). The engine is WebAssembly SIMD128, or its relaxed-SIMD build where this browser has relaxed SIMD with a true 8-bit dot product; both give the same results."</p>
                    <button class="primary" data-testid="speed" disabled=busy on:click=move |_| {
                        state.start("Timing…");
                        if let Err(e) = bridge::send(&Request::Speed { job: bridge::next_job(), runs: 10 }, wasm_bindgen::JsValue::UNDEFINED) {
                            state.fail(e);
                        }
                    }>"Measure"</button>
                    {move || state.speed.get().map(|s| {
                        let int8 = s.int8.map(|(m, p)| format!("; INT8 median {m:.1} ms (p90 {p:.1}), {:.2}x the FP32 speed", s.fp32.0 / m.max(1e-6)));
                        view! {
                            <p class="speed" data-testid="speed-result" data-ratio=s.int8.map(|(m, _)| format!("{:.3}", s.fp32.0 / m.max(1e-6))).unwrap_or_default()>
                                {format!("FP32 median {:.1} ms (p90 {:.1}) over {} runs", s.fp32.0, s.fp32.1, s.runs)}
                                {int8.unwrap_or_else(|| "; quantize the model to time INT8".into())}
                                {". Engine build: "}<span data-testid="simd-build">{s.simd.clone()}</span>"."
                            </p>
                        }
                    })}
                </section>
            }
        })
    }
}
