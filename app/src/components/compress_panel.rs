//! Compressing the loaded model: method, MAC target and candidates; then the sensitivity
//! heatmap (layers × candidate ratios) with the chosen ratios, the score against MACs, the
//! per-layer MACs before and after, and both models timed in this browser.

use crate::bridge;
use crate::protocol::{CompressResult, CompressSettings, InputKind, Request};
use crate::state::{AppState, Busy, PHOTOS};
use leptos::prelude::*;

const METHODS: &[(&str, &str)] = &[
    ("channel-pruning", "Channel pruning (input channels removed, weights refitted)"),
    ("spatial-svd", "Spatial SVD (kh×kw → kh×1 then 1×kw through rank r)"),
    ("weight-svd", "Weight SVD (1×1 through rank r, then kh×kw; also Gemm/MatMul)"),
];

/// The short form of a layer's name: its last two path parts (`/_blocks.3/_expand_conv/Conv`
/// becomes `_blocks.3/_expand_conv`).
pub(super) fn short(name: &str) -> String {
    let parts: Vec<&str> = name.trim_matches('/').split('/').collect();
    let keep = if parts.len() > 2 { &parts[parts.len() - 3..parts.len() - 1] } else { &parts[..] };
    keep.join("/")
}

/// Red (low) to green (high) for `t` in [0, 1].
fn colour(t: f64) -> String {
    format!("hsl({:.0}, 65%, 48%)", t.clamp(0.0, 1.0) * 120.0)
}

#[component]
fn Heatmap(r: CompressResult) -> impl IntoView {
    let (cw, ch, left, top) = (34.0, 16.0, 170.0, 22.0);
    let all = r.layers.iter().flat_map(|l| l.scores.iter().copied());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let span = (hi - lo).max(1e-9);
    let width = left + cw * r.ratios.len() as f64 + 10.0;
    let height = top + ch * r.layers.len() as f64 + 4.0;
    let heads = r.ratios.iter().enumerate().map(|(j, x)| view! { <text x=left + cw * (j as f64 + 0.5) y=14 text-anchor="middle" class="axis">{format!("{x:.2}")}</text> }).collect_view();
    let rows = r
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let y = top + ch * i as f64;
            let cells = l
                .scores
                .iter()
                .enumerate()
                .map(|(j, &s)| {
                    let ratio = r.ratios[j];
                    let chosen = l.ratio.is_some_and(|c| (c - ratio).abs() < 1e-9);
                    view! {
                        <rect x=left + cw * j as f64 y=y width=cw - 1.0 height=ch - 1.0 fill=colour((s - lo) / span)
                            class=if chosen { "cell chosen" } else { "cell" } data-testid="heat-cell" data-layer=l.name.clone()
                            data-ratio=format!("{ratio}") data-score=format!("{s:.3}") data-chosen=chosen.to_string()>
                            <title>{format!("{}: ratio {ratio:.2} alone scores {s:.2} {}", l.name, r.unit)}</title>
                        </rect>
                    }
                })
                .collect_view();
            view! {
                <text x=left - 6.0 y=y + ch * 0.72 text-anchor="end" class="axis">{short(&l.name)}</text>
                {cells}
            }
        })
        .collect_view();
    view! {
        <figure>
            <svg class="chart heatmap" data-testid="compress-heatmap" width=width height=height viewBox=format!("0 0 {width} {height}") role="img"
                aria-label="Score of the model with each layer alone compressed at each candidate ratio">
                {heads}
                {rows}
            </svg>
            <figcaption>{format!("Each cell: the model's score ({}) with only that layer compressed to that share of its MACs; red {lo:.1}, green {hi:.1}. Outlined: the ratio chosen.", r.unit)}</figcaption>
        </figure>
    }
}

#[component]
fn Tradeoff(r: CompressResult) -> impl IntoView {
    let (w, h, l, b) = (420.0, 220.0, 48.0, 30.0);
    let final_ratio = r.macs_after as f64 / r.macs_before.max(1) as f64;
    let mut pts: Vec<(f64, f64, &str, String)> = vec![(1.0, r.baseline, "original", if r.unit == "dB" { "original: the reference (SQNR unbounded)".to_string() } else { format!("original: {:.2} {}", r.baseline, r.unit) }), (r.selection_ratio, r.selection_score, "greedy", format!("AIMET's greedy selection: MACs {:.3}, {:.2} {}", r.selection_ratio, r.selection_score, r.unit))];
    for &(x, s, kept) in &r.trials {
        pts.push((x, s, if kept { "kept" } else { "tried" }, format!("refinement {}: MACs {x:.3}, {s:.2} {}", if kept { "kept" } else { "rejected" }, r.unit)));
    }
    if let Some((x, s)) = r.uniform {
        pts.push((x, s, "uniform", format!("one ratio for every layer: MACs {x:.3}, {s:.2} {}", r.unit)));
    }
    pts.push((final_ratio, r.score, "final", format!("delivered: MACs {final_ratio:.3}, {:.2} {}", r.score, r.unit)));
    // SQNR against the original is unbounded for the original itself: it sits at the top.
    let reference = r.unit == "dB";
    let (lo, hi) = pts.iter().filter(|p| !(reference && p.2 == "original")).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, c), p| (a.min(p.1), c.max(p.1)));
    let (lo, hi) = if hi - lo < 1e-6 { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
    let sx = move |x: f64| l + x.clamp(0.0, 1.05) / 1.05 * (w - l - 10.0);
    let sy = move |y: f64| h - b - ((y - lo) / (hi - lo)).min(1.04) * (h - b - 10.0);
    let dots = pts
        .into_iter()
        .map(|(x, y, kind, label)| {
            let rad = if kind == "final" { 6.0 } else { 4.0 };
            view! { <circle cx=sx(x) cy=sy(y) r=rad class=format!("dot {kind}") data-kind=kind><title>{label}</title></circle> }
        })
        .collect_view();
    view! {
        <figure>
            <svg class="chart" data-testid="compress-tradeoff" width=w height=h viewBox=format!("0 0 {w} {h}") role="img" aria-label="Score against the share of MACs kept">
                <line x1=l y1=h - b x2=w - 10.0 y2=h - b class="axis-line"/>
                <line x1=l y1=10 x2=l y2=h - b class="axis-line"/>
                <line x1=sx(r.target) y1=10 x2=sx(r.target) y2=h - b class="target" data-testid="compress-target-line"/>
                <text x=sx(r.target) + 3.0 y=20 class="axis">{format!("target {:.2}", r.target)}</text>
                <text x=(w + l) / 2.0 y=h - 4.0 text-anchor="middle" class="axis">"share of the original MACs"</text>
                <text x=12 y=(h - b) / 2.0 class="axis" transform=format!("rotate(-90 12 {})", (h - b) / 2.0) text-anchor="middle">{format!("score ({})", r.unit)}</text>
                <text x=l - 4.0 y=sy(hi) + 4.0 text-anchor="end" class="axis">{format!("{hi:.1}")}</text>
                <text x=l - 4.0 y=sy(lo) + 4.0 text-anchor="end" class="axis">{format!("{lo:.1}")}</text>
                <text x=sx(1.0) y=h - b + 14.0 text-anchor="middle" class="axis">"1.0"</text>
                <text x=sx(0.5) y=h - b + 14.0 text-anchor="middle" class="axis">"0.5"</text>
                {dots}
            </svg>
            <figcaption>"Blue: the original model; orange: AIMET's greedy selection; purple: every layer at one ratio (the uniform baseline); grey and green: the models qplay's refinement measured, from AIMET's selection and from the uniform model (green: kept); the large dot: the model delivered."</figcaption>
        </figure>
    }
}

#[component]
fn LayerMacs(r: CompressResult) -> impl IntoView {
    let max = r.layers.iter().map(|l| l.macs_before).max().unwrap_or(1).max(1) as f64;
    let rows = r
        .layers
        .iter()
        .map(|l| {
            let what = match l.ratio {
                Some(x) => format!("{x:.2}: {} of {} {}", l.kept, l.of, if r.method == "channel-pruning" { "channels" } else { "rank" }),
                None => "kept".into(),
            };
            view! {
                <tr data-testid="compress-layer" data-ratio=l.ratio.map(|x| format!("{x}")).unwrap_or_default()>
                    <td class="name" title=l.name.clone()>{short(&l.name)}</td>
                    <td>{what}</td>
                    <td class="bars">
                        <span class="bar before" style=format!("width:{:.1}%", 100.0 * l.macs_before as f64 / max)></span>
                        <span class="bar after" style=format!("width:{:.1}%", 100.0 * l.macs_after as f64 / max)></span>
                    </td>
                    <td class="num">{format!("{:.2} M → {:.2} M", l.macs_before as f64 / 1e6, l.macs_after as f64 / 1e6)}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="layers compress-layers">
            <thead><tr><th>"layer"</th><th>"ratio chosen"</th><th>"MACs before (light) and after (dark)"</th><th>"MACs"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

#[component]
fn Latency(r: CompressResult) -> impl IntoView {
    let row = |label: &'static str, (a, b): (f64, f64), id: &'static str| {
        view! {
            <tr data-testid=id data-before=format!("{a:.3}") data-after=format!("{b:.3}")>
                <th>{label}</th><td class="num">{format!("{a:.2} ms")}</td><td class="num">{format!("{b:.2} ms")}</td><td class="num">{format!("{:.2}x", a / b.max(1e-9))}</td>
            </tr>
        }
    };
    view! {
        <table class="latency" data-testid="compress-latency">
            <thead><tr><th></th><th>"original"</th><th>"compressed"</th><th>"speed-up"</th></tr></thead>
            <tbody>
                {row("FP32", r.fp32_ms, "latency-fp32")}
                {row("INT8 (W8A8)", r.int8_ms, "latency-int8")}
            </tbody>
        </table>
    }
}

/// The original FP32 model against another (`after`: "compressed", "mixed-precision"): a
/// classifier's top 3 on each evaluation photo (`compare`), or the digits' accuracy per class.
#[component]
pub fn Compare(compare: Vec<(Vec<crate::protocol::Prediction>, Vec<crate::protocol::Prediction>)>, class_accuracy: Vec<(f64, f64)>, after: &'static str, testid: &'static str) -> impl IntoView {
    let state = expect_context::<AppState>();
    if !class_accuracy.is_empty() {
        let (bw, gap, left, h) = (14.0, 10.0, 30.0, 120.0);
        let n = class_accuracy.len();
        let width = left + (2.0 * bw + gap) * n as f64 + 10.0;
        let y = |a: f64| 8.0 + h * (1.0 - a / 100.0);
        let bars = class_accuracy
            .iter()
            .enumerate()
            .map(|(c, &(a, b))| {
                let x = left + (2.0 * bw + gap) * c as f64;
                view! {
                    <g data-testid="class-acc" data-class=c.to_string() data-before=format!("{a:.2}") data-after=format!("{b:.2}")>
                        <rect class="bar-before" x=x y=y(a) width=bw - 1.0 height=h - y(a) + 8.0><title>{format!("{}: original {a:.1} %", state.class_name(c))}</title></rect>
                        <rect class="bar-after" x=x + bw y=y(b) width=bw - 1.0 height=h - y(b) + 8.0><title>{format!("{}: {after} {b:.1} %", state.class_name(c))}</title></rect>
                        <text x=x + bw y=h + 22.0 text-anchor="middle" class="axis">{c.to_string()}</text>
                    </g>
                }
            })
            .collect_view();
        let grid = [0.0, 50.0, 100.0].map(|a| view! { <line x1=left x2=width - 10.0 y1=y(a) y2=y(a) class="grid"/><text x=left - 4.0 y=y(a) + 4.0 text-anchor="end" class="axis">{format!("{a:.0}")}</text> }).collect_view();
        return view! {
            <figure class="chart" data-testid=testid>
                <svg width=width height=h + 30.0 role="img" aria-label=format!("Accuracy per digit, original and {after}")>{grid}{bars}</svg>
                <figcaption>"Accuracy (%) per digit on the test split: "<span class="key-before">"original FP32"</span>" and "<span class="key-after">{after}</span>"."</figcaption>
            </figure>
        }
        .into_any();
    }
    if compare.is_empty() {
        return ().into_any();
    }
    // The evaluation photos are the first calibration photos: the user's files, or the bundled ones.
    let names: Vec<String> = if state.calibration_photos.get_untracked().is_some() { Vec::new() } else { PHOTOS.iter().map(|(_, n)| n.to_string()).collect() };
    let cell = move |preds: &[crate::protocol::Prediction]| {
        preds
            .iter()
            .map(|p| view! { <li data-class=p.class.to_string()><span class="label">{state.class_name(p.class)}</span>" "<span class="pct">{format!("{:.1} %", p.prob * 100.0)}</span></li> })
            .collect_view()
    };
    let rows = compare
        .iter()
        .enumerate()
        .map(|(i, (a, b))| {
            let same = a.first().map(|p| p.class) == b.first().map(|p| p.class);
            view! {
                <tr data-testid="compare-row" data-same=same.to_string()>
                    <td>{names.get(i).cloned().unwrap_or_else(|| format!("sample {}", i + 1))}</td>
                    <td><ol class="top3">{cell(a)}</ol></td>
                    <td class=if same { "agree" } else { "disagree" }><ol class="top3">{cell(b)}</ol></td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="compare" data-testid=testid>
            <caption>{format!("Top 3 on the evaluation photos: the original FP32 model against the {after} one (red: the top-1 changed).")}</caption>
            <thead><tr><th>"photo"</th><th>"original"</th><th>{after}</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
    .into_any()
}

#[component]
pub fn CompressPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let method = RwSignal::new("channel-pruning".to_string());
    let target = RwSignal::new(0.75f64);
    let candidates = RwSignal::new(10u32);
    let busy = move || state.busy.get() != Busy::Idle;
    let run = move |_| {
        let settings = CompressSettings { method: method.get_untracked(), target: target.get_untracked(), candidates: candidates.get_untracked(), calib_samples: 0 };
        state.start(format!("Compressing ({}, {:.0} % of the MACs)…", settings.method, settings.target * 100.0));
        let photos = PHOTOS.iter().map(|(f, _)| f.to_string()).collect();
        if let Err(e) = bridge::send(&Request::Compress { job: bridge::next_job(), settings, photos }, bridge::calibration_payload()) {
            state.fail(e);
        }
    };
    move || {
        let kind = state.summary.get().map(|s| s.input_kind)?;
        if kind == InputKind::Other {
            return None;
        }
        let data = if kind == InputKind::Digits { "scored by accuracy on the 450 test digits; pruning refits on 256 training digits" } else { "scored by the SQNR of the outputs against the original on the first photos; pruning refits on the calibration photos (yours, if given above)" };
        Some(view! {
            <section class="panel" aria-labelledby="compress-h" data-testid="compress-panel">
                <h2 id="compress-h"><span class="step">"7"</span>"Compress"</h2>
                <p class="explain">{format!("AIMET's greedy per-layer ratio search: each layer alone at each candidate ratio, then a threshold on the score that meets the MAC target, then a refinement that keeps only measured improvements; {data}.")}</p>
                <div class="row">
                    <label>"Method "
                        <select data-testid="compress-method" on:change=move |ev| method.set(event_target_value(&ev)) prop:value=move || method.get()>
                            {METHODS.iter().map(|(id, label)| view! { <option value=*id>{*label}</option> }).collect_view()}
                        </select>
                    </label>
                    <label>{move || format!("MACs to keep: {:.0} % ", target.get() * 100.0)}
                        <input type="range" min="0.2" max="1" step="0.05" data-testid="compress-target" prop:value=move || target.get().to_string()
                            on:input=move |ev| { if let Ok(v) = event_target_value(&ev).parse::<f64>() { target.set(v) } }/>
                    </label>
                    <label>"Candidates "
                        <select data-testid="compress-candidates" on:change=move |ev| { if let Ok(v) = event_target_value(&ev).parse::<u32>() { candidates.set(v) } } prop:value=move || candidates.get().to_string()>
                            <option value="4">"0.25, 0.5, 0.75"</option>
                            <option value="5">"0.2 … 0.8"</option>
                            <option value="10">"0.1 … 0.9 (AIMET's)"</option>
                            <option value="20">"0.05 … 0.95"</option>
                        </select>
                    </label>
                    <button class="primary" data-testid="compress-run" disabled=busy on:click=run>"Compress"</button>
                </div>
                {move || state.compress.get().map(|r| {
                    let ratio = r.macs_after as f64 / r.macs_before.max(1) as f64;
                    view! {
                        <p class="quant-summary" data-testid="compress-summary" data-macs-ratio=format!("{ratio:.4}") data-score=format!("{:.3}", r.score)>
                            {format!("{}: MACs {:.1} M → {:.1} M ({:.3} of the original, target {:.2}), parameters {:.3}. Score {:.2} {} (original: {}; AIMET's greedy selection {:.2}); top-1 agreement with the original {:.0} %. {} evaluations on {} samples in {:.0} s on {} worker{}{}.",
                                r.method, r.macs_before as f64 / 1e6, r.macs_after as f64 / 1e6, ratio, r.target, r.params_after as f64 / r.params_before.max(1) as f64,
                                r.score, r.unit, if r.unit == "dB" { "the reference".to_string() } else { format!("{:.2}", r.baseline) }, r.selection_score, r.top1_agreement * 100.0, r.evaluations, r.eval_samples, r.seconds, r.workers, if r.workers == 1 { "" } else { "s" },
                                r.points.map(|p| format!("; least squares on up to {p} points per layer")).unwrap_or_default())}
                        </p>
                        <Latency r=r.clone()/>
                        <button data-testid="compress-download" disabled=busy on:click=move |_| {
                            state.start("Exporting the compressed model…");
                            if let Err(e) = bridge::send(&Request::ExportCompressed { job: bridge::next_job() }, wasm_bindgen::JsValue::UNDEFINED) {
                                state.fail(e);
                            }
                        }>"Download the compressed model (ONNX)"</button>
                        " "
                        <button data-testid="compress-quantize" disabled=busy title="Step 3 then quantizes this compressed model (DFQ, AdaRound, any bit-width); its QDQ download is the compressed and quantized model."
                            on:click=move |_| {
                                state.quantize_compressed.set(true);
                                if let Some(h) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.get_element_by_id("q-h")) {
                                    h.scroll_into_view();
                                }
                            }>"Quantize the compressed model →"</button>
                        <div class="charts">
                            <Heatmap r=r.clone()/>
                            <Tradeoff r=r.clone()/>
                        </div>
                        <LayerMacs r=r.clone()/>
                        <Compare compare=r.compare.clone() class_accuracy=r.class_accuracy.clone() after="compressed FP32" testid="compress-compare"/>
                    }
                })}
            </section>
        })
    }
}
