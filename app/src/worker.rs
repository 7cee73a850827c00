//! The compute worker: owns the loaded model and runs every heavy job, so the page never
//! computes. Started by `bin/worker.rs`.

use crate::protocol::{Classification, DigitsEval, GraphNode, InputKind, IoDesc, LayerRow, MapInt8, MapResult, ModelSummary, Prediction, QuantOutput, SetEval, SetEvalInt8, QuantReport, Request, Response, SpeedResult, ZooFigure, ZooResult};
use qplay_core::exec::int8::Int8Executor;
use qplay_core::mapview::{self, MapKind, MapShape};
use qplay_core::metrics::sqnr_db;
use qplay_core::quant::QuantSim;
use qplay_core::timing::median_ms;
use js_sys::{Array, Uint8Array};
use qplay_core::graph::Dim;
use qplay_core::npy::read_npy;
use qplay_core::preprocess::Preprocess;
use qplay_core::{load_model, Executor, Graph, Limits, ModelInfo, Tensor};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

mod compress;
mod mixed;
mod quantize;
mod data;
pub(crate) mod pool;
mod search;
mod train;

use data::{decode_image, labelled_set, npy_file, npy_samples_of, read_user_npy, samples_for, MAX_TEST_SAMPLES};

/// This worker's build, chosen by the loader (`worker_loader.js`).
const SIMD_BUILD: &str = if cfg!(feature = "relaxed") { "relaxed SIMD" } else { "SIMD128" };

const DIGITS_X: &[u8] = include_bytes!("../../assets/data/digits_test_x.npy");
const DIGITS_Y: &[u8] = include_bytes!("../../assets/data/digits_test_y.npy");

struct Loaded {
    exec: Executor,
    kind: InputKind,
    /// The model as loaded (before the executor's fusions), for quantization.
    graph: Graph,
    int8: Option<Int8Executor>,
    /// The last input the model ran on (for the speed measurement).
    last_input: Option<Tensor>,
    /// The last quantization (for export) and a few of its calibration samples (for histograms).
    sim: Option<QuantSim>,
    probe: Vec<Tensor>,
    name: String,
    /// The user's preprocessing settings, if given (else EfficientNet-Lite0's, scaled).
    preprocess: Option<Preprocess>,
    /// The last compressed model (for download).
    compressed: Option<Graph>,
    /// The last mixed-precision search (to apply its points).
    mixed: Option<mixed::Search>,
    /// Versions of `exec` and `int8`, for the helper workers' copies (see `pool::run_all`).
    stamps: (u32, u32),
}

impl Loaded {
    /// Makes `sim` the last quantization, run by the integer engine.
    fn set_quantized(&mut self, sim: QuantSim) -> Result<(), String> {
        self.int8 = Some(Int8Executor::new(&sim).map_err(|e| e.to_string())?);
        self.sim = Some(sim);
        self.stamps.1 = next_stamp();
        Ok(())
    }

    fn preprocess(&self, height: usize, width: usize) -> Result<Preprocess, String> {
        self.preprocess.clone().map_or_else(|| crate::protocol::default_preprocess(height, width), Ok)
    }
}

/// A new version number for a model held by the helper workers.
fn next_stamp() -> u32 {
    thread_local!(static STAMP: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
    STAMP.with(|s| {
        s.set(s.get() + 1);
        s.get()
    })
}

thread_local! {
    /// Bytes to send with the next response (transferred, not copied).
    static PAYLOAD: RefCell<Option<Uint8Array>> = const { RefCell::new(None) };
}

const DIGITS_TRAIN_X: &[u8] = include_bytes!("../../assets/data/digits_train_x.npy");
const DIGITS_TRAIN_Y: &[u8] = include_bytes!("../../assets/data/digits_train_y.npy");

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

fn now() -> f64 {
    scope().performance().map(|p| p.now()).unwrap_or_else(js_sys::Date::now)
}

fn post(resp: &Response) {
    let msg = Array::new();
    msg.push(&serde_wasm_bindgen::to_value(resp).unwrap_or(JsValue::NULL));
    let transfer = Array::new();
    if let Some(bytes) = PAYLOAD.with(|p| p.borrow_mut().take()) {
        transfer.push(&bytes.buffer());
        msg.push(&bytes);
    }
    let _ = scope().post_message_with_transfer(&msg, &transfer);
}

/// Installs the message handler and announces readiness.
pub fn start() {
    // A panic ends in a trap that kills the worker; tell the page why first. (Running out of
    // memory aborts without a panic: the page then only sees the trap.)
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        post(&Response::Panicked { message: info.to_string() });
    }));
    let state: Rc<RefCell<Option<Loaded>>> = Rc::new(RefCell::new(None));
    // Requests run one after another: a job that waits for helper workers must not let the next
    // request in while it holds the model.
    let queue: Rc<RefCell<std::collections::VecDeque<Array>>> = Rc::default();
    let running = Rc::new(std::cell::Cell::new(false));
    let handler = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        queue.borrow_mut().push_back(ev.data().unchecked_into());
        if running.replace(true) {
            return;
        }
        let (state, queue, running) = (state.clone(), queue.clone(), running.clone());
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                let Some(data) = queue.borrow_mut().pop_front() else { break };
                if let Some(resp) = respond(&state, &data).await {
                    post(&resp);
                }
            }
            running.set(false);
        });
    });
    scope().set_onmessage(Some(handler.as_ref().unchecked_ref()));
    handler.forget();
    post(&Response::Ready);
}

/// Answers one message (None when the answer was posted already, with its payload).
async fn respond(state: &Rc<RefCell<Option<Loaded>>>, data: &Array) -> Option<Response> {
    let req: Result<Request, _> = serde_wasm_bindgen::from_value(data.get(0));
    Some(match req {
        Err(e) => Response::Failed { job: 0, message: format!("bad request: {e}") },
        Ok(Request::HelpCalibrate { job, watched, scheme, ranges, shapes }) => match pool::help_calibrate(watched, scheme, ranges, &shapes, data) {
            Ok(part) => {
                let msg = Array::of2(&serde_wasm_bindgen::to_value(&Response::HelpCalibrated { job }).unwrap_or(JsValue::NULL), &part);
                let _ = scope().post_message_with_transfer(&msg, &Array::of1(&part.buffer()));
                return None;
            }
            Err(message) => Response::Failed { job, message },
        },
        Ok(Request::HelpRun { job, int8, stamp, shapes, state: sim_state }) => match pool::help_run(int8, stamp, &shapes, sim_state, data) {
            Ok((shapes, out)) => {
                let msg = Array::of2(&serde_wasm_bindgen::to_value(&Response::HelpRan { job, shapes }).unwrap_or(JsValue::NULL), &out);
                let _ = scope().post_message_with_transfer(&msg, &Array::of1(&out.buffer()));
                return None;
            }
            Err(message) => Response::Failed { job, message },
        },
        Ok(Request::HelpCompress { job, settings, kind, rows, shapes, probe_shapes }) => match compress::help(&settings, &kind, rows, &shapes, &probe_shapes, data) {
            Ok(scores) => Response::HelpCompressed { job, scores },
            Err(message) => Response::Failed { job, message },
        },
        Ok(req) => {
            let job = job_of(&req);
            handle(state, req, data.get(1)).await.unwrap_or_else(|message| Response::Failed { job, message })
        }
    })
}

/// The settings photos are prepared with for the loaded model (an error if it takes no image).
fn image_settings(state: &Rc<RefCell<Option<Loaded>>>) -> Result<Preprocess, String> {
    let guard = state.borrow();
    let loaded = guard.as_ref().ok_or("load a model first")?;
    let InputKind::Image { height, width } = loaded.kind else {
        return Err("this model does not take an RGB image".into());
    };
    loaded.preprocess(height, width)
}

/// How the user's samples are read for the loaded model: photos through its preprocessing (image
/// models only) and `.npy` tensors of its input shape (batch 1).
fn sample_input(state: &Rc<RefCell<Option<Loaded>>>) -> Result<(Option<Preprocess>, Vec<usize>), String> {
    let guard = state.borrow();
    let loaded = guard.as_ref().ok_or("load a model first")?;
    if let InputKind::Image { height, width } = loaded.kind {
        let pre = loaded.preprocess(height, width)?;
        let shape = pre.shape.clone();
        return Ok((Some(pre), shape));
    }
    let g = &loaded.graph;
    let dims = g.values[g.inputs[0]].ty.as_ref().and_then(|t| t.dims.as_ref()).ok_or("the model does not declare its input's shape")?;
    let shape = dims
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Fixed(n) => Ok(if i == 0 { 1 } else { *n }),
            Dim::Symbolic(_) if i == 0 => Ok(1),
            Dim::Symbolic(s) => Err(format!("the model's input has a free dimension '{s}' beyond the batch: its samples' shape is unknown")),
        })
        .collect::<Result<_, String>>()?;
    Ok((None, shape))
}

/// A download's file name stem from the model's name ("Digits MobileNet" or "digits_mobilenet.onnx"
/// both give "digits_mobilenet").
fn file_stem(name: &str) -> String {
    name.trim_end_matches(".onnx").chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c.to_ascii_lowercase() } else { '_' }).collect()
}

fn job_of(r: &Request) -> u32 {
    match r {
        Request::Load { job, .. }
        | Request::Classify { job }
        | Request::EvalDigits { job }
        | Request::Quantize { job, .. }
        | Request::Speed { job, .. }
        | Request::Export { job, .. }
        | Request::Histogram { job, .. }
        | Request::SetPreprocess { job, .. }
        | Request::EvalSet { job, .. }
        | Request::Compress { job, .. }
        | Request::ExportCompressed { job }
        | Request::Train { job, .. }
        | Request::Mixed { job, .. }
        | Request::ApplyMixed { job, .. }
        | Request::Search { job, .. }
        | Request::SearchModel { job, .. }
        | Request::Zoo { job, .. }
        | Request::Workers { job, .. }
        | Request::HelpCalibrate { job, .. }
        | Request::HelpRun { job, .. }
        | Request::HelpCompress { job, .. } => *job,
    }
}

async fn handle(state: &Rc<RefCell<Option<Loaded>>>, req: Request, payload: JsValue) -> Result<Response, String> {
    match req {
        Request::Load { job, name } => {
            let bytes = payload.dyn_into::<Uint8Array>().map_err(|_| "no model bytes were sent".to_string())?.to_vec();
            let t0 = now();
            let limits = Limits::default();
            let (graph, info) = load_model(&bytes, &limits).map_err(|e| e.to_string())?;
            // Shapes that contradict each other fail here, naming the node; a model with
            // dynamic dims (other than the batch) is checked when it runs.
            let shapes = match qplay_core::cost::input_shapes(&graph, &[]) {
                Ok(shapes) => Some(qplay_core::cost::infer_shapes(&graph, &shapes, &limits).map_err(|e| e.to_string())?),
                Err(_) => None,
            };
            let cost = shapes.as_ref().map(|v| qplay_core::cost::cost(&graph, v));
            let mut summary = summarize(&name, &graph, &info, cost);
            summary.graph = graph_nodes(&graph, &info, shapes.as_deref(), summary.layer_costs.as_slice());
            let exec = Executor::new(graph.clone(), limits).map_err(|e| e.to_string())?;
            summary.load_ms = now() - t0;
            pool::warm();
            *state.borrow_mut() = Some(Loaded { exec, kind: summary.input_kind.clone(), graph, int8: None, last_input: None, sim: None, probe: Vec::new(), name, preprocess: None, compressed: None, mixed: None, stamps: (next_stamp(), 0) });
            Ok(Response::Loaded { job, summary })
        }
        Request::Classify { job } => {
            let blob = payload.dyn_into::<web_sys::Blob>().map_err(|_| "no photo was sent".to_string())?;
            let pre = image_settings(state)?;
            let [height, width] = pre.size();
            let t0 = now();
            // A tensor the user prepared: its first sample, as it is.
            let (x, w, h) = match npy_file(&blob) {
                Some(f) => (npy_samples_of(&f.name(), read_user_npy(&f).await?, &pre.shape, 1)?.into_iter().next().ok_or_else(|| format!("{}: no samples", f.name()))?, width as u32, height as u32),
                None => {
                    let (rgb, w, h) = decode_image(&blob).await?;
                    (pre.apply(&rgb, w as usize, h as usize).map_err(|e| e.to_string())?, w, h)
                }
            };
            let mut guard = state.borrow_mut();
            let loaded = guard.as_mut().ok_or("load a model first")?;
            let t1 = now();
            loaded.last_input = Some(x.clone());
            // The outputs come from a first run; the time shown is a median after a warm-up (a
            // first inference pays for page faults and cold caches).
            let y = loaded.exec.run(vec![x.clone()]).map_err(|e| e.to_string())?;
            let fp32_ms = median_ms(&mut || loaded.exec.run(vec![x.clone()]).map(|_| ()), &now, 3).map_err(|e| e.to_string())?;
            let logits = y.first().map(Tensor::to_f32_vec).unwrap_or_default();
            let map_shape = y.first().and_then(|t| mapview::map_shape(t.shape()));
            let top = |v: &[f32]| if map_shape.is_some() { Vec::new() } else { top_k(v, 5) };
            let int8 = match loaded.int8.as_mut() {
                None => None,
                Some(e) => {
                    let yq = e.run(vec![x.clone()]).map_err(|e| e.to_string())?;
                    let ms = median_ms(&mut || e.run(vec![x.clone()]).map(|_| ()), &now, 3).map_err(|e| e.to_string())?;
                    Some((yq.first().map(Tensor::to_f32_vec).unwrap_or_default(), ms))
                }
            };
            let map = map_shape.map(|s| {
                let threshold = pre.threshold.unwrap_or(0.5) as f32;
                draw_maps(s.kind([height, width], threshold), s, &logits, int8.as_ref().map(|(q, _)| q.as_slice()))
            });
            let int8 = int8.map(|(q, ms)| QuantOutput { top5: top(&q), infer_ms: ms, sqnr_db: sqnr_db(&logits, &q) });
            Ok(Response::Classified {
                job,
                result: Classification { top5: top(&logits), infer_ms: fp32_ms, preprocess_ms: t1 - t0, image_width: w, image_height: h, int8, map },
            })
        }
        Request::EvalDigits { job } => {
            let mut guard = state.borrow_mut();
            let loaded = guard.as_mut().ok_or("load a model first")?;
            if loaded.kind != InputKind::Digits {
                return Err("this model does not take 8x8 digits".into());
            }
            let y = read_npy(DIGITS_Y, 1 << 20).map_err(|e| e.to_string())?.to_i64_vec();
            let n = y.len();
            let x = data::digits_tensor(data::input_rank(loaded.exec.graph()), &read_npy(DIGITS_X, 1 << 20).map_err(|e| e.to_string())?.to_f32_vec())?;
            loaded.last_input = Some(x.clone());
            // The batch splits over the pool of workers.
            let t0 = now();
            let out = pool::run_batch(pool::Engine::Fp32 { graph: &loaded.graph, exec: &mut loaded.exec }, loaded.stamps.0, &x).await?;
            let infer_ms = now() - t0;
            let logits = out.to_f32_vec();
            if logits.len() != n * 10 {
                return Err(format!("expected {n}x10 logits, got {} values", logits.len()));
            }
            let correct_of = |l: &[f32]| l.chunks(10).zip(&y).filter(|(r, &t)| top_k(r, 1)[0].class as i64 == t).count();
            let pred: Vec<usize> = logits.chunks(10).map(|r| top_k(r, 1)[0].class).collect();
            let correct = correct_of(&logits);
            let samples = y.iter().zip(&pred).take(24).map(|(&t, &p)| (t as u8, p)).collect();
            let int8 = match (loaded.int8.as_mut(), loaded.sim.as_ref()) {
                (Some(exec), Some(sim)) => {
                    let t1 = now();
                    let q = pool::run_batch(pool::Engine::Int8 { sim, exec }, loaded.stamps.1, &x).await?.to_f32_vec();
                    Some((correct_of(&q), now() - t1, sqnr_db(&logits, &q)))
                }
                _ => None,
            };
            Ok(Response::DigitsEvaluated { job, result: DigitsEval { n, correct, infer_ms, samples, int8 } })
        }
        Request::Speed { job, runs } => {
            let mut guard = state.borrow_mut();
            let loaded = guard.as_mut().ok_or("load a model first")?;
            let x = loaded.last_input.clone().ok_or("run the model on an input first")?;
            let runs = runs.clamp(1, 100);
            let times = |f: &mut dyn FnMut() -> Result<(), String>| -> Result<(f64, f64), String> {
                f()?; // warm-up
                let mut t = Vec::with_capacity(runs as usize);
                for i in 0..runs {
                    post(&Response::Progress { job, stage: "Timing".into(), done: i as usize, total: runs as usize });
                    let t0 = now();
                    f()?;
                    t.push(now() - t0);
                }
                t.sort_by(f64::total_cmp);
                Ok((t[t.len() / 2], t[(t.len() * 9 / 10).min(t.len() - 1)]))
            };
            let fp32 = times(&mut || loaded.exec.run(vec![x.clone()]).map(|_| ()).map_err(|e| e.to_string()))?;
            let int8 = match loaded.int8.as_mut() {
                None => None,
                Some(e) => Some(times(&mut || e.run(vec![x.clone()]).map(|_| ()).map_err(|e| e.to_string()))?),
            };
            Ok(Response::Speed { job, result: SpeedResult { runs, fp32, int8, simd: SIMD_BUILD.into() } })
        }
        Request::Export { job, qdq } => {
            let guard = state.borrow();
            let loaded = guard.as_ref().ok_or("load a model first")?;
            let sim = loaded.sim.as_ref().ok_or("quantize the model first")?;
            let bytes = if qdq { qplay_core::onnx::export::qdq_model(sim) } else { qplay_core::onnx::export::fp32_model(sim.graph()) }.map_err(|e| e.to_string())?;
            let stem = file_stem(&loaded.name);
            PAYLOAD.with(|p| *p.borrow_mut() = Some(Uint8Array::from(bytes.as_slice())));
            Ok(Response::Exported { job, file_name: format!("{stem}.{}.onnx", if qdq { "qdq" } else { "fp32-transformed" }) })
        }
        Request::Histogram { job, tensor } => {
            let guard = state.borrow();
            let loaded = guard.as_ref().ok_or("load a model first")?;
            let sim = loaded.sim.as_ref().ok_or("quantize the model first")?;
            let result = qplay_core::quant::analysis::activation_histogram(sim, &loaded.probe, &tensor, 80).map_err(|e| e.to_string())?;
            Ok(Response::Histogram { job, result })
        }
        Request::SetPreprocess { job, file, json } => {
            let mut guard = state.borrow_mut();
            let loaded = guard.as_mut().ok_or("load a model first")?;
            let InputKind::Image { .. } = loaded.kind else {
                return Err(format!("{file}: this model does not take an RGB image ([N, 3, H, W])"));
            };
            let pre = Preprocess::from_json(&json).map_err(|e| format!("{file}: {e}"))?;
            if pre.color.channels() != 3 || pre.layout != qplay_core::preprocess::Layout::Nchw {
                return Err(format!("{file}: field 'color'/'layout': the model takes [N, 3, H, W] (RGB or BGR, NCHW)"));
            }
            let [height, width] = pre.size();
            let dims = loaded.graph.values[loaded.graph.inputs[0]].ty.as_ref().and_then(|t| t.dims.clone()).unwrap_or_default();
            for (axis, want) in [(2, height), (3, width)] {
                if let Some(qplay_core::graph::Dim::Fixed(d)) = dims.get(axis) {
                    if *d != want {
                        return Err(format!("{file}: field 'shape': {:?} does not fit the model's input, whose axis {axis} is {d}", pre.shape));
                    }
                }
            }
            let json = pre.to_json();
            loaded.preprocess = Some(pre);
            loaded.last_input = None;
            Ok(Response::PreprocessSet { job, file, height, width, json })
        }
        Request::EvalSet { job, classes } => {
            let files = payload.dyn_into::<Array>().map_err(|_| "no test files were sent".to_string())?;
            let pre = image_settings(state)?;
            let (samples, labels, labels_from) = labelled_set(job, &files, Some(&pre), &pre.shape, classes.as_deref(), "test", MAX_TEST_SAMPLES).await?;
            let mut guard = state.borrow_mut();
            let loaded = guard.as_mut().ok_or("load a model first")?;
            let threshold = pre.threshold.unwrap_or(0.5) as f32;
            let n = samples.len();
            // The set splits over the pool of workers; the times are the whole set's.
            let t0 = now();
            let mut progress = |done: usize, total: usize| post(&Response::Progress { job, stage: "Running your test set".into(), done, total });
            let fp32 = pool::run_all(pool::Engine::Fp32 { graph: &loaded.graph, exec: &mut loaded.exec }, loaded.stamps.0, &samples, &mut progress).await?;
            let fp32_ms = now() - t0;
            let (int8, int8_ms) = match (loaded.int8.as_mut(), loaded.sim.as_ref()) {
                (Some(exec), Some(sim)) => {
                    let t1 = now();
                    let mut progress = |done: usize, total: usize| post(&Response::Progress { job, stage: "Running your test set in INT8".into(), done, total });
                    (pool::run_all(pool::Engine::Int8 { sim, exec }, loaded.stamps.1, &samples, &mut progress).await?, now() - t1)
                }
                _ => (Vec::new(), 0.0),
            };
            let map = fp32.first().and_then(|y| mapview::map_shape(y.shape()));
            let (is_map, heat) = (map.is_some(), map.is_some_and(|s| s.channels == 1));
            let top1 = |ys: &[Tensor]| -> Vec<usize> { ys.iter().map(|y| qplay_core::metrics::argmax(&y.to_f32_vec())).collect() };
            let correct = |pred: &[usize]| labels.as_ref().filter(|_| !is_map).map(|l| pred.iter().zip(l).filter(|(&p, &l)| p as i64 == l).count());
            let p32 = top1(&fp32);
            let int8 = (!int8.is_empty()).then(|| {
                let pq = top1(&int8);
                let flat = |ys: &[Tensor]| ys.iter().flat_map(Tensor::to_f32_vec).collect::<Vec<f32>>();
                SetEvalInt8 {
                    correct: correct(&pq),
                    same_top1: (!is_map).then(|| p32.iter().zip(&pq).filter(|(a, b)| a == b).count()),
                    sqnr_db: sqnr_db(&flat(&fp32), &flat(&int8)),
                    mean_iou: heat.then(|| fp32.iter().zip(&int8).map(|(a, b)| qplay_core::metrics::iou_at(&a.to_f32_vec(), &b.to_f32_vec(), threshold)).sum::<f64>() / n as f64),
                    ms: int8_ms,
                }
            });
            Ok(Response::SetEvaluated { job, result: SetEval { samples: n, labels_from: labels_from.filter(|_| !is_map), fp32_correct: correct(&p32), fp32_ms, int8 } })
        }
        Request::Compress { job, settings, photos } => {
            let (samples, probe) = samples_for(state, job, &photos, settings.calib_samples as usize, &payload).await?;
            // A copy of the model: the job awaits its helpers (requests are answered one at a
            // time, so nothing else changes the model meanwhile).
            let (graph, kind) = {
                let guard = state.borrow();
                let loaded = guard.as_ref().ok_or("load a model first")?;
                (loaded.graph.clone(), loaded.kind.clone())
            };
            let (out, result) = compress::run(job, &graph, &kind, &settings, &samples, &probe).await?;
            state.borrow_mut().as_mut().ok_or("load a model first")?.compressed = Some(out);
            Ok(Response::Compressed { job, result })
        }
        Request::Mixed { job, settings, photos } => {
            let (samples, probe) = samples_for(state, job, &photos, settings.calib_samples as usize, &payload).await?;
            let mut guard = state.borrow_mut();
            let loaded = guard.as_mut().ok_or("load a model first")?;
            loaded.mixed = None;
            let (search, result) = mixed::run(job, &loaded.graph, &loaded.kind, &settings, &samples, &probe)?;
            loaded.mixed = Some(search);
            Ok(Response::Mixed { job, result })
        }
        Request::Search { job, settings } => {
            let parts = payload.dyn_into::<Array>().map_err(|_| "no reference model was sent".to_string())?;
            let reference = parts.get(0).dyn_into::<Uint8Array>().map_err(|_| "no reference model was sent".to_string())?.to_vec();
            let kept = parts.get(1).dyn_into::<Uint8Array>().ok().map(|b| b.to_vec());
            Ok(Response::Searched { job, result: search::run(job, &reference, kept.as_deref(), &settings)? })
        }
        Request::SearchModel { job, index, load } => {
            let (name, bytes) = search::model(index)?;
            PAYLOAD.with(|p| *p.borrow_mut() = Some(Uint8Array::from(bytes.as_slice())));
            Ok(if load { Response::SearchModel { job, name } } else { Response::Exported { job, file_name: name } })
        }
        Request::Workers { job, workers } => Ok(Response::Pool { job, workers: pool::set_workers(workers as usize) }),
        Request::HelpCalibrate { .. } | Request::HelpRun { .. } | Request::HelpCompress { .. } => Err("this request is for helper workers".into()),
        Request::Zoo { job, preprocess, recipes } => Ok(Response::Zoo { job, result: zoo(job, preprocess.as_deref(), &recipes, &payload).await? }),
        Request::ApplyMixed { job, index } => {
            let mut guard = state.borrow_mut();
            let loaded = guard.as_mut().ok_or("load a model first")?;
            let search = loaded.mixed.as_ref().ok_or("run the mixed-precision search first")?;
            let (sim, applied) = mixed::apply(search, &loaded.graph, &loaded.kind, index)?;
            // The point becomes the last quantization: its downloads and the integer engine's
            // speed.
            loaded.set_quantized(sim)?;
            Ok(Response::MixedApplied { job, applied })
        }
        Request::Train { job, settings, photos, classes } => {
            let part = |i: u32| payload.dyn_ref::<Array>().map(|p| p.get(i)).and_then(|a| a.dyn_into::<Array>().ok()).filter(|a| a.length() > 0);
            let source = match part(1) {
                Some(files) => {
                    let (pre, input) = sample_input(state)?;
                    let set = |files, what| labelled_set(job, files, pre.as_ref(), &input, classes.as_deref(), what, train::max_samples(&input));
                    let train_set = set(&files, "training").await?;
                    let test_set = match part(2) {
                        Some(t) => Some(set(&t, "test").await?),
                        None => None,
                    };
                    train::Source::Files { train: train_set, test: test_set }
                }
                None => {
                    let (samples, probe) = samples_for(state, job, &photos, settings.samples as usize, &payload.dyn_ref::<Array>().map(|p| p.get(0)).unwrap_or(JsValue::UNDEFINED)).await?;
                    train::Source::Bundled { samples, probe }
                }
            };
            let mut guard = state.borrow_mut();
            let loaded = guard.as_mut().ok_or("load a model first")?;
            let (g, sim, result) = train::run(job, &loaded.graph, loaded.compressed.as_ref(), &loaded.kind, &settings, source)?;
            match sim {
                // QAT: the trained model and its encodings become the last quantization (its
                // QDQ and FP32 downloads, the INT8 speed).
                Some(sim) => loaded.set_quantized(sim)?,
                // A fine-tuned compressed model replaces the compressed one (download, quantize it).
                None => loaded.compressed = Some(g),
            }
            Ok(Response::Trained { job, result })
        }
        Request::ExportCompressed { job } => {
            let guard = state.borrow();
            let loaded = guard.as_ref().ok_or("load a model first")?;
            let g = loaded.compressed.as_ref().ok_or("compress the model first")?;
            let bytes = qplay_core::onnx::export::fp32_model(g).map_err(|e| e.to_string())?;
            PAYLOAD.with(|p| *p.borrow_mut() = Some(Uint8Array::from(bytes.as_slice())));
            Ok(Response::Exported { job, file_name: format!("{}.compressed.onnx", file_stem(&loaded.name)) })
        }
        Request::Quantize { job, config, photos } => {
            // The per-layer analysis always uses the same probe samples (4 photos / 128 digits), so
            // that recipes with different calibration sets are compared on equal terms.
            let (samples, probe) = samples_for(state, job, &photos, config.calib_samples as usize, &payload).await?;
            let mut guard = state.borrow_mut();
            let loaded = guard.as_mut().ok_or("load a model first")?;
            let t0 = now();
            // The chain compress -> quantize: the compressed model in place of the loaded one.
            let source = if config.compressed { loaded.compressed.clone().ok_or("compress the model first")? } else { loaded.graph.clone() };
            let quantize::Quantized { sim, bn_folded, cle, cle_choices, adaround, bias_corrected, calibration_seconds, workers } = quantize::run(job, source, &config, &samples).await?;
            let total = samples.iter().map(|t| t.shape().first().copied().unwrap_or(1)).sum();
            let int8 = Int8Executor::new(&sim).map_err(|e| e.to_string())?;
            post(&Response::Progress { job, stage: "Measuring per-layer error".into(), done: 0, total: 1 });
            let analysis = qplay_core::quant::analysis::analyze(&sim, &probe).map_err(|e| e.to_string())?;
            let output = sim.graph().outputs.first().map(|&v| sim.graph().value_name(v).to_string());
            let output_sqnr_db = analysis.layers.iter().find(|l| Some(&l.name) == output.as_ref()).map(|l| l.sqnr_db);
            let layers = analysis
                .layers
                .iter()
                .map(|l| LayerRow { name: l.name.clone(), op: l.op.clone(), bits: l.bits, min: l.min, max: l.max, sqnr_db: l.sqnr_db.is_finite().then_some(l.sqnr_db) })
                .collect();
            let (integer_steps, float_steps) = int8.integer_steps();
            let enc = sim.to_aimet_json();
            let report = QuantReport {
                config,
                bn_folded,
                calibration_samples: total,
                weight_encodings: enc["param_encodings"].as_array().map_or(0, Vec::len),
                activation_encodings: enc["activation_encodings"].as_array().map_or(0, Vec::len),
                integer_steps,
                float_steps,
                seconds: (now() - t0) / 1e3,
                encodings_json: serde_json::to_string_pretty(&enc).unwrap_or_default(),
                layers,
                output_sqnr_db,
                analysis_samples: probe.iter().map(|t| t.shape().first().copied().unwrap_or(1)).sum(),
                cle,
                cle_choices,
                adaround,
                bias_corrected,
                calibration_seconds,
                workers,
            };
            loaded.int8 = Some(int8);
            loaded.sim = Some(sim);
            loaded.stamps.1 = next_stamp();
            loaded.probe = probe;
            Ok(Response::Quantized { job, report })
        }
    }
}

/// One model of the zoo (see [`Request::Zoo`]).
async fn zoo(job: u32, preprocess: Option<&str>, recipes: &[crate::protocol::QuantConfig], payload: &JsValue) -> Result<ZooResult, String> {
    let parts = payload.dyn_ref::<Array>().ok_or("no model was sent")?;
    let bytes = parts.get(0).dyn_into::<Uint8Array>().map_err(|_| "no model bytes were sent".to_string())?.to_vec();
    let limits = Limits::default();
    let (graph, _) = load_model(&bytes, &limits).map_err(|e| e.to_string())?;
    let files = |i: u32| parts.get(i).dyn_into::<Array>().map_err(|_| "no data files were sent".to_string());
    let mut threshold = None;
    let (calib, test, labels) = match preprocess {
        Some(json) => {
            let pre = Preprocess::from_json(json).map_err(|e| format!("the zoo's preprocessing settings: {e}"))?;
            threshold = pre.threshold.map(|t| t as f32);
            let calib = data::user_calibration(job, &files(1)?, 0, &pre).await?.0;
            // Batched as the CLI batches a folder (AdaRound's sampling sees the batches).
            let fixed = matches!(graph.values[graph.inputs[0]].ty.as_ref().and_then(|t| t.dims.as_ref()).and_then(|d| d.first()), Some(Dim::Fixed(_)));
            let calib = if fixed { calib } else { Tensor::stack(&calib, 32).map_err(|e| e.to_string())? };
            (calib, data::user_calibration(job, &files(2)?, 0, &pre).await?.0, None)
        }
        None => {
            let rank = data::input_rank(&graph);
            let y = read_npy(DIGITS_Y, 1 << 20).map_err(|e| e.to_string())?.to_i64_vec();
            let x = data::digits_tensor(rank, &read_npy(DIGITS_X, 1 << 20).map_err(|e| e.to_string())?.to_f32_vec())?;
            (data::digits_batches(rank, 256)?, vec![x], Some(y))
        }
    };
    let samples: usize = test.iter().map(|t| t.shape().first().copied().unwrap_or(1)).sum();
    // Each sample's output row, and the flat outputs (pooled SQNR, as `qplay eval --reference`).
    let rows = |outs: Vec<Tensor>| -> (Vec<f32>, Vec<usize>) {
        let flat: Vec<f32> = outs.iter().flat_map(Tensor::to_f32_vec).collect();
        let k = flat.len() / samples.max(1);
        let top1 = flat.chunks(k.max(1)).map(qplay_core::metrics::argmax).collect();
        (flat, top1)
    };
    let pct = |count: usize| 100.0 * count as f64 / samples.max(1) as f64;
    let accuracy = |top1: &[usize]| labels.as_ref().map(|l| pct(top1.iter().zip(l).filter(|(&p, &l)| p as i64 == l).count()));
    let t0 = now();
    let mut exec = Executor::new(graph.clone(), limits).map_err(|e| e.to_string())?;
    let outs = test.iter().map(|x| exec.run(vec![x.clone()]).map(|mut y| y.remove(0))).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    let (reference, ref_top1) = rows(outs);
    let fp32 = ZooFigure { accuracy_pct: accuracy(&ref_top1), sqnr_db: None, top1_agree_pct: None, iou: None, seconds: (now() - t0) / 1e3 };
    let mut figures = Vec::with_capacity(recipes.len());
    for config in recipes {
        let t0 = now();
        let q = quantize::run(job, graph.clone(), config, &calib).await?;
        let mut int8 = Int8Executor::new(&q.sim).map_err(|e| e.to_string())?;
        let outs = test.iter().map(|x| int8.run(vec![x.clone()]).map(|mut y| y.remove(0))).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
        let (flat, top1) = rows(outs);
        figures.push(ZooFigure {
            accuracy_pct: accuracy(&top1),
            sqnr_db: Some(sqnr_db(&reference, &flat)),
            top1_agree_pct: Some(pct(ref_top1.iter().zip(&top1).filter(|(a, b)| a == b).count())),
            iou: threshold.map(|t| qplay_core::metrics::iou_at(&reference, &flat, t)),
            seconds: (now() - t0) / 1e3,
        });
    }
    Ok(ZooResult { samples, fp32, recipes: figures })
}

fn summarize(name: &str, g: &Graph, info: &ModelInfo, cost: Option<qplay_core::cost::CostReport>) -> ModelSummary {
    let io = |ids: &[usize]| -> Vec<IoDesc> {
        ids.iter()
            .map(|&i| {
                let v = &g.values[i];
                IoDesc {
                    name: v.name.clone(),
                    elem_type: v.ty.as_ref().map_or("?".into(), |t| t.elem_type.clone()),
                    shape: v.ty.as_ref().and_then(|t| t.dims.as_ref()).map(|d| d.iter().map(Dim::to_string).collect()).unwrap_or_default(),
                }
            })
            .collect()
    };
    let dims: Vec<Option<usize>> = g.inputs.first().and_then(|&i| g.values[i].ty.as_ref()).and_then(|t| t.dims.as_ref()).map(|d| d.iter().map(|x| if let Dim::Fixed(v) = x { Some(*v) } else { None }).collect()).unwrap_or_default();
    let input_kind = match dims.as_slice() {
        [_, Some(3), h, w] => InputKind::Image { height: h.unwrap_or(224), width: w.unwrap_or(224) },
        [_, Some(1), Some(8), Some(8)] | [_, Some(64)] => InputKind::Digits,
        _ => InputKind::Other,
    };
    ModelSummary {
        name: name.to_string(),
        file_bytes: info.file_bytes,
        ir_version: info.ir_version,
        opset: info.opset,
        producer: info.producer.clone(),
        inputs: io(&g.inputs),
        outputs: io(&g.outputs),
        op_counts: info.op_counts.clone(),
        parameters: g.parameter_count(),
        input_kind,
        load_ms: 0.0,
        macs: cost.as_ref().map(|c| c.macs),
        layer_costs: cost.map(|c| c.layers.into_iter().map(|l| (l.name, l.op, l.macs, l.params)).collect()).unwrap_or_default(),
        graph: Vec::new(),
    }
}

/// The file's nodes for the graph view, each with what the loaded graph knows of it (matched by
/// its first output, as constant folding and fusions rename nothing): its output shapes, MACs
/// and the range of its weight (input 1, when constant).
fn graph_nodes(g: &Graph, info: &ModelInfo, shapes: Option<&[Option<Vec<usize>>]>, costs: &[(String, String, u64, u64)]) -> Vec<GraphNode> {
    use std::collections::HashMap;
    let values: HashMap<&str, usize> = g.values.iter().enumerate().map(|(i, v)| (v.name.as_str(), i)).collect();
    let producer: HashMap<usize, usize> = g.nodes.iter().enumerate().flat_map(|(ni, n)| n.outputs.iter().map(move |&o| (o, ni))).collect();
    let macs: HashMap<&str, u64> = costs.iter().map(|(name, _, m, _)| (name.as_str(), *m)).collect();
    info.nodes
        .iter()
        .map(|f| {
            let node = f.outputs.first().and_then(|o| values.get(o.as_str())).and_then(|v| producer.get(v)).map(|&ni| &g.nodes[ni]);
            let shape = |o: &String| values.get(o.as_str()).and_then(|&v| shapes?.get(v)?.as_ref()).map_or_else(|| "?".to_string(), |s| format!("{s:?}"));
            let weight_range = node.and_then(|n| n.inputs.get(1).copied().flatten()).and_then(|v| g.consts[v].as_ref()).map(|t| {
                let w = t.to_f32_vec();
                (w.iter().copied().fold(f32::INFINITY, f32::min), w.iter().copied().fold(f32::NEG_INFINITY, f32::max))
            });
            GraphNode {
                name: f.name.clone(),
                op: f.op_type.clone(),
                inputs: f.inputs.clone(),
                outputs: f.outputs.clone(),
                shapes: f.outputs.iter().map(shape).collect(),
                macs: node.and_then(|n| macs.get(n.name.as_str()).copied()),
                weight_range: weight_range.filter(|(lo, hi)| lo.is_finite() && hi.is_finite()),
            }
        })
        .collect()
}

/// The `k` best classes with their probabilities: the softmax of the outputs, unless the model
/// already gives probabilities (every output in [0, 1], summing to 1 within a few 8-bit steps, as
/// a model ending in a Softmax does).
pub(crate) fn top_k(logits: &[f32], k: usize) -> Vec<Prediction> {
    let total: f32 = logits.iter().sum();
    let probabilities = logits.iter().all(|v| (0.0..=1.0).contains(v)) && (total - 1.0).abs() < 0.02;
    let mx = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|v| (v - mx).exp()).sum();
    let prob = |v: f32| if probabilities { v } else { (v - mx).exp() / sum };
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| Prediction { class: i, prob: prob(logits[i]), logit: logits[i] }).collect()
}

/// The FP32 map drawn, and with an INT8 one: both on the same scale, their difference and metrics.
fn draw_maps(kind: MapKind, shape: MapShape, fp32: &[f32], int8: Option<&[f32]>) -> MapResult {
    let painter = mapview::Painter::new(kind, shape, fp32);
    let above = |v: &[f32]| match kind {
        MapKind::Heat { threshold } => Some(mapview::above(v, threshold)),
        _ => None,
    };
    let int8 = int8.map(|q| {
        let (difference, max_difference) = painter.draw_difference(fp32, q);
        MapInt8 { drawing: painter.draw(q), difference, max_difference, metrics: mapview::compare(kind, shape, fp32, q), above: above(q) }
    });
    MapResult { kind, shape, fp32: painter.draw(fp32), fp32_above: above(fp32), int8 }
}
