//! `qplay search`: DONNA's hardware-aware architecture search on a built-in space. Step A is
//! the shipped reference; step B distils the block library and fits the accuracy predictor on
//! an architecture library; step C runs NSGA-II on predicted accuracy and latency measured on
//! this machine (or MACs); step D finetunes points of the front from their distilled weights and
//! measures them. Steps A–B are cached in the output folder, so another objective or search
//! setting re-runs only C and D.

use crate::common::{failed_at, read_text, write_file, CliError, CliResult, Global};
use crate::out;
use crate::progress::Progress;
use qplay_core::npy::read_npy;
use qplay_core::search::donna::arch::{self, ArchRecord, FinetuneConfig, Predictor, Split};
use qplay_core::search::donna::bkd::{self, BkdConfig, BlockEntry, Library};
use qplay_core::search::donna::evolve;
use qplay_core::search::donna::latency::{Engine, LatencyTable, Runner};
use qplay_core::search::donna::{self, BlockChoice, Spec};
use qplay_core::search::nsga2;
use qplay_core::train::{self, Data, Net, TrainConfig};
use qplay_core::{Graph, Limits, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

const REFERENCE: &[u8] = include_bytes!("../../../assets/models/donna_digits_reference.onnx");
const TRAIN_X: &[u8] = include_bytes!("../../../assets/data/digits_train_x.npy");
const TRAIN_Y: &[u8] = include_bytes!("../../../assets/data/digits_train_y.npy");
const TEST_X: &[u8] = include_bytes!("../../../assets/data/digits_test_x.npy");
const TEST_Y: &[u8] = include_bytes!("../../../assets/data/digits_test_y.npy");
/// Training samples for distillation and finetuning; the rest of the training split is the
/// validation split (block NSRs, architecture accuracies).
const FIT: usize = 1077;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceArg {
    /// 8×8 digits: a stem, three blocks (16→24, 24→40 /2, 40→64 /2), 360 choices each
    Digits,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectiveArg {
    LatencyInt8,
    LatencyFp32,
    Macs,
}

/// Hardware-aware architecture search as DONNA does it: blockwise distillation from a reference,
/// an accuracy predictor, NSGA-II on latency measured here, finetuning of the front
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The search space (its reference model and data are built in)
    #[arg(long, value_enum, default_value_t = SpaceArg::Digits)]
    space: SpaceArg,
    /// The cost minimised with the predicted accuracy
    #[arg(long, value_enum, default_value_t = ObjectiveArg::LatencyInt8)]
    objective: ObjectiveArg,
    #[arg(long, value_name = "N", default_value_t = 32)]
    population: usize,
    #[arg(long, value_name = "N", default_value_t = 20)]
    generations: usize,
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// The output folder: pareto.json, predictor.json, reference.json, the models, and the cache
    /// of steps A–B (reused when their settings match)
    #[arg(long, value_name = "DIR", default_value = "qplay-search")]
    out: PathBuf,
    /// Print the front (pareto.json's list) on stdout
    #[arg(long)]
    json: bool,
    /// Block choices distilled per block (the reference's and the smallest, then drawn at
    /// random; 300 is every distinct block)
    #[arg(long, value_name = "N", default_value_t = 24)]
    library: usize,
    /// Architectures finetuned to fit the accuracy predictor
    #[arg(long, value_name = "N", default_value_t = 24)]
    architectures: usize,
    /// Distillation epochs per block
    #[arg(long, value_name = "N", default_value_t = 4)]
    bkd_epochs: usize,
    /// Finetuning epochs per architecture of the predictor's library
    #[arg(long, value_name = "N", default_value_t = 4)]
    finetune_epochs: usize,
    /// Finetuning epochs of each chosen model (step D)
    #[arg(long, value_name = "N", default_value_t = 10)]
    final_epochs: usize,
    /// Points of the front finetuned and measured (step D); 0 searches only: pareto.json then
    /// lists the whole front, predicted
    #[arg(long, value_name = "N", default_value_t = 5)]
    final_models: usize,
    /// Width-scaled copies of the reference trained from scratch for --final-epochs, as
    /// baselines
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "0.25,0.5")]
    baselines: Vec<f64>,
    /// Train no baselines
    #[arg(long)]
    no_baselines: bool,
    /// Use this latency table (JSON, as written to DIR) instead of measuring one
    #[arg(long, value_name = "T.json")]
    latency_table: Option<PathBuf>,
    /// Timings per median latency
    #[arg(long, value_name = "N", default_value_t = 5)]
    timings: usize,
}

/// What steps A–B depend on: a cache is reused only when this matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheKey {
    space: Spec,
    seed: u64,
    library: usize,
    bkd_epochs: usize,
    architectures: usize,
    finetune_epochs: usize,
}

#[derive(Serialize, Deserialize)]
struct EntryFile {
    block: usize,
    choice: BlockChoice,
    train_nsr: Vec<f64>,
    nsr: f64,
    macs: u64,
    params: u64,
    onnx: String,
}

fn npy(bytes: &[u8]) -> Tensor {
    read_npy(bytes, 1 << 24).expect("the built-in digits data")
}

fn split(x: &Tensor, y: &[i64], from: usize, to: usize) -> CliResult<Split> {
    let per: usize = x.shape()[1..].iter().product();
    let mut shape = x.shape().to_vec();
    shape[0] = to - from;
    Ok(Split { x: Tensor::f32(shape, x.to_f32_vec()[from * per..to * per].to_vec())?, labels: y[from..to].to_vec() })
}

fn onnx(g: &Graph) -> CliResult<Vec<u8>> {
    Ok(qplay_core::onnx::export::fp32_model(g)?)
}

fn check(a: &Args) -> CliResult<()> {
    let usage = |m: &str| Err(CliError::Usage(m.into()));
    if a.population < 2 {
        return usage("--population must be at least 2");
    }
    if a.generations == 0 {
        return usage("--generations must be at least 1");
    }
    if a.library < 1 || a.architectures < 3 || a.bkd_epochs == 0 || a.finetune_epochs == 0 || a.final_epochs == 0 || a.timings == 0 {
        return usage("--library, --bkd-epochs, --finetune-epochs, --final-epochs and --timings must be at least 1, --architectures at least 3");
    }
    if a.baselines.iter().any(|w| !(*w > 0.0 && *w < 1.0)) {
        return usage("--baselines are widths between 0 and 1 (exclusive)");
    }
    Ok(())
}

pub fn run(a: &Args, g: &Global) -> CliResult<()> {
    check(a)?;
    let started = Instant::now();
    let spec = Spec::digits();
    let progress = Progress::new(g.quiet);
    let dir = &a.out;
    std::fs::create_dir_all(dir.join("library")).map_err(|e| failed_at(dir, e))?;
    let (reference, _) = qplay_core::load_model(REFERENCE, &Limits::default())?;
    let (x, y) = (npy(TRAIN_X), npy(TRAIN_Y).to_i64_vec());
    let n = x.shape()[0];
    let (fit, val, all) = (split(&x, &y, 0, FIT)?, split(&x, &y, FIT, n)?, split(&x, &y, 0, n)?);
    let test = Split { x: npy(TEST_X), labels: npy(TEST_Y).to_i64_vec() };
    let key = CacheKey { space: spec.clone(), seed: a.seed, library: a.library, bkd_epochs: a.bkd_epochs, architectures: a.architectures, finetune_epochs: a.finetune_epochs };

    // Step B: the block library and the predictor, or the cache of an earlier run.
    let (lib, records) = match load_cache(dir, &key, &spec)? {
        Some(c) => {
            eprintln!("steps A-B: reusing the block library and the predictor in {}", dir.display());
            c
        }
        None => build(a, &spec, &reference, &fit, &val, &key, dir, &progress)?,
    };
    let predictor = Predictor::fit(&records)?;
    write_file(&dir.join("predictor.json"), pretty(&json!({
        "kendall_tau": predictor.kendall_tau,
        "summed_nsr_tau": predictor.summed_nsr_tau,
        "n_architectures": predictor.n_architectures,
        "features": "ln(NSR) of each block, standardised",
        "lambda": predictor.ridge.lambda,
        "coefficients": predictor.ridge.coef,
        "architectures": records.iter().zip(&predictor.loo_predicted).map(|(r, p)| json!({"arch": labels(&r.choices), "block_nsr": r.block_nsr, "accuracy": r.accuracy, "loo_predicted": p, "macs": r.macs})).collect::<Vec<_>>(),
    }))?)?;
    eprintln!("predictor: leave-one-out Kendall τ {:.3} over {} architectures (summed block NSR: τ {:.3})", predictor.kendall_tau, predictor.n_architectures, predictor.summed_nsr_tau);

    // Step C: the cost of every architecture, then NSGA-II.
    let clock0 = Instant::now();
    let clock = || clock0.elapsed().as_secs_f64() * 1e3;
    let engine = match a.objective {
        ObjectiveArg::LatencyFp32 => Engine::Fp32,
        _ => Engine::Int8,
    };
    let images = split(&x, &y, FIT, (FIT + 32).min(n))?.x;
    let table = match &a.latency_table {
        Some(p) => {
            let t = LatencyTable::from_json(&read_text(p)?, &spec).map_err(|e| failed_at(p, e))?;
            if t.engine != engine {
                return Err(failed_at(p, format!("times the {:?} engine; --objective {:?} needs {engine:?}", t.engine, a.objective).to_lowercase()));
            }
            t
        }
        None => {
            let feats = bkd::teacher_features(&spec, &reference, &images)?;
            let total = lib.blocks.iter().map(Vec::len).sum::<usize>() + 2;
            let mut st = progress.stage(format!("latency table ({engine:?})").to_lowercase(), total, "parts");
            let t = LatencyTable::measure(&spec, &lib, &reference, &images, &feats, engine, &clock, a.timings, &mut |d, _| {
                st.set(d);
                true
            })?
            .ok_or_else(|| CliError::Failed("the latency measurement stopped".into()))?;
            st.finish();
            t
        }
    };
    write_file(&dir.join(format!("latency-{}.json", format!("{engine:?}").to_lowercase())), pretty(&table)?)?;
    let fixed_macs = {
        let (_, cost) = qplay_core::cost::analyze(&reference, &[], &Limits::default())?;
        let blocks: u64 = (0..spec.slots.len()).map(|b| lib.entry(b, &BlockChoice::largest()).map_or(0, |e| e.macs)).sum();
        cost.macs.saturating_sub(blocks)
    };
    let macs_of = |c: &[BlockChoice]| -> u64 { fixed_macs + c.iter().enumerate().map(|(b, c)| lib.entry(b, c).map_or(0, |e| e.macs)).sum::<u64>() };
    let cost = |c: &[BlockChoice]| -> qplay_core::Result<f64> {
        match a.objective {
            ObjectiveArg::Macs => Ok(macs_of(c) as f64),
            _ => table.predict(c),
        }
    };
    let cfg = nsga2::Config { population: a.population, generations: a.generations, seed: a.seed };
    let mut st = progress.stage("search (NSGA-II)", a.generations, "generations");
    let t0 = Instant::now();
    let report = evolve::search(&lib, &predictor, &cost, &cfg, &mut |p| {
        st.set(p.generation);
        true
    })?;
    st.note(format!("{} evaluations, {} front points", report.evaluations, report.front.len()));
    st.finish();
    let search_seconds = t0.elapsed().as_secs_f64();

    // Step D: finetune points spread along the front, and measure them whole.
    let measure = |g: &Graph| -> CliResult<f64> { Ok(Runner::new(g, engine, &images)?.median_ms(&split(&x, &y, FIT, FIT + 1)?.x, &clock, a.timings)?) };
    let teacher = run_model(&reference, &all.x)?;
    let ft = FinetuneConfig { epochs: a.final_epochs, seed: a.seed, ..Default::default() };
    let chosen = evolve::spread(&report.front, a.final_models);
    let mut st = progress.stage("finetune the front", chosen.len(), "models");
    let mut pareto = Vec::new();
    if a.final_models == 0 {
        for c in &report.front {
            pareto.push(json!({"arch": labels(&c.choices), "predicted_accuracy": c.predicted_accuracy, "accuracy": null, "latency_ms": null, "predicted_latency_ms": table.predict(&c.choices)?, "macs": macs_of(&c.choices), "onnx": null}));
        }
    }
    for (i, c) in chosen.iter().enumerate() {
        let g = arch::stitched(&spec, &lib, &reference, &c.choices)?;
        let g = arch::finetune(g, &all, &teacher, &ft, &mut |_, _| true)?.ok_or_else(|| CliError::Failed("finetuning stopped".into()))?;
        let file = format!("model_{i}.onnx");
        write_file(&dir.join(&file), onnx(&g)?)?;
        let accuracy = test.accuracy(&g)?;
        st.set(i + 1);
        st.note(format!("{:.2} % predicted, {accuracy:.2} % measured", c.predicted_accuracy));
        pareto.push(json!({"arch": labels(&c.choices), "predicted_accuracy": c.predicted_accuracy, "accuracy": accuracy, "latency_ms": measure(&g)?, "predicted_latency_ms": table.predict(&c.choices)?, "macs": macs_of(&c.choices), "onnx": file}));
    }
    st.finish();
    write_file(&dir.join("pareto.json"), pretty(&pareto)?)?;
    let (_, ref_cost) = qplay_core::cost::analyze(&reference, &[], &Limits::default())?;
    write_file(&dir.join("reference.onnx"), REFERENCE)?;
    let reference_json = json!({"accuracy": test.accuracy(&reference)?, "latency_ms": measure(&reference)?, "predicted_latency_ms": table.predict(&vec![BlockChoice::largest(); spec.slots.len()]).ok(), "macs": ref_cost.macs, "onnx": "reference.onnx"});
    write_file(&dir.join("reference.json"), pretty(&reference_json)?)?;

    // Baselines: the reference's shape at smaller widths, trained from scratch as long as step D.
    let mut baselines = Vec::new();
    for &w in a.baselines.iter().filter(|_| !a.no_baselines) {
        let scaled = |c: usize| ((c as f64 * w).round() as usize).max(4);
        let s = Spec { name: format!("digits x{w}"), stem_ch: scaled(spec.stem_ch), slots: spec.slots.iter().map(|sl| donna::Slot { in_ch: scaled(sl.in_ch), out_ch: scaled(sl.out_ch), stride: sl.stride }).collect(), ..spec.clone() };
        let g = donna::architecture(&s, &vec![BlockChoice::largest(); s.slots.len()], a.seed)?;
        let mut st = progress.stage(format!("baseline x{w}"), a.final_epochs, "epochs");
        let mut net = Net::new(g, Limits::default())?;
        let xd = all.x.to_f32_vec();
        let data = Data { x: &xd, sample_shape: &all.x.shape()[1..], labels: Some(&all.labels), teacher: Some(&teacher) };
        let tc = TrainConfig { epochs: a.final_epochs, lr: ft.lr, temperature: ft.temperature, seed: a.seed, ..Default::default() };
        train::train(&mut net, &data, &tc, None, &mut |p| {
            st.set(p.epoch + p.finished.is_some() as usize);
            true
        })?;
        st.finish();
        let g = net.into_graph();
        let (_, c) = qplay_core::cost::analyze(&g, &[], &Limits::default())?;
        let file = format!("baseline_x{w}.onnx");
        write_file(&dir.join(&file), onnx(&g)?)?;
        baselines.push(json!({"width": w, "accuracy": test.accuracy(&g)?, "latency_ms": measure(&g)?, "macs": c.macs, "onnx": file}));
    }
    write_file(&dir.join("baselines.json"), pretty(&baselines)?)?;

    eprintln!("search: {} architectures on the front in {search_seconds:.2} s; {} finetuned; everything in {:.0} s", report.front.len(), pareto.len(), started.elapsed().as_secs_f64());
    if a.json {
        out!("{}", serde_json::to_string(&pareto).map_err(|e| CliError::Failed(e.to_string()))?);
    } else {
        out!("reference: {:.2} %, {:.3} ms, {} MACs", reference_json["accuracy"].as_f64().unwrap_or(0.0), reference_json["latency_ms"].as_f64().unwrap_or(0.0), ref_cost.macs);
        for p in &pareto {
            out!("{}: {:.2} % (predicted {:.2} %), {:.3} ms, {} MACs, {}", p["onnx"].as_str().unwrap_or(""), p["accuracy"].as_f64().unwrap_or(0.0), p["predicted_accuracy"].as_f64().unwrap_or(0.0), p["latency_ms"].as_f64().unwrap_or(0.0), p["macs"], p["arch"]);
        }
    }
    Ok(())
}

fn pretty(v: &impl Serialize) -> CliResult<String> {
    Ok(serde_json::to_string_pretty(v).map_err(|e| CliError::Failed(e.to_string()))? + "\n")
}

fn labels(c: &[BlockChoice]) -> Vec<String> {
    c.iter().map(BlockChoice::label).collect()
}

fn run_model(g: &Graph, x: &Tensor) -> CliResult<Vec<f32>> {
    Ok(qplay_core::Executor::new(g.clone(), Limits::default())?.run(vec![x.clone()])?.remove(0).to_f32_vec())
}

/// Steps B: distil the library, finetune the architecture library, and write the cache.
#[allow(clippy::too_many_arguments)]
fn build(a: &Args, spec: &Spec, reference: &Graph, fit: &Split, val: &Split, key: &CacheKey, dir: &Path, progress: &Progress) -> CliResult<(Library, Vec<ArchRecord>)> {
    let choices = donna::sample_choices(spec, a.library, a.seed);
    let total: usize = choices.iter().map(Vec::len).sum();
    let cfg = BkdConfig { epochs: a.bkd_epochs, seed: a.seed, ..Default::default() };
    let mut st = progress.stage("block library (distillation)", total, "blocks");
    let lib = bkd::build_library(spec, reference, &fit.x, &val.x, &choices, &cfg, &mut |d, _, last| {
        st.set(d as usize);
        if let Some(e) = last {
            st.note(format!("block {} {}: NSR {:.3}", e.block, e.choice.label(), e.nsr));
        }
        true
    })?;
    st.finish();
    let mut entries = Vec::new();
    for e in lib.blocks.iter().flatten() {
        let file = format!("library/b{}_{}.onnx", e.block, e.choice.index().unwrap_or(0));
        write_file(&dir.join(&file), onnx(&e.graph)?)?;
        entries.push(EntryFile { block: e.block, choice: e.choice, train_nsr: e.train_nsr.clone(), nsr: e.nsr, macs: e.macs, params: e.params, onnx: file });
    }
    let archs = arch::sample_architectures(&lib, a.architectures, a.seed);
    let mut st = progress.stage("architecture library (finetuning)", archs.len(), "architectures");
    let ft = FinetuneConfig { epochs: a.finetune_epochs, seed: a.seed, ..Default::default() };
    let (records, _) = arch::build_arch_library(spec, &lib, reference, &archs, fit, val, &ft, &mut |d, _| {
        st.set(d as usize);
        true
    })?;
    st.finish();
    let cache = json!({"key": key, "blocks": entries, "architectures": records});
    write_file(&dir.join("library.json"), serde_json::to_string(&cache).map_err(|e| CliError::Failed(e.to_string()))? + "\n")?;
    Ok((lib, records))
}

/// The cached library and architecture records in `dir`, when their key matches.
fn load_cache(dir: &Path, key: &CacheKey, spec: &Spec) -> CliResult<Option<(Library, Vec<ArchRecord>)>> {
    let path = dir.join("library.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    #[derive(Deserialize)]
    struct Cache {
        key: CacheKey,
        blocks: Vec<EntryFile>,
        architectures: Vec<ArchRecord>,
    }
    let c: Cache = serde_json::from_str(&text).map_err(|e| failed_at(&path, format!("is not a search cache ({e}); remove it to rebuild")))?;
    if c.key != *key {
        return Ok(None);
    }
    let mut lib = Library { blocks: vec![Vec::new(); spec.slots.len()], complete: true };
    for e in c.blocks {
        let file = dir.join(&e.onnx);
        let bytes = std::fs::read(&file).map_err(|err| failed_at(&file, err))?;
        let (graph, _) = qplay_core::load_model(&bytes, &Limits::default()).map_err(|err| failed_at(&file, err))?;
        let slot = lib.blocks.get_mut(e.block).ok_or_else(|| failed_at(&path, format!("names block {}", e.block)))?;
        slot.push(BlockEntry { block: e.block, choice: e.choice, train_nsr: e.train_nsr, nsr: e.nsr, macs: e.macs, params: e.params, graph });
    }
    Ok(Some((lib, c.architectures)))
}
