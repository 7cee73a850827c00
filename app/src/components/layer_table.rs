//! The per-layer error table: every quantized activation with its encoding range and its SQNR
//! against FP32, sortable by column.

use crate::protocol::LayerRow;
use crate::state::AppState;
use leptos::prelude::*;

#[derive(Clone, Copy, PartialEq, Eq)]
enum SortBy {
    Order,
    Name,
    Op,
    Sqnr,
}

#[component]
pub fn LayerTable() -> impl IntoView {
    let state = expect_context::<AppState>();
    let sort = RwSignal::new(SortBy::Order);
    let header = move |label: &'static str, key: SortBy| {
        view! {
            <th scope="col" aria-sort=move || if sort.get() == key { "ascending" } else { "none" }>
                <button class="sort" data-testid=format!("sort-{}", label.to_lowercase().replace(' ', "-")) on:click=move |_| sort.set(key)>{label}</button>
            </th>
        }
    };
    move || {
        let r = state.quant.get()?;
        // The previous recipe's SQNR of the same tensor, when there was one.
        let prev = state.previous_quant.get();
        let before = |name: &str| prev.as_ref().and_then(|p| p.layers.iter().find(|l| l.name == name)).map(|l| l.sqnr_db);
        let prev_label = prev.as_ref().map(|p| p.config.label());
        let mut rows: Vec<(usize, LayerRow)> = r.layers.into_iter().enumerate().collect();
        match sort.get() {
            SortBy::Order => {}
            SortBy::Name => rows.sort_by(|a, b| a.1.name.cmp(&b.1.name)),
            SortBy::Op => rows.sort_by(|a, b| a.1.op.cmp(&b.1.op).then(a.0.cmp(&b.0))),
            SortBy::Sqnr => rows.sort_by(|a, b| a.1.sqnr_db.unwrap_or(f64::INFINITY).total_cmp(&b.1.sqnr_db.unwrap_or(f64::INFINITY))),
        }
        let worst = rows.iter().filter_map(|(_, l)| l.sqnr_db).fold(f64::INFINITY, f64::min);
        Some(view! {
            <details class="layers">
                <summary data-testid="layer-table-toggle">{format!("Per-layer error: {} quantized tensors, measured on {} calibration samples (worst {:.1} dB)", rows.len(), r.analysis_samples, worst)}</summary>
                <p class="explain">"SQNR = 10·log10(Σ fp32² / Σ (fp32 − quantized)²) of each quantized tensor, with every earlier quantizer active, so errors accumulate down the table. Sort by SQNR to find where precision is lost."
                    {prev_label.clone().map(|p| format!(" The last column is the same tensor under the previous recipe ({p}), to see which layers a change helps."))}</p>
                <div class="table-wrap">
                    <table class="layer-table" data-testid="layer-table">
                        <thead><tr>{header("#", SortBy::Order)}{header("Tensor", SortBy::Name)}{header("Op", SortBy::Op)}<th scope="col">"bits"</th><th scope="col">"range"</th>{header("SQNR dB", SortBy::Sqnr)}
                            {prev_label.clone().map(|p| view! { <th scope="col" title=p>"previous recipe"</th> })}</tr></thead>
                        <tbody>
                            {rows.into_iter().map(|(i, l)| {
                                let db = l.sqnr_db.map_or("∞".to_string(), |d| format!("{d:.1}"));
                                let was = prev_label.as_ref().map(|_| match before(&l.name) {
                                    None => "—".to_string(),
                                    Some(None) => "∞".to_string(),
                                    Some(Some(d)) => format!("{d:.1}"),
                                });
                                let low = l.sqnr_db.is_some_and(|d| d < 10.0);
                                view! {
                                    <tr class:low=low>
                                        <td>{i + 1}</td><td><code>{l.name}</code></td><td>{l.op}</td><td>{l.bits}</td>
                                        <td>{format!("[{:.3}, {:.3}]", l.min, l.max)}</td><td class="num" data-testid="layer-sqnr">{db}</td>
                                        {was.map(|w| view! { <td class="num prev" data-testid="layer-sqnr-previous">{w}</td> })}
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                </div>
            </details>
        })
    }
}
