//! FP32 results: top-5 with class names and probabilities, or digits accuracy.

use crate::state::AppState;
use leptos::prelude::*;

#[component]
pub fn Results() -> impl IntoView {
    let state = expect_context::<AppState>();
    // The INT8 side is the compressed model once the user quantized that one.
    let compressed = move || state.quant.get().is_some_and(|q| q.config.compressed);
    let class_name = move |i: usize| state.class_name(i);
    let photo = move || {
        state.classification.get().map(|(name, c)| {
            if let Some(map) = c.map.clone() {
                return view! { <super::map_view::MapView name=name result=c map=map/> }.into_any();
            }
            let rows = c
                .top5
                .iter()
                .enumerate()
                .map(|(rank, p)| {
                    let label = class_name(p.class);
                    let pct = p.prob * 100.0;
                    view! {
                        <li class:first=rank == 0 data-testid=format!("rank-{}", rank + 1) data-class=p.class.to_string()>
                            <span class="label">{label}</span>
                            <span class="bar" style=format!("width:{:.1}%", pct.max(0.5))></span>
                            <span class="pct">{format!("{pct:.1}%")}</span>
                        </li>
                    }
                })
                .collect_view();
            let top1 = c.top5.first().map(|p| p.class).unwrap_or(0);
            let int8 = c.int8.clone().map(|q| {
                let q1 = q.top5.first().map(|p| p.class).unwrap_or(0);
                let agree = q1 == top1;
                let qrows = q.top5.iter().map(|p| {
                    let pct = p.prob * 100.0;
                    view! {
                        <li data-class=p.class.to_string()>
                            <span class="label">{class_name(p.class)}</span>
                            <span class="bar int8" style=format!("width:{:.1}%", pct.max(0.5))></span>
                            <span class="pct">{format!("{pct:.1}%")}</span>
                        </li>
                    }
                }).collect_view();
                view! {
                    <div class="column">
                        <h3 data-testid="int8-title">{move || if compressed() { "Compressed + INT8 (integer engine)" } else { "INT8 (integer engine)" }}</h3>
                        <p class="top1">"Top-1: "<strong data-testid="int8-top1" data-class=q1.to_string()>{class_name(q1)}</strong>
                            <span class=if agree { "agree" } else { "disagree" }>{if agree { " — same as FP32" } else { " — differs from FP32" }}</span></p>
                        <ol class="top5">{qrows}</ol>
                        <p class="timing">
                            <span data-testid="sqnr" data-db=format!("{:.3}", q.sqnr_db)>{format!("logits SQNR vs FP32 {:.1} dB", q.sqnr_db)}</span>
                            <span data-testid="int8-speedup" data-ratio=format!("{:.3}", c.infer_ms / q.infer_ms.max(1e-3))>{format!(", inference {:.1} ms ({:.1}x FP32; medians after a warm-up)", q.infer_ms, c.infer_ms / q.infer_ms.max(1e-3))}</span>
                        </p>
                    </div>
                }
            });
            view! {
                <section class="panel results" data-testid="results" aria-labelledby="res-h">
                    <h2 id="res-h"><span class="step">"5"</span>"Predictions for "{name}</h2>
                    <div class="columns">
                        <div class="column">
                            <h3>"FP32"</h3>
                            <p class="top1">"Top-1: "<strong data-testid="top1" data-class=top1.to_string()>{class_name(top1)}</strong></p>
                            <ol class="top5">{rows}</ol>
                            <p class="timing" data-testid="infer-ms">
                                {format!("inference {:.1} ms, preprocessing {:.1} ms (image {}x{}), in the worker", c.infer_ms, c.preprocess_ms, c.image_width, c.image_height)}
                            </p>
                        </div>
                        {int8}
                    </div>
                </section>
            }
            .into_any()
        })
    };
    let digits = move || {
        state.digits.get().map(|d| {
            let acc = 100.0 * d.correct as f64 / d.n.max(1) as f64;
            let int8 = d.int8.map(|(correct, ms, sqnr)| {
                let a = 100.0 * correct as f64 / d.n.max(1) as f64;
                view! {
                    <p class="top1"><span data-testid="int8-title">{move || if compressed() { "Compressed + INT8: " } else { "INT8: " }}</span><strong data-testid="int8-accuracy">{format!("{a:.2}%")}</strong>
                        {format!(" ({correct} of {} correct) in {ms:.1} ms, ", d.n)}
                        <span data-testid="sqnr" data-db=format!("{sqnr:.3}")>{format!("logits SQNR vs FP32 {sqnr:.1} dB")}</span></p>
                }
            });
            view! {
                <section class="panel results" data-testid="digits-results">
                    <h2><span class="step">"5"</span>"Accuracy on 450 test digits"</h2>
                    <p class="top1">"FP32: "<strong data-testid="digits-accuracy">{format!("{acc:.2}%")}</strong>{format!(" ({} of {} correct) in {:.1} ms", d.correct, d.n, d.infer_ms)}</p>
                    {int8}
                    <div class="digit-samples">
                        {d.samples.iter().map(|&(t, p)| view! {
                            <span class="digit" class:wrong=(t as usize) != p title=format!("true {t}, predicted {p}")>{p}</span>
                        }).collect_view()}
                    </div>
                </section>
            }
        })
    };
    let set = move || {
        state.set_eval.get().map(|(files, r)| {
            let acc = |c: Option<usize>| c.map(|c| format!("{:.1} % ({c} of {})", 100.0 * c as f64 / r.samples.max(1) as f64, r.samples));
            let int8 = match r.int8.clone() {
                None if state.quant.with(Option::is_some) => view! { <p class="hint">"Run the test set again to compare this quantization."</p> }.into_any(),
                None => view! { <p class="hint">"Quantize, then run the test set again to compare INT8."</p> }.into_any(),
                Some(q) => view! {
                    <p>
                        {acc(q.correct).map(|a| view! { "INT8 accuracy "<strong data-testid="set-int8-accuracy">{a}</strong>", " })}
                        {q.same_top1.map(|s| format!("same top-1 as FP32 on {s} of {}, ", r.samples))}
                        {q.mean_iou.map(|i| view! { "mean IoU against FP32 "<strong data-testid="set-int8-iou" data-iou=format!("{i:.5}")>{format!("{i:.3}")}</strong>", " })}
                        {format!("output SQNR {:.1} dB, {:.0} ms in all", q.sqnr_db, q.ms)}
                    </p>
                }
                .into_any(),
            };
            view! {
                <section class="panel results" data-testid="set-results">
                    <h2>"Your test set"</h2>
                    <p data-testid="set-summary">{format!("{} samples from {files} files", r.samples)}
                        {match &r.labels_from { Some(f) => format!(", labels from {f}."), None => ", no labels (so no accuracy).".into() }}</p>
                    <p>{acc(r.fp32_correct).map(|a| view! { "FP32 accuracy "<strong data-testid="set-accuracy">{a}</strong>", " })}{format!("{:.0} ms in all", r.fp32_ms)}</p>
                    {int8}
                    <button data-testid="set-run" disabled=move || state.busy.get() != crate::state::Busy::Idle on:click=move |_| crate::bridge::eval_test_files(state, None)>"Run again"</button>
                </section>
            }
        })
    };
    view! { {photo} {digits} {set} }
}
