//! The worker's architecture search: `qplay search`'s steps on the digits space, with latency
//! measured in this browser. Steps A–B (the block library, the predictor's architectures) are
//! kept between searches, so another objective or search setting re-runs only C and D.

use super::{now, post, DIGITS_TRAIN_X, DIGITS_TRAIN_Y, DIGITS_X, DIGITS_Y};
use crate::protocol::{Response, SearchBlock, SearchModel, SearchPoint, SearchResult, SearchSettings};
use qplay_core::npy::read_npy;
use qplay_core::search::donna::arch::Predictor;
use qplay_core::search::donna::evolve;
use qplay_core::search::donna::latency::{Engine, LatencyTable};
use qplay_core::search::donna::pipeline::{self, Built, Digits, Measured, Settings};
use qplay_core::search::donna::{bkd, BlockChoice, Spec};
use qplay_core::search::nsga2;
use qplay_core::{load_model, Graph, Limits};
use std::cell::RefCell;

/// What a search leaves behind: steps A–B with their settings, and the finetuned models.
struct Kept {
    settings: Settings,
    built: Built,
    models: Vec<Graph>,
}

thread_local! {
    static KEPT: RefCell<Option<Kept>> = const { RefCell::new(None) };
}

const STAGES: [&str; 5] = ["Distilling the block library", "Finetuning the predictor's architectures", "Timing every block in this browser", "Finetuning points of the front", "Training the quarter-width baseline"];

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn described(arch: Vec<String>, m: &Measured, predicted_accuracy: Option<f64>, predicted_ms: Option<f64>) -> SearchModel {
    SearchModel { arch, predicted_accuracy, accuracy: m.accuracy, latency_ms: m.latency_ms, predicted_ms, macs: m.macs }
}

/// Runs a search; the last one's steps A–B and models stay until this one succeeds.
pub(super) fn run(job: u32, reference_bytes: &[u8], packed: Option<&[u8]>, s: &SearchSettings) -> Result<SearchResult, String> {
    let prev = KEPT.with(|k| k.borrow_mut().take());
    match search(job, reference_bytes, packed, s, prev.as_ref()) {
        Ok((result, settings, fresh, models)) => {
            let built = match (fresh, prev) {
                (Some(b), _) => b,
                (None, Some(p)) => p.built,
                (None, None) => return Err("the search lost its libraries".into()),
            };
            KEPT.with(|k| *k.borrow_mut() = Some(Kept { settings, built, models }));
            Ok(result)
        }
        Err(e) => {
            KEPT.with(|k| *k.borrow_mut() = prev);
            Err(e)
        }
    }
}

/// The search itself: its result, its settings, steps A–B when they were not `prev`'s, and the
/// finetuned models.
fn search(job: u32, reference_bytes: &[u8], packed: Option<&[u8]>, s: &SearchSettings, prev: Option<&Kept>) -> Result<(SearchResult, Settings, Option<Built>, Vec<Graph>), String> {
    let engine = match s.objective.as_str() {
        "latency-int8" | "macs" => Engine::Int8,
        "latency-fp32" => Engine::Fp32,
        o => return Err(format!("unknown objective '{o}' (latency-int8, latency-fp32 or macs)")),
    };
    if s.population < 2 || s.generations == 0 || s.library == 0 || s.architectures < 3 || s.bkd_epochs == 0 || s.finetune_epochs == 0 || s.final_epochs == 0 {
        return Err("the population needs at least 2, the predictor at least 3 architectures, and generations, blocks and epochs at least 1".into());
    }
    let spec = Spec::digits();
    // An imported latency table is checked before anything is trained.
    let imported = match &s.latency_table {
        Some(json) => {
            let t = LatencyTable::from_json(json, &spec).map_err(err)?;
            if t.engine != engine {
                return Err(format!("the imported latency table times the {:?} engine; this objective needs {engine:?}", t.engine).to_lowercase());
            }
            Some(t)
        }
        None => None,
    };
    let (reference, _) = load_model(reference_bytes, &Limits::default()).map_err(err)?;
    let npy = |b: &[u8]| read_npy(b, 1 << 24).map_err(err);
    let d = Digits::new(npy(DIGITS_TRAIN_X)?, npy(DIGITS_TRAIN_Y)?.to_i64_vec(), npy(DIGITS_X)?, npy(DIGITS_Y)?.to_i64_vec()).map_err(err)?;
    let settings = Settings { library: s.library, architectures: s.architectures, bkd_epochs: s.bkd_epochs, finetune_epochs: s.finetune_epochs, final_epochs: s.final_epochs, seed: s.seed };
    let mut progress = |stage: usize, done: f64, total: usize, _: Option<String>| {
        post(&Response::Progress { job, stage: STAGES[stage.min(4)].into(), done: done as usize, total });
        true
    };
    let mut seconds = Vec::new();
    let mut t = now();
    let mut lap = |name: &str, seconds: &mut Vec<(String, f64)>| {
        let n = now();
        seconds.push((name.to_string(), (n - t) / 1e3));
        t = n;
    };
    // Steps A–B: this worker's last search, else the page's copy (kept across a cancel).
    let same = prev.filter(|k| k.settings == settings).map(|k| &k.built);
    let mut reused = true;
    let fresh = match same {
        Some(_) => None,
        None => match packed.map(|b| Built::unpack(b, &spec, &settings)).transpose().map_err(err)?.flatten() {
            Some(b) => Some(b),
            None => {
                let b = pipeline::build(&spec, &reference, &d, &settings, &mut progress).map_err(err)?.ok_or("the search stopped")?;
                reused = false;
                lap("block and architecture libraries", &mut seconds);
                let bytes = b.pack(&spec, &settings).map_err(err)?;
                super::PAYLOAD.with(|p| *p.borrow_mut() = Some(js_sys::Uint8Array::from(bytes.as_slice())));
                post(&Response::SearchBuilt { job });
                Some(b)
            }
        },
    };
    let built = fresh.as_ref().or(same).ok_or("no libraries")?;
    let predictor = Predictor::fit(&built.records).map_err(err)?;
    let table = match imported {
        Some(t) => {
            for (n, list) in built.lib.blocks.iter().enumerate() {
                for e in list {
                    let mut choices = vec![BlockChoice::largest(); spec.slots.len()];
                    choices[n] = e.choice;
                    t.predict(&choices).map_err(|e| format!("{e}: the imported table was measured for another block library"))?;
                }
            }
            t
        }
        None => {
            let feats = bkd::teacher_features(&spec, &reference, &d.probe).map_err(err)?;
            let mut t = LatencyTable::measure(&spec, &built.lib, &reference, &d.probe, &feats, engine, &now, 5, &mut |done, total| progress(2, done as f64, total, None)).map_err(err)?.ok_or("the search stopped")?;
            let navigator = js_sys::Reflect::get(&js_sys::global(), &"navigator".into()).unwrap_or_default();
            t.device = js_sys::Reflect::get(&navigator, &"userAgent".into()).ok().and_then(|u| u.as_string()).unwrap_or_default();
            lap("latency table", &mut seconds);
            t
        }
    };
    let by_macs = s.objective == "macs";
    let cfg = nsga2::Config { population: s.population, generations: s.generations, seed: s.seed };
    let report = {
        let macs = pipeline::macs(&spec, &reference, &built.lib).map_err(err)?;
        let cost = |c: &[BlockChoice]| if by_macs { Ok(macs(c) as f64) } else { table.predict(c) };
        evolve::search(&built.lib, &predictor, &cost, &cfg, &mut |_| true).map_err(err)?
    };
    lap("NSGA-II", &mut seconds);
    let chosen = if s.finetune { evolve::spread(&report.front, s.final_models) } else { Vec::new() };
    // The reference's logits, for step D and the baseline (none when the search stops at step C).
    let teacher = if s.finetune { pipeline::teacher_logits(&reference, &d).map_err(err)? } else { Vec::new() };
    let measured = pipeline::finetune_front(&spec, &reference, &built.lib, &chosen, &d, &teacher, &settings, engine, &now, 5, &mut progress).map_err(err)?.ok_or("the search stopped")?;
    if s.finetune {
        lap("finetuning the front", &mut seconds);
    }
    let labels = |c: &[BlockChoice]| c.iter().map(BlockChoice::label).collect::<Vec<_>>();
    let mut models = Vec::new();
    for (c, m) in chosen.iter().zip(&measured) {
        models.push(described(labels(&c.choices), m, Some(c.predicted_accuracy), Some(table.predict(&c.choices).map_err(err)?)));
    }
    let r = pipeline::reference(&reference, &d, engine, &now, 5).map_err(err)?;
    let largest = vec![BlockChoice::largest(); spec.slots.len()];
    let reference_model = described(labels(&largest), &r, None, table.predict(&largest).ok());
    let mut baselines = Vec::new();
    if s.baseline && s.finetune {
        let b = pipeline::baseline(&spec, 0.25, &d, &teacher, &settings, engine, &now, 5, &mut progress).map_err(err)?.ok_or("the search stopped")?;
        baselines.push(described(b.arch.clone(), &b, None, None));
        lap("baseline", &mut seconds);
    }
    let library = built.lib.blocks.iter().flatten().map(|e| SearchBlock { block: e.block, choice: e.choice.label(), nsr: e.nsr, macs: e.macs, ms: table.blocks[e.block].iter().find(|t| t.choice == e.choice).map_or(f64::NAN, |t| t.ms) }).collect();
    let front = report.front.iter().map(|c| SearchPoint { arch: labels(&c.choices), predicted_accuracy: c.predicted_accuracy, cost: c.cost }).collect();
    let result = SearchResult {
        settings: s.clone(),
        reused,
        unit: if by_macs { "MACs" } else { "ms" }.into(),
        engine: format!("{engine:?}").to_lowercase(),
        space_size: format!("{} architectures (360 choices in each of {} blocks)", spec.size(), spec.slots.len()),
        library,
        tau: predictor.kendall_tau,
        summed_tau: predictor.summed_nsr_tau,
        predictor: predictor.loo_predicted.iter().zip(&built.records).map(|(&p, r)| (p, r.accuracy)).collect(),
        front,
        evaluations: report.evaluations,
        models,
        reference: reference_model,
        baselines,
        seconds,
        latency_table: serde_json::to_string_pretty(&table).map_err(err)?,
        table_imported: s.latency_table.is_some(),
    };
    Ok((result, settings, fresh, measured.into_iter().map(|m| m.graph).collect()))
}

/// The ONNX bytes of finetuned model `index` of the last search, with a file name.
pub(super) fn model(index: usize) -> Result<(String, Vec<u8>), String> {
    KEPT.with(|k| {
        let k = k.borrow();
        let g = k.as_ref().and_then(|k| k.models.get(index)).ok_or("run the search first")?;
        Ok((format!("donna_digits_{}.onnx", index + 1), qplay_core::onnx::export::fp32_model(g).map_err(err)?))
    })
}
