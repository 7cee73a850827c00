//! Quantizing the loaded model: presets and custom bit-widths, progress with Cancel, a summary
//! of what was done and the encodings download.

use super::JobProgress;
use crate::bridge;
use crate::protocol::{InputKind, QuantConfig, Request, Scheme};
use crate::state::{AppState, Busy, PHOTOS};
use leptos::prelude::*;

/// (id, label, weight bits, activation bits, per-channel, DFQ (equalization + bias correction),
/// AdaRound iterations)
const PRESETS: &[(&str, &str, u32, u32, bool, bool, u32)] = &[
    ("int8-naive", "INT8 naive", 8, 8, false, false, 0),
    ("int8-dfq", "INT8 DFQ", 8, 8, false, true, 0),
    ("int8-pc", "INT8 per-channel", 8, 8, true, false, 0),
    ("w4a8-pc", "W4A8 per-channel", 4, 8, true, false, 0),
    ("w4a8-adaround", "W4A8 AdaRound", 4, 8, true, false, ADAROUND_PRESET),
];

/// Iterations per layer of the AdaRound preset: AIMET's default is 10,000; 2,000 already gets
/// most of the gain on the digits model in about ten seconds.
const ADAROUND_PRESET: u32 = 2000;

fn start_quantize(state: AppState, config: QuantConfig) {
    state.start(format!("Quantizing W{}A{}{}…", config.weight_bits, config.act_bits, if config.per_channel { " per-channel" } else { "" }));
    let photos = PHOTOS.iter().map(|(f, _)| f.to_string()).collect();
    if let Err(e) = bridge::send(&Request::Quantize { job: bridge::next_job(), config, photos }, bridge::calibration_payload()) {
        state.fail(e);
    }
}

/// The per-layer table as CSV (one row per quantized tensor).
fn layers_csv(r: &crate::protocol::QuantReport) -> String {
    let mut out = String::from("index,tensor,op,bits,min,max,sqnr_db\n");
    for (i, l) in r.layers.iter().enumerate() {
        let db = l.sqnr_db.map_or("inf".to_string(), |d| format!("{d:.3}"));
        out.push_str(&format!("{},\"{}\",{},{},{},{},{}\n", i + 1, l.name.replace('"', "\"\""), l.op, l.bits, l.min, l.max, db));
    }
    out
}

/// (value, label) of the calibration set sizes offered for image or digits models; 0 is "all".
fn calib_sizes(images: bool) -> &'static [(u32, &'static str)] {
    if images {
        &[(1, "1 photo"), (2, "2 photos"), (5, "5 photos"), (10, "10 photos"), (0, "20 (10 photos + mirrored)")]
    } else {
        &[(32, "32 digits"), (64, "64 digits"), (128, "128 digits"), (0, "256 digits (AIMET's set)")]
    }
}

fn export(state: AppState, qdq: bool) {
    state.start(if qdq { "Exporting the QDQ model…" } else { "Exporting the FP32 model…" });
    if let Err(e) = bridge::send(&Request::Export { job: bridge::next_job(), qdq }, wasm_bindgen::JsValue::UNDEFINED) {
        state.fail(e);
    }
}

/// A `data:` URL holding `text` as a JSON download.
pub(super) fn json_data_url(text: &str) -> String {
    format!("data:application/json;charset=utf-8,{}", js_sys::encode_uri_component(text))
}

#[component]
pub fn QuantizePanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    // The recipe starts from the link (see crate::url) and is written back to it.
    let num = |k: &str, d: u32, max: u32| crate::url::get(k).and_then(|v| v.parse::<u32>().ok()).map_or(d, |v| v.min(max));
    let flag = |k: &str| crate::url::get(k).as_deref() == Some("1");
    let wbits = RwSignal::new(num("w", 8, 8).max(2));
    let abits = RwSignal::new(num("a", 8, 8).max(4));
    let per_channel = RwSignal::new(flag("pc"));
    let aimet = RwSignal::new(flag("aimet"));
    let dfq = RwSignal::new(flag("dfq"));
    let ada = RwSignal::new(num("ada", 0, 20_000));
    let bc = RwSignal::new(flag("bc"));
    let measured = RwSignal::new(flag("cm"));
    let scheme = RwSignal::new(crate::url::get("cs").and_then(|k| Scheme::from_key(&k)).unwrap_or_default());
    let calib_n = RwSignal::new(num("n", 0, 256));
    let compressed = move || state.quantize_compressed.get() && state.compress.get().is_some();
    let config = move || QuantConfig { compressed: compressed(), aimet_compatible: aimet.get(), dfq: dfq.get(), weight_bits: wbits.get(), act_bits: abits.get(), per_channel: per_channel.get(), adaround_iterations: ada.get(), bias_correction: bc.get(), cle_measured: measured.get(), scheme: scheme.get(), calib_samples: calib_n.get() };
    Effect::new(move |_| {
        let recipe = crate::url::recipe(&config());
        crate::url::set_all(&recipe.iter().map(|(k, v)| (*k, Some(v.as_str()))).collect::<Vec<_>>());
    });
    // A size from a link that this kind of model does not offer falls back to "all".
    Effect::new(move |_| {
        if let Some(kind) = state.summary.get().map(|s| s.input_kind) {
            if !calib_sizes(matches!(kind, InputKind::Image { .. })).iter().any(|&(v, _)| v == calib_n.get_untracked()) {
                calib_n.set(0);
            }
        }
    });
    let busy = move || state.busy.get() != Busy::Idle;
    let bits_select = move |sig: RwSignal<u32>, range: std::ops::RangeInclusive<u32>, id: &'static str| {
        view! {
            <select id=id data-testid=id on:change=move |ev| sig.set(event_target_value(&ev).parse().unwrap_or(8)) prop:value=move || sig.get().to_string()>
                {range.map(|b| view! { <option value=b.to_string()>{b}</option> }).collect_view()}
            </select>
        }
    };
    move || {
        let kind = state.summary.get().map(|s| s.input_kind)?;
        if kind == InputKind::Other {
            return None;
        }
        let images = matches!(kind, InputKind::Image { .. });
        let calib = if images { "the bundled photos (then their mirror images)" } else { "the first training digits" };
        let sizes = calib_sizes(images);
        Some(view! {
            <section class="panel" aria-labelledby="q-h">
                <h2 id="q-h"><span class="step">"3"</span>"Quantize"</h2>
                <p class="explain">
                    "Weights are rounded to a grid of 2"<sup>"b"</sup>" levels (symmetric), activations to 2"<sup>"b"</sup>
                    " levels over a range chosen while running "{calib}". Min-max takes the extremes seen (AIMET's rule: "
                    <code>"Δ = (max − min) / (2"<sup>"b"</sup>" − 1)"</code>"); the SQNR search picks the range with the least "
                    "rounding plus clipping noise on a histogram; the percentile ignores the rarest 0.01 % at each end. "
                    "More calibration samples give steadier ranges. BatchNorm is folded into the convolutions first. "
                    "Per-channel gives each output channel its own weight scale, which matters when channel ranges differ a lot, "
                    "as in depthwise convolutions. DFQ equalizes first: each channel of a layer is scaled by s and the next layer's matching input channel by 1/s, with "
                    <code>"s = √(r₁ r₂) / r₂"</code>" (r: the channels' weight ranges), so that per-tensor quantization wastes less of its grid — "
                    "qplay carries the scale through ReLU6 as a per-channel bound, so the FP32 model is unchanged. "
                    "Bias correction then removes the shift in each layer's mean output that rounding causes, "<code>"(W̃ − W)·E[x]"</code>
                    ", with E[x] from the BatchNorm statistics. "
                    <a href="https://arxiv.org/abs/1906.04721" target="_blank" rel="noopener">"DFQ paper"</a>". "
                    "AdaRound (for low bit-widths) learns, layer by layer, whether each weight rounds up or down so that the layer's "
                    "output stays close to the FP32 one: it minimises "<code>"‖f(W̃x) − f(Wx)‖² + λ Σ (1 − |2h(V) − 1|"<sup>"β"</sup>")"</code>
                    " with Adam, the second term pushing every soft choice h(V) to 0 or 1. "
                    <a href="https://arxiv.org/abs/2004.10568" target="_blank" rel="noopener">"AdaRound paper"</a>". "
                    "The quantized model then runs in integers (8-bit values, 32-bit sums)."
                </p>
                <div class="presets" role="group" aria-label="Presets">
                    {PRESETS.iter().map(|&(id, label, w, a, pc, eq, it)| view! {
                        <button class="preset" data-testid=format!("preset-{id}") disabled=busy
                            class:chosen=move || wbits.get() == w && abits.get() == a && per_channel.get() == pc && dfq.get() == eq && bc.get() == eq && ada.get() == it
                            on:click=move |_| { wbits.set(w); abits.set(a); per_channel.set(pc); dfq.set(eq); bc.set(eq); ada.set(it); }>{label}</button>
                    }).collect_view()}
                </div>
                {move || state.compress.get().map(|r| view! {
                    <p class="chain">
                        <label title="Quantize the model step 7 compressed: the predictions then compare the original FP32 model with the compressed and quantized one, and the QDQ download is the compressed model quantized.">
                            <input type="checkbox" data-testid="quantize-compressed" prop:checked=move || state.quantize_compressed.get()
                                on:change=move |ev| state.quantize_compressed.set(event_target_checked(&ev))/>
                            {format!(" quantize the compressed model ({}, {:.2} of the MACs) instead of the original", r.method, r.macs_after as f64 / r.macs_before.max(1) as f64)}
                        </label>
                    </p>
                })}
                <div class="custom">
                    <label for="wbits">"weight bits "</label>{bits_select(wbits, 2..=8, "wbits")}
                    <label for="abits">" activation bits "</label>{bits_select(abits, 4..=8, "abits")}
                    <label><input type="checkbox" data-testid="per-channel" prop:checked=move || per_channel.get()
                        on:change=move |ev| per_channel.set(event_target_checked(&ev))/>" per-channel weights"</label>
                    <label title="Cross-layer equalization: rescale consecutive layers so every channel uses the quantization grid well (Nagel et al., Data-Free Quantization, 2019).">
                        <input type="checkbox" data-testid="dfq" prop:checked=move || dfq.get()
                            on:change=move |ev| dfq.set(event_target_checked(&ev))/>" equalize (DFQ)"</label>
                    <label title="Equalize each set of layers only where it measurably helps: every set is tried with and without equalization, each time quantizing the model and measuring its output SQNR on 8 calibration samples (qplay mode).">
                        <input type="checkbox" data-testid="cle-measured" prop:checked=move || measured.get()
                            disabled=move || !dfq.get() || aimet.get()
                            on:change=move |ev| measured.set(event_target_checked(&ev))/>" measured per set"</label>
                    <label title="Bias correction (DFQ paper, sec. 4.2): subtract the mean shift that rounding the weights causes, (W̃ − W)·E[x], with E[x] computed from the BatchNorm statistics (no data needed).">
                        <input type="checkbox" data-testid="bias-correction" prop:checked=move || bc.get()
                            on:change=move |ev| bc.set(event_target_checked(&ev))/>" bias correction"</label>
                    <label title="Quantize depthwise convolution outputs before their activation, as AIMET's default config does. qplay's default fuses them, as integer kernels run them.">
                        <input type="checkbox" data-testid="aimet-compatible" prop:checked=move || aimet.get()
                            on:change=move |ev| aimet.set(event_target_checked(&ev))/>" AIMET-compatible placement"</label>
                    <label title="How activation ranges are chosen from the calibration data.">
                        " calibration "
                        <select data-testid="calib-scheme" on:change=move |ev| scheme.set(Scheme::from_key(&event_target_value(&ev)).unwrap_or_default())
                            prop:value=move || scheme.get().key()>
                            {Scheme::ALL.map(|s| view! { <option value=s.key()>{s.label()}</option> }).collect_view()}
                        </select>
                    </label>
                    <label title="How many samples the ranges (and AdaRound) are computed from.">
                        " on "
                        <select data-testid="calib-samples" on:change=move |ev| calib_n.set(event_target_value(&ev).parse().unwrap_or(0))
                            prop:value=move || calib_n.get().to_string()>
                            {sizes.iter().map(|&(v, l)| {
                                // "All" means the user's own files once they gave some.
                                let label = move || match state.calibration_photos.get() {
                                    Some((n, _)) if v == 0 => format!("all {n} of your files"),
                                    _ => l.to_string(),
                                };
                                view! { <option value=v.to_string()>{label}</option> }
                            }).collect_view()}
                        </select>
                    </label>
                    <label title="AdaRound: learn per weight whether to round up or down (Nagel et al., 2020). 0 rounds to nearest. Slow on large models: EfficientNet-Lite0 needs minutes per 100 iterations.">
                        " AdaRound iterations "
                        <input type="number" min="0" max="20000" step="100" data-testid="adaround-iterations" prop:value=move || ada.get().to_string()
                            on:change=move |ev| ada.set(event_target_value(&ev).parse::<u32>().unwrap_or(0).min(20_000))/>
                    </label>
                </div>
                <div class="actions">
                    <button class="primary" data-testid="quantize" disabled=busy on:click=move |_| start_quantize(state, config())>"Quantize"</button>
                    <JobProgress testid="progress" eta_testid="eta"/>
                    {move || busy().then(|| view! {
                        <button class="cancel" data-testid="cancel" on:click=move |_| bridge::cancel(state)>"Cancel"</button>
                    })}
                </div>
                {move || state.quant.get().map(|r| {
                    let label = r.config.label();
                    let csv = layers_csv(&r);
                    let report_json = serde_json::to_string_pretty(&serde_json::json!({
                        "model": state.summary.get_untracked().map(|s| s.name),
                        "recipe": r.config,
                        "label": r.config.label(),
                        "bn_folded": r.bn_folded,
                        "bias_corrected_layers": r.bias_corrected,
                        "calibration_samples": r.calibration_samples,
                        "seconds": r.seconds,
                        "integer_steps": r.integer_steps,
                        "float_steps": r.float_steps,
                        "layers": r.layers,
                        "equalized_layers": r.cle,
                        "adaround": r.adaround,
                    }))
                    .unwrap_or_default();
                    view! {
                        <p class="quant-summary" data-testid="quant-summary">
                            <strong>{label}</strong>
                            {format!(": {} BatchNorms folded, {} weight and {} activation encodings from {} calibration samples in {:.1} s; {} of {} steps run in integers.",
                                r.bn_folded, r.weight_encodings, r.activation_encodings, r.calibration_samples, r.seconds, r.integer_steps, r.integer_steps + r.float_steps)}
                            " "
                            <span data-testid="calibration-time" title="Calibration splits its samples over this many workers (one per core); the merged statistics are those of one worker, bit for bit.">
                                {format!("Calibration: {:.2} s on {} worker{}.", r.calibration_seconds, r.workers, if r.workers == 1 { "" } else { "s" })}
                            </span>
                            " "
                            <a data-testid="download-encodings" download="encodings.json" href=json_data_url(&r.encodings_json)>"Download encodings (AIMET JSON)"</a>
                            " · report "
                            <a data-testid="download-report" download="report.json" href=json_data_url(&report_json)>"JSON"</a>
                            " / "
                            <a data-testid="download-csv" download="layers.csv" href=format!("data:text/csv;charset=utf-8,{}", js_sys::encode_uri_component(&csv))>"CSV"</a>
                            " · "
                            <button class="link" data-testid="download-qdq" disabled=busy on:click=move |_| export(state, true)
                                title="The quantized model for onnxruntime: int8 weights, QuantizeLinear/DequantizeLinear around every quantized activation.">"QDQ ONNX"</button>
                            " · "
                            <button class="link" data-testid="download-fp32" disabled=busy on:click=move |_| export(state, false)
                                title="The FP32 model as qplay transformed it (BN folded, equalized, AdaRounded weights): with the encodings JSON, the pair AIMET's tools consume.">"transformed FP32 ONNX"</button>
                        </p>
                    }
                })}
                <super::RecipeCompare/>
                <super::CleChart/>
                <super::CleChoices/>
                <super::AdaroundChart/>
                <super::ActivationChart/>
                <super::LayerTable/>
            </section>
        })
    }
}
