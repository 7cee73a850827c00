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
use qplay_core::exec::int8::Int8Executor;
use qplay_core::quant::QuantSim;
use qplay_core::Graph;
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
    /// The versions of the loaded model (FP32, INT8) the helper holds a copy of.
    mirrored: Cell<(u32, u32)>,
}

thread_local! {
    static HELPERS: RefCell<Vec<Rc<Helper>>> = const { RefCell::new(Vec::new()) };
    /// Workers the page asked for (0: as many as the machine has cores).
    static WANTED: Cell<usize> = const { Cell::new(0) };
    /// In a helper: its copies of the loaded model, FP32 and INT8, with their versions.
    static FP32: RefCell<Option<(u32, qplay_core::Executor)>> = const { RefCell::new(None) };
    static INT8: RefCell<Option<(u32, Int8Executor)>> = const { RefCell::new(None) };
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
    let h = Rc::new(Helper { worker, ready: Cell::new(false), queue: RefCell::new(Vec::new()), inbox: RefCell::new(None), panic: RefCell::new(None), mirrored: Cell::new((0, 0)) });
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
    // The SQNR scheme's histogram ranges come from the first sample: it runs here first, and
    // the rest is split. Min-max and percentile parts need nothing from each other.
    let (lead, rest) = if plan.scheme == qplay_core::quant::CalibScheme::Sqnr { samples.split_at(1) } else { samples.split_at(0) };
    let first = if lead.is_empty() { None } else { Some(observe(&plan, lead, None, &mut progress).map_err(|e| e.to_string())?) };
    let ranges = first.as_ref().map(Part::ranges);
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
    let mine = observe(&plan, &rest[..cut(1)], ranges.as_deref(), &mut |done, _| progress(lead.len() + done * n, total)).map_err(|e| e.to_string())?;
    let mut part = match first {
        Some(mut p) => {
            p.merge(mine).map_err(|e| e.to_string())?;
            p
        }
        None => mine,
    };
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
pub(super) fn help_calibrate(watched: Vec<String>, scheme: Scheme, ranges: Option<Vec<Option<(f64, f64)>>>, shapes: &[Vec<usize>], payload: &Array) -> Result<Float64Array, String> {
    let bytes = payload.get(1).dyn_into::<Uint8Array>().map_err(|_| "no graph was sent")?.to_vec();
    let data = payload.get(2).dyn_into::<Float32Array>().map_err(|_| "no samples were sent")?.to_vec();
    let limits = qplay_core::Limits::default();
    let (graph, _) = qplay_core::load_model(&bytes, &limits).map_err(|e| e.to_string())?;
    let samples = unpack(&data, shapes)?;
    let plan = qplay_core::quant::calib::Plan { graph, watched, scheme: scheme.core(), limits };
    let part = observe(&plan, &samples, ranges.as_deref(), &mut |_, _| true).map_err(|e| e.to_string())?;
    Ok(Float64Array::from(part.to_f64s().as_slice()))
}

/// What a batch runs on: the loaded model in FP32, or its quantization on the integer engine.
pub enum Engine<'a> {
    Fp32 { graph: &'a Graph, exec: &'a mut qplay_core::Executor },
    Int8 { sim: &'a QuantSim, exec: &'a mut Int8Executor },
}

/// The first output of `engine` on the batch `x`, split along its first axis over the pool: this
/// worker runs the first slice, each helper one more (sent its copy of the model when it does not
/// hold version `stamp`). The slices' outputs are joined in order: the same values as one run of
/// the whole batch (every sample is computed alone). If a helper fails, this worker runs the
/// whole batch itself.
pub async fn run_batch(mut engine: Engine<'_>, stamp: u32, x: &Tensor, job: u32) -> Result<Tensor, String> {
    let batch = x.shape().first().copied().unwrap_or(1);
    let n = workers().min(batch).max(1);
    let helpers: Vec<Rc<Helper>> = if n > 1 {
        warm();
        HELPERS.with(|hs| hs.borrow().iter().take(n - 1).cloned().collect())
    } else {
        Vec::new()
    };
    let int8 = matches!(engine, Engine::Int8 { .. });
    if helpers.is_empty() {
        return run_local(&mut engine, x.clone());
    }
    let n = helpers.len() + 1;
    let per: usize = x.shape()[1..].iter().product();
    let data = x.as_f32().ok_or("the batch is not float")?;
    let cut = |i: usize| i * batch / n;
    let slice = |i: usize| -> Result<Tensor, String> {
        let mut shape = x.shape().to_vec();
        shape[0] = cut(i + 1) - cut(i);
        Tensor::f32(shape, data[cut(i) * per..cut(i + 1) * per].to_vec()).map_err(|e| e.to_string())
    };
    let mut answers = Vec::with_capacity(helpers.len());
    for (k, h) in helpers.iter().enumerate() {
        let (samples, shapes) = pack(std::slice::from_ref(&slice(k + 1)?));
        let held = if int8 { h.mirrored.get().1 } else { h.mirrored.get().0 };
        let (model, state) = if held == stamp {
            (JsValue::UNDEFINED, None)
        } else {
            match &engine {
                Engine::Fp32 { graph, .. } => (model_bytes(graph)?.into(), None),
                Engine::Int8 { sim, .. } => (model_bytes(sim.graph())?.into(), Some(serde_json::to_string(&sim.to_state()).map_err(|e| e.to_string())?)),
            }
        };
        let req = Request::HelpRun { job, int8, stamp, shapes, state };
        let transfer = Array::of1(&samples.buffer());
        if let Some(m) = model.dyn_ref::<Uint8Array>() {
            transfer.push(&m.buffer());
        }
        let msg = Array::of3(&serde_wasm_bindgen::to_value(&req).unwrap_or(JsValue::NULL), &samples, &model);
        answers.push(ask(h, msg, transfer));
    }
    let first = run_local(&mut engine, slice(0)?)?;
    let mut shape = first.shape().to_vec();
    let mut out = first.to_f32_vec();
    let mut failed = None;
    for (answer, h) in answers.into_iter().zip(&helpers) {
        let got = async {
            let data: Array = answer.await.map_err(|e| format!("{e:?}"))?.unchecked_into();
            match serde_wasm_bindgen::from_value::<Response>(data.get(0)) {
                Ok(Response::HelpRan { shape: s, .. }) => Ok((s, data.get(1).dyn_into::<Float32Array>().map_err(|_| "no outputs".to_string())?.to_vec())),
                Ok(Response::Failed { message, .. }) => Err(message),
                other => Err(format!("unexpected answer {other:?}")),
            }
        }
        .await;
        match got {
            Ok((s, v)) if s.get(1..) == shape.get(1..) && s.iter().product::<usize>() == v.len() => {
                let m = h.mirrored.get();
                h.mirrored.set(if int8 { (m.0, stamp) } else { (stamp, m.1) });
                shape[0] += s[0];
                out.extend(v);
            }
            Ok((s, _)) => failed = Some(format!("outputs of shape {s:?} beside {shape:?}")),
            Err(e) => failed = Some(e),
        }
    }
    if let Some(why) = failed {
        web_sys::console::warn_1(&format!("a helper worker failed ({why}); the batch runs here").into());
        return run_local(&mut engine, x.clone());
    }
    Tensor::f32(shape, out).map_err(|e| e.to_string())
}

fn run_local(engine: &mut Engine<'_>, x: Tensor) -> Result<Tensor, String> {
    match engine {
        Engine::Fp32 { exec, .. } => in_chunks(x, &mut |t| exec_first(exec, t)),
        Engine::Int8 { exec, .. } => in_chunks(x, &mut |t| exec_first_int8(exec, t)),
    }
}

/// Samples per run: a big batch runs in chunks whose activations stay in the core's cache
/// (the outputs are the same: every sample is computed alone).
const CHUNK: usize = 64;

fn in_chunks(x: Tensor, run: &mut dyn FnMut(Tensor) -> Result<Tensor, String>) -> Result<Tensor, String> {
    let batch = x.shape().first().copied().unwrap_or(1);
    let Some(data) = x.as_f32().filter(|_| batch > CHUNK) else { return run(x) };
    let per: usize = x.shape()[1..].iter().product();
    let mut shape = Vec::new();
    let mut out = Vec::new();
    for start in (0..batch).step_by(CHUNK) {
        let end = (start + CHUNK).min(batch);
        let mut s = x.shape().to_vec();
        s[0] = end - start;
        let y = run(Tensor::f32(s, data[start * per..end * per].to_vec()).map_err(|e| e.to_string())?)?;
        if shape.is_empty() {
            shape = y.shape().to_vec();
        } else if y.shape().get(1..) != shape.get(1..) || y.shape().first() != Some(&(end - start)) {
            return Err(format!("outputs of shape {:?} beside {shape:?}", y.shape()));
        } else {
            shape[0] += end - start;
        }
        out.extend(y.to_f32_vec());
    }
    Tensor::f32(shape, out).map_err(|e| e.to_string())
}

fn exec_first(exec: &mut qplay_core::Executor, x: Tensor) -> Result<Tensor, String> {
    exec.run(vec![x]).map_err(|e| e.to_string())?.into_iter().next().ok_or_else(|| "the model has no output".into())
}

fn exec_first_int8(exec: &mut Int8Executor, x: Tensor) -> Result<Tensor, String> {
    let t = exec.run(vec![x]).map_err(|e| e.to_string())?.into_iter().next().ok_or("the model has no output")?;
    Tensor::f32(t.shape().to_vec(), t.to_f32_vec()).map_err(|e| e.to_string())
}

fn model_bytes(g: &Graph) -> Result<Uint8Array, String> {
    Ok(Uint8Array::from(qplay_core::onnx::export::fp32_model(g).map_err(|e| e.to_string())?.as_slice()))
}

/// A helper's side of [`run_batch`]: rebuilds its copy of the model when sent one, runs the
/// slice, and answers with the first output's shape and values.
pub(super) fn help_run(int8: bool, stamp: u32, shapes: &[Vec<usize>], state: Option<String>, payload: &Array) -> Result<(Vec<usize>, Float32Array), String> {
    let data = payload.get(1).dyn_into::<Float32Array>().map_err(|_| "no inputs were sent")?.to_vec();
    let x = unpack(&data, shapes)?.into_iter().next().ok_or("no input")?;
    if let Some(bytes) = payload.get(2).dyn_ref::<Uint8Array>() {
        let limits = qplay_core::Limits::default();
        let (graph, _) = qplay_core::load_model(&bytes.to_vec(), &limits).map_err(|e| e.to_string())?;
        if int8 {
            let state: qplay_core::quant::SimState = serde_json::from_str(state.as_deref().ok_or("no simulation state was sent")?).map_err(|e| e.to_string())?;
            let sim = QuantSim::from_state(graph, state).map_err(|e| e.to_string())?;
            let exec = Int8Executor::new(&sim).map_err(|e| e.to_string())?;
            INT8.with(|m| *m.borrow_mut() = Some((stamp, exec)));
        } else {
            let exec = qplay_core::Executor::new(graph, limits).map_err(|e| e.to_string())?;
            FP32.with(|m| *m.borrow_mut() = Some((stamp, exec)));
        }
    }
    let stale = || format!("this helper does not hold version {stamp} of the model");
    let out = if int8 {
        INT8.with(|m| match m.borrow_mut().as_mut() {
            Some((s, exec)) if *s == stamp => in_chunks(x, &mut |t| exec_first_int8(exec, t)),
            _ => Err(stale()),
        })?
    } else {
        FP32.with(|m| match m.borrow_mut().as_mut() {
            Some((s, exec)) if *s == stamp => in_chunks(x, &mut |t| exec_first(exec, t)),
            _ => Err(stale()),
        })?
    };
    Ok((out.shape().to_vec(), Float32Array::from(out.to_f32_vec().as_slice())))
}
