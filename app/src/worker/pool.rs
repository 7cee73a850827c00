//! Helper workers: more instances of this same worker, started by it, each with its own wasm
//! memory (stable Rust has no shared-memory threads). Work that splits over samples runs in
//! contiguous slices, one per worker, this worker taking the first; the parts are merged in
//! sample order, so the result is the one a single worker computes, bit for bit.
//!
//! Used by calibration ([`calibrate`]). The pool has `navigator.hardwareConcurrency` workers
//! (at most [`MAX_WORKERS`]) unless the page sets a number ([`set_workers`]). Helpers start when
//! a model loads and live as long as this worker: cancelling a job terminates this worker, and
//! its helpers with it.

use super::post;
use crate::protocol::{Request, Response, Scheme};
use js_sys::{Array, Float32Array, Float64Array, Function, Promise, Uint8Array};
use qplay_core::quant::calib::{observe, Part};
use qplay_core::quant::QuantSim;
use qplay_core::Tensor;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{MessageEvent, Worker};

/// The most workers a pool takes, whatever the machine has.
pub const MAX_WORKERS: usize = 8;

struct Helper {
    worker: Worker,
    ready: Cell<bool>,
    /// Messages posted before the helper said Ready.
    queue: RefCell<Vec<(Array, Array)>>,
    /// The resolve function of the task in flight (a helper runs one at a time).
    inbox: RefCell<Option<Function>>,
    /// What the helper's panic hook reported before it died.
    panic: RefCell<Option<String>>,
}

thread_local! {
    static HELPERS: RefCell<Vec<Rc<Helper>>> = const { RefCell::new(Vec::new()) };
    /// Workers the page asked for (0: as many as the machine has cores).
    static WANTED: Cell<usize> = const { Cell::new(0) };
}

/// Sets the pool's size (0: one per core, up to [`MAX_WORKERS`]); returns the size in use.
pub fn set_workers(n: usize) -> usize {
    WANTED.with(|w| w.set(n.min(MAX_WORKERS)));
    workers()
}

/// The number of workers a job splits over, this one included.
pub fn workers() -> usize {
    match WANTED.with(Cell::get) {
        0 => {
            let cores = super::scope().navigator().hardware_concurrency();
            (cores as usize).clamp(1, MAX_WORKERS)
        }
        n => n,
    }
}

/// Starts the helpers the pool needs (a no-op once they run), so that they are ready by the time
/// a job needs them.
pub fn warm() {
    let need = workers().saturating_sub(1);
    HELPERS.with(|hs| {
        let mut hs = hs.borrow_mut();
        while hs.len() < need {
            match spawn() {
                Ok(h) => hs.push(h),
                Err(e) => {
                    web_sys::console::warn_1(&format!("no helper worker: {e}").into());
                    break;
                }
            }
        }
    });
}

fn spawn() -> Result<Rc<Helper>, String> {
    // Relative to this worker's own script, which trunk's loader shim is.
    let worker = Worker::new("./worker_loader.js").map_err(|e| format!("{e:?}"))?;
    let h = Rc::new(Helper { worker, ready: Cell::new(false), queue: RefCell::new(Vec::new()), inbox: RefCell::new(None), panic: RefCell::new(None) });
    let weak = Rc::downgrade(&h);
    let onmsg = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        let Some(h) = weak.upgrade() else { return };
        let data: Array = ev.data().unchecked_into();
        match serde_wasm_bindgen::from_value::<Response>(data.get(0)) {
            Ok(Response::Ready) => {
                h.ready.set(true);
                for (msg, transfer) in h.queue.take() {
                    let _ = h.worker.post_message_with_transfer(&msg, &transfer);
                }
            }
            Ok(Response::Progress { .. }) => {}
            Ok(Response::Panicked { message }) => *h.panic.borrow_mut() = Some(message),
            _ => {
                if let Some(resolve) = h.inbox.take() {
                    let _ = resolve.call1(&JsValue::NULL, &data);
                }
            }
        }
    });
    h.worker.set_onmessage(Some(onmsg.as_ref().unchecked_ref()));
    onmsg.forget();
    let weak = Rc::downgrade(&h);
    let onerr = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |ev: web_sys::ErrorEvent| {
        ev.prevent_default();
        let Some(h) = weak.upgrade() else { return };
        // A dead helper: fail its task, and start a fresh one for the next job.
        let why = h.panic.take().unwrap_or_else(|| ev.message());
        HELPERS.with(|hs| hs.borrow_mut().retain(|x| !Rc::ptr_eq(x, &h)));
        h.worker.terminate();
        if let Some(resolve) = h.inbox.take() {
            let failed = Response::Failed { job: 0, message: format!("a helper worker died: {why}") };
            let _ = resolve.call1(&JsValue::NULL, &Array::of1(&serde_wasm_bindgen::to_value(&failed).unwrap_or(JsValue::NULL)));
        }
    });
    h.worker.set_onerror(Some(onerr.as_ref().unchecked_ref()));
    onerr.forget();
    Ok(h)
}

/// Posts a task to `h` now (or once it is ready) and returns the future of its answer: the
/// message array the helper posted back.
fn ask(h: &Helper, msg: Array, transfer: Array) -> JsFuture {
    let mut resolve_fn = None;
    let promise = Promise::new(&mut |resolve, _| resolve_fn = Some(resolve));
    *h.inbox.borrow_mut() = resolve_fn;
    if h.ready.get() {
        let _ = h.worker.post_message_with_transfer(&msg, &transfer);
    } else {
        h.queue.borrow_mut().push((msg, transfer));
    }
    JsFuture::from(promise)
}

/// The samples as one Float32Array and their shapes.
fn pack(samples: &[Tensor]) -> (Float32Array, Vec<Vec<usize>>) {
    let all: Vec<f32> = samples.iter().flat_map(Tensor::to_f32_vec).collect();
    (Float32Array::from(all.as_slice()), samples.iter().map(|t| t.shape().to_vec()).collect())
}

/// Reads [`pack`] back, checking that the shapes account for every value.
pub(super) fn unpack(data: &[f32], shapes: &[Vec<usize>]) -> Result<Vec<Tensor>, String> {
    let mut at = 0;
    let mut out = Vec::with_capacity(shapes.len());
    for s in shapes {
        let n = s.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("sample shape overflows")?;
        let end = at + n;
        let slice = data.get(at..end).ok_or("the samples hold fewer values than their shapes")?;
        out.push(Tensor::f32(s.clone(), slice.to_vec()).map_err(|e| e.to_string())?);
        at = end;
    }
    if at != data.len() {
        return Err("the samples hold more values than their shapes".into());
    }
    Ok(out)
}

/// Calibrates `sim` on `samples` over the pool: this worker runs the first sample (which fixes
/// the SQNR scheme's histogram ranges) and the first slice of the rest, the helpers one slice
/// each; the parts merge in order into exactly the statistics of one pass. Returns the workers
/// used. Progress counts this worker's samples, scaled to the whole set.
pub async fn calibrate(sim: &mut QuantSim, samples: &[Tensor], scheme: Scheme, job: u32, stage: &str) -> Result<usize, String> {
    let n = workers().min(samples.len().saturating_sub(1)).max(1);
    let helpers: Vec<Rc<Helper>> = if n > 1 {
        warm();
        HELPERS.with(|hs| hs.borrow().iter().take(n - 1).cloned().collect())
    } else {
        Vec::new()
    };
    let total = samples.len();
    let mut progress = |done: usize, _| {
        post(&Response::Progress { job, stage: stage.into(), done: done.min(total), total });
        true
    };
    if helpers.is_empty() {
        sim.calibrate_with_progress(samples, &mut progress).map_err(|e| e.to_string())?;
        return Ok(1);
    }
    let n = helpers.len() + 1;
    let plan = sim.calibration_plan(total).map_err(|e| e.to_string())?;
    let mut part = observe(&plan, &samples[..1], None, &mut progress).map_err(|e| e.to_string())?;
    let ranges = part.ranges();
    let rest = &samples[1..];
    let cut = |i: usize| i * rest.len() / n;
    let graph = qplay_core::onnx::export::fp32_model(&plan.graph).map_err(|e| e.to_string())?;
    let answers: Vec<JsFuture> = helpers
        .iter()
        .enumerate()
        .map(|(k, h)| {
            let (data, shapes) = pack(&rest[cut(k + 1)..cut(k + 2)]);
            let req = Request::HelpCalibrate { job, watched: plan.watched.clone(), scheme, ranges: ranges.clone(), shapes };
            let bytes = Uint8Array::from(graph.as_slice());
            let msg = Array::of3(&serde_wasm_bindgen::to_value(&req).unwrap_or(JsValue::NULL), &bytes, &data);
            ask(h, msg, Array::of2(&bytes.buffer(), &data.buffer()))
        })
        .collect();
    let mine = observe(&plan, &rest[..cut(1)], Some(&ranges), &mut |done, _| progress(1 + done * n, total)).map_err(|e| e.to_string())?;
    part.merge(mine).map_err(|e| e.to_string())?;
    for answer in answers {
        let data: Array = answer.await.map_err(|e| format!("a helper worker failed: {e:?}"))?.unchecked_into();
        match serde_wasm_bindgen::from_value::<Response>(data.get(0)) {
            Ok(Response::HelpCalibrated { .. }) => {
                let numbers = data.get(1).dyn_into::<Float64Array>().map_err(|_| "a helper worker sent no calibration part")?.to_vec();
                part.merge(Part::from_f64s(&numbers).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            }
            Ok(Response::Failed { message, .. }) => return Err(message),
            other => return Err(format!("unexpected answer from a helper worker: {other:?}")),
        }
    }
    sim.finish_calibration(part).map_err(|e| e.to_string())?;
    Ok(n)
}

/// A helper's side of [`calibrate`]: the graph (ONNX bytes) and samples in `payload`; answers
/// with the part as a Float64Array (set as the response's payload).
pub(super) fn help_calibrate(watched: Vec<String>, scheme: Scheme, ranges: Vec<Option<(f64, f64)>>, shapes: &[Vec<usize>], payload: &Array) -> Result<Float64Array, String> {
    let bytes = payload.get(1).dyn_into::<Uint8Array>().map_err(|_| "no graph was sent")?.to_vec();
    let data = payload.get(2).dyn_into::<Float32Array>().map_err(|_| "no samples were sent")?.to_vec();
    let limits = qplay_core::Limits::default();
    let (graph, _) = qplay_core::load_model(&bytes, &limits).map_err(|e| e.to_string())?;
    let samples = unpack(&data, shapes)?;
    let plan = qplay_core::quant::calib::Plan { graph, watched, scheme: scheme.core(), limits };
    let part = observe(&plan, &samples, Some(&ranges), &mut |_, _| true).map_err(|e| e.to_string())?;
    Ok(Float64Array::from(part.to_f64s().as_slice()))
}
