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

/// The text of a file the user picked.
async fn file_text(f: &web_sys::File) -> Result<String, String> {
    let text = wasm_bindgen_futures::JsFuture::from(f.text()).await.map_err(|_| format!("{}: cannot read the file", f.name()))?;
    text.as_string().ok_or_else(|| format!("{}: not a text file", f.name()))
}

/// The first file of an `<input type=file>` change, the input cleared for the next pick.
fn picked(ev: &leptos::ev::Event) -> Option<web_sys::File> {
    let input: web_sys::HtmlInputElement = event_target(ev);
    let f = input.files().and_then(|fs| fs.get(0));
    input.set_value("");
    f
}

/// Every file of an `<input type=file multiple>` change, the input cleared for the next pick.
pub(crate) fn picked_all(ev: &leptos::ev::Event) -> Vec<web_sys::File> {
    let input: web_sys::HtmlInputElement = event_target(ev);
    let files = input.files().map(|fs| (0..fs.length()).filter_map(|i| fs.get(i)).collect()).unwrap_or_default();
    input.set_value("");
    files
}

/// Settings for the user's own model: the preprocessing JSON (as `qplay --preprocess` reads) and
/// a labels file (one class name per line, as many as the model has outputs).
#[component]
fn ModelSettings() -> impl IntoView {
    let state = expect_context::<AppState>();
    let busy = move || state.busy.get() != Busy::Idle;
    let on_settings = move |ev: leptos::ev::Event| {
        let Some(f) = picked(&ev) else { return };
        state.start(format!("Reading {}…", f.name()));
        wasm_bindgen_futures::spawn_local(async move {
            let sent = match file_text(&f).await {
                Ok(json) => bridge::send(&Request::SetPreprocess { job: bridge::next_job(), file: f.name(), json }, wasm_bindgen::JsValue::UNDEFINED),
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                state.fail(e);
            }
        });
    };
    let on_labels = move |ev: leptos::ev::Event| {
        let Some(f) = picked(&ev) else { return };
        wasm_bindgen_futures::spawn_local(async move {
            let text = match file_text(&f).await {
                Ok(t) => t,
                Err(e) => return state.fail(e),
            };
            let mut names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
            while names.last().is_some_and(String::is_empty) {
                names.pop();
            }
            let classes = state.summary.with_untracked(|s| s.as_ref().and_then(|s| s.outputs.first()).and_then(|o| o.shape.last()).and_then(|d| d.parse::<usize>().ok()));
            match classes {
                _ if names.is_empty() => state.fail(format!("{}: no class names (one per line)", f.name())),
                Some(k) if k != names.len() => state.fail(format!("{}: {} class names, but the model's output has {k} classes", f.name(), names.len())),
                _ => {
                    state.error.set(None);
                    state.classification.set(None);
                    state.user_labels.set(Some((f.name(), names)));
                }
            }
        });
    };
    let on_calib = move |ev: leptos::ev::Event| {
        let files = picked_all(&ev);
        let npy = files.iter().any(|f| f.name().to_ascii_lowercase().ends_with(".npy"));
        state.calibration_photos.set((!files.is_empty()).then_some((files.len(), npy)));
        bridge::set_calibration_photos(files);
    };
    // A folder picker (not in leptos's attribute list).
    let folder = NodeRef::<leptos::html::Input>::new();
    folder.on_load(|input| {
        let _ = input.set_attribute("webkitdirectory", "");
    });
    let on_test = move |ev: leptos::ev::Event| {
        let files = picked_all(&ev);
        if !files.is_empty() {
            bridge::eval_test_files(state, Some(files));
        }
    };
    view! {
        <div class="model-settings">
            <label class="upload">"Input settings (preprocessing JSON) "
                <input type="file" accept=".json,application/json" data-testid="preprocess-file" disabled=busy on:change=on_settings/>
            </label>
            <label class="upload">"Class names (one per line) "
                <input type="file" accept=".txt,text/plain" data-testid="labels-file" on:change=on_labels/>
            </label>
            <label class="upload">"Calibration photos or .npy tensors (several) "
                <input type="file" accept="image/*,.npy" multiple data-testid="calib-files" disabled=busy on:change=on_calib/>
            </label>
            <label class="upload" title="Labels come from a labels.csv (file,label) among the files, the folder of each photo, or names like 180_001.png">
                "Test photos with labels (several) "
                <input type="file" accept="image/*,.npy,.csv" multiple data-testid="test-files" disabled=busy on:change=on_test/>
            </label>
            <label class="upload">"or a test folder (one sub-folder per class) "
                <input type="file" node_ref=folder data-testid="test-folder" disabled=busy on:change=on_test/>
            </label>
            <super::settings_form::SettingsForm/>
            <p class="hint" data-testid="input-settings">
                {move || match state.preprocess.get() {
                    Some((f, h, w, _)) => format!("Photos are prepared as {f} says ({h}x{w})."),
                    None => "Photos are prepared as EfficientNet-Lite0's (shorter side, centre crop, (p - 127) / 128).".to_string(),
                }}
                " "
                {move || state.user_labels.get().map(|(f, l)| format!("Class names from {f} ({} classes). ", l.len()))}
                {move || match state.calibration_photos.get() {
                    Some((n, false)) => format!("Quantizing calibrates on your {n} photos."),
                    Some((n, true)) => format!("Quantizing calibrates on your {n} files (photos and tensors)."),
                    None => "Quantizing calibrates on the bundled photos.".to_string(),
                }}
            </p>
        </div>
    }
}

#[component]
pub fn InputPanel() -> impl IntoView {
    let state = expect_context::<AppState>();
    let busy = move || state.busy.get() != Busy::Idle;
    let on_photo = move |ev: leptos::ev::Event| {
        if let Some(f) = picked(&ev) {
            classify_blob(state, f.name(), f.into());
        }
    };
    let dragging = RwSignal::new(false);
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        match ev.data_transfer().and_then(|dt| dt.files()).and_then(|fs| fs.get(0)) {
            Some(f) if f.type_().starts_with("image/") || f.type_().is_empty() || f.name().ends_with(".npy") => classify_blob(state, f.name(), f.into()),
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
                    <ModelSettings/>
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
                        <label class="upload">"Or drop your own photo here (JPEG/PNG, decoded by your browser, or a .npy tensor), or "
                            <input type="file" accept="image/*,.npy" data-testid="photo-file" on:change=on_photo/>
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
