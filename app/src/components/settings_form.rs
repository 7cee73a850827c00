//! The input settings as a form, prefilled with the settings in force (the user's file, the
//! link's, or the default derived from the model's input), applied through the worker (which
//! checks every field), and downloadable as the JSON `qplay --preprocess` reads.

use crate::bridge;
use crate::protocol::{default_preprocess, InputKind, Request};
use crate::state::{AppState, Busy};
use leptos::prelude::*;
use qplay_core::preprocess::{Filter, Preprocess, Resize};
use serde_json::{json, Value};

/// A number where the text is one, else the text itself (so the worker's check names the field).
fn number_or_text(t: &str) -> Value {
    let t = t.trim();
    match t.parse::<u64>() {
        Ok(n) => Value::from(n),
        Err(_) => t.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or_else(|| Value::String(t.to_string()), Value::Number),
    }
}

/// "0.485, 0.456, 0.406" (or one value).
fn values(t: &str) -> Value {
    let v: Vec<Value> = t.split(',').map(number_or_text).collect();
    if v.len() == 1 {
        v[0].clone()
    } else {
        Value::Array(v)
    }
}

fn list(v: &[f64]) -> String {
    if v.iter().all(|x| *x == v[0]) {
        format!("{}", v[0])
    } else {
        v.iter().map(f64::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// The settings in force for the loaded image model, as JSON.
pub fn current_settings(state: AppState) -> Option<String> {
    if let Some((_, _, _, json)) = state.preprocess.get() {
        return Some(json);
    }
    match state.summary.get()?.input_kind {
        InputKind::Image { height, width } => default_preprocess(height, width).ok().map(|p| p.to_json()),
        _ => None,
    }
}

#[component]
fn Form(pre: Preprocess) -> impl IntoView {
    let state = expect_context::<AppState>();
    let [h0, w0] = pre.size();
    let height = RwSignal::new(h0.to_string());
    let width = RwSignal::new(w0.to_string());
    let (mode0, side0, align0) = match pre.resize {
        Resize::ShorterSide { shorter_side } => ("shorter_side", shorter_side, "top_left"),
        Resize::Stretch => ("stretch", h0.min(w0), "top_left"),
        Resize::Fit { align } => ("fit", h0.min(w0), if align == qplay_core::preprocess::Align::Center { "center" } else { "top_left" }),
    };
    let mode = RwSignal::new(mode0.to_string());
    let side = RwSignal::new(side0.to_string());
    let align = RwSignal::new(align0.to_string());
    let filter = RwSignal::new(match pre.filter {
        Filter::Triangle => "triangle",
        Filter::Bilinear => "bilinear",
        Filter::Nearest => "nearest",
    }.to_string());
    let color = RwSignal::new(format!("{:?}", pre.color).to_uppercase());
    let scale = RwSignal::new(pre.scale.to_string());
    let mean = RwSignal::new(list(&pre.mean));
    let std = RwSignal::new(list(&pre.std));
    let pad = RwSignal::new(pre.pad_value.to_string());
    let threshold = RwSignal::new(pre.threshold.map(|t| t.to_string()).unwrap_or_default());
    let labels = pre.labels.clone();
    let to_json = move || {
        let (h, w) = (number_or_text(&height.get_untracked()), number_or_text(&width.get_untracked()));
        let mut resize = json!({"mode": mode.get_untracked(), "filter": filter.get_untracked()});
        let mut j = json!({"shape": [1, 3, h, w], "color": color.get_untracked(), "scale": number_or_text(&scale.get_untracked()),
            "mean": values(&mean.get_untracked()), "std": values(&std.get_untracked()), "pad_value": number_or_text(&pad.get_untracked())});
        match mode.get_untracked().as_str() {
            "shorter_side" => {
                resize["shorter_side"] = number_or_text(&side.get_untracked());
                j["crop"] = json!({"size": [h, w]});
            }
            "fit" => resize["align"] = Value::String(align.get_untracked()),
            _ => {}
        }
        j["resize"] = resize;
        if !threshold.get_untracked().trim().is_empty() {
            j["threshold"] = number_or_text(&threshold.get_untracked());
        }
        if let Some(l) = &labels {
            j["labels"] = Value::String(l.clone());
        }
        serde_json::to_string_pretty(&j).unwrap_or_default()
    };
    let to_json2 = to_json.clone();
    let apply = move |_| {
        state.start("Applying the input settings…");
        if let Err(e) = bridge::send(&Request::SetPreprocess { job: bridge::next_job(), file: "the settings form".into(), json: to_json() }, wasm_bindgen::JsValue::UNDEFINED) {
            state.fail(e);
        }
    };
    let export = move |_| {
        let stem = state.summary.with_untracked(|s| s.as_ref().map(|s| s.name.trim_end_matches(".onnx").to_string())).unwrap_or_default();
        let bytes = js_sys::Uint8Array::from(to_json2().as_bytes());
        if let Err(e) = bridge::download(&format!("{stem}.preprocess.json"), &bytes.into()) {
            state.fail(e);
        }
    };
    let busy = move || state.busy.get() != Busy::Idle;
    let text = |label: &'static str, id: &'static str, sig: RwSignal<String>, size: u32| {
        view! { <label>{label}" "<input type="text" size=size data-testid=id prop:value=move || sig.get() on:change=move |ev| sig.set(event_target_value(&ev))/></label> }
    };
    let select = |label: &'static str, id: &'static str, sig: RwSignal<String>, options: &'static [&'static str]| {
        view! {
            <label>{label}" "
                <select data-testid=id on:change=move |ev| sig.set(event_target_value(&ev))>
                    {options.iter().map(|&o| view! { <option value=o selected=move || sig.get() == o>{o}</option> }).collect_view()}
                </select>
            </label>
        }
    };
    view! {
        <div class="settings-form">
            {text("height", "set-height", height, 5)}{text("width", "set-width", width, 5)}
            {select("resize", "set-resize", mode, &["shorter_side", "stretch", "fit"])}
            <span class:hidden=move || mode.get() != "shorter_side">{text("shorter side", "set-side", side, 5)}" then a centre crop"</span>
            <span class:hidden=move || mode.get() != "fit">{select("align", "set-align", align, &["top_left", "center"])}</span>
            {select("filter", "set-filter", filter, &["triangle", "bilinear", "nearest"])}
            {select("channels", "set-color", color, &["RGB", "BGR"])}
            <br/>
            {text("scale", "set-scale", scale, 12)}{text("mean", "set-mean", mean, 18)}{text("std", "set-std", std, 18)}
            {text("padding", "set-pad", pad, 5)}{text("map threshold", "set-threshold", threshold, 5)}
            <br/>
            <button data-testid="settings-apply" disabled=busy on:click=apply>"Apply"</button>
            " "
            <button data-testid="settings-export" on:click=export>"Download as JSON"</button>
        </div>
    }
}

/// The form for the settings in force, rebuilt when they change.
#[component]
pub fn SettingsForm() -> impl IntoView {
    move || {
        let json = current_settings(expect_context::<AppState>())?;
        let pre = Preprocess::from_json(&json).ok()?;
        Some(view! {
            <details class="settings" data-testid="settings-form">
                <summary>"Edit the input settings (pixels → tensor)"</summary>
                <Form pre=pre/>
            </details>
        })
    }
}
