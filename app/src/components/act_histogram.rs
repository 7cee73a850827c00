//! The distribution of one quantized activation with its encoding's range drawn over it: the
//! grid's 2^b levels span [min, max], so a range stretched by rare outliers leaves few levels for
//! the bulk of the values.

use crate::bridge;
use crate::protocol::Request;
use crate::state::{AppState, Busy};
use leptos::prelude::*;

const W: f32 = 720.0;
const H: f32 = 200.0;
const PAD: f32 = 40.0;

pub(super) fn ask(state: AppState, tensor: String) {
    state.start(format!("Histogram of {tensor}…"));
    if let Err(e) = bridge::send(&Request::Histogram { job: bridge::next_job(), tensor }, wasm_bindgen::JsValue::UNDEFINED) {
        state.fail(e);
    }
}

#[component]
pub fn ActivationChart() -> impl IntoView {
    let state = expect_context::<AppState>();
    let busy = move || state.busy.get() != Busy::Idle;
    move || {
        let r = state.quant.get()?;
        let names: Vec<String> = r.layers.iter().map(|l| l.name.clone()).collect();
        let chart = state.histogram.get().map(|h| {
            let lo = h.lo.min(h.enc_min);
            let hi = h.hi.max(h.enc_max);
            let x = move |v: f32| PAD + (v - lo) / (hi - lo).max(1e-12) * (W - 2.0 * PAD);
            let peak = h.counts.iter().copied().max().unwrap_or(1).max(1) as f32;
            let bw = (h.hi - h.lo) / h.counts.len().max(1) as f32;
            let bars = h
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(i, &c)| {
                    let (x0, x1) = (x(h.lo + i as f32 * bw), x(h.lo + (i + 1) as f32 * bw));
                    // Square-root height so the tails stay visible next to the bulk.
                    let bh = (c as f32 / peak).sqrt() * (H - 2.0 * PAD);
                    view! { <rect class="bar" x=x0 width=(x1 - x0).max(0.8) y=H - PAD - bh height=bh></rect> }
                })
                .collect_view();
            let step = (h.enc_max - h.enc_min) / ((1u32 << h.bits) - 1) as f32;
            view! {
                <svg viewBox=format!("0 0 {W} {H}") role="img" data-testid="histogram"
                    aria-label=format!("{}: values from {:.3} to {:.3}; encoding range {:.3} to {:.3}", h.tensor, h.lo, h.hi, h.enc_min, h.enc_max)>
                    <line class="axis" x1=PAD x2=W - PAD y1=H - PAD y2=H - PAD></line>
                    {bars}
                    <line class="enc" data-testid="enc-min" x1=x(h.enc_min) x2=x(h.enc_min) y1=PAD - 10.0 y2=H - PAD></line>
                    <line class="enc" data-testid="enc-max" x1=x(h.enc_max) x2=x(h.enc_max) y1=PAD - 10.0 y2=H - PAD></line>
                    <text class="tick" x=x(h.enc_min) y=PAD - 14.0 text-anchor="middle">{format!("{:.3}", h.enc_min)}</text>
                    <text class="tick" x=x(h.enc_max) y=PAD - 14.0 text-anchor="middle">{format!("{:.3}", h.enc_max)}</text>
                    <text class="tick" x=W / 2.0 y=H - 10.0 text-anchor="middle">"value (bar height: √count)"</text>
                </svg>
                <p class="explain" data-testid="histogram-summary">{format!(
                    "{} values of {} from {:.3} to {:.3}. The {}-bit grid spans [{:.3}, {:.3}] in steps of {:.4}; {} values ({:.2} %) fall outside and are clipped.",
                    h.total, h.tensor, h.lo, h.hi, h.bits, h.enc_min, h.enc_max, step, h.clipped, 100.0 * h.clipped as f64 / h.total.max(1) as f64)}</p>
            }
        });
        Some(view! {
            <figure class="act-chart">
                <figcaption>
                    <label for="hist-tensor">"Activation histogram of "</label>
                    <select id="hist-tensor" data-testid="histogram-tensor" disabled=busy
                        on:change=move |ev| ask(state, event_target_value(&ev))>
                        <option value="" selected=true disabled=true>"choose a tensor"</option>
                        {names.into_iter().map(|n| view! { <option value=n.clone()>{n.clone()}</option> }).collect_view()}
                    </select>
                    " with the encoding's range (measured on the first calibration samples)"
                </figcaption>
                {chart}
            </figure>
        })
    }
}
