//! DONNA's architecture search on the digits space: settings, then the front (accuracy against
//! latency measured in this browser) with the reference and a width-scaled baseline, the
//! predictor's check, the finetuned models (block diagram, download, "quantize this") and the
//! block library.

use super::fetch_body;
use crate::bridge;
use crate::protocol::{Request, SearchModel, SearchResult, SearchSettings};
use crate::state::{AppState, Busy, MODELS_DIR};
use leptos::prelude::*;

/// (label, blocks per block of the library, architectures, BKD epochs, finetuning epochs,
/// final epochs, final models, population, generations)
const PRESETS: [(&str, [usize; 8]); 3] = [
    ("quick: 4 blocks each, 6 architectures, 1 epoch (a few minutes)", [4, 6, 1, 1, 3, 2, 12, 8]),
    ("standard: 12 blocks each, 16 architectures, 2 epochs", [12, 16, 2, 2, 6, 3, 24, 15]),
    ("full, as `qplay search`: 24 blocks each, 24 architectures, 4 epochs (tens of minutes)", [24, 24, 4, 4, 10, 5, 32, 20]),
];

fn cost(v: f64, unit: &str) -> String {
    match unit {
        "MACs" => format!("{:.0} k MACs", v / 1e3),
        _ if v < 0.1 => format!("{:.1} µs", v * 1e3),
        _ => format!("{v:.2} ms"),
    }
}

/// A block's choice drawn as a box: width by expansion, height by depth, colour by activation.
fn block_box(label: &str) -> impl IntoView {
    let act = ["hswish", "relu6", "relu"].into_iter().find(|a| label.contains(&format!(" {a}"))).unwrap_or("relu");
    let class = format!("block-box act-{act}{}", if label.contains(" se") { " se" } else { "" });
    view! { <span class=class title=label.to_string()>{label.to_string()}</span> }
}

/// Accuracy against cost (log scale): the searched front (predicted, grey), the finetuned models
/// (measured, green), the reference (diamond) and the baselines (squares).
#[component]
fn Front(r: SearchResult) -> impl IntoView {
    let (w, h, l, b) = (520.0, 280.0, 52.0, 34.0);
    let by_macs = r.unit == "MACs";
    let x_of = |m: &SearchModel| if by_macs { m.macs as f64 } else { m.latency_ms };
    let measured: Vec<&SearchModel> = r.models.iter().chain([&r.reference]).chain(&r.baselines).collect();
    let xs: Vec<f64> = r.front.iter().map(|p| p.cost).chain(measured.iter().map(|m| x_of(m))).filter(|x| x.is_finite() && *x > 0.0).collect();
    let ys: Vec<f64> = r.front.iter().map(|p| p.predicted_accuracy).chain(measured.iter().map(|m| m.accuracy)).collect();
    let (x0, x1) = xs.iter().fold((f64::INFINITY, 0.0f64), |(a, c), &x| (a.min(x), c.max(x)));
    let (y0, y1) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, c), &y| (a.min(y), c.max(y)));
    let (y0, y1) = (y0.floor() - 0.5, (y1.ceil() + 0.5).min(100.5));
    let (lx0, lx1) = (x0.max(1e-9).ln(), x1.max(x0 * 1.01).ln());
    let sx = move |x: f64| l + (x.max(1e-9).ln() - lx0) / (lx1 - lx0) * (w - l - 16.0);
    let sy = move |y: f64| h - b - (y - y0) / (y1 - y0) * (h - b - 12.0);
    let unit = r.unit.clone();
    let front = r.front.iter().map(|p| {
        let t = format!("{}: predicted {:.2} %, {}", p.arch.join(" / "), p.predicted_accuracy, cost(p.cost, &unit));
        view! { <circle cx=sx(p.cost) cy=sy(p.predicted_accuracy) r=2.6 class="dot tried" data-testid="search-front-point"><title>{t}</title></circle> }
    }).collect_view();
    let models = r.models.iter().enumerate().map(|(i, m)| {
        let t = format!("model {}: {:.2} % measured, {}", i + 1, m.accuracy, cost(x_of(m), &r.unit));
        view! { <circle cx=sx(x_of(m)) cy=sy(m.accuracy) r=5.0 class="dot kept" data-testid="search-point" data-accuracy=format!("{:.4}", m.accuracy) data-latency=format!("{:.5}", m.latency_ms)><title>{t}</title></circle>
                <text x=sx(x_of(m)) + 7.0 y=sy(m.accuracy) + 4.0 class="axis">{format!("{}", i + 1)}</text> }
    }).collect_view();
    let (rx, ry) = (sx(x_of(&r.reference)), sy(r.reference.accuracy));
    let baselines = r.baselines.iter().map(|m| {
        let (cx, cy) = (sx(x_of(m)), sy(m.accuracy));
        view! { <rect x=cx - 4.5 y=cy - 4.5 width=9 height=9 class="dot uniform" data-testid="search-baseline"><title>{format!("{}: {:.2} %", m.arch.join(" "), m.accuracy)}</title></rect>
                <text x=cx + 7.0 y=cy - 6.0 class="axis">{m.arch.join(" ")}</text> }
    }).collect_view();
    let x_title = if by_macs { "MACs per sample (log scale)".to_string() } else { format!("milliseconds per digit in this browser, {} engine (log scale)", r.engine.to_uppercase()) };
    let ticks = [x0, (x0 * x1).sqrt(), x1].into_iter().map(|t| view! { <text x=sx(t) y=h - b + 14.0 text-anchor="middle" class="axis">{cost(t, &r.unit)}</text> }).collect_view();
    view! {
        <figure>
            <svg class="chart" data-testid="search-pareto" width=w height=h viewBox=format!("0 0 {w} {h}") role="img" aria-label=format!("Accuracy against {x_title}")>
                <line x1=l y1=h - b x2=w - 10.0 y2=h - b class="axis-line"/>
                <line x1=l y1=10 x2=l y2=h - b class="axis-line"/>
                <text x=(w + l) / 2.0 y=h - 4.0 text-anchor="middle" class="axis">{x_title.clone()}</text>
                <text x=12 y=(h - b) / 2.0 class="axis" transform=format!("rotate(-90 12 {})", (h - b) / 2.0) text-anchor="middle">"test accuracy (%)"</text>
                <text x=l - 4.0 y=sy(y1) + 4.0 text-anchor="end" class="axis">{format!("{y1:.1}")}</text>
                <text x=l - 4.0 y=sy(y0) + 4.0 text-anchor="end" class="axis">{format!("{y0:.1}")}</text>
                {ticks}
                {front}
                {baselines}
                <path d=format!("M{rx},{} L{},{ry} L{rx},{} L{},{ry} Z", ry - 6.0, rx + 6.0, ry + 6.0, rx - 6.0) class="dot reference" data-testid="search-reference"><title>{format!("the reference: {:.2} %", r.reference.accuracy)}</title></path>
                <text x=rx - 8.0 y=ry - 8.0 text-anchor="end" class="axis">"reference"</text>
                {models}
            </svg>
            <figcaption>"Grey: the searched front (predicted accuracy; latency predicted from the block times measured here, or MACs); green: its points finetuned and measured whole; diamond: the reference; square: the reference at a quarter of its width, trained from scratch as long as the green ones."</figcaption>
        </figure>
    }
}

/// The predictor's leave-one-out predictions against the measured validation accuracies.
#[component]
fn PredictorChart(r: SearchResult) -> impl IntoView {
    let (w, h, m) = (280.0, 280.0, 40.0);
    let all = r.predictor.iter().flat_map(|&(p, a)| [p, a]);
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, c), v| (a.min(v), c.max(v)));
    let (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
    let s = move |v: f64, len: f64| (v - lo) / (hi - lo) * len;
    let dots = r.predictor.iter().map(|&(p, a)| view! { <circle cx=m + s(p, w - m - 10.0) cy=h - m - s(a, h - m - 10.0) r=3.5 class="dot kept"><title>{format!("predicted {p:.2} %, measured {a:.2} %")}</title></circle> }).collect_view();
    view! {
        <figure>
            <svg class="chart" data-testid="search-predictor" data-tau=format!("{:.4}", r.tau) width=w height=h viewBox=format!("0 0 {w} {h}") role="img" aria-label="Predicted against measured accuracy">
                <line x1=m y1=h - m x2=w - 10.0 y2=10 class="target"/>
                <line x1=m y1=h - m x2=w - 10.0 y2=h - m class="axis-line"/>
                <line x1=m y1=10 x2=m y2=h - m class="axis-line"/>
                <text x=(w + m) / 2.0 y=h - 8.0 text-anchor="middle" class="axis">"predicted (leave-one-out, %)"</text>
                <text x=12 y=(h - m) / 2.0 class="axis" transform=format!("rotate(-90 12 {})", (h - m) / 2.0) text-anchor="middle">"measured (validation, %)"</text>
                <text x=m y=h - m + 14.0 class="axis">{format!("{lo:.0}")}</text>
                <text x=w - 10.0 y=h - m + 14.0 text-anchor="end" class="axis">{format!("{hi:.0}")}</text>
                <text x=m + 8.0 y=24 class="axis">{format!("Kendall τ {:.2}", r.tau)}</text>
                {dots}
            </svg>
            <figcaption>{format!("The accuracy predictor (ridge regression on the blocks' log NSRs) against the {} architectures it was fitted on, each predicted without itself. Summed block NSRs (DONNAv2) rank them with τ {:.2}.", r.predictor.len(), r.summed_tau)}</figcaption>
        </figure>
    }
}

#[component]
fn Models(r: SearchResult) -> impl IntoView {
    let state = expect_context::<AppState>();
    let busy = move || state.busy.get() != Busy::Idle;
    let ask = move |index: usize, load: bool| {
        state.start(if load { "Loading the searched model…" } else { "Exporting the searched model…" });
        if let Err(e) = bridge::send(&Request::SearchModel { job: bridge::next_job(), index, load }, wasm_bindgen::JsValue::UNDEFINED) {
            state.fail(e);
        }
    };
    let row = |name: String, m: &SearchModel, actions: Option<usize>| {
        let blocks = m.arch.iter().map(|a| block_box(a)).collect_view();
        view! {
            <tr data-testid="search-model" data-accuracy=format!("{:.4}", m.accuracy) data-macs=m.macs.to_string()>
                <th>{name}</th>
                <td><span class="block-diagram" data-testid="search-block-diagram">{blocks}</span></td>
                <td class="num">{m.predicted_accuracy.map(|p| format!("{p:.2} %")).unwrap_or_default()}</td>
                <td class="num">{format!("{:.2} %", m.accuracy)}</td>
                <td class="num">{m.predicted_ms.map(|p| cost(p, "ms")).unwrap_or_default()}</td>
                <td class="num">{cost(m.latency_ms, "ms")}</td>
                <td class="num">{format!("{:.0} k", m.macs as f64 / 1e3)}</td>
                <td>{actions.map(|i| view! {
                    <button data-testid=format!("search-download-{i}") disabled=busy on:click=move |_| ask(i, false)>"Download ONNX"</button>
                    <button data-testid=format!("search-quantize-{i}") disabled=busy on:click=move |_| ask(i, true)>"Quantize this"</button>
                })}</td>
            </tr>
        }
    };
    let rows = r.models.iter().enumerate().map(|(i, m)| row(format!("model {}", i + 1), m, Some(i))).collect_view();
    let reference = row("reference".into(), &r.reference, None);
    let baselines = r.baselines.iter().map(|m| row(m.arch.join(" "), m, None)).collect_view();
    view! {
        <table class="layers" data-testid="search-models">
            <caption>"Points of the front finetuned from their distilled blocks, measured on the 450 test digits and timed whole here. \"Quantize this\" loads the model as the current one (steps 2–9 then apply to it)."</caption>
            <thead><tr><th></th><th>"blocks (kernel, expansion, depth, SE, activation, width)"</th><th>"predicted"</th><th>"accuracy"</th><th>"predicted latency"</th><th>"latency"</th><th>"MACs"</th><th></th></tr></thead>
            <tbody>{rows}{reference}{baselines}</tbody>
        </table>
    }
}

#[component]
pub fn SearchPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let preset = RwSignal::new(0usize);
    // An imported latency table: (file name, JSON).
    let imported = RwSignal::new(None::<(String, String)>);
    let objective = RwSignal::new("latency-int8".to_string());
    let busy = move || state.busy.get() != Busy::Idle || !state.worker_ready.get();
    // Step D with the next search: on for the first one; once steps A–B are kept, a search
    // stops at step C (seconds) and "Finetune and measure" asks for D.
    let finetune = RwSignal::new(true);
    let run = move |with_d: bool| {
        let [library, architectures, bkd_epochs, finetune_epochs, final_epochs, final_models, population, generations] = PRESETS[preset.get_untracked()].1;
        let latency_table = imported.get_untracked().map(|(_, json)| json);
        let settings = SearchSettings { objective: objective.get_untracked(), library, architectures, bkd_epochs, finetune_epochs, final_epochs, final_models, population, generations, seed: 0, baseline: true, finetune: with_d, latency_table };
        state.start("Architecture search: fetching the reference…");
        wasm_bindgen_futures::spawn_local(async move {
            match fetch_body(&format!("{MODELS_DIR}/donna_digits_reference.onnx"), web_sys::Response::array_buffer).await {
                Ok(buf) => {
                    state.start("Architecture search…");
                    if let Err(e) = bridge::send(&Request::Search { job: bridge::next_job(), settings }, bridge::search_payload(js_sys::Uint8Array::new(&buf))) {
                        state.fail(e);
                    }
                }
                Err(e) => state.fail(e),
            }
        });
    };
    Effect::new(move |_| {
        if state.search.get().is_some() {
            finetune.set(false);
        }
    });
    view! {
        <section class="panel" aria-labelledby="search-h" data-testid="search-panel">
            <h2 id="search-h"><span class="step">"10"</span>"Architecture search (DONNA)"</h2>
            <p class="explain">"DONNA's four steps on 8×8 digits, in this tab: (A) a reference network cut into a stem, three blocks and a head; each block may be any of 360 choices (kernel 3/5, expansion 1–6, depth 1–3, squeeze-excitation, ReLU/ReLU6/HardSwish, width), 46.7 million architectures. (B) Library blocks are each trained alone to reproduce the reference's block (blockwise distillation), and an accuracy predictor is fitted on a few stitched architectures. (C) NSGA-II searches predicted accuracy against latency measured in this browser, block by block. (D) Points of the front are finetuned and measured. Steps A–B are kept (even across a Cancel): searching again with another objective re-runs only C, in seconds, and D when asked."</p>
            <div class="row">
                <label>"Size "
                    <select data-testid="search-preset" on:change=move |ev| { if let Ok(v) = event_target_value(&ev).parse::<usize>() { preset.set(v) } } prop:value=move || preset.get().to_string()>
                        {PRESETS.iter().enumerate().map(|(i, (label, _))| view! { <option value=i.to_string()>{*label}</option> }).collect_view()}
                    </select>
                </label>
                <label>"Objective "
                    <select data-testid="search-objective" on:change=move |ev| objective.set(event_target_value(&ev)) prop:value=move || objective.get()>
                        <option value="latency-int8">"latency in this browser, integer engine"</option>
                        <option value="latency-fp32">"latency in this browser, FP32 engine"</option>
                        <option value="macs">"MACs"</option>
                    </select>
                </label>
                <label class="check"><input type="checkbox" data-testid="search-finetune" prop:checked=move || finetune.get() on:change=move |ev| finetune.set(event_target_checked(&ev))/>"finetune and measure points of the front (step D)"</label>
                <button class="primary" data-testid="search-run" disabled=busy on:click=move |_| run(finetune.get_untracked())>"Search architectures"</button>
            </div>
            <div class="row">
                <label>"Latency table from another device (JSON, as downloaded below) "
                    <input type="file" accept=".json,application/json" data-testid="search-import-table" on:change=move |ev| {
                        let input: web_sys::HtmlInputElement = event_target(&ev);
                        let Some(file) = input.files().and_then(|f| f.get(0)) else { return };
                        let name = file.name();
                        wasm_bindgen_futures::spawn_local(async move {
                            match wasm_bindgen_futures::JsFuture::from(file.text()).await {
                                Ok(t) => imported.set(Some((name, t.as_string().unwrap_or_default()))),
                                Err(_) => state.fail(format!("{name}: the file could not be read")),
                            }
                        });
                    }/>
                </label>
                {move || imported.get().map(|(name, _)| view! {
                    <span class="hint" data-testid="search-imported">{format!("Using {name} instead of timing here. ")}</span>
                    <button data-testid="search-clear-table" on:click=move |_| imported.set(None)>"Time here instead"</button>
                })}
            </div>
            {move || state.search.get().map(|r| {
                let best = r.models.iter().filter(|m| m.accuracy >= r.reference.accuracy - 1.0).map(|m| m.latency_ms).fold(f64::INFINITY, f64::min);
                let steps = r.seconds.iter().map(|(s, t)| format!("{s} {t:.1} s")).collect::<Vec<_>>().join(", ");
                let library = r.library.iter().map(|b| view! {
                    <tr><td class="num">{b.block}</td><td>{block_box(&b.choice)}</td><td class="num">{format!("{:.3}", b.nsr)}</td><td class="num">{format!("{:.0} k", b.macs as f64 / 1e3)}</td><td class="num">{cost(b.ms, "ms")}</td></tr>
                }).collect_view();
                view! {
                    <p class="quant-summary" data-testid="search-summary" data-tau=format!("{:.4}", r.tau) data-reused=r.reused.to_string() data-models=r.models.len().to_string()
                        data-seconds=serde_json::to_string(&r.seconds).unwrap_or_default() data-reference=format!("{:.4},{:.5}", r.reference.accuracy, r.reference.latency_ms)>
                        {format!("{} library blocks{}; predictor τ {:.2} over {} architectures; {} evaluations, {} points on the front; {} finetuned. Steps: {steps}.{}",
                            r.library.len(), if r.reused { " (kept from the last search)" } else { "" }, r.tau, r.predictor.len(), r.evaluations, r.front.len(), r.models.len(),
                            if best.is_finite() { format!(" Within a point of the reference's accuracy, the fastest model takes {:.0} % of its time.", 100.0 * best / r.reference.latency_ms) } else { String::new() })}
                    </p>
                    <div class="charts">
                        <Front r=r.clone()/>
                        <PredictorChart r=r.clone()/>
                    </div>
                    {r.models.is_empty().then(|| view! {
                        <p class="row">
                            <span class="hint">"Searched only (step C): the front is predicted. "</span>
                            <button data-testid="search-finetune-front" disabled=busy on:click=move |_| run(true)>{format!("Finetune and measure {} points of it (step D)", r.settings.final_models)}</button>
                        </p>
                    })}
                    <Models r=r.clone()/>
                    <p class="row">
                        <a data-testid="search-export-table" download=format!("qplay-latency-{}.json", r.engine) href=super::quantize_panel::json_data_url(&r.latency_table)>
                            {format!("Download the latency table ({}, {} engine)", if r.table_imported { "imported" } else { "timed in this browser" }, r.engine.to_uppercase())}
                        </a>
                    </p>
                    <details>
                        <summary>{format!("The block library ({} blocks: NSR on held-out digits, time in this browser)", r.library.len())}</summary>
                        <table class="layers" data-testid="search-library">
                            <thead><tr><th>"block"</th><th>"choice"</th><th>"NSR"</th><th>"MACs"</th><th>"time"</th></tr></thead>
                            <tbody>{library}</tbody>
                        </table>
                    </details>
                }
            })}
        </section>
    }
}
