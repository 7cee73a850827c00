//! The model zoo table (see [`crate::zoo`]): every bundled model under four recipes, computed here.

use super::JobProgress;
use crate::state::{AppState, Busy};
use crate::zoo::{self, MODELS, RECIPES};
use leptos::prelude::*;

#[component]
pub fn ZooPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let busy = move || state.busy.get() != Busy::Idle;
    let running = move || {
        state.busy.track();
        zoo::running(state)
    };
    let rows = move || {
        state.zoo.get().into_iter().zip(MODELS).map(|(r, m)| {
            RECIPES.iter().zip(r.recipes).enumerate().map(|(i, (recipe, q))| {
                let (fp32, value) = zoo::figures(m, r.fp32, q);
                let change = match (r.fp32.accuracy_pct, q.accuracy_pct) {
                    (Some(a), Some(b)) => format!("{:+.2} points", b - a),
                    _ => match q.iou {
                        Some(iou) => format!("IoU {iou:.4}"),
                        None => q.top1_agree_pct.map_or_else(String::new, |t| format!("top-1 agrees on {t:.0} %")),
                    },
                };
                // The bar: accuracy out of 100, or SQNR out of 40 dB.
                let bar = if m.photos() { q.sqnr_db.unwrap_or(0.0) / 40.0 } else { q.accuracy_pct.unwrap_or(0.0) / 100.0 };
                let head = (i == 0).then(|| view! {
                    <td rowspan="4" class="zoo-model"><strong>{m.label()}</strong><br/><small>{m.task}</small><br/><small class="hint">{m.describe()}</small></td>
                    <td rowspan="4">{m.metric()}<br/><strong data-testid="zoo-fp32" data-model=m.sample>{fp32}</strong></td>
                });
                view! {
                    <tr>
                        {head}
                        <td>{recipe.label}</td>
                        <td data-testid="zoo-figure" data-model=m.sample data-recipe=recipe.key data-value=value data-iou=q.iou.map(|v| format!("{v:.4}"))>
                            <span class="zoo-value">{value.clone()}</span>
                            <span class="zoo-bar" aria-hidden="true"><span style=format!("width: {:.1}%", (bar * 100.0).clamp(0.0, 100.0))></span></span>
                        </td>
                        <td>{change}</td>
                        <td>{format!("{:.1} s", q.seconds)}</td>
                        <td>
                            <a href=recipe.link(m) target="_blank" rel="noopener">"Open in the page"</a>
                            <details><summary>"Commands"</summary><pre class="zoo-cmd">{zoo::commands(m, recipe)}</pre></details>
                        </td>
                    </tr>
                }
            }).collect_view()
        }).collect_view()
    };
    let csv = move || format!("data:text/csv;charset=utf-8,{}", js_sys::encode_uri_component(&zoo::csv(&state.zoo.get())));
    view! {
        <section class="panel" aria-labelledby="zoo-h">
            <h2 id="zoo-h">"Model zoo"</h2>
            <p class="explain">
                {format!("Every bundled model under four recipes, computed in this tab on the bundled data, as AIMET's model zoo lists FP32 against quantized figures. Quantized figures come from the integer engine; AdaRound runs {} iterations per layer. ", zoo::ADAROUND_ITERATIONS)}
                "Each row's commands print the same figure with the qplay CLI; its link sets the model and recipe up in this page (on the page's own calibration data)."
            </p>
            <button class="primary" data-testid="zoo-run" disabled=busy on:click=move |_| zoo::run(state)>"Compute the zoo"</button>
            {move || running().then(|| view! { <JobProgress testid="zoo-progress" eta_testid="zoo-eta"/> })}
            {move || (!state.zoo.with(Vec::is_empty)).then(|| view! {
                <div class="table-wrap zoo-wrap">
                    <table class="zoo" data-testid="zoo-table">
                        <caption class="hint">{move || format!("{} of {} models computed", state.zoo.with(Vec::len), MODELS.len())}</caption>
                        <thead><tr><th scope="col">"Model"</th><th scope="col">"FP32"</th><th scope="col">"Recipe"</th><th scope="col">"Quantized"</th><th scope="col">"Change"</th><th scope="col">"Time here"</th><th scope="col">"Reproduce"</th></tr></thead>
                        <tbody>{rows}</tbody>
                    </table>
                </div>
                <a data-testid="zoo-csv" download="qplay-zoo.csv" href=csv>"Download the table (CSV)"</a>
            })}
        </section>
    }
}
