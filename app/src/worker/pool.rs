//! Helper workers: more instances of this same worker, started by it, each with its own wasm
//! memory (stable Rust has no shared-memory threads). Work that splits over samples runs in
//! contiguous slices, one per worker, this worker taking the first; the parts are merged in
//! sample order, so the result is the one a single worker computes, bit for bit.
//!
//! Used by calibration ([`calibrate`]) and by runs over many inputs ([`run_all`]: the digits
//! test set, your own test set), where each helper keeps a copy of the loaded model. If a helper
//! fails, this worker does its share. The pool has `navigator.hardwareConcurrency` workers
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
    /// The task in flight (a helper runs one at a time): its number and the resolve function of
    /// its answer. An answer to an older task (one a failed job stopped waiting for) is dropped.
    inbox: RefCell<Option<(u32, Function)>>,
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
            match spawn(hs.len() + 1) {
                Ok(h) => hs.push(h),
                Err(e) => {
                    web_sys::console::warn_1(&format!("no helper worker: {e}").into());
                    break;
                }
            }
        }
    });
}

fn spawn(number: usize) -> Result<Rc<Helper>, String> {
    // The script is this worker's own (trunk's loader shim), relative to it. Named, so that tools
    // (and the page tests) tell the helpers from the worker that runs them.
    let opts = web_sys::WorkerOptions::new();
    opts.set_name(&format!("qplay helper {number}"));
    // The same build as this worker's: the loader's query (a forced build) is passed on.
    let search = super::scope().location().search();
    let worker = Worker::new_with_options(&format!("./worker_loader.js{search}"), &opts).map_err(|e| format!("{e:?}"))?;
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
            Ok(Response::Panicked { message }) => *h.panic.borrow_mut() = Some(message),
            Ok(Response::HelpCalibrated { job } | Response::HelpRan { job, .. } | Response::HelpCompressed { job, .. } | Response::Failed { job, .. }) => {
                let current = h.inbox.borrow().as_ref().is_some_and(|(task, _)| *task == job);
                if let Some((_, resolve)) = if current { h.inbox.take() } else { None } {
                    let _ = resolve.call1(&JsValue::NULL, &data);
                }
            }
            _ => {}
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
        if let Some((task, resolve)) = h.inbox.take() {
            let failed = Response::Failed { job: task, message: format!("a helper worker died: {why}") };
            let _ = resolve.call1(&JsValue::NULL, &Array::of1(&serde_wasm_bindgen::to_value(&failed).unwrap_or(JsValue::NULL)));
        }
    });
    h.worker.set_onerror(Some(onerr.as_ref().unchecked_ref()));
    onerr.forget();
    Ok(h)
}

/// A new task number: the `job` of a request to a helper, which its answer repeats.
fn next_task() -> u32 {
    thread_local!(static TASK: Cell<u32> = const { Cell::new(0) });
    TASK.with(|t| {
        t.set(t.get().wrapping_add(1));
        t.get()
    })
}

/// Posts task `task` to `h` now (or once it is ready) and returns the future of its answer: the
/// message array the helper posted back.
fn ask(h: &Helper, task: u32, msg: Array, transfer: Array) -> JsFuture {
    let mut resolve_fn = None;
    let promise = Promise::new(&mut |resolve, _| resolve_fn = Some(resolve));
    *h.inbox.borrow_mut() = resolve_fn.map(|r| (task, r));
    if h.ready.get() {
        let _ = h.worker.post_message_with_transfer(&msg, &transfer);
    } else {
        h.queue.borrow_mut().push((msg, transfer));
    }
    JsFuture::from(promise)
}

/// The helpers of a job split `n` ways (this worker and `n - 1` of them; fewer if some could not
/// start), started if need be.
fn helpers_for(n: usize) -> Vec<Rc<Helper>> {
    if n <= 1 {
        return Vec::new();
    }
    warm();
    HELPERS.with(|hs| hs.borrow().iter().take(n - 1).cloned().collect())
}

/// A helper's answer to [`ask`]: the response and the whole message (its payload after it), or
/// why the task failed.
async fn answer_of(answer: JsFuture) -> Result<(Response, Array), String> {
    let data: Array = answer.await.map_err(|e| format!("{e:?}"))?.unchecked_into();
    match serde_wasm_bindgen::from_value::<Response>(data.get(0)) {
        Ok(Response::Failed { message, .. }) => Err(message),
        Ok(r) => Ok((r, data)),
        Err(e) => Err(format!("unreadable answer: {e}")),
    }
}

/// The samples as one Float32Array and their shapes.
pub(super) fn pack(samples: &[Tensor]) -> (Float32Array, Vec<Vec<usize>>) {
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

/// Calibrates `sim` on `samples` over the pool: this worker runs the first slice, the helpers
/// one slice each (with the SQNR scheme, this worker first runs the first sample alone, which
/// fixes the histogram ranges, and the rest is split); the parts merge in order into exactly the statistics of one pass. Returns the workers
/// used. Progress counts this worker's samples, scaled to the whole set.
pub async fn calibrate(sim: &mut QuantSim, samples: &[Tensor], scheme: Scheme, job: u32, stage: &str) -> Result<usize, String> {
    let helpers = helpers_for(workers().min(samples.len().saturating_sub(1)));
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
            let task = next_task();
            let req = Request::HelpCalibrate { job: task, watched: plan.watched.clone(), scheme, ranges: ranges.clone(), shapes };
            let bytes = Uint8Array::from(graph.as_slice());
            let msg = Array::of3(&serde_wasm_bindgen::to_value(&req).unwrap_or(JsValue::NULL), &bytes, &data);
            ask(h, task, msg, Array::of2(&bytes.buffer(), &data.buffer()))
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
    for (k, answer) in answers.into_iter().enumerate() {
        let got = match answer_of(answer).await {
            Ok((Response::HelpCalibrated { .. }, data)) => data.get(1).dyn_into::<Float64Array>().map_err(|_| "no calibration part".to_string()).and_then(|a| Part::from_f64s(&a.to_vec()).map_err(|e| e.to_string())),
            Ok((other, _)) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e),
        };
        let next = match got {
            Ok(p) => p,
            Err(why) => {
                // The slice is observed here instead: the same part.
                web_sys::console::warn_1(&format!("a helper worker failed ({why}); its calibration samples run here").into());
                observe(&plan, &rest[cut(k + 1)..cut(k + 2)], ranges.as_deref(), &mut |_, _| true).map_err(|e| e.to_string())?
            }
        };
        part.merge(next).map_err(|e| e.to_string())?;
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

/// Rows `0..n` of a table whose rows are independent (compression's sensitivity table), split
/// over the pool in contiguous ranges: this worker computes the first with `local(range, true)`
/// (true: report progress), each helper one more, asked by `request(task, range)` (the request
/// and its payload). The rows come back in order; a helper that fails has its range computed
/// here (`local(range, false)`). Returns the rows and the workers used.
pub async fn share_rows(
    n: usize,
    request: &dyn Fn(u32, (usize, usize)) -> Result<(Array, Array), String>,
    local: &mut dyn FnMut(std::ops::Range<usize>, bool) -> Result<Vec<Vec<f64>>, String>,
) -> Result<(Vec<Vec<f64>>, usize), String> {
    let helpers = helpers_for(workers().min(n));
    let w = helpers.len() + 1;
    let cut = |i: usize| i * n / w;
    let mut answers = Vec::with_capacity(helpers.len());
    for (k, h) in helpers.iter().enumerate() {
        let task = next_task();
        let (msg, transfer) = request(task, (cut(k + 1), cut(k + 2)))?;
        answers.push(ask(h, task, msg, transfer));
    }
    let mut rows = local(0..cut(1), true)?;
    for (k, answer) in answers.into_iter().enumerate() {
        let range = cut(k + 1)..cut(k + 2);
        let got = match answer_of(answer).await {
            Ok((Response::HelpCompressed { scores, .. }, _)) if scores.len() == range.len() => Ok(scores),
            Ok((other, _)) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e),
        };
        rows.extend(match got {
            Ok(r) => r,
            Err(why) => {
                web_sys::console::warn_1(&format!("a helper worker failed ({why}); its rows are scored here").into());
                local(range, false)?
            }
        });
    }
    Ok((rows, w))
}

/// What a batch runs on: the loaded model in FP32, or its quantization on the integer engine.
pub enum Engine<'a> {
    Fp32 { graph: &'a Graph, exec: &'a mut qplay_core::Executor },
    Int8 { sim: &'a QuantSim, exec: &'a mut Int8Executor },
}

/// The first output of `engine` on each of `xs`, the list split over the pool in contiguous
/// slices: this worker runs the first, each helper one more (sent its copy of the model when it
/// does not hold version `stamp`). The outputs come back in order and are the ones this worker
/// alone computes (every input runs alone). `progress(done, total)` counts this worker's inputs,
/// scaled to the list. If a helper fails, this worker runs its slice too.
pub async fn run_all(mut engine: Engine<'_>, stamp: u32, xs: &[Tensor], progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<Tensor>, String> {
    let total = xs.len();
    let helpers = helpers_for(workers().min(total));
    let n = helpers.len() + 1;
    let int8 = matches!(engine, Engine::Int8 { .. });
    let cut = |i: usize| i * total / n;
    let mut answers = Vec::with_capacity(helpers.len());
    for (k, h) in helpers.iter().enumerate() {
        let (samples, shapes) = pack(&xs[cut(k + 1)..cut(k + 2)]);
        let held = if int8 { h.mirrored.get().1 } else { h.mirrored.get().0 };
        let (model, state) = if held == stamp {
            (JsValue::UNDEFINED, None)
        } else {
            match &engine {
                Engine::Fp32 { graph, .. } => (model_bytes(graph)?.into(), None),
                Engine::Int8 { sim, .. } => (model_bytes(sim.graph())?.into(), Some(serde_json::to_string(&sim.to_state()).map_err(|e| e.to_string())?)),
            }
        };
        let task = next_task();
        let req = Request::HelpRun { job: task, int8, stamp, shapes, state };
        let transfer = Array::of1(&samples.buffer());
        if let Some(m) = model.dyn_ref::<Uint8Array>() {
            transfer.push(&m.buffer());
        }
        let msg = Array::of3(&serde_wasm_bindgen::to_value(&req).unwrap_or(JsValue::NULL), &samples, &model);
        answers.push(ask(h, task, msg, transfer));
    }
    let mut out = Vec::with_capacity(total);
    for (i, x) in xs[..cut(1)].iter().enumerate() {
        progress(i * n, total);
        out.push(run_one(&mut engine, x.clone())?);
    }
    for (k, (answer, h)) in answers.into_iter().zip(&helpers).enumerate() {
        let got = match answer_of(answer).await {
            Ok((Response::HelpRan { shapes, .. }, data)) => data.get(1).dyn_into::<Float32Array>().map_err(|_| "no outputs".to_string()).and_then(|a| unpack(&a.to_vec(), &shapes)),
            Ok((other, _)) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e),
        };
        let (lo, hi) = (cut(k + 1), cut(k + 2));
        match got {
            Ok(ys) if ys.len() == hi - lo => {
                let m = h.mirrored.get();
                h.mirrored.set(if int8 { (m.0, stamp) } else { (stamp, m.1) });
                out.extend(ys);
            }
            other => {
                let why = other.err().unwrap_or_else(|| "a wrong number of outputs".into());
                web_sys::console::warn_1(&format!("a helper worker failed ({why}); its inputs run here").into());
                for x in &xs[lo..hi] {
                    out.push(run_one(&mut engine, x.clone())?);
                }
            }
        }
    }
    progress(total, total);
    Ok(out)
}

/// [`run_all`] on one batch: split along its first axis in chunks of [`CHUNK`] samples (whose
/// activations stay in a core's cache), the outputs joined back.
pub async fn run_batch(engine: Engine<'_>, stamp: u32, x: &Tensor) -> Result<Tensor, String> {
    let batch = x.shape().first().copied().unwrap_or(1);
    let data = x.as_f32().ok_or("the batch is not float")?;
    let per: usize = x.shape().iter().skip(1).product();
    let chunks = (0..batch)
        .step_by(CHUNK)
        .map(|start| {
            let end = (start + CHUNK).min(batch);
            let mut s = x.shape().to_vec();
            s[0] = end - start;
            Tensor::f32(s, data[start * per..end * per].to_vec()).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ys = run_all(engine, stamp, &chunks, &mut |_, _| {}).await?;
    let mut shape = ys.first().ok_or("the batch is empty")?.shape().to_vec();
    shape[0] = 0;
    let mut out = Vec::new();
    for y in ys {
        if y.shape().get(1..) != shape.get(1..) {
            return Err(format!("outputs of shape {:?} beside {shape:?}", y.shape()));
        }
        shape[0] += y.shape().first().copied().unwrap_or(1);
        out.extend(y.to_f32_vec());
    }
    Tensor::f32(shape, out).map_err(|e| e.to_string())
}

/// Samples per run of a big batch.
const CHUNK: usize = 64;

fn run_one(engine: &mut Engine<'_>, x: Tensor) -> Result<Tensor, String> {
    match engine {
        Engine::Fp32 { exec, .. } => exec_first(exec, x),
        Engine::Int8 { exec, .. } => exec_first_int8(exec, x),
    }
}

fn exec_first(exec: &mut qplay_core::Executor, x: Tensor) -> Result<Tensor, String> {
    exec.run(vec![x]).map_err(|e| e.to_string())?.into_iter().next().ok_or_else(|| "the model has no output".into())
}

fn exec_first_int8(exec: &mut Int8Executor, x: Tensor) -> Result<Tensor, String> {
    let t = exec.run(vec![x]).map_err(|e| e.to_string())?.into_iter().next().ok_or("the model has no output")?;
    Tensor::f32(t.shape().to_vec(), t.to_f32_vec()).map_err(|e| e.to_string())
}

pub(super) fn model_bytes(g: &Graph) -> Result<Uint8Array, String> {
    Ok(Uint8Array::from(qplay_core::onnx::export::fp32_model(g).map_err(|e| e.to_string())?.as_slice()))
}

/// A helper's side of [`run_all`]: rebuilds its copy of the model when sent one, runs each input,
/// and answers with the outputs' shapes and their values end to end.
pub(super) fn help_run(int8: bool, stamp: u32, shapes: &[Vec<usize>], state: Option<String>, payload: &Array) -> Result<(Vec<Vec<usize>>, Float32Array), String> {
    let data = payload.get(1).dyn_into::<Float32Array>().map_err(|_| "no inputs were sent")?.to_vec();
    let xs = unpack(&data, shapes)?;
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
            // FP32 versions change only when a model loads: an older INT8 copy belongs to the
            // model before, and its memory is freed.
            INT8.with(|m| {
                let mut m = m.borrow_mut();
                if m.as_ref().is_some_and(|(s, _)| *s < stamp) {
                    *m = None;
                }
            });
        }
    }
    let stale = || format!("this helper does not hold version {stamp} of the model");
    let mut ys = Vec::with_capacity(xs.len());
    for x in xs {
        ys.push(if int8 {
            INT8.with(|m| match m.borrow_mut().as_mut() {
                Some((s, exec)) if *s == stamp => exec_first_int8(exec, x),
                _ => Err(stale()),
            })?
        } else {
            FP32.with(|m| match m.borrow_mut().as_mut() {
                Some((s, exec)) if *s == stamp => exec_first(exec, x),
                _ => Err(stale()),
            })?
        });
    }
    let (data, shapes) = pack(&ys);
    Ok((shapes, data))
}
