//! The model card: inputs, outputs, op table, parameters and sizes.

use crate::protocol::{InputKind, IoDesc};
use crate::state::AppState;
use leptos::prelude::*;

fn mb(bytes: f64) -> String {
    format!("{:.2} MB", bytes / 1e6)
}

fn io_rows(items: Vec<IoDesc>, kind: &'static str) -> impl IntoView {
    items
        .into_iter()
        .map(|i| {
            view! {
                <tr>
                    <th scope="row">{kind}</th>
                    <td><code>{i.name}</code></td>
                    <td>{i.elem_type}" ["{i.shape.join(", ")}"]"</td>
                </tr>
            }
        })
        .collect_view()
}

#[component]
pub fn ModelCard() -> impl IntoView {
    let state = expect_context::<AppState>();
    move || {
        state.summary.get().map(|s| {
            let params = s.parameters as f64;
            let kind = match &s.input_kind {
                InputKind::Image { height, width } => format!("RGB image classifier ({height}x{width})"),
                InputKind::Digits => "8x8 handwritten digits classifier".to_string(),
                InputKind::Other => "input not recognised by the playground: summary only".to_string(),
            };
            let total: usize = s.op_counts.iter().map(|(_, c)| c).sum();
            view! {
                <section class="panel card" data-testid="model-card" aria-labelledby="card-h">
                    <h2 id="card-h"><span class="step">"2"</span>"Model: "<span data-testid="model-name">{s.name.clone()}</span></h2>
                    <p class="kind">{kind}</p>
                    <div class="facts">
                        <div><span class="k">"file"</span><span class="v">{mb(s.file_bytes as f64)}</span></div>
                        <div><span class="k">"parameters"</span><span class="v" data-testid="param-count">{s.parameters.to_string()}</span></div>
                        <div><span class="k">"FP32 weights"</span><span class="v">{mb(params * 4.0)}</span></div>
                        <div><span class="k">"INT8 weights"</span><span class="v">{mb(params)}</span></div>
                        <div><span class="k">"INT4 weights"</span><span class="v">{mb(params / 2.0)}</span></div>
                        <div><span class="k">"opset / IR"</span><span class="v">{format!("{} / {}", s.opset, s.ir_version)}</span></div>
                        <div><span class="k">"MACs"</span><span class="v" data-testid="macs">{s.macs.map_or("unknown (dynamic shape)".to_string(), |m| format!("{:.1} M", m as f64 / 1e6))}</span></div>
                        <div><span class="k">"loaded in"</span><span class="v">{format!("{:.0} ms", s.load_ms)}</span></div>
                    </div>
                    <table class="io">
                        <tbody>{io_rows(s.inputs.clone(), "input")}{io_rows(s.outputs.clone(), "output")}</tbody>
                    </table>
                    <details>
                        <summary>{format!("{total} nodes, {} op types", s.op_counts.len())}</summary>
                        <table class="ops" data-testid="op-table">
                            <thead><tr><th>"op"</th><th>"count"</th></tr></thead>
                            <tbody>
                                {s.op_counts.iter().map(|(k, c)| view! { <tr><td>{k.clone()}</td><td>{*c}</td></tr> }).collect_view()}
                            </tbody>
                        </table>
                    </details>
                    {(!s.layer_costs.is_empty()).then(|| {
                        let total = s.macs.unwrap_or(0).max(1) as f64;
                        view! {
                            <details>
                                <summary>{format!("cost of {} layers (MACs, parameters, weight bytes at 8 and 4 bits)", s.layer_costs.len())}</summary>
                                <table class="ops" data-testid="cost-table">
                                    <thead><tr><th>"layer"</th><th>"op"</th><th>"MACs"</th><th>"share"</th><th>"parameters"</th><th>"INT8"</th><th>"INT4"</th></tr></thead>
                                    <tbody>
                                        {s.layer_costs.iter().map(|(n, op, m, p)| view! {
                                            <tr data-testid="cost-row" data-macs=m.to_string()>
                                                <td><code>{n.clone()}</code></td><td>{op.clone()}</td><td class="num">{m.to_string()}</td>
                                                <td class="num">{format!("{:.1} %", 100.0 * *m as f64 / total)}</td><td class="num">{p.to_string()}</td>
                                                <td class="num">{format!("{:.1} kB", *p as f64 / 1e3)}</td><td class="num">{format!("{:.1} kB", *p as f64 / 2e3)}</td>
                                            </tr>
                                        }).collect_view()}
                                    </tbody>
                                </table>
                            </details>
                        }
                    })}
                    <p class="producer">{format!("producer: {}", if s.producer.is_empty() { "unknown" } else { &s.producer })}</p>
                </section>
            }
        })
    }
}
