//! The page's side of the worker: one worker, requests posted with transferable payloads,
//! responses applied to [`AppState`].

use crate::protocol::{Request, Response};
use crate::state::{AppState, Busy};
use js_sys::Array;
use std::cell::{Cell, RefCell};
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, Worker};

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
    static NEXT_JOB: Cell<u32> = const { Cell::new(1) };
    /// The loaded model (name, bytes), kept so a crashed worker can be restarted with it.
    static MODEL: RefCell<Option<(String, js_sys::Uint8Array)>> = const { RefCell::new(None) };
    /// The model of the Load request in flight; a crash then is that model's fault (it is dropped
    /// and the previous model reloaded).
    static PENDING: RefCell<Option<(String, js_sys::Uint8Array)>> = const { RefCell::new(None) };
    /// What the worker's panic hook reported just before it died.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Messages posted before the worker said Ready (its handler may not be installed yet).
    static QUEUE: RefCell<Vec<(Array, Array)>> = const { RefCell::new(Vec::new()) };
    static READY: Cell<bool> = const { Cell::new(false) };
    /// The worker was replaced and the model it had is being reloaded.
    static RELOADING: Cell<bool> = const { Cell::new(false) };
    /// The user's calibration photos for the loaded model (sent with each Quantize request).
    static CALIB: RefCell<Vec<web_sys::File>> = const { RefCell::new(Vec::new()) };
    /// The user's training files for the loaded model (sent with each Train request).
    static TRAIN_FILES: RefCell<Vec<web_sys::File>> = const { RefCell::new(Vec::new()) };
    /// The user's test files for the loaded model (kept for "Run again").
    static TEST_FILES: RefCell<Vec<web_sys::File>> = const { RefCell::new(Vec::new()) };
    /// Steps A–B of the last architecture search, packed (sent with the next search).
    static SEARCH_BUILT: RefCell<Option<js_sys::Uint8Array>> = const { RefCell::new(None) };
    /// The ETA's measurement: (total, time in ms and `done` when the current count started, the
    /// last `done` seen).
    static ETA: Cell<Option<(usize, f64, usize, usize)>> = const { Cell::new(None) };
}

/// Seconds left if the rate since this count began holds; a new count (another total, or `done`
/// going back) starts a new measurement. None until a second of progress has been seen.
fn eta(done: usize, total: usize) -> Option<f64> {
    let now = js_sys::Date::now();
    let (t0, d0) = match ETA.with(Cell::get) {
        Some((t, t0, d0, last)) if t == total && done >= last => (t0, d0),
        _ => (now, done),
    };
    ETA.with(|e| e.set(Some((total, t0, d0, done))));
    let elapsed = (now - t0) / 1e3;
    (done > d0 && elapsed >= 1.0).then(|| elapsed / (done - d0) as f64 * (total - done.min(total)) as f64)
}

/// Starts the worker and routes its responses into `state`.
pub fn start(state: AppState) -> Result<(), String> {
    // `#simd=relaxed` or `#simd=baseline` overrides the loader's choice of build (its helpers
    // inherit the query).
    let script = match crate::url::get("simd").as_deref() {
        Some(b @ ("relaxed" | "baseline")) => format!("./worker_loader.js?simd={b}"),
        _ => "./worker_loader.js".to_string(),
    };
    let w = Worker::new(&script).map_err(|e| format!("cannot start the worker: {e:?}"))?;
    let onmsg = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        let data: Array = ev.data().unchecked_into();
        match serde_wasm_bindgen::from_value::<Response>(data.get(0)) {
            Ok(Response::Exported { file_name, .. }) => {
                if let Err(e) = download(&file_name, &data.get(1)) {
                    state.fail(e);
                } else {
                    state.idle();
                }
            }
            Ok(Response::SearchBuilt { .. }) => SEARCH_BUILT.with(|s| *s.borrow_mut() = data.get(1).dyn_into().ok()),
            // A searched model to load: as if the user had picked its file.
            Ok(Response::SearchModel { name, .. }) => {
                let bytes: js_sys::Uint8Array = data.get(1).unchecked_into();
                state.start(format!("Loading {name} in the worker…"));
                if let Err(e) = load(&name, &bytes) {
                    state.fail(e);
                }
            }
            Ok(r) => apply(state, r),
            Err(e) => state.fail(format!("unreadable message from the worker: {e}")),
        }
    });
    w.set_onmessage(Some(onmsg.as_ref().unchecked_ref()));
    onmsg.forget();
    let onerr = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |ev: web_sys::ErrorEvent| {
        ev.prevent_default();
        let why = match PANIC.with(|p| p.borrow_mut().take()) {
            Some(panic) => format!("it panicked: {panic}"),
            None if ev.message().contains("unreachable") => format!("{}; most likely it ran out of memory", ev.message()),
            None => ev.message(),
        };
        restart(state, Some(why));
    });
    w.set_onerror(Some(onerr.as_ref().unchecked_ref()));
    onerr.forget();
    READY.with(|r| r.set(false));
    WORKER.with(|slot| *slot.borrow_mut() = Some(w));
    // `#workers=N` sets the pool's size (the default: one worker per core).
    if let Some(n) = crate::url::get("workers").and_then(|v| v.parse::<u32>().ok()) {
        send(&Request::Workers { job: next_job(), workers: n }, JsValue::UNDEFINED)?;
    }
    Ok(())
}

fn post(w: &Worker, msg: &Array, transfer: &Array) -> Result<(), String> {
    w.post_message_with_transfer(msg, transfer).map_err(|e| format!("cannot reach the worker: {e:?}"))
}

/// Stops the running job: the worker is replaced and the model reloaded (its quantization is lost).
/// Saves `bytes` (a Uint8Array) as a file through a temporary object URL.
pub fn download(file_name: &str, bytes: &JsValue) -> Result<(), String> {
    let err = |e: JsValue| format!("cannot save {file_name}: {e:?}");
    let parts = Array::of1(bytes);
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type("application/octet-stream");
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &opts).map_err(err)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(err)?;
    let doc = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
    let a: web_sys::HtmlElement = doc.create_element("a").map_err(err)?.unchecked_into();
    a.set_attribute("href", &url).map_err(err)?;
    a.set_attribute("download", file_name).map_err(err)?;
    a.click();
    // Revoke later: the browser reads the URL after the click returns.
    let revoke = Closure::once_into_js(move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    });
    web_sys::window().ok_or("no window")?.set_timeout_with_callback_and_timeout_and_arguments_0(revoke.unchecked_ref(), 60_000).map_err(err)?;
    Ok(())
}

pub fn cancel(state: AppState) {
    restart(state, None);
}

/// Replaces a crashed (`why`) or cancelled (`None`) worker and reloads the model that was loaded
/// before (a model whose loading crashed the worker is dropped). The recipe lives in the page and
/// is kept; the quantization result is lost.
fn restart(state: AppState, why: Option<String>) {
    WORKER.with(|slot| {
        if let Some(w) = slot.borrow_mut().take() {
            w.terminate();
        }
    });
    QUEUE.with(|q| q.borrow_mut().clear());
    state.worker_ready.set(false);
    let loading = PENDING.with(|p| p.borrow_mut().take()).map(|(name, _)| name);
    if let Err(e) = start(state) {
        state.fail(e);
        return;
    }
    let model = MODEL.with(|m| m.borrow().clone());
    state.quant.set(None);
    let during = loading.as_ref().map(|n| format!(" while loading {n}")).unwrap_or_default();
    let after = match &model {
        Some((name, _)) => format!("{name} is reloaded"),
        None => "choose a model again".into(),
    };
    match why {
        Some(why) => state.fail(format!("The compute worker failed{during} ({why}). It was restarted; {after}.")),
        None => {
            state.idle();
            state.notice.set(Some(format!("Cancelled. {}.", capitalize(&after))));
        }
    }
    match model {
        Some((name, bytes)) => {
            RELOADING.with(|r| r.set(true));
            state.busy.set(Busy::Working(format!("Reloading {name}…")));
            let _ = load(&name, &bytes);
            // Queued behind the model, ahead of anything the user asks next.
            if let Some((file, _, _, json)) = state.preprocess.get_untracked() {
                let _ = send(&Request::SetPreprocess { job: next_job(), file, json }, JsValue::UNDEFINED);
            }
        }
        None => state.summary.set(None),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// Sends a model to the worker, keeping a copy of its bytes for a restart.
pub fn load(name: &str, bytes: &js_sys::Uint8Array) -> Result<(), String> {
    PENDING.with(|p| *p.borrow_mut() = Some((name.to_string(), bytes.clone())));
    send(&Request::Load { job: next_job(), name: name.to_string() }, bytes.slice(0, bytes.length()).into())
}

pub fn next_job() -> u32 {
    NEXT_JOB.with(|j| {
        let v = j.get();
        j.set(v + 1);
        v
    })
}

/// Keeps the user's calibration photos for the loaded model.
pub fn set_calibration_photos(files: Vec<web_sys::File>) {
    CALIB.with(|c| *c.borrow_mut() = files);
}

/// Runs the loaded model over the user's test files (kept for later runs; none: the last ones).
pub fn eval_test_files(state: AppState, files: Option<Vec<web_sys::File>>) {
    if let Some(f) = files {
        TEST_FILES.with(|t| *t.borrow_mut() = f);
    }
    let payload: Array = TEST_FILES.with(|t| t.borrow().iter().collect());
    if payload.length() == 0 {
        return;
    }
    state.start(format!("Running {} test files…", payload.length()));
    let classes = state.user_labels.get_untracked().map(|(_, l)| l);
    if let Err(e) = send(&Request::EvalSet { job: next_job(), classes }, payload.into()) {
        state.fail(e);
    }
}

/// The Search payload: the reference's bytes and steps A–B of the last search, if any.
pub fn search_payload(reference: js_sys::Uint8Array) -> JsValue {
    let built = SEARCH_BUILT.with(|s| s.borrow().clone()).map_or(JsValue::UNDEFINED, JsValue::from);
    Array::of2(&reference, &built).into()
}

/// The user's calibration photos as the Quantize payload (an empty array: the bundled photos).
pub fn calibration_payload() -> JsValue {
    CALIB.with(|c| c.borrow().iter().collect::<Array>().into())
}

/// Keeps the user's training files for the loaded model.
pub fn set_train_files(files: Vec<web_sys::File>) {
    TRAIN_FILES.with(|c| *c.borrow_mut() = files);
}

/// The Train payload: the calibration, training and test files (each array may be empty).
pub fn train_payload() -> JsValue {
    let all = |v: &RefCell<Vec<web_sys::File>>| v.borrow().iter().collect::<Array>();
    Array::of3(&CALIB.with(all), &TRAIN_FILES.with(all), &TEST_FILES.with(all)).into()
}

/// Posts a request; `payload` (a Uint8Array or Blob) goes along, array buffers are transferred.
pub fn send(req: &Request, payload: JsValue) -> Result<(), String> {
    let msg = Array::new();
    msg.push(&serde_wasm_bindgen::to_value(req).map_err(|e| e.to_string())?);
    msg.push(&payload);
    let transfer = Array::new();
    if let Some(u8a) = payload.dyn_ref::<js_sys::Uint8Array>() {
        transfer.push(&u8a.buffer());
    }
    if !READY.with(Cell::get) {
        QUEUE.with(|q| q.borrow_mut().push((msg, transfer)));
        return Ok(());
    }
    WORKER.with(|slot| match slot.borrow().as_ref() {
        Some(w) => post(w, &msg, &transfer),
        None => Err("the compute worker is not running".into()),
    })
}

fn apply(state: AppState, r: Response) {
    match r {
        Response::Ready => {
            READY.with(|r| r.set(true));
            let queued = QUEUE.with(|q| std::mem::take(&mut *q.borrow_mut()));
            WORKER.with(|slot| {
                if let Some(w) = slot.borrow().as_ref() {
                    for (msg, transfer) in &queued {
                        if let Err(e) = post(w, msg, transfer) {
                            state.fail(e);
                        }
                    }
                }
            });
            state.worker_ready.set(true);
        }
        Response::Loaded { summary, .. } => {
            let mut sample = false;
            if let Some(m) = PENDING.with(|p| p.borrow_mut().take()) {
                // The URL names a bundled model only once it has loaded; a local file cannot be
                // shared by link.
                let id = crate::state::SAMPLES.iter().find(|s| s.label == m.0).map(|s| s.id);
                sample = id.is_some();
                crate::url::set("model", id);
                MODEL.with(|slot| *slot.borrow_mut() = Some(m));
            }
            state.classification.set(None);
            state.digits.set(None);
            // The same model in a new worker keeps the user's settings (sent again by `restart`),
            // labels and data.
            if !RELOADING.with(|r| r.replace(false)) {
                state.user_labels.set(None);
                state.preprocess.set(None);
                state.calibration_photos.set(None);
                state.train_files.set(None);
                state.set_eval.set(None);
                set_calibration_photos(Vec::new());
                set_train_files(Vec::new());
                TEST_FILES.with(|t| t.borrow_mut().clear());
                // Settings in the link apply to the user's own model (a bundled one has its own).
                match crate::url::get("pre") {
                    Some(json) if !sample => {
                        let _ = send(&Request::SetPreprocess { job: next_job(), file: "the link's settings".into(), json }, JsValue::UNDEFINED);
                    }
                    _ => crate::url::set("pre", None),
                }
            }
            state.summary.set(Some(summary));
            state.quant.set(None);
            state.previous_quant.set(None);
            state.speed.set(None);
            state.compress.set(None);
            state.mixed.set(None);
            state.mixed_applied.set(None);
            state.train.set(None);
            state.train_curve.set(Vec::new());
            state.idle();
        }
        Response::Classified { result, .. } => {
            state.classification.set(Some((state.pending_photo.get_untracked(), result)));
            state.idle();
        }
        Response::DigitsEvaluated { result, .. } => {
            state.digits.set(Some(result));
            state.idle();
        }
        Response::Progress { stage, done, total, .. } => state.progress.set(Some((stage, done, total, eta(done, total)))),
        Response::Speed { result, .. } => {
            state.speed.set(Some(result));
            state.idle();
        }
        Response::Quantized { report, .. } => {
            state.classification.set(None);
            state.digits.set(None);
            state.previous_quant.set(state.quant.get_untracked());
            state.histogram.set(None);
            state.quant.set(Some(report));
            // The test set's INT8 figures were of the previous quantization.
            state.set_eval.update(|s| {
                if let Some((_, r)) = s {
                    r.int8 = None;
                }
            });
            state.speed.set(None);
            state.idle();
        }
        Response::Exported { .. } => state.idle(),
        Response::PreprocessSet { file, height, width, json, .. } => {
            state.classification.set(None);
            // Kept in the link (compact), so that the same settings come back with the model.
            let compact = serde_json::from_str::<serde_json::Value>(&json).map(|v| v.to_string()).unwrap_or_default();
            crate::url::set("pre", Some(&compact));
            state.preprocess.set(Some((file, height, width, json)));
            state.idle();
        }
        Response::Compressed { result, .. } => {
            state.compress.set(Some(result));
            state.idle();
        }
        Response::Mixed { result, .. } => {
            state.mixed_applied.set(None);
            state.mixed.set(Some(result));
            state.idle();
        }
        Response::Searched { result, .. } => {
            state.search.set(Some(result));
            state.idle();
        }
        Response::SearchModel { .. } | Response::SearchBuilt { .. } => {}
        Response::MixedApplied { applied, .. } => {
            state.mixed_applied.set(Some(applied));
            state.speed.set(None);
            state.idle();
        }
        Response::TrainEpoch { epoch, .. } => state.train_curve.update(|c| c.push(epoch)),
        Response::Trained { result, .. } => {
            state.train.set(Some(result));
            state.idle();
        }
        Response::SetEvaluated { result, .. } => {
            state.set_eval.set(Some((TEST_FILES.with(|t| t.borrow().len()), result)));
            state.idle();
        }
        Response::Zoo { result, .. } => {
            state.zoo.update(|z| z.push(result));
            crate::zoo::next(state);
        }
        Response::Histogram { result, .. } => {
            state.histogram.set(Some(result));
            state.idle();
        }
        Response::Panicked { message } => PANIC.with(|p| *p.borrow_mut() = Some(message)),
        // Answers that change nothing on the page.
        Response::Pool { .. } | Response::HelpCalibrated { .. } | Response::HelpRan { .. } | Response::HelpCompressed { .. } => {}
        Response::Failed { message, .. } => {
            PENDING.with(|p| p.borrow_mut().take());
            state.fail(message)
        }
    }
}
