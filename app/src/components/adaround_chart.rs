//! AdaRound's loss curves for a chosen layer: the reconstruction loss (log scale) and the
//! rounding regulariser over the iterations, with the warm start marked, and what the learned
//! rounding did to the layer.

use crate::state::AppState;
use leptos::prelude::*;

const W: f32 = 720.0;
const H: f32 = 220.0;
const PAD: f32 = 44.0;

/// SVG polyline points of `ys` (one per x in `xs`) mapped onto [lo, hi].
fn points(xs: &[f32], ys: &[f32], x_max: f32, lo: f32, hi: f32) -> String {
    xs.iter()
        .zip(ys)
        .map(|(&x, &y)| {
            let px = PAD + x / x_max.max(1.0) * (W - 2.0 * PAD);
            let py = H - PAD - (y - lo) / (hi - lo).max(1e-12) * (H - 2.0 * PAD);
            format!("{px:.1},{py:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[component]
pub fn AdaroundChart() -> impl IntoView {
    let state = expect_context::<AppState>();
    let chosen = RwSignal::new(0usize);
    move || {
        let r = state.quant.get()?;
        if r.adaround.is_empty() {
            return None;
        }
        let i = chosen.get().min(r.adaround.len() - 1);
        let l = r.adaround[i].clone();
        let xs: Vec<f32> = l.curve.iter().map(|p| p.0 as f32).collect();
        let x_max = xs.last().copied().unwrap_or(1.0);
        // Reconstruction on a log10 scale; the regulariser on a linear scale of its own.
        let rec: Vec<f32> = l.curve.iter().map(|p| p.1.max(1e-12).log10()).collect();
        let (rlo, rhi) = rec.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        // Four decades at most: during the warm start the soft weights reproduce FP32 almost
        // exactly and the loss dives towards zero.
        let rhi = rhi.ceil();
        let rlo = rlo.floor().clamp(rhi - 4.0, rhi - 1.0);
        let rec: Vec<f32> = rec.iter().map(|&v| v.max(rlo)).collect();
        let round: Vec<f32> = l.curve.iter().map(|p| p.2).collect();
        let round_max = round.iter().copied().fold(0.0f32, f32::max).max(1e-12);
        let warm_x = PAD + 0.2 * (W - 2.0 * PAD);
        Some(view! {
            <figure class="ada-chart" data-testid="adaround-chart">
                <figcaption>
                    "AdaRound loss of "
                    <select data-testid="adaround-layer" on:change=move |ev| chosen.set(event_target_value(&ev).parse().unwrap_or(0)) prop:value=move || chosen.get().to_string()>
                        {r.adaround.iter().enumerate().map(|(k, a)| view! { <option value=k.to_string()>{a.node.clone()}</option> }).collect_view()}
                    </select>
                    <span class="legend"><span class="key before"></span>" reconstruction (log scale) "<span class="key after"></span>" rounding regulariser"</span>
                </figcaption>
                <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label=format!("loss curves of {} over {} iterations", l.node, x_max)>
                    <line class="axis" x1=PAD x2=W - PAD y1=H - PAD y2=H - PAD></line>
                    <line class="warm" x1=warm_x x2=warm_x y1=PAD y2=H - PAD></line>
                    <text class="tick" x=warm_x + 4.0 y=PAD + 10.0>"end of warm start"</text>
                    <text class="tick" x=4 y=PAD>{format!("1e{rhi}")}</text>
                    <text class="tick" x=4 y=H - PAD>{format!("1e{rlo}")}</text>
                    <text class="tick" x=W / 2.0 y=H - 8.0 text-anchor="middle">{format!("iteration (of {x_max})")}</text>
                    <text class="tick" x=W - PAD y=PAD - 6.0 text-anchor="end">{format!("regulariser, max {round_max:.3}")}</text>
                    <polyline class="before" fill="none" points=points(&xs, &rec, x_max, rlo, rhi)></polyline>
                    <polyline class="after" fill="none" points=points(&xs, &round, x_max, 0.0, round_max)></polyline>
                </svg>
                <p class="explain" data-testid="adaround-summary">{format!(
                    "{} of {} weights ({:.1} %) round the other way than to nearest; the layer's output error (mean squared, summed over channels) goes from {:.4} with nearest rounding to {:.4}.",
                    l.changed, l.weights, 100.0 * l.changed as f64 / l.weights.max(1) as f64, l.recon_nearest, l.recon_adaround)}</p>
            </figure>
        })
    }
}
