//! UI components, one per file.

mod act_histogram;
mod adaround_chart;
mod cle_chart;
mod compress_panel;
mod graph_view;
mod input_panel;
mod layer_table;
mod map_view;
mod mixed_panel;
mod model_card;
mod model_picker;
mod quantize_panel;
mod recipe_compare;
mod results;
mod search_panel;
mod settings_form;
mod speed_panel;
mod train_panel;
mod zoo_panel;

use crate::bridge;
use crate::state::{AppState, Busy};
use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

pub use act_histogram::ActivationChart;
pub use adaround_chart::AdaroundChart;
pub use cle_chart::{CleChart, CleChoices};
pub use compress_panel::CompressPanel;
pub use graph_view::GraphPanel;
pub use mixed_panel::MixedPanel;
pub use train_panel::TrainPanel;
pub use input_panel::InputPanel;
pub use layer_table::LayerTable;
pub use model_card::ModelCard;
pub use model_picker::ModelPicker;
pub use quantize_panel::QuantizePanel;
pub use recipe_compare::RecipeCompare;
pub use results::Results;
pub use search_panel::SearchPanel;
pub use speed_panel::SpeedPanel;
pub use zoo_panel::ZooPanel;

/// The page.
#[component]
pub fn App() -> impl IntoView {
    let state = AppState::new();
    provide_context(state);
    if let Err(e) = bridge::start(state) {
        state.fail(e);
    }
    // A shared link names a bundled model: load it (requests queue until the worker is ready).
    if let Some(id) = crate::url::get("model") {
        if !model_picker::load_sample_by_id(state, &id) {
            state.fail(format!("the link names an unknown model '{id}'"));
        }
    }
    wasm_bindgen_futures::spawn_local(async move {
        match fetch_body(&format!("{}/imagenet_classes.txt", crate::state::MODELS_DIR), web_sys::Response::text).await {
            Ok(t) => state.labels.set(t.as_string().unwrap_or_default().lines().map(str::to_string).collect()),
            Err(e) => state.fail(e),
        }
    });
    view! {
        <header class="top">
            <h1>"qplay"</h1>
            <p class="tagline">"A model-efficiency playground that runs in your browser tab. Nothing is uploaded: the model never leaves this page."</p>
        </header>
        <main>
            <ErrorBanner/>
            <BusyLine/>
            <ModelPicker/>
            <ModelCard/>
            <GraphPanel/>
            <QuantizePanel/>
            <InputPanel/>
            <Results/>
            <SpeedPanel/>
            <CompressPanel/>
            <TrainPanel/>
            <MixedPanel/>
            <SearchPanel/>
            <ZooPanel/>
        </main>
        <footer>
            <p>
                "Photos: scikit-image and scikit-learn sample images. china.jpg and flower.jpg: CC BY 2.0, "
                "\"Some rights reserved by danielbuechele\" (flower.jpg linked to Flickr user vultilion). "
                "EfficientNet-Lite0 weights: Apache-2.0 (converted from Google's TF checkpoints). "
                "Text detector: PaddleOCR's PP-OCRv4 DBNet, Apache-2.0. "
                <a href="assets/PROVENANCE.md">"Provenance and licences"</a>
            </p>
        </footer>
    }
}

#[component]
fn ErrorBanner() -> impl IntoView {
    let state = expect_context::<AppState>();
    move || {
        state.error.get().map(|e| {
            view! {
                <div class="error" role="alert" data-testid="error">
                    <span>{e}</span>
                    <button class="dismiss" aria-label="Dismiss error" on:click=move |_| state.error.set(None)>"×"</button>
                </div>
            }
        })
    }
}

#[component]
fn BusyLine() -> impl IntoView {
    let state = expect_context::<AppState>();
    let busy = move || match state.busy.get() {
        Busy::Idle => None,
        // Always in view (sticky), with the stage and a Cancel for jobs started far down the page.
        Busy::Working(what) => Some(view! {
            <div class="busy" data-testid="busy" aria-live="polite"><span class="spinner"></span>{what}
                {move || state.progress.get().map(|(stage, done, total, eta)| format!(" {stage} {done}/{total}{}", eta.map_or_else(String::new, |s| format!(" · about {} left", duration(s)))))}
                <button class="cancel" data-testid="busy-cancel" on:click=move |_| bridge::cancel(state)>"Cancel"</button>
            </div>
        }),
    };
    let notice = move || state.notice.get().map(|n| view! { <div class="notice" data-testid="notice" role="status">{n}</div> });
    view! { {busy} {notice} }
}

/// The running job's stage as a bar, its count and the time left; `testid` names the block,
/// `eta_testid` the time left.
#[component]
pub(crate) fn JobProgress(testid: &'static str, eta_testid: &'static str) -> impl IntoView {
    let state = expect_context::<AppState>();
    move || {
        state.progress.get().map(|(stage, done, total, eta)| {
            view! {
                <div class="progress" data-testid=testid>
                    <progress max=total.to_string() value=done.to_string()></progress>
                    <span>{format!("{stage} {done}/{total}")}</span>
                    {eta.map(|s| view! { <span class="eta" data-testid=eta_testid>{format!(" · about {} left", duration(s))}</span> })}
                </div>
            }
        })
    }
}

/// "40 s", "3 min 10 s".
pub(crate) fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s < 60 {
        format!("{s} s")
    } else {
        format!("{} min {} s", s / 60, s % 60)
    }
}

/// `fetch(url)` from the page's own origin and its body read by `read` (e.g.
/// `Response::blob`, `Response::array_buffer`, `Response::text`); non-2xx is an error.
pub(crate) async fn fetch_body(
    url: &str,
    read: fn(&web_sys::Response) -> Result<js_sys::Promise, wasm_bindgen::JsValue>,
) -> Result<wasm_bindgen::JsValue, String> {
    let win = web_sys::window().ok_or("no window")?;
    let resp = JsFuture::from(win.fetch_with_str(url)).await.map_err(|_| format!("cannot fetch {url}"))?;
    let resp: web_sys::Response = resp.unchecked_into();
    if !resp.ok() {
        return Err(format!("cannot fetch {url}: HTTP {}", resp.status()));
    }
    JsFuture::from(read(&resp).map_err(|_| format!("{url}: no body"))?).await.map_err(|_| format!("cannot read {url}"))
}
