//! What the subcommands share: errors, resource limits, reading files and data sets, and the model
//! runner (FP32, simulated or integer).

use clap::ValueEnum;
use qplay_core::exec::int8::Int8Executor;
use qplay_core::npy::read_npy;
use qplay_core::passes::bn_fold::OutputStats;
use qplay_core::passes::cle::CleReport;
use qplay_core::quant::{Mode, QuantSim, QuantSimConfig};
use qplay_core::{load_model, Executor, Graph, Limits, ModelInfo, Tensor};
use std::path::{Path, PathBuf};

/// `println!` that ends the process quietly when stdout is closed (`qplay inspect m | head -1`)
/// instead of panicking, and with a one-line error on any other write failure.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::common::emit(format_args!($($arg)*))
    };
}

pub fn emit(line: std::fmt::Arguments) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("qplay: error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// A usage error (exit code 2: the command line asks for something that cannot be done) or a
/// failure (exit code 1: a file, the model or the computation went wrong).
pub enum CliError {
    Usage(String),
    Failed(String),
}

impl From<qplay_core::Error> for CliError {
    fn from(e: qplay_core::Error) -> Self {
        CliError::Failed(e.to_string())
    }
}

pub type CliResult<T> = Result<T, CliError>;

pub fn failed_at(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Failed(format!("{}: {e}", path.display()))
}

/// Options every subcommand takes: how much it may read and allocate, and whether it reports
/// progress.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Print no progress on stderr (errors are still printed)
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Largest model file read, in MiB; a larger file is refused before it is read
    #[arg(long, global = true, value_name = "MB", default_value_t = 256)]
    pub max_model_mb: u64,
    /// Most elements in any one tensor, read or computed
    #[arg(long, global = true, value_name = "N", default_value_t = 64 << 20)]
    pub max_tensor_elements: usize,
    /// Most memory, in MiB, for the model's weights and constants, and for each data set read
    /// (--calib, --data, --input)
    #[arg(long, global = true, value_name = "MB", default_value_t = 512)]
    pub max_memory_mb: u64,
}

impl Global {
    pub fn limits(&self) -> Limits {
        let mib = |m: u64| usize::try_from(m.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        Limits { max_file_bytes: mib(self.max_model_mb), max_tensor_elements: self.max_tensor_elements, max_total_bytes: mib(self.max_memory_mb), ..Limits::default() }
    }

    /// Reads a model file (checking its size before reading it) and loads it.
    pub fn load(&self, path: &Path) -> CliResult<(Graph, ModelInfo)> {
        let limits = self.limits();
        let bytes = read_file(path, limits.max_file_bytes, "--max-model-mb")?;
        let (g, info) = load_model(&bytes, &limits).map_err(|e| failed_at(path, e))?;
        // Shapes that contradict each other fail here, naming the node, rather than at run time
        // (a model with dynamic dims other than the batch is checked when it runs).
        if let Ok(shapes) = qplay_core::cost::input_shapes(&g, &[]) {
            qplay_core::cost::infer_shapes(&g, &shapes, &limits).map_err(|e| failed_at(path, e))?;
        }
        Ok((g, info))
    }

    /// One .npy tensor as stored, within the memory and tensor limits.
    pub fn read_npy(&self, path: &Path) -> CliResult<Tensor> {
        let limits = self.limits();
        let bytes = read_file(path, limits.max_total_bytes, "--max-memory-mb")?;
        read_npy(&bytes, limits.max_tensor_elements).map_err(|e| failed_at(path, e))
    }

    /// One .npy tensor as float32.
    pub fn read_tensor(&self, path: &Path) -> CliResult<Tensor> {
        let t = self.read_npy(path)?;
        Ok(match t.as_f32() {
            Some(_) => t,
            None => Tensor::f32(t.shape().to_vec(), t.to_f32_vec())?,
        })
    }
}

/// Reads a whole file after checking from its metadata that it is at most `limit` bytes (`flag`
/// names the limit in the error).
pub fn read_file(path: &Path, limit: usize, flag: &str) -> CliResult<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| failed_at(path, e))?;
    if meta.len() > limit as u64 {
        return Err(failed_at(path, format!("{} bytes, over the limit of {limit} bytes ({flag})", meta.len())));
    }
    std::fs::read(path).map_err(|e| failed_at(path, e))
}

/// A small text file (encodings, preprocessing settings, labels): at most 64 MiB.
pub fn read_text(path: &Path) -> CliResult<String> {
    Ok(String::from_utf8_lossy(&read_file(path, 64 << 20, "text files")?).into_owned())
}

pub fn write_file(path: &Path, bytes: impl AsRef<[u8]>) -> CliResult<()> {
    std::fs::write(path, bytes).map_err(|e| failed_at(path, e))
}

/// Quantizer placement and arithmetic: qplay's own, or AIMET 2.42's exactly.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    Qplay,
    Aimet,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Qplay => Mode::Qplay,
            ModeArg::Aimet => Mode::Aimet,
        }
    }
}

/// The FP32 transformation the encodings of `run`, `eval` and `bench` refer to.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Transform {
    /// BN folded
    #[default]
    None,
    /// BN folded and cross-layer equalized
    Dfq,
}

/// Options of the commands that run a model: FP32 by default, quantized with `--encodings`.
#[derive(clap::Args, Debug, Clone)]
pub struct Engine {
    /// Run quantized with these encodings (from `qplay quantize --encodings`)
    #[arg(long, value_name = "E.json")]
    pub encodings: Option<PathBuf>,
    /// Run the integer engine instead of the float simulation
    #[arg(long, requires = "encodings")]
    pub int8: bool,
    /// The transformation the encodings were computed on (for AdaRound, run the model written by
    /// `quantize --fp32-out` instead)
    #[arg(long, value_enum, value_name = "RECIPE", default_value_t = Transform::None)]
    pub recipe: Transform,
}

/// The FP32 executor, the simulated quantized model (`--encodings`), or the integer engine
/// (`--encodings --int8`).
pub enum Model {
    Fp32(Executor),
    Sim(qplay_core::quant::sim::SimExecutor),
    Int8(Box<Int8Executor>),
}

impl Model {
    pub fn new(g: Graph, e: &Engine, global: &Global) -> CliResult<Model> {
        Ok(match &e.encodings {
            None => Model::Fp32(Executor::new(g, global.limits())?),
            Some(path) => {
                // The encodings refer to the transformed model: redo the recipe's transformation.
                let text = read_text(path)?;
                let config = encodings_config(&text);
                let g = transform(g, e.recipe, config.mode).0;
                let mut sim = QuantSim::new(g, config)?;
                sim.import_aimet_json(&text).map_err(|err| failed_at(path, err))?;
                if e.int8 {
                    Model::Int8(Box::new(Int8Executor::new(&sim)?))
                } else {
                    Model::Sim(sim.executor()?)
                }
            }
        })
    }

    pub fn run(&mut self, x: Tensor) -> CliResult<Vec<Tensor>> {
        Ok(match self {
            Model::Fp32(e) => e.run(vec![x])?,
            Model::Sim(e) => e.run(vec![x])?,
            Model::Int8(e) => e.run(vec![x])?,
        })
    }
}

/// Quantizer placement for an imported file: per-channel when any parameter has several
/// encodings; qplay's placement when the file says so (files from AIMET use AIMET's).
pub fn encodings_config(text: &str) -> QuantSimConfig {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let per_channel = v["quantizer_args"]["per_channel_quantization"].as_bool().unwrap_or_else(|| {
        v["param_encodings"].as_array().is_some_and(|l| l.iter().any(|e| e["scale"].as_array().is_some_and(|s| s.len() > 1)))
            || v["param_encodings"].as_object().is_some_and(|m| m.values().any(|e| e.as_array().is_some_and(|l| l.len() > 1)))
    });
    let mode = if v["quantizer_args"]["qplay_mode"] == "qplay" { Mode::Qplay } else { Mode::Aimet };
    let bits = |k: &str| v["quantizer_args"][k].as_u64().map_or(8, |b| b as u32);
    QuantSimConfig { weight_bits: bits("param_bitwidth"), act_bits: bits("activation_bitwidth"), per_channel, mode, ..Default::default() }
}

/// What a recipe's FP32 transformation did, for the report.
pub struct Transformed {
    pub fold: serde_json::Value,
    pub cle: Option<CleReport>,
    /// Per-channel output statistics of the layers whose BN was folded (for analytical bias
    /// correction).
    pub stats: Vec<OutputStats>,
}

/// The FP32 transformation of a recipe: BN folding, plus cross-layer equalization for dfq
/// (function-preserving in qplay mode, AIMET's `equalize_model` in AIMET mode).
pub fn transform(g: Graph, recipe: Transform, mode: Mode) -> (Graph, Transformed) {
    use qplay_core::passes::cle::{equalize_with, CleMode};
    match recipe {
        Transform::None => {
            let (g, fold) = qplay_core::passes::bn_fold::fold_batch_norms(g);
            let stats = fold.output_stats();
            (g, Transformed { fold: serde_json::json!({"folded": fold.folded.len(), "pairs": fold.folded, "unfolded": fold.unfolded}), cle: None, stats })
        }
        Transform::Dfq => {
            let (g, cle) = equalize_with(g, if mode == Mode::Aimet { CleMode::Aimet } else { CleMode::Preserving });
            (g, equalized(cle))
        }
    }
}

/// The report of an equalization (its BN folding included).
pub fn equalized(cle: CleReport) -> Transformed {
    Transformed { fold: serde_json::json!({"folded": cle.bn_folded}), stats: cle.output_stats.clone(), cle: Some(cle) }
}

pub fn top_k(v: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<(usize, f32)> = v.iter().copied().enumerate().collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    idx.truncate(k);
    idx
}
