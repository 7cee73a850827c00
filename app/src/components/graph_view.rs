//! The model as a layered graph: one box per node of the file (Constant nodes included), laid
//! out top to bottom by the longest path from the inputs, coloured after quantization by the
//! SQNR of the node's output against FP32. Pan by dragging or with the arrow keys, zoom with the
//! wheel or +/-, find a node by name; a click (or Enter in the search box) shows its details.

use super::act_histogram::ask;
use crate::protocol::{GraphNode, LayerRow};
use crate::state::{AppState, Busy};
use leptos::prelude::*;
use std::collections::HashMap;

const NODE_W: f64 = 150.0;
const NODE_H: f64 = 34.0;
const GAP_X: f64 = 18.0;
const GAP_Y: f64 = 40.0;
/// Height of the view over its width.
const ASPECT: f64 = 0.55;

struct Layout {
    /// Top-left corner of each node's box.
    pos: Vec<(f64, f64)>,
    /// (producer, consumer) node pairs.
    edges: Vec<(usize, usize)>,
    width: f64,
    height: f64,
}

/// Layers by the longest path from the inputs (in a topological order found by Kahn's
/// algorithm, so a file listing its nodes out of order draws the same); within a layer, nodes
/// ordered by the mean position of their producers.
fn layout(nodes: &[GraphNode]) -> Layout {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in &n.outputs {
            producer.insert(o.as_str(), i);
        }
    }
    let mut edges = Vec::new();
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for v in &n.inputs {
            if let Some(&p) = producer.get(v.as_str()).filter(|&&p| p != i) {
                if !preds[i].contains(&p) {
                    preds[i].push(p);
                    succs[p].push(i);
                    edges.push((p, i));
                }
            }
        }
    }
    let mut waiting: Vec<usize> = preds.iter().map(Vec::len).collect();
    let mut order: Vec<usize> = (0..nodes.len()).filter(|&i| waiting[i] == 0).collect();
    let mut k = 0;
    while k < order.len() {
        for &s in &succs[order[k]] {
            waiting[s] -= 1;
            if waiting[s] == 0 {
                order.push(s);
            }
        }
        k += 1;
    }
    // A cycle (refused by the loader, so not expected) leaves nodes out: append them.
    order.extend((0..nodes.len()).filter(|&i| waiting[i] > 0));
    let mut layer = vec![0usize; nodes.len()];
    for &i in &order {
        layer[i] = preds[i].iter().map(|&p| layer[p] + 1).max().unwrap_or(0);
    }
    let depth = layer.iter().max().map_or(0, |&d| d + 1);
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); depth];
    let mut slot = vec![0.0f64; nodes.len()];
    for &i in &order {
        let key = if preds[i].is_empty() { rows[layer[i]].len() as f64 } else { preds[i].iter().map(|&p| slot[p]).sum::<f64>() / preds[i].len() as f64 };
        slot[i] = key;
        rows[layer[i]].push(i);
    }
    let widest = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let width = widest as f64 * (NODE_W + GAP_X) + GAP_X;
    let mut pos = vec![(0.0, 0.0); nodes.len()];
    for (d, row) in rows.iter_mut().enumerate() {
        row.sort_by(|&a, &b| slot[a].total_cmp(&slot[b]));
        let left = (width - row.len() as f64 * (NODE_W + GAP_X) + GAP_X) / 2.0;
        for (j, &i) in row.iter().enumerate() {
            slot[i] = j as f64;
            pos[i] = (left + j as f64 * (NODE_W + GAP_X), GAP_Y / 2.0 + d as f64 * (NODE_H + GAP_Y));
        }
    }
    Layout { pos, edges, width, height: depth as f64 * (NODE_H + GAP_Y) + GAP_Y / 2.0 }
}

/// The colour class of an SQNR: `q5` (40 dB or more) down to `q1` (below 10 dB); `q0` when the
/// output is not quantized (or folded away).
fn band(sqnr: Option<f64>) -> &'static str {
    match sqnr {
        None => "q0",
        Some(s) if s >= 40.0 => "q5",
        Some(s) if s >= 30.0 => "q4",
        Some(s) if s >= 20.0 => "q3",
        Some(s) if s >= 10.0 => "q2",
        Some(_) => "q1",
    }
}

/// Ops that a layer's measurement passes through: they are folded or fused into the layer before
/// them when it is quantized.
const FOLLOWERS: &[&str] = &["BatchNormalization", "Relu", "Clip", "HardSwish", "LeakyRelu", "HardSigmoid"];

const LEGEND: &[(&str, &str)] = &[("q5", "≥ 40 dB"), ("q4", "30–40"), ("q3", "20–30"), ("q2", "10–20"), ("q1", "< 10 dB"), ("q0", "not quantized or folded")];

fn short(name: &str, n: usize) -> String {
    if name.chars().count() <= n {
        name.to_string()
    } else {
        format!("…{}", name.chars().rev().take(n - 1).collect::<Vec<_>>().into_iter().rev().collect::<String>())
    }
}

#[component]
pub fn GraphPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    move || {
        let s = state.summary.get()?;
        (!s.graph.is_empty()).then(|| view! { <GraphView nodes=s.graph/> })
    }
}

#[component]
fn GraphView(nodes: Vec<GraphNode>) -> impl IntoView {
    let state = expect_context::<AppState>();
    let lay = layout(&nodes);
    let nodes = StoredValue::new(nodes);
    let count = nodes.with_value(Vec::len);
    // The view: its top-left corner and width in graph units (the height follows ASPECT).
    // At first, the width of eight boxes at least (a chain-like model would show a few nodes).
    let fit_w = lay.width.max(8.0 * (NODE_W + GAP_X));
    let view = RwSignal::new((0.0f64, 0.0f64, fit_w));
    let selected = RwSignal::new(None::<usize>);
    let query = RwSignal::new(String::new());
    let drag = StoredValue::new(None::<(f64, f64)>);
    let (width, height) = (lay.width, lay.height);
    let pos = StoredValue::new(lay.pos);
    let zoom = move |f: f64| {
        view.update(|(x, y, w)| {
            let nw = (*w * f).clamp(NODE_W * 2.0, fit_w.max(height / ASPECT) * 1.2);
            *x += (*w - nw) / 2.0;
            *y += (*w - nw) * ASPECT / 2.0;
            *w = nw;
        })
    };
    let pan = move |dx: f64, dy: f64| view.update(|(x, y, _)| (*x, *y) = (*x + dx, *y + dy));
    let matches = move || {
        let q = query.get().to_lowercase();
        nodes.with_value(|ns| if q.is_empty() { Vec::new() } else { (0..ns.len()).filter(|&i| ns[i].name.to_lowercase().contains(&q) || ns[i].op.to_lowercase() == q).collect::<Vec<_>>() })
    };
    let focus = move |i: usize| {
        let (px, py) = pos.with_value(|p| p[i]);
        view.update(|(x, y, w)| (*x, *y) = (px + NODE_W / 2.0 - *w / 2.0, py + NODE_H / 2.0 - *w * ASPECT / 2.0));
        selected.set(Some(i));
    };
    // Per node, the quantized tensor that measures it and the node writing that tensor: its own
    // output, else (a Conv followed by BatchNorm and an activation, folded and fused into one
    // layer) the output of the chain of single-consumer elementwise nodes after it.
    let consumers: HashMap<String, Vec<usize>> = nodes.with_value(|ns| {
        let mut m: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in ns.iter().enumerate() {
            for v in &n.inputs {
                m.entry(v.clone()).or_default().push(i);
            }
        }
        m
    });
    let measured_at = StoredValue::new(nodes.with_value(|ns| {
        (0..ns.len())
            .map(|i| {
                let mut chain = vec![i];
                for _ in 0..3 {
                    let last = &ns[*chain.last().unwrap_or(&i)];
                    match last.outputs.first().and_then(|o| consumers.get(o)).map(Vec::as_slice) {
                        Some(&[c]) if FOLLOWERS.contains(&ns[c].op.as_str()) => chain.push(c),
                        _ => break,
                    }
                }
                chain
            })
            .collect::<Vec<Vec<usize>>>()
    }));
    // SQNR per quantized tensor, from the last quantization.
    let sqnr = move || -> HashMap<String, LayerRow> { state.quant.with(|q| q.as_ref().map(|r| r.layers.iter().map(|l| (l.name.clone(), l.clone())).collect()).unwrap_or_default()) };
    // The first quantized output along node i's chain, with the node that writes it.
    let row_of = move |i: usize, rows: &HashMap<String, LayerRow>| -> Option<(usize, LayerRow)> {
        measured_at.with_value(|m| m[i].iter().find_map(|&j| nodes.with_value(|ns| ns[j].outputs.iter().find_map(|o| rows.get(o).cloned())).map(|r| (j, r))))
    };
    let edges_view = {
        let p = pos.get_value();
        lay.edges
            .iter()
            .map(|&(a, b)| {
                let (x1, y1) = (p[a].0 + NODE_W / 2.0, p[a].1 + NODE_H);
                let (x2, y2) = (p[b].0 + NODE_W / 2.0, p[b].1);
                let my = (y1 + y2) / 2.0;
                view! { <path class="edge" d=format!("M{x1:.1},{y1:.1} C{x1:.1},{my:.1} {x2:.1},{my:.1} {x2:.1},{y2:.1}")/> }
            })
            .collect_view()
    };
    let nodes_view = move || {
        let rows = sqnr();
        let hit = matches();
        let sel = selected.get();
        nodes.with_value(|ns| {
            pos.with_value(|p| {
                ns.iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let found = row_of(i, &rows);
                        let row = found.as_ref().map(|(_, r)| r);
                        let class = format!("gnode {}{}{}", band(row.and_then(|r| r.sqnr_db).or(row.map(|_| f64::INFINITY))), if hit.contains(&i) { " match" } else { "" }, if sel == Some(i) { " selected" } else { "" });
                        let tip = format!("{} ({}){}", n.name, n.op, row.map_or_else(String::new, |r| r.sqnr_db.map_or(" exact".into(), |s| format!(", {s:.1} dB"))));
                        view! {
                            <g class=class data-node=n.name.clone() data-sqnr=row.and_then(|r| r.sqnr_db).map(|s| format!("{s:.2}")) transform=format!("translate({:.1},{:.1})", p[i].0, p[i].1)
                                on:click=move |_| selected.set(Some(i))>
                                <title>{tip}</title>
                                <rect width=NODE_W height=NODE_H rx="5"></rect>
                                <text class="op" x=NODE_W / 2.0 y="14" text-anchor="middle">{short(&n.op, 22)}</text>
                                <text class="name" x=NODE_W / 2.0 y="27" text-anchor="middle">{short(&n.name, 26)}</text>
                            </g>
                        }
                    })
                    .collect_view()
            })
        })
    };
    let details = move || {
        let i = selected.get()?;
        let n = nodes.with_value(|ns| ns[i].clone());
        let rows = sqnr();
        let found = row_of(i, &rows);
        let via = found.as_ref().filter(|(j, _)| *j != i).map(|(j, _)| nodes.with_value(|ns| ns[*j].name.clone()));
        let quantized: Vec<LayerRow> = found.into_iter().map(|(_, r)| r).collect();
        let busy = move || state.busy.get() != Busy::Idle;
        Some(view! {
            <div class="graph-details" data-testid="graph-details">
                <h3>{n.op.clone()}" "<code>{n.name.clone()}</code></h3>
                <dl>
                    <dt>"Inputs"</dt><dd>{n.inputs.iter().map(|v| view! { <code>{v.clone()}</code>" " }).collect_view()}</dd>
                    <dt>"Outputs"</dt><dd>{n.outputs.iter().zip(&n.shapes).map(|(v, s)| view! { <code>{v.clone()}</code>" "{s.clone()}" " }).collect_view()}</dd>
                    <dt>"MACs"</dt><dd data-testid="graph-macs">{n.macs.map_or_else(|| "–".to_string(), |m| m.to_string())}</dd>
                    <dt>"Weight range"</dt><dd>{n.weight_range.map_or_else(|| "no constant weight".to_string(), |(lo, hi)| format!("[{lo:.4}, {hi:.4}]"))}</dd>
                    <dt>"Encoding"</dt>
                    <dd data-testid="graph-encoding">{if quantized.is_empty() {
                        "its output is not quantized (or the node was folded into another)".to_string()
                    } else {
                        let at = via.as_ref().map_or_else(String::new, |v| format!(" (at the output of {v}, which this layer's quantization ends at)"));
                        quantized.iter().map(|r| format!("{} bits, [{:.4}, {:.4}], SQNR {}{at}", r.bits, r.min, r.max, r.sqnr_db.map_or("exact".into(), |s| format!("{s:.2} dB")))).collect::<Vec<_>>().join("; ")
                    }}</dd>
                </dl>
                {quantized.first().map(|r| {
                    let tensor = r.name.clone();
                    view! { <button data-testid="graph-histogram" disabled=busy on:click=move |_| ask(state, tensor.clone())>"Show its activation histogram (under the results)"</button> }
                })}
            </div>
        })
    };
    view! {
        <section class="panel graph" aria-labelledby="graph-h">
            <h2 id="graph-h">"Graph"</h2>
            <p class="explain">{format!("{count} nodes. ")}"Drag or use the arrow keys to pan, the wheel or +/- to zoom, click a node for its details. After quantizing, each node is coloured by the SQNR of its output against FP32."</p>
            <div class="graph-tools">
                <label>"Find a node " <input type="search" data-testid="graph-search" placeholder="name or op type"
                    on:input=move |ev| query.set(event_target_value(&ev))
                    on:keydown=move |ev| if ev.key() == "Enter" { if let Some(&i) = matches().first() { focus(i); } }/></label>
                <span class="hint">{move || { let m = matches().len(); (!query.get().is_empty()).then(|| format!("{m} found")) }}</span>
                <button on:click=move |_| zoom(1.0 / 1.4) aria-label="Zoom in">"+"</button>
                <button on:click=move |_| zoom(1.4) aria-label="Zoom out">"−"</button>
                <button on:click=move |_| view.set((0.0, 0.0, fit_w))>"Fit the width"</button>
                <ul class="legend">{LEGEND.iter().map(|(c, l)| view! { <li><span class=format!("swatch {c}")></span>{*l}</li> }).collect_view()}</ul>
            </div>
            <svg data-testid="graph-view" role="img" aria-label=format!("The model's graph, {count} nodes") tabindex="0"
                viewBox=move || { let (x, y, w) = view.get(); format!("{x:.1} {y:.1} {w:.1} {:.1}", w * ASPECT) }
                data-width=format!("{width:.0}") data-height=format!("{height:.0}")
                on:wheel=move |ev| { ev.prevent_default(); zoom(if ev.delta_y() > 0.0 { 1.15 } else { 1.0 / 1.15 }); }
                on:pointerdown=move |ev| drag.set_value(Some((ev.client_x() as f64, ev.client_y() as f64)))
                on:pointerup=move |_| drag.set_value(None)
                on:pointerleave=move |_| drag.set_value(None)
                on:pointermove=move |ev| {
                    if let Some((x0, y0)) = drag.get_value() {
                        let (cx, cy) = (ev.client_x() as f64, ev.client_y() as f64);
                        let px = event_target::<web_sys::Element>(&ev).closest("svg").ok().flatten().map_or(800.0, |s| s.client_width().max(1) as f64);
                        let scale = view.get_untracked().2 / px;
                        pan((x0 - cx) * scale, (y0 - cy) * scale);
                        drag.set_value(Some((cx, cy)));
                    }
                }
                on:keydown=move |ev| {
                    let step = view.get_untracked().2 / 10.0;
                    match ev.key().as_str() {
                        "ArrowLeft" => pan(-step, 0.0),
                        "ArrowRight" => pan(step, 0.0),
                        "ArrowUp" => pan(0.0, -step),
                        "ArrowDown" => pan(0.0, step),
                        "+" | "=" => zoom(1.0 / 1.25),
                        "-" => zoom(1.25),
                        _ => return,
                    }
                    ev.prevent_default();
                }>
                <g class="edges">{edges_view}</g>
                <g class="nodes">{nodes_view}</g>
            </svg>
            {details}
        </section>
    }
}
