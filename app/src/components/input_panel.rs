//! Choosing what to run: a bundled photo, the user's own photo, or the digits test set.

use super::fetch_body;
use crate::bridge;
use crate::protocol::{InputKind, Request};
use crate::state::{AppState, Busy, PHOTOS, PHOTOS_DIR};
use leptos::prelude::*;

fn classify_blob(state: AppState, name: String, blob: web_sys::Blob) {
    state.start(format!("Classifying {name}…"));
    state.pending_photo.set(name);
    if let Err(e) = bridge::send(&Request::Classify { job: bridge::next_job() }, blob.into()) {
        state.fail(e);
    }
}

fn classify_bundled(state: AppState, file: &'static str) {
    state.start(format!("Fetching {file}…"));
    wasm_bindgen_futures::spawn_local(async move {
        match fetch_body(&format!("{PHOTOS_DIR}/{file}"), web_sys::Response::blob).await {
            Ok(b) => classify_blob(state, file.to_string(), b.into()),
            Err(e) => state.fail(e),
        }
    });
}

#[component]
pub fn InputPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let busy = move || state.busy.get() != Busy::Idle;
    let on_photo = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&ev);
        if let Some(f) = input.files().and_then(|fs| fs.get(0)) {
            let name = f.name();
            classify_blob(state, name, f.into());
        }
        input.set_value("");
    };
    let dragging = RwSignal::new(false);
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        match ev.data_transfer().and_then(|dt| dt.files()).and_then(|fs| fs.get(0)) {
            Some(f) if f.type_().starts_with("image/") || f.type_().is_empty() => classify_blob(state, f.name(), f.into()),
            Some(f) => state.fail(format!("{}: not an image ({})", f.name(), f.type_())),
            None => {}
        }
    };
    move || {
        let kind = state.summary.get().map(|s| s.input_kind)?;
        Some(match kind {
            InputKind::Image { .. } => view! {
                <section class="panel" aria-labelledby="in-h">
                    <h2 id="in-h"><span class="step">"4"</span>"Pick a photo"</h2>
                    <div class="photos">
                        {PHOTOS
                            .iter()
                            .map(|&(file, what)| {
                                let stem = file.split('.').next().unwrap_or(file);
                                view! {
                                    <button class="photo" data-testid=format!("photo-{stem}") disabled=busy title=what
                                        on:click=move |_| classify_bundled(state, file)>
                                        <img src=format!("{PHOTOS_DIR}/{file}") alt=what loading="lazy"/>
                                        <span>{what}</span>
                                    </button>
                                }
                            })
                            .collect_view()}
                    </div>
                    <div class="dropzone" data-testid="photo-drop" class:dragging=move || dragging.get()
                        on:dragover=move |ev: leptos::ev::DragEvent| {
                            ev.prevent_default();
                            dragging.set(true);
                        }
                        on:dragleave=move |_| dragging.set(false)
                        on:drop=on_drop>
                        <label class="upload">"Or drop your own photo here (JPEG/PNG, decoded by your browser), or "
                            <input type="file" accept="image/*" data-testid="photo-file" on:change=on_photo/>
                        </label>
                    </div>
                </section>
            }
            .into_any(),
            InputKind::Digits => view! {
                <section class="panel" aria-labelledby="in-h">
                    <h2 id="in-h"><span class="step">"4"</span>"Run on the digits test set"</h2>
                    <p>"450 held-out 8x8 handwritten digits (scikit-learn's digits, test split)."</p>
                    <button class="primary" data-testid="eval-digits" disabled=busy on:click=move |_| {
                        state.start("Evaluating 450 digits…");
                        if let Err(e) = bridge::send(&Request::EvalDigits { job: bridge::next_job() }, wasm_bindgen::JsValue::UNDEFINED) {
                            state.fail(e);
                        }
                    }>"Evaluate"</button>
                </section>
            }
            .into_any(),
            InputKind::Other => view! {
                <section class="panel"><p>"This model's input is not an RGB image or an 8x8 digit, so the playground can only show its summary for now."</p></section>
            }
            .into_any(),
        })
    }
}
