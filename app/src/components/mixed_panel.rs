//! Mixed precision of the loaded model: candidates, objective and budget; then the whole Pareto
//! curve (score against BOPs, every uniform candidate marked), the selected point's bit-width per
//! layer, and that point applied: FP32 against mixed outputs, latency and size measured here.

use super::compress_panel::{short, Compare};
use crate::bridge;
use crate::protocol::{InputKind, MixedApplied, MixedPoint, MixedResult, MixedSettings, Request};
use crate::state::{AppState, Busy, PHOTOS};
use leptos::prelude::*;

const CANDIDATES: &[(&str, bool)] = &[("w4a8", true), ("w8a8", true), ("w8a16", true), ("w16a16", true), ("w4a4", false), ("w2a8", false)];

/// A bit-width's colour: few bits warm, many cool.
fn bits_colour(b: u8) -> &'static str {
    match b {
        0..=2 => "#c0392b",
        3..=4 => "#e67e22",
        5..=8 => "#2e86c1",
        _ => "#1e8449",
    }
}

fn size(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.2} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

/// A duration given in milliseconds, in µs below 0.1 ms (a digits model runs in microseconds).
fn time(ms: f64) -> String {
    if ms < 0.1 {
        format!("{:.1} µs", ms * 1e3)
    } else {
        format!("{ms:.2} ms")
    }
}

fn describe(p: &MixedPoint, unit: &str) -> String {
    format!("{:.3}× the BOPs of W8A8, {:.2} {unit}, weights {}, {} predicted here", p.relative_bops, p.score, size(p.weight_bytes), time(p.latency_ms))
}

/// Tick values of a log axis from `lo` to `hi`: 1, 2, 5 times powers of ten.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut e = lo.max(1e-9).log10().floor() as i32;
    while 10f64.powi(e) <= hi * 1.001 && out.len() < 12 {
        for m in [1.0, 2.0, 5.0] {
            let t = m * 10f64.powi(e);
            if t >= lo * 0.999 && t <= hi * 1.001 {
                out.push(t);
            }
        }
        e += 1;
    }
    out
}

/// Score against relative BOPs, or against the latency predicted here (`by_latency`): every point
/// measured (grey), the Pareto curve (blue, click a point to select it), each uniform candidate
/// (squares), the budget and the selected point.
#[component]
fn Pareto(r: MixedResult, selected: RwSignal<usize>, by_latency: bool) -> impl IntoView {
    let (w, h, l, b) = (480.0, 260.0, 52.0, 34.0);
    let px = move |p: &MixedPoint| if by_latency { p.latency_ms } else { p.relative_bops };
    let xs = r.visited.iter().map(|p| if by_latency { p.2 } else { p.0 }).chain(r.uniform.iter().map(|u| if by_latency { u.3 } else { u.1 })).filter(|x| x.is_finite());
    let (x_lo, x_hi) = xs.fold((f64::INFINITY, 0.0f64), |(a, c), x| (a.min(x), c.max(x)));
    let ys = r.visited.iter().map(|p| p.1).chain(r.uniform.iter().map(|u| u.2));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, c), y| (a.min(y), c.max(y)));
    let (lo, hi) = if hi - lo < 1e-6 { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
    // Log scales: the candidates' BOPs double from one to the next.
    let (lx0, lx1) = (x_lo.max(1e-6).ln(), x_hi.max(x_lo * 1.01).ln());
    let sx = move |x: f64| l + (x.max(1e-6).ln() - lx0) / (lx1 - lx0) * (w - l - 16.0);
    let sy = move |y: f64| h - b - (y - lo) / (hi - lo) * (h - b - 12.0);
    let unit = r.unit.clone();
    let grey = r.visited.iter().map(|&(bops, y, ms)| view! { <circle cx=sx(if by_latency { ms } else { bops }) cy=sy(y) r=2.2 class="dot tried"/> }).collect_view();
    let mut line: Vec<(f64, f64)> = r.pareto.iter().map(|p| (px(p), p.score)).collect();
    line.sort_by(|a, b| a.0.total_cmp(&b.0));
    let path = line.iter().enumerate().map(|(i, &(x, y))| format!("{}{:.1},{:.1}", if i == 0 { "M" } else { "L" }, sx(x), sy(y))).collect::<String>();
    let curve = r
        .pareto
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let label = describe(p, &unit);
            view! {
                <circle cx=sx(px(p)) cy=sy(p.score) r=move || if selected.get() == i { 6.5 } else { 4.0 }
                    class=move || if selected.get() == i { "dot final pareto-point" } else { "dot kept pareto-point" } data-testid="pareto-point"
                    data-index=i.to_string() data-bops=format!("{:.5}", p.relative_bops) data-latency=format!("{:.4}", p.latency_ms) data-score=format!("{:.4}", p.score) data-selected=move || (selected.get() == i).to_string()
                    tabindex="0" role="button" aria-label=label.clone()
                    on:click=move |_| selected.set(i)
                    on:keydown=move |ev| { if ev.key() == "Enter" || ev.key() == " " { selected.set(i) } }>
                    <title>{label.clone()}</title>
                </circle>
            }
        })
        .collect_view();
    let uniform = r
        .uniform
        .iter()
        .map(|(c, bops, y, ms)| {
            let x = if by_latency { ms } else { bops };
            let (cx, cy) = (sx(*x), sy(*y));
            // Labels near the right edge go to the square's left.
            let (tx, anchor) = if cx > w - 60.0 { (cx - 7.0, "end") } else { (cx + 7.0, "start") };
            view! {
                <g data-testid="uniform-point" data-candidate=c.to_uppercase() data-bops=format!("{bops:.5}") data-latency=format!("{ms:.4}") data-score=format!("{y:.4}")>
                    <rect x=cx - 4.5 y=cy - 4.5 width=9 height=9 class="dot uniform"><title>{format!("every layer at {}: {bops:.3}× BOPs, {y:.2} {}, {}", c.to_uppercase(), r.unit, time(*ms))}</title></rect>
                    <text x=tx y=cy - 6.0 text-anchor=anchor class="axis">{c.to_uppercase()}</text>
                </g>
            }
        })
        .collect_view();
    let budget = (r.settings.objective == if by_latency { "latency" } else { "bops" }).then(|| {
        let x = sx(r.settings.budget.clamp(x_lo, x_hi));
        view! { <line x1=x y1=10 x2=x y2=h - b class="target" data-testid="mixed-budget-line"/><text x=x + 3.0 y=20 class="axis">{format!("budget {:.2}", r.settings.budget)}</text> }
    });
    let ticks = if by_latency { log_ticks(x_lo, x_hi) } else { [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0].into_iter().filter(|&t| t >= x_lo * 0.999 && t <= x_hi * 1.001).collect() };
    let ticks = ticks.into_iter().map(|t| view! { <text x=sx(t) y=h - b + 14.0 text-anchor="middle" class="axis">{format!("{t}")}</text> }).collect_view();
    let x_title = if by_latency { "milliseconds per inference predicted in this browser (log scale)" } else { "BOPs relative to uniform W8A8 (log scale)" };
    view! {
        <figure>
            <svg class="chart" data-testid="mixed-pareto" data-axis=if by_latency { "latency" } else { "bops" } width=w height=h viewBox=format!("0 0 {w} {h}") role="img" aria-label=format!("Score against {x_title}")>
                <line x1=l y1=h - b x2=w - 10.0 y2=h - b class="axis-line"/>
                <line x1=l y1=10 x2=l y2=h - b class="axis-line"/>
                <text x=(w + l) / 2.0 y=h - 4.0 text-anchor="middle" class="axis">{x_title}</text>
                <text x=12 y=(h - b) / 2.0 class="axis" transform=format!("rotate(-90 12 {})", (h - b) / 2.0) text-anchor="middle">{format!("score ({})", r.unit)}</text>
                <text x=l - 4.0 y=sy(hi) + 4.0 text-anchor="end" class="axis">{format!("{hi:.1}")}</text>
                <text x=l - 4.0 y=sy(lo) + 4.0 text-anchor="end" class="axis">{format!("{lo:.1}")}</text>
                {ticks}
                {budget}
                {grey}
                <path d=path class="pareto-line"/>
                {uniform}
                {curve}
            </svg>
            <figcaption>"Grey: every point measured; blue: the Pareto curve in BOPs (no other point is cheaper and better); squares: one candidate everywhere; the large dot: the selected point (click another). Latencies are predicted from each layer group's time at each candidate, measured in this browser."</figcaption>
        </figure>
    }
}

/// The selected point's bit-widths per layer, with each layer's share of the MACs.
#[component]
fn BitMap(r: MixedResult, selected: RwSignal<usize>) -> impl IntoView {
    let max = r.layers.iter().map(|l| l.1).max().unwrap_or(1).max(1) as f64;
    move || {
        let p = r.pareto.get(selected.get())?.clone();
        let rows = r
            .layers
            .iter()
            .zip(&p.bits)
            .map(|((name, macs), &(wb, ab))| {
                view! {
                    <tr data-testid="mixed-layer" data-layer=name.clone() data-w=wb.to_string() data-a=ab.to_string()>
                        <td class="name" title=name.clone()>{short(name)}</td>
                        <td class="bits" style=format!("color:{}", bits_colour(wb))>{format!("W{wb}")}</td>
                        <td class="bits" style=format!("color:{}", bits_colour(ab))>{format!("A{ab}")}</td>
                        <td class="bars"><span class="bar after" style=format!("width:{:.1}%;background:{}", 100.0 * *macs as f64 / max, bits_colour(wb.min(ab)))></span></td>
                        <td class="num">{format!("{:.2} M", *macs as f64 / 1e6)}</td>
                    </tr>
                }
            })
            .collect_view();
        Some(view! {
            <table class="layers compress-layers" data-testid="mixed-bitmap">
                <caption>{format!("The selected point: {}.", describe(&p, &r.unit))}</caption>
                <thead><tr><th>"layer"</th><th>"weights"</th><th>"activations"</th><th>"MACs (bar coloured by the lower bit-width)"</th><th>"MACs"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
        })
    }
}

/// How well the latency table predicts whole inferences: per uniform candidate, the sum of its
/// groups' times against the inference timed in one piece.
fn latency_check(r: &MixedResult) -> String {
    let row = |((c, _, _, sum), &whole): (&(String, f64, f64, f64), &f64)| format!("{} {} summed, {} whole ({:+.0} %)", c.to_uppercase(), time(*sum), time(whole), 100.0 * (sum - whole) / whole.max(1e-9));
    let rows: Vec<String> = r.uniform.iter().zip(&r.uniform_whole_ms).map(row).collect();
    format!("Latency table (each layer group timed at each candidate in this browser's integer engine): {}.", rows.join("; "))
}

#[component]
fn Applied(a: MixedApplied, r: MixedResult) -> impl IntoView {
    let state = expect_context::<AppState>();
    let busy = move || state.busy.get() != Busy::Idle;
    let export = move |qdq: bool| {
        state.start("Exporting the mixed-precision model…");
        if let Err(e) = bridge::send(&Request::Export { job: bridge::next_job(), qdq }, wasm_bindgen::JsValue::UNDEFINED) {
            state.fail(e);
        }
    };
    let wide = a.point.bits.iter().any(|&(w, b)| w > 8 || b > 8);
    let json = a.encodings_json.clone();
    view! {
        <table class="latency" data-testid="mixed-latency" data-fp32=format!("{:.4}", a.fp32_ms) data-mixed=format!("{:.4}", a.mixed_ms) data-engine="integer engine">
            <thead><tr><th></th><th>"FP32"</th><th>"mixed (integer engine)"</th><th>"ratio"</th></tr></thead>
            <tbody>
                <tr><th>"latency (median)"</th><td class="num">{time(a.fp32_ms)}</td><td class="num">{time(a.mixed_ms)}</td><td class="num">{format!("{:.2}x", a.fp32_ms / a.mixed_ms.max(1e-9))}</td></tr>
                <tr data-testid="mixed-predicted" data-predicted=format!("{:.4}", a.point.latency_ms)><th>"predicted by the latency table"</th><td></td><td class="num">{time(a.point.latency_ms)}</td><td class="num">{format!("{:+.0} %", 100.0 * (a.point.latency_ms - a.mixed_ms) / a.mixed_ms.max(1e-9))}</td></tr>
                <tr data-testid="mixed-size" data-fp32=r.fp32_bytes.to_string() data-mixed=a.point.weight_bytes.to_string()><th>"weights"</th><td class="num">{size(r.fp32_bytes)}</td><td class="num">{size(a.point.weight_bytes)}</td><td class="num">{format!("{:.2}x", r.fp32_bytes as f64 / a.point.weight_bytes.max(1) as f64)}</td></tr>
            </tbody>
        </table>
        <p class="explain" data-testid="mixed-applied" data-index=a.index.to_string() data-agreement=format!("{:.4}", a.top1_agreement)>
            {format!("Applied point {}: {}; top-1 agreement with FP32 {:.0} %. It is now the current quantization (the downloads below, and the speed test in step 6). The integer engine runs it at these bit-widths.", a.index + 1, describe(&a.point, &r.unit), a.top1_agreement * 100.0)}
        </p>
        <div class="row">
            <button data-testid="mixed-download-qdq" disabled=busy title=if wide { "Bit-widths above 8 are written as 16-bit QuantizeLinear/DequantizeLinear (onnxruntime's com.microsoft domain below opset 21)" } else { "" } on:click=move |_| export(true)>"Download the QDQ model (ONNX)"</button>
            <button data-testid="mixed-download-fp32" disabled=busy on:click=move |_| export(false)>"Download the FP32 model the encodings refer to"</button>
            <a data-testid="mixed-download-encodings" download="mixed-encodings.json" href=super::quantize_panel::json_data_url(&json)>"Download the encodings (AIMET JSON)"</a>
        </div>
        <Compare compare=a.compare.clone() class_accuracy=a.class_accuracy.clone() after="mixed precision" testid="mixed-compare"/>
    }
}

#[component]
pub fn MixedPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let chosen: Vec<RwSignal<bool>> = CANDIDATES.iter().map(|&(_, on)| RwSignal::new(on)).collect();
    let per_channel = RwSignal::new(true);
    let lookahead = RwSignal::new(4u32);
    let objective = RwSignal::new("bops".to_string());
    let budget = RwSignal::new(0.75f64);
    let adaround = RwSignal::new(0u32);
    let by_latency = RwSignal::new(false);
    let selected = RwSignal::new(0usize);
    Effect::new(move |_| {
        if let Some(r) = state.mixed.get() {
            selected.set(r.chosen);
        }
    });
    let busy = move || state.busy.get() != Busy::Idle;
    let picked = {
        let chosen = chosen.clone();
        move || CANDIDATES.iter().zip(&chosen).filter(|(_, s)| s.get()).map(|((c, _), _)| c.to_string()).collect::<Vec<_>>()
    };
    let run = {
        let picked = picked.clone();
        move |_| {
            let settings = MixedSettings { candidates: picked(), per_channel: per_channel.get_untracked(), lookahead: lookahead.get_untracked(), objective: objective.get_untracked(), budget: budget.get_untracked(), calib_samples: 0, adaround_iterations: adaround.get_untracked() };
            state.start(format!("Mixed precision over {}…", settings.candidates.join(", ").to_uppercase()));
            let photos = PHOTOS.iter().map(|(f, _)| f.to_string()).collect();
            if let Err(e) = bridge::send(&Request::Mixed { job: bridge::next_job(), settings, photos }, bridge::calibration_payload()) {
                state.fail(e);
            }
        }
    };
    let apply = move |_| {
        state.start("Applying the selected point and timing it…");
        if let Err(e) = bridge::send(&Request::ApplyMixed { job: bridge::next_job(), index: selected.get_untracked() }, wasm_bindgen::JsValue::UNDEFINED) {
            state.fail(e);
        }
    };
    let unit_hint = move || match objective.get().as_str() {
        "bops" => "× the BOPs of W8A8",
        "drop" => "score points below FP32 (SQNR: below the most precise point)",
        "latency" => "ms per inference in this browser's integer engine",
        _ => "MB of weights",
    };
    move || {
        let kind = state.summary.get().map(|s| s.input_kind)?;
        if kind == InputKind::Other {
            return None;
        }
        let data = if kind == InputKind::Digits { "each point scored by accuracy on the 450 test digits, calibrated on 256 training digits" } else { "each point scored by the SQNR of the outputs against FP32 on the first photos, calibrated on the calibration photos (yours, if given above)" };
        let picked = picked.clone();
        let run = run.clone();
        let boxes = CANDIDATES
            .iter()
            .zip(chosen.iter().copied())
            .map(|(&(c, _), s)| {
                view! {
                    <label class="check"><input type="checkbox" data-testid=format!("mixed-cand-{c}") prop:checked=move || s.get() on:change=move |ev| s.set(event_target_checked(&ev))/>{c.to_uppercase()}</label>
                }
            })
            .collect_view();
        Some(view! {
            <section class="panel" aria-labelledby="mixed-h" data-testid="mixed-panel">
                <h2 id="mixed-h"><span class="step">"9"</span>"Mixed precision"</h2>
                <p class="explain">{format!("A bit-width per layer group (a layer's weights with its input; activations an Add or Concat ties share one): phase 1 scores each group alone at each candidate, then the curve is walked down from the most precise point and up from the cheapest, so every budget has its point. BOPs = Σ MACs × weight bits × activation bits, relative to W8A8 everywhere; {data}.")}</p>
                <div class="row">
                    <fieldset class="inline"><legend>"Candidates"</legend>{boxes}</fieldset>
                    <label class="check"><input type="checkbox" data-testid="mixed-per-channel" prop:checked=move || per_channel.get() on:change=move |ev| per_channel.set(event_target_checked(&ev))/>"per-channel weights"</label>
                    <label>"Moves measured per step "
                        <select data-testid="mixed-lookahead" on:change=move |ev| { if let Ok(v) = event_target_value(&ev).parse::<u32>() { lookahead.set(v) } } prop:value=move || lookahead.get().to_string()>
                            <option value="1">"1 (phase 1's estimate decides; fastest)"</option>
                            <option value="4">"4"</option>
                            <option value="8">"8 (best curve, slowest)"</option>
                        </select>
                    </label>
                    <label>"Rounding below 8 weight bits "
                        <select data-testid="mixed-adaround" on:change=move |ev| { if let Ok(v) = event_target_value(&ev).parse::<u32>() { adaround.set(v) } } prop:value=move || adaround.get().to_string()>
                            <option value="0">"to nearest"</option>
                            <option value="200">"AdaRound, 200 iterations per layer"</option>
                            <option value="1000">"AdaRound, 1,000 iterations per layer (minutes on EfficientNet-Lite0)"</option>
                        </select>
                    </label>
                </div>
                <div class="row">
                    <label>"Objective "
                        <select data-testid="mixed-objective" on:change=move |ev| {
                            let v = event_target_value(&ev);
                            budget.set(match v.as_str() { "bops" => 0.75, "latency" => state.mixed.get_untracked().and_then(|r| r.uniform.iter().find(|u| u.0.eq_ignore_ascii_case("w8a8")).map(|u| (u.3 * 100.0).round() / 100.0)).unwrap_or(10.0), _ => 1.0 });
                            objective.set(v);
                        } prop:value=move || objective.get()>
                            <option value="bops">"a BOPs budget"</option>
                            <option value="drop">"an accuracy drop"</option>
                            <option value="size">"a weight-size budget"</option>
                            <option value="latency">"a latency budget (this browser)"</option>
                        </select>
                    </label>
                    <label>"Budget "
                        <input type="number" min="0" step="any" data-testid="mixed-budget" prop:value=move || budget.get().to_string()
                            on:change=move |ev| { if let Ok(v) = event_target_value(&ev).parse::<f64>() { budget.set(v) } }/>
                        " "{unit_hint}
                    </label>
                    <button class="primary" data-testid="mixed-run" disabled=move || busy() || picked().is_empty() on:click=run>"Search bit-widths"</button>
                </div>
                {move || state.mixed.get().map(|r| {
                    let p = r.pareto.get(r.chosen).cloned();
                    let uniform = r.uniform.iter().map(|(c, x, y, _)| format!("{} {x:.2}× {y:.2}", c.to_uppercase())).collect::<Vec<_>>().join(", ");
                    view! {
                        <p class="quant-summary" data-testid="mixed-summary" data-points=r.pareto.len().to_string() data-chosen=r.chosen.to_string()
                            data-bops=p.as_ref().map(|p| format!("{:.5}", p.relative_bops)).unwrap_or_default() data-score=p.as_ref().map(|p| format!("{:.4}", p.score)).unwrap_or_default()>
                            {format!("{} groups, {} layers: {} points on the curve from {} measured ({} evaluations on {} samples in {:.0} s). Uniform: {uniform}{}. The point for the budget: {}.",
                                r.groups, r.layers.len(), r.pareto.len(), r.visited.len(), r.evaluations, r.eval_samples, r.seconds,
                                r.fp32_score.map(|f| format!("; FP32 {f:.2} {}", r.unit)).unwrap_or_default(), p.as_ref().map(|p| describe(p, &r.unit)).unwrap_or_default())}
                        </p>
                        {r.budget_note.clone().map(|n| view! { <p class="error" role="alert" data-testid="mixed-budget-note">{format!("No point meets the budget: {n}. Selected: the nearest end of the curve.")}</p> })}
                        <p class="explain" data-testid="mixed-latency-check">{latency_check(&r)}</p>
                        <div class="row">
                            <label class="check"><input type="checkbox" data-testid="mixed-axis-latency" prop:checked=move || by_latency.get() on:change=move |ev| by_latency.set(event_target_checked(&ev))/>"plot against the latency predicted here"</label>
                        </div>
                        <div class="charts">
                            {let r = r.clone(); move || view! { <Pareto r=r.clone() selected=selected by_latency=by_latency.get()/> }}
                        </div>
                        <div class="row">
                            <button class="primary" data-testid="mixed-apply" disabled=busy on:click=apply>{move || format!("Apply point {} and time it", selected.get() + 1)}</button>
                        </div>
                        {let r2 = r.clone(); move || state.mixed_applied.get().map(|a| view! { <Applied a=a r=r2.clone()/> })}
                        <BitMap r=r.clone() selected=selected/>
                    }
                })}
            </section>
        })
    }
}
