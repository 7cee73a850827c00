//! Choosing a model: bundled samples, a file input, or drag and drop anywhere on the zone.

use super::fetch_body;
use crate::bridge;
use crate::state::{AppState, Sample, MODELS_DIR, SAMPLES};
use leptos::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// Largest model file the page accepts (the core's own limit is checked again in the worker).
const MAX_MODEL_BYTES: f64 = 256.0 * 1024.0 * 1024.0;

fn load_bytes(state: AppState, name: String, bytes: js_sys::Uint8Array) {
    state.start(format!("Loading {name} in the worker…"));
    if let Err(e) = bridge::load(&name, &bytes) {
        state.fail(e);
    }
}

pub(crate) fn load_file(state: AppState, file: web_sys::File) {
    let name = file.name();
    if file.size() > MAX_MODEL_BYTES {
        state.fail(format!("{name}: {:.0} MB is over the 256 MB limit", file.size() / 1e6));
        return;
    }
    state.start(format!("Reading {name}…"));
    wasm_bindgen_futures::spawn_local(async move {
        match JsFuture::from(file.array_buffer()).await {
            Ok(buf) => load_bytes(state, name, js_sys::Uint8Array::new(&buf)),
            Err(_) => state.fail(format!("{name}: the file could not be read")),
        }
    });
}

/// Loads the bundled sample `id` (as when its button is clicked); false if there is none.
pub(crate) fn load_sample_by_id(state: AppState, id: &str) -> bool {
    match crate::state::SAMPLES.iter().find(|s| s.id == id) {
        Some(s) => {
            load_sample(state, s);
            true
        }
        None => false,
    }
}

fn load_sample(state: AppState, s: &'static Sample) {
    state.start(format!("Downloading {}…", s.label));
    wasm_bindgen_futures::spawn_local(async move {
        let settings = match s.preprocess {
            Some(file) => match fetch_body(&format!("{MODELS_DIR}/{file}"), web_sys::Response::text).await {
                Ok(json) => Some((file, json.as_string().unwrap_or_default())),
                Err(e) => return state.fail(e),
            },
            None => None,
        };
        match fetch_body(&format!("{MODELS_DIR}/{}", s.file), web_sys::Response::array_buffer).await {
            Ok(buf) => load_bytes(state, s.label.to_string(), js_sys::Uint8Array::new(&buf)),
            Err(e) => return state.fail(e),
        }
        // Queued behind the model: its input settings, as if the user had given them.
        if let Some((file, json)) = settings {
            if let Err(e) = bridge::send(&crate::protocol::Request::SetPreprocess { job: bridge::next_job(), file: file.to_string(), json }, wasm_bindgen::JsValue::UNDEFINED) {
                state.fail(e);
            }
        }
    });
}

#[component]
pub fn ModelPicker() -> impl IntoView {
    let state = expect_context::<AppState>();
    let dragging = RwSignal::new(false);
    let on_file = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        if let Some(f) = input.files().and_then(|fs| fs.get(0)) {
            load_file(state, f);
        }
        input.set_value("");
    };
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        if let Some(f) = ev.data_transfer().and_then(|dt| dt.files()).and_then(|fs| fs.get(0)) {
            load_file(state, f);
        }
    };
    let busy = move || state.busy.get() != crate::state::Busy::Idle || !state.worker_ready.get();
    view! {
        <section class="panel" aria-labelledby="pick-h">
            <h2 id="pick-h"><span class="step">"1"</span>"Choose a model"</h2>
            <div class="samples">
                {SAMPLES
                    .iter()
                    .map(|s| {
                        view! {
                            <button
                                class="sample"
                                data-testid=format!("model-sample-{}", s.id)
                                disabled=busy
                                on:click=move |_| load_sample(state, s)
                            >
                                <strong>{s.label}</strong>
                                <small>{s.blurb}</small>
                            </button>
                        }
                    })
                    .collect_view()}
            </div>
            <div
                class="dropzone"
                data-testid="model-drop"
                class:dragging=move || dragging.get()
                on:dragover=move |ev: leptos::ev::DragEvent| {
                    ev.prevent_default();
                    dragging.set(true);
                }
                on:dragleave=move |_| dragging.set(false)
                on:drop=on_drop
            >
                <label>
                    "Or drop an .onnx file here, or "
                    <input type="file" accept=".onnx" data-testid="model-file" on:change=on_file/>
                </label>
                <p class="hint">"FP32 ONNX image classifiers, opsets 7 to 21. The file is read in this tab only."</p>
            </div>
        </section>
    }
}

