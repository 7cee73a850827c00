//! `qplay search`: DONNA's hardware-aware architecture search on a built-in space. Step A is
//! the shipped reference; step B distils the block library and fits the accuracy predictor on
//! an architecture library; step C runs NSGA-II on predicted accuracy and latency measured on
//! this machine (or MACs); step D finetunes points of the front from their distilled weights and
//! measures them. Steps A–B are cached in the output folder, so another objective or search
//! setting re-runs only C and D.

use crate::common::{failed_at, read_text, write_file, CliError, CliResult, Global};
use crate::out;
use crate::progress::{Progress, Stage};
use qplay_core::npy::read_npy;
use qplay_core::search::donna::arch::{ArchRecord, Predictor};
use qplay_core::search::donna::bkd::{self, Library};
use qplay_core::search::donna::evolve;
use qplay_core::search::donna::latency::{Engine, LatencyTable};
use qplay_core::search::donna::pipeline::{self, Built, Digits, Settings};
use qplay_core::search::donna::{BlockChoice, Spec};
use qplay_core::search::nsga2;
use qplay_core::{Graph, Limits, Tensor};
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

const REFERENCE: &[u8] = include_bytes!("../../../assets/models/donna_digits_reference.onnx");
const TRAIN_X: &[u8] = include_bytes!("../../../assets/data/digits_train_x.npy");
const TRAIN_Y: &[u8] = include_bytes!("../../../assets/data/digits_train_y.npy");
const TEST_X: &[u8] = include_bytes!("../../../assets/data/digits_test_x.npy");
const TEST_Y: &[u8] = include_bytes!("../../../assets/data/digits_test_y.npy");

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
    /// of steps A–B (library.bin, reused when their settings match)
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

/// Step B's cache in the output folder (see `Built::pack`).
const CACHE: &str = "library.bin";

fn npy(bytes: &[u8]) -> Tensor {
    read_npy(bytes, 1 << 24).expect("the built-in digits data")
}

fn onnx(g: &Graph) -> CliResult<Vec<u8>> {
    Ok(qplay_core::onnx::export::fp32_model(g)?)
}

/// The pipeline's stages as progress lines: a stage starts when its index first shows.
struct Stages<'a> {
    progress: &'a Progress,
    current: Option<(usize, Stage)>,
}

const STAGES: [(&str, &str); 5] = [("block library (distillation)", "blocks"), ("architecture library (finetuning)", "architectures"), ("latency table", "parts"), ("finetune the front", "models"), ("baseline", "epochs")];

impl Stages<'_> {
    fn update(&mut self, stage: usize, done: f64, total: usize, note: Option<String>) -> bool {
        if self.current.as_ref().is_none_or(|(i, _)| *i != stage) {
            self.finish();
            let (name, unit) = STAGES[stage.min(4)];
            self.current = Some((stage, self.progress.stage(name, total, unit)));
        }
        if let Some((_, st)) = self.current.as_mut() {
            st.set(done as usize);
            if let Some(n) = note {
                st.note(n);
            }
        }
        true
    }
    fn finish(&mut self) {
        if let Some((_, st)) = self.current.take() {
            st.finish();
        }
    }
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
    let mut stages = Stages { progress: &progress, current: None };
    let dir = &a.out;
    std::fs::create_dir_all(dir).map_err(|e| failed_at(dir, e))?;
    let (reference, _) = qplay_core::load_model(REFERENCE, &Limits::default())?;
    let d = Digits::new(npy(TRAIN_X), npy(TRAIN_Y).to_i64_vec(), npy(TEST_X), npy(TEST_Y).to_i64_vec())?;
    let settings = Settings { library: a.library, architectures: a.architectures, bkd_epochs: a.bkd_epochs, finetune_epochs: a.finetune_epochs, final_epochs: a.final_epochs, seed: a.seed };
    let stopped = || CliError::Failed("the search stopped".into());

    // Step B: the block library and the predictor, or the cache of an earlier run.
    let (lib, records) = match load_cache(dir, &settings, &spec)? {
        Some(c) => {
            eprintln!("steps A-B: reusing the block library and the predictor in {}", dir.display());
            c
        }
        None => {
            let built = pipeline::build(&spec, &reference, &d, &settings, &mut |i, done, total, note| stages.update(i, done, total, note))?.ok_or_else(stopped)?;
            stages.finish();
            write_file(&dir.join(CACHE), built.pack(&spec, &settings)?)?;
            (built.lib, built.records)
        }
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
    let table = match &a.latency_table {
        Some(p) => {
            let t = LatencyTable::from_json(&read_text(p)?, &spec).map_err(|e| failed_at(p, e))?;
            if t.engine != engine {
                return Err(failed_at(p, format!("times the {:?} engine; --objective {:?} needs {engine:?}", t.engine, a.objective).to_lowercase()));
            }
            t
        }
        None => {
            let feats = bkd::teacher_features(&spec, &reference, &d.probe)?;
            let t = LatencyTable::measure(&spec, &lib, &reference, &d.probe, &feats, engine, &clock, a.timings, &mut |done, total| stages.update(2, done as f64, total, None))?.ok_or_else(stopped)?;
            stages.finish();
            t
        }
    };
    write_file(&dir.join(format!("latency-{}.json", format!("{engine:?}").to_lowercase())), pretty(&table)?)?;
    let macs_of = pipeline::macs(&spec, &reference, &lib)?;
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
    let chosen = evolve::spread(&report.front, a.final_models);
    let teacher = pipeline::teacher_logits(&reference, &d)?;
    let models = pipeline::finetune_front(&spec, &reference, &lib, &chosen, &d, &teacher, &settings, engine, &clock, a.timings, &mut |i, done, total, note| stages.update(i, done, total, note))?.ok_or_else(stopped)?;
    stages.finish();
    let mut pareto = Vec::new();
    for (i, (c, m)) in chosen.iter().zip(&models).enumerate() {
        let file = format!("model_{i}.onnx");
        write_file(&dir.join(&file), onnx(&m.graph)?)?;
        pareto.push(json!({"arch": m.arch, "predicted_accuracy": c.predicted_accuracy, "accuracy": m.accuracy, "latency_ms": m.latency_ms, "predicted_latency_ms": table.predict(&c.choices)?, "macs": m.macs, "onnx": file}));
    }
    if a.final_models == 0 {
        for c in &report.front {
            pareto.push(json!({"arch": labels(&c.choices), "predicted_accuracy": c.predicted_accuracy, "accuracy": null, "latency_ms": null, "predicted_latency_ms": table.predict(&c.choices)?, "macs": macs_of(&c.choices), "onnx": null}));
        }
    }
    write_file(&dir.join("pareto.json"), pretty(&pareto)?)?;
    let r = pipeline::reference(&reference, &d, engine, &clock, a.timings)?;
    write_file(&dir.join("reference.onnx"), REFERENCE)?;
    let reference_json = json!({"accuracy": r.accuracy, "latency_ms": r.latency_ms, "predicted_latency_ms": table.predict(&vec![BlockChoice::largest(); spec.slots.len()]).ok(), "macs": r.macs, "onnx": "reference.onnx"});
    write_file(&dir.join("reference.json"), pretty(&reference_json)?)?;

    // Baselines: the reference's shape at smaller widths, trained from scratch as long as step D.
    let mut baselines = Vec::new();
    for &w in a.baselines.iter().filter(|_| !a.no_baselines) {
        let m = pipeline::baseline(&spec, w, &d, &teacher, &settings, engine, &clock, a.timings, &mut |i, done, total, note| stages.update(i, done, total, note))?.ok_or_else(stopped)?;
        stages.finish();
        let file = format!("baseline_x{w}.onnx");
        write_file(&dir.join(&file), onnx(&m.graph)?)?;
        baselines.push(json!({"width": w, "accuracy": m.accuracy, "latency_ms": m.latency_ms, "macs": m.macs, "onnx": file}));
    }
    write_file(&dir.join("baselines.json"), pretty(&baselines)?)?;

    eprintln!("search: {} architectures on the front in {search_seconds:.2} s; {} finetuned; everything in {:.0} s", report.front.len(), models.len(), started.elapsed().as_secs_f64());
    if a.json {
        out!("{}", serde_json::to_string(&pareto).map_err(|e| CliError::Failed(e.to_string()))?);
    } else {
        out!("reference: {:.2} %, {:.3} ms, {} MACs", r.accuracy, r.latency_ms, r.macs);
        for p in &pareto {
            out!("{}: {:.2} % (predicted {:.2} %), {:.3} ms, {} MACs, {}", p["onnx"].as_str().unwrap_or("-"), p["accuracy"].as_f64().unwrap_or(f64::NAN), p["predicted_accuracy"].as_f64().unwrap_or(0.0), p["latency_ms"].as_f64().unwrap_or(f64::NAN), p["macs"], p["arch"]);
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

/// The cache of step B in `dir`, when it was built for these settings.
fn load_cache(dir: &Path, settings: &Settings, spec: &Spec) -> CliResult<Option<(Library, Vec<ArchRecord>)>> {
    let path = dir.join(CACHE);
    let Ok(bytes) = std::fs::read(&path) else { return Ok(None) };
    let built = Built::unpack(&bytes, spec, settings).map_err(|e| failed_at(&path, format!("{e}; remove it to rebuild")))?;
    Ok(built.map(|b| (b.lib, b.records)))
}
