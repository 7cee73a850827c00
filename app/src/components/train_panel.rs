//! Training in the tab: quantization-aware training of the loaded model, or fine-tuning of the
//! compressed one by distillation; live loss and score curves per epoch, progress, ETA and
//! Cancel, and the score before and after.

use super::quantize_panel::json_data_url;
use super::JobProgress;
use crate::bridge;
use crate::protocol::{InputKind, Request, TrainEpoch, TrainSettings};
use crate::state::{AppState, Busy, PHOTOS};
use leptos::prelude::*;

const W: f64 = 520.0;
const H: f64 = 200.0;
const PAD: f64 = 44.0;

/// The loss (log scale, left axis) and the score (right axis) after each epoch.
#[component]
fn Curves(epochs: Vec<TrainEpoch>, of: usize, unit: String) -> impl IntoView {
    let n = of.max(epochs.len()).max(1) as f64;
    let x = move |e: usize| PAD + (e as f64 + 1.0) / n * (W - 2.0 * PAD);
    let logs: Vec<f64> = epochs.iter().map(|e| e.loss.max(1e-9).log10()).collect();
    let (llo, lhi) = logs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (llo, lhi) = if lhi - llo < 0.5 { (llo - 0.25, lhi + 0.25) } else { (llo, lhi) };
    let scores: Vec<f64> = epochs.iter().filter_map(|e| e.score).collect();
    let (slo, shi) = scores.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (slo, shi) = if shi - slo < 1.0 { (slo - 0.5, shi + 0.5) } else { (slo, shi) };
    let y = move |v: f64, lo: f64, hi: f64| H - PAD - (v - lo) / (hi - lo).max(1e-12) * (H - 2.0 * PAD);
    let loss_pts = logs.iter().enumerate().map(|(i, &v)| format!("{:.1},{:.1}", x(i), y(v, llo, lhi))).collect::<Vec<_>>().join(" ");
    let score_pts = epochs.iter().enumerate().filter_map(|(i, e)| e.score.map(|s| format!("{:.1},{:.1}", x(i), y(s, slo, shi)))).collect::<Vec<_>>().join(" ");
    let dots = epochs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let s = e.score.map(|s| format!("{s:.2}")).unwrap_or_default();
            view! {
                <circle class="dot loss" cx=x(i) cy=y(logs[i], llo, lhi) r="3" data-testid="train-point" data-epoch=(e.epoch + 1).to_string() data-loss=format!("{:.6}", e.loss) data-score=s.clone()>
                    <title>{format!("epoch {}: loss {:.4}, score {s} {unit}", e.epoch + 1, e.loss)}</title>
                </circle>
            }
        })
        .collect_view();
    view! {
        <figure class="train-chart">
            <svg class="chart" data-testid="train-curve" width=W height=H viewBox=format!("0 0 {W} {H}") role="img" aria-label="Training loss and score after each epoch">
                <line x1=PAD y1=H - PAD x2=W - PAD y2=H - PAD class="axis-line"/>
                <line x1=PAD y1=PAD - 10.0 x2=PAD y2=H - PAD class="axis-line"/>
                <text x=4 y=PAD class="axis">{format!("1e{lhi:.1}")}</text>
                <text x=4 y=H - PAD class="axis">{format!("1e{llo:.1}")}</text>
                <text x=W - PAD + 4.0 y=PAD class="axis">{format!("{shi:.1}")}</text>
                <text x=W - PAD + 4.0 y=H - PAD class="axis">{format!("{slo:.1}")}</text>
                <text x=W / 2.0 y=H - 10.0 text-anchor="middle" class="axis">{format!("epoch (of {})", of)}</text>
                <polyline class="before" fill="none" points=loss_pts></polyline>
                <polyline class="after" fill="none" points=score_pts></polyline>
                {dots}
            </svg>
            <figcaption><span class="key before"></span>" loss (log scale, left) "<span class="key after"></span>{format!(" score after the epoch ({unit}, right)")}</figcaption>
        </figure>
    }
}

#[component]
pub fn TrainPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let qat = RwSignal::new(true);
    let bits = RwSignal::new("4/4".to_string());
    let per_channel = RwSignal::new(true);
    let keep_bn = RwSignal::new(false);
    let epochs = RwSignal::new(10u32);
    let lr = RwSignal::new(3e-3f32);
    let batch = RwSignal::new(32u32);
    let busy = move || state.busy.get() != Busy::Idle;
    // Photos: fewer epochs, a gentler rate and small batches by default (set when the kind of
    // model changes, not when the same model is reloaded after a cancel).
    let photos = Memo::new(move |_| state.summary.with(|s| s.as_ref().map(|s| matches!(s.input_kind, InputKind::Image { .. }))));
    Effect::new(move |_| {
        if let Some(photos) = photos.get() {
            epochs.set(if photos { 3 } else { 10 });
            lr.set(if photos { 1e-4 } else { 3e-3 });
            batch.set(if photos { 2 } else { 32 });
        }
    });
    let run = move |_| {
        let (w, a) = bits.get_untracked().split_once('/').map(|(w, a)| (w.parse().unwrap_or(8), a.parse().unwrap_or(8))).unwrap_or((8, 8));
        let settings = TrainSettings { qat: qat.get_untracked(), weight_bits: w, act_bits: a, per_channel: per_channel.get_untracked(), keep_bn: keep_bn.get_untracked() && per_channel.get_untracked(), epochs: epochs.get_untracked(), lr: lr.get_untracked(), batch: batch.get_untracked(), samples: 0 };
        state.train_curve.set(Vec::new());
        state.start(if settings.qat { format!("Quantization-aware training (W{w}A{a})…") } else { "Fine-tuning the compressed model…".to_string() });
        let photos = PHOTOS.iter().map(|(f, _)| f.to_string()).collect();
        let classes = state.user_labels.get_untracked().map(|(_, l)| l);
        if let Err(e) = bridge::send(&Request::Train { job: bridge::next_job(), settings, photos, classes }, bridge::train_payload()) {
            state.fail(e);
        }
    };
    move || {
        let kind = state.summary.get().map(|s| s.input_kind)?;
        if kind == InputKind::Other {
            return None;
        }
        let bundled = if kind == InputKind::Digits {
            "Without files of yours, QAT trains on the 1,347 training digits with their labels and fine-tuning distils from the original model (labels unused); both are scored on the 450 test digits."
        } else {
            "Without files of yours, both distil from the FP32 model on the calibration photos (yours, if given above) and are scored by the SQNR of the outputs against FP32 on the first photos."
        };
        let on_files = move |ev: leptos::ev::Event| {
            let files = super::input_panel::picked_all(&ev);
            state.train_files.set((!files.is_empty()).then_some(files.len()));
            bridge::set_train_files(files);
        };
        let folder = NodeRef::<leptos::html::Input>::new();
        folder.on_load(|input| {
            let _ = input.set_attribute("webkitdirectory", "");
        });
        let training = move || busy() && state.busy.with(|b| matches!(b, Busy::Working(w) if w.contains("training") || w.contains("Fine-tuning")));
        Some(view! {
            <section class="panel" aria-labelledby="train-h" data-testid="train-panel">
                <h2 id="train-h"><span class="step">"8"</span>"Train"</h2>
                <p class="explain">"Gradients in the tab: quantization-aware training through the quantization simulation (straight-through estimator, ranges learned as AIMET does), or fine-tuning of the compressed model (step 7) by knowledge distillation from the loaded model. Adam, cosine schedule."</p>
                <div class="row train-row">
                    <label class="upload" title="Photos labelled by a labels.csv (file,label) among them, their folders or names like 180_001.png; or .npy samples with an integer .npy of their labels. Without labels, the model is distilled from the FP32 one.">
                        "Your training data (photos or .npy, labels optional) "
                        <input type="file" accept="image/*,.npy,.csv" multiple data-testid="train-files" disabled=busy on:change=on_files/>
                    </label>
                    <label class="upload">"or a folder (one sub-folder per class) "
                        <input type="file" node_ref=folder data-testid="train-folder" disabled=busy on:change=on_files/>
                    </label>
                    {move || state.train_files.get().map(|_| view! {
                        <button data-testid="train-files-clear" disabled=busy on:click=move |_| { state.train_files.set(None); bridge::set_train_files(Vec::new()); }>"Use the bundled data"</button>
                    })}
                </div>
                <p class="hint" data-testid="train-data">
                    {move || match state.train_files.get() {
                        Some(n) => format!("Trains on your {n} files; scored on your test photos (step 4) if given, else on one sample in five held out. Labels train by cross-entropy; without them the model is distilled from the FP32 one."),
                        None => bundled.to_string(),
                    }}
                </p>
                <div class="row train-row">
                    <label>"What "
                        <select data-testid="train-mode" on:change=move |ev| qat.set(event_target_value(&ev) == "qat") prop:value=move || if qat.get() { "qat" } else { "finetune" }>
                            <option value="qat">"Quantization-aware training"</option>
                            <option value="finetune" disabled=move || state.compress.with(Option::is_none)>"Fine-tune the compressed model (distillation)"</option>
                        </select>
                    </label>
                    <label>"Bits "
                        <select data-testid="train-bits" disabled=move || !qat.get() on:change=move |ev| bits.set(event_target_value(&ev)) prop:value=move || bits.get()>
                            <option value="4/4">"W4A4"</option>
                            <option value="4/8">"W4A8"</option>
                            <option value="8/8">"W8A8"</option>
                        </select>
                    </label>
                    <label><input type="checkbox" data-testid="train-per-channel" disabled=move || !qat.get() prop:checked=move || per_channel.get() on:change=move |ev| per_channel.set(event_target_checked(&ev))/>" per-channel"</label>
                    <label title="Folded: BatchNorm goes into the layers before training. Kept: it trains on batch statistics, its running statistics are re-estimated on the data afterwards, then it is folded into the weights and their per-channel scales (per-channel only).">"BatchNorm "
                        <select data-testid="train-bn" disabled=move || !qat.get() || !per_channel.get() on:change=move |ev| keep_bn.set(event_target_value(&ev) == "keep") prop:value=move || if keep_bn.get() && per_channel.get() { "keep" } else { "fold" }>
                            <option value="fold">"folded"</option>
                            <option value="keep">"kept, re-estimated"</option>
                        </select>
                    </label>
                    <label>"Epochs "
                        <input type="number" min="1" max="200" data-testid="train-epochs" prop:value=move || epochs.get().to_string()
                            on:change=move |ev| epochs.set(event_target_value(&ev).parse::<u32>().unwrap_or(1).clamp(1, 200))/>
                    </label>
                    <label>"Learning rate "
                        <select data-testid="train-lr" on:change=move |ev| { if let Ok(v) = event_target_value(&ev).parse::<f32>() { lr.set(v) } } prop:value=move || format!("{}", lr.get())>
                            {["0.01", "0.003", "0.001", "0.0003", "0.0001", "0.00003"].map(|v| view! { <option value=v>{v}</option> }).collect_view()}
                        </select>
                    </label>
                    <label>"Batch "
                        <select data-testid="train-batch" on:change=move |ev| { if let Ok(v) = event_target_value(&ev).parse::<u32>() { batch.set(v) } } prop:value=move || batch.get().to_string()>
                            {["1", "2", "4", "8", "16", "32", "64"].map(|v| view! { <option value=v>{v}</option> }).collect_view()}
                        </select>
                    </label>
                    <button class="primary" data-testid="train-run" disabled=busy on:click=run>"Train"</button>
                </div>
                {move || training().then(|| view! {
                    <div class="actions">
                        <JobProgress testid="train-progress" eta_testid="train-eta"/>
                        <button class="cancel" data-testid="train-cancel" on:click=move |_| bridge::cancel(state)>"Cancel"</button>
                    </div>
                })}
                {move || {
                    let curve = state.train_curve.get();
                    let of = state.train.with(|r| r.as_ref().map(|r| r.settings.epochs as usize)).unwrap_or_else(|| epochs.get_untracked() as usize);
                    let unit = curve.first().map_or_else(String::new, |e| e.unit.clone());
                    (!curve.is_empty()).then(|| view! { <Curves epochs=curve of=of unit=unit/> })
                }}
                {move || state.train.get().map(|r| {
                    let what = if r.settings.qat { format!("W{}A{} {} QAT{}", r.settings.weight_bits, r.settings.act_bits, if r.settings.per_channel { "per-channel" } else { "per-tensor" }, if r.settings.keep_bn { ", BatchNorm kept and re-estimated" } else { "" }) } else { "Fine-tuning by distillation".to_string() };
                    let start = if r.settings.qat { "min-max quantized" } else { "compressed" };
                    let fp32 = r.fp32.map(|f| format!(" FP32: {f:.2} {}.", r.unit)).unwrap_or_default();
                    view! {
                        <p class="quant-summary" data-testid="train-summary" data-before=format!("{:.3}", r.before) data-after=format!("{:.3}", r.after) data-fp32=r.fp32.map(|f| format!("{f:.3}")).unwrap_or_default() data-stop=r.stop.clone()>
                            {format!("{what}: {} epochs on {} in {:.1} s ({}). Score {:.2} {u} before ({start}) → {:.2} {u} after.{fp32}", r.epochs.len(), r.data, r.seconds, r.stop, r.before, r.after, u = r.unit)}
                        </p>
                        {r.encodings_json.clone().map(|j| {
                            let export = move |qdq: bool| {
                                state.start("Exporting the trained model…");
                                if let Err(e) = bridge::send(&Request::Export { job: bridge::next_job(), qdq }, wasm_bindgen::JsValue::UNDEFINED) {
                                    state.fail(e);
                                }
                            };
                            view! {
                                <div class="row train-row">
                                    <button data-testid="train-download-qdq" disabled=busy on:click=move |_| export(true)>"Download the QDQ model (ONNX)"</button>
                                    <button data-testid="train-download-fp32" disabled=busy on:click=move |_| export(false)>"Download the trained FP32 model (ONNX)"</button>
                                    <a data-testid="train-download-encodings" download="qat-encodings.json" href=json_data_url(&j)>"Download the learned encodings (AIMET JSON)"</a>
                                </div>
                            }
                        })}
                    }
                })}
            </section>
        })
    }
}
