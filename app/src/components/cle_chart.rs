//! Per-output-channel weight ranges of an equalized layer, before and after cross-layer
//! equalization (the DFQ paper's figure): one vertical bar per channel from min to max.

use crate::state::AppState;
use leptos::prelude::*;

const W: f32 = 720.0;
const H: f32 = 220.0;
const PAD: f32 = 36.0;

fn bars(min: &[f32], max: &[f32], lo: f32, hi: f32, class: &'static str, offset: f32) -> impl IntoView {
    let n = min.len().max(1) as f32;
    let step = (W - 2.0 * PAD) / n;
    let y = move |v: f32| H - PAD - (v - lo) / (hi - lo).max(1e-12) * (H - 2.0 * PAD);
    min.iter()
        .zip(max)
        .enumerate()
        .map(|(c, (&a, &b))| {
            let x = PAD + (c as f32 + 0.5 + offset) * step;
            view! { <line class=class x1=x x2=x y1=y(a) y2=y(b) stroke-width=(step * 0.35).clamp(0.6, 4.0)></line> }
        })
        .collect_view()
}

/// The measured-equalization decisions: per layer set, the model's output SQNR with and without
/// equalizing it.
#[component]
pub fn CleChoices() -> impl IntoView {
    let state = expect_context::<AppState>();
    move || state.quant.get().and_then(|r| choices(r.cle_choices))
}

fn choices(sets: Vec<crate::protocol::CleChoice>) -> Option<impl IntoView> {
    if sets.is_empty() {
        return None;
    }
    let kept = sets.iter().filter(|s| s.equalized).count();
    Some(view! {
        <details class="layers" data-testid="cle-choices">
            <summary>{format!("Measured per set: {kept} of {} layer sets equalized", sets.len())}</summary>
            <p class="explain">"Each set was tried both ways with the model quantized; equalizing a set evens its weight ranges "
                "but rescales the activations between its layers, which can cost more than it gains (especially with per-channel weights)."</p>
            <div class="table-wrap">
                <table>
                    <thead><tr><th scope="col">"layers"</th><th scope="col">"with"</th><th scope="col">"without"</th><th scope="col">"chosen"</th></tr></thead>
                    <tbody>
                        {sets.into_iter().map(|s| view! {
                            <tr class:low=!s.equalized>
                                <td><code>{s.layers.join(" → ")}</code></td>
                                <td class="num">{format!("{:.2} dB", s.with_db)}</td>
                                <td class="num">{format!("{:.2} dB", s.without_db)}</td>
                                <td data-testid="cle-choice">{if s.equalized { "equalized" } else { "left as is" }}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        </details>
    })
}

#[component]
pub fn CleChart() -> impl IntoView {
    let state = expect_context::<AppState>();
    let chosen = RwSignal::new(0usize);
    move || {
        let r = state.quant.get()?;
        if r.cle.is_empty() {
            return None;
        }
        let i = chosen.get().min(r.cle.len() - 1);
        let l = r.cle[i].clone();
        let lo = l.before_min.iter().chain(&l.after_min).fold(0.0f32, |a, &b| a.min(b));
        let hi = l.before_max.iter().chain(&l.after_max).fold(0.0f32, |a, &b| a.max(b));
        // Largest channel range over the median one: how much of a per-tensor grid the widest
        // channel claims (dead channels would make a min-based ratio meaningless).
        let spread = |mn: &[f32], mx: &[f32]| {
            let mut r: Vec<f32> = mn.iter().zip(mx).map(|(a, b)| b - a).collect();
            r.sort_by(f32::total_cmp);
            let med = r[r.len() / 2];
            if med > 0.0 { r[r.len() - 1] / med } else { f32::INFINITY }
        };
        let (sb, sa) = (spread(&l.before_min, &l.before_max), spread(&l.after_min, &l.after_max));
        let zero_y = H - PAD - (0.0 - lo) / (hi - lo).max(1e-12) * (H - 2.0 * PAD);
        Some(view! {
            <figure class="cle-chart" data-testid="cle-chart">
                <figcaption>
                    "Weight range per output channel of "
                    <select data-testid="cle-layer" on:change=move |ev| chosen.set(event_target_value(&ev).parse().unwrap_or(0)) prop:value=move || chosen.get().to_string()>
                        {r.cle.iter().enumerate().map(|(k, c)| view! { <option value=k.to_string()>{c.node.clone()}</option> }).collect_view()}
                    </select>
                    <span class="legend"><span class="key before"></span>" before "<span class="key after"></span>" after equalization"</span>
                </figcaption>
                <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label=format!("{} channels; largest/median range {:.1}x before, {:.1}x after", l.before_min.len(), sb, sa)>
                    <line class="axis" x1=PAD x2=W - PAD y1=zero_y y2=zero_y></line>
                    <text class="tick" x=4 y=PAD>{format!("{hi:.2}")}</text>
                    <text class="tick" x=4 y=H - PAD>{format!("{lo:.2}")}</text>
                    <text class="tick" x=W / 2.0 y=H - 8.0 text-anchor="middle">"output channel"</text>
                    {bars(&l.before_min, &l.before_max, lo, hi, "before", -0.2)}
                    {bars(&l.after_min, &l.after_max, lo, hi, "after", 0.2)}
                </svg>
                <p class="explain" data-testid="cle-spread">{format!("Largest/median channel range: {sb:.1}x before, {sa:.1}x after.")}</p>
            </figure>
        })
    }
}
