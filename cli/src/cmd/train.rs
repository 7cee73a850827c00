//! `qplay train`: fine-tuning (with labels, or distilled from a teacher model) and
//! quantization-aware training with learned ranges; writes the trained model and encodings.

use crate::cmd::compress::simulated_score;
use crate::common::{encodings_config, failed_at, read_text, write_file, CliError, CliResult, Global, ModeArg};
use crate::data::{self, Settings};
use crate::out;
use crate::progress::{Progress, Stage};
use clap::ValueEnum;
use qplay_core::eval::{Evaluator, Target};
use qplay_core::quant::{QuantSim, QuantSimConfig};
use qplay_core::train::{self, qat::qat_net, Data, Method, Net, Schedule, Stop, TrainConfig};
use qplay_core::{Executor, Tensor};
use std::path::PathBuf;

/// Train a model: fine-tune it (labels, or distillation from a teacher), or quantization-aware
/// training (--qat) through the quantization simulation, ranges learned
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model (with --init-encodings: the model those encodings refer to)
    #[arg(value_name = "MODEL.onnx")]
    model: PathBuf,
    /// Training samples: one .npy with N samples along axis 0, a directory of .npy files, or a
    /// directory of photos (with --preprocess; labels from folders or file names)
    #[arg(long, value_name = "X.npy|DIR")]
    data: PathBuf,
    /// How photos become the model's input (the preprocessing JSON)
    #[arg(long, value_name = "MODEL.json")]
    preprocess: Option<PathBuf>,
    /// Class indices of --data, one per sample (cross-entropy)
    #[arg(long, value_name = "Y.npy")]
    labels: Option<PathBuf>,
    /// Distil from this model's outputs (soft targets at --temperature); labels are then optional
    #[arg(long, value_name = "TEACHER.onnx")]
    teacher: Option<PathBuf>,
    /// Distillation temperature (with --distill kl)
    #[arg(long, value_name = "T", default_value_t = 4.0)]
    temperature: f32,
    /// How the teacher's outputs are matched: KL divergence of the softened distributions, or
    /// mean squared error of the outputs (what the output SQNR measures)
    #[arg(long, value_enum, default_value_t = DistillArg::Kl)]
    distill: DistillArg,
    #[arg(long, value_name = "N", default_value_t = 10)]
    epochs: usize,
    #[arg(long, value_name = "N", default_value_t = 32)]
    batch: usize,
    /// Run each batch in pieces of N samples, gradients summed (less memory; a model declaring a
    /// fixed batch size always runs in pieces of that size)
    #[arg(long, value_name = "N")]
    micro_batch: Option<usize>,
    /// Base learning rate
    #[arg(long, value_name = "LR", default_value_t = 1e-3)]
    lr: f32,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Adam)]
    optimizer: OptimizerArg,
    /// SGD's momentum
    #[arg(long, value_name = "M", default_value_t = 0.9)]
    momentum: f32,
    /// L2 weight decay on the weights (not biases, BatchNorm or ranges)
    #[arg(long, value_name = "W", default_value_t = 0.0)]
    weight_decay: f32,
    /// How the learning rate moves over the run
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    schedule: ScheduleArg,
    /// Seed of the shuffling
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Keep BatchNormalization's running statistics fixed while fine-tuning
    #[arg(long)]
    freeze_bn: bool,
    /// Quantization-aware training (BatchNorm folded first, unless --bn keep)
    #[arg(long)]
    qat: bool,
    /// QAT: fold BatchNormalization into the layers before training, or keep it (batch
    /// statistics while training, running statistics re-estimated on the data afterwards, then
    /// folded into the weights and their per-channel scales; needs --per-channel)
    #[arg(long, value_enum, default_value_t = BnArg::Fold, requires = "qat")]
    bn: BnArg,
    #[arg(long, value_name = "BITS", default_value_t = 8, requires = "qat")]
    weight_bits: u32,
    #[arg(long, value_name = "BITS", default_value_t = 8, requires = "qat")]
    act_bits: u32,
    /// One weight encoding per output channel
    #[arg(long, requires = "qat")]
    per_channel: bool,
    /// Quantizer placement and arithmetic
    #[arg(long, value_enum, default_value_t = ModeArg::Qplay, requires = "qat")]
    mode: ModeArg,
    /// Start from these encodings (e.g. `quantize --recipe dfq --encodings`; MODEL is then the
    /// model they refer to, as `quantize --fp32-out` writes it) instead of min-max calibration
    #[arg(long, value_name = "E0.json", requires = "qat")]
    init_encodings: Option<PathBuf>,
    /// Keep the quantizers' ranges fixed (train the weights only)
    #[arg(long, requires = "qat")]
    fixed_ranges: bool,
    /// Training samples the min-max calibration sees
    #[arg(long, value_name = "N", default_value_t = 256, requires = "qat")]
    calib_samples: usize,
    /// Score every epoch and the result on these samples (with --eval-labels or
    /// --eval-reference)
    #[arg(long, value_name = "X.npy|DIR")]
    eval_data: Option<PathBuf>,
    /// Class indices of --eval-data: the score is accuracy in %
    #[arg(long, value_name = "Y.npy", requires = "eval_data", conflicts_with = "eval_reference")]
    eval_labels: Option<PathBuf>,
    /// Reference outputs of --eval-data: the score is pooled SQNR in dB
    #[arg(long, value_name = "R.npy", requires = "eval_data")]
    eval_reference: Option<PathBuf>,
    /// Write the trained FP32 model (with --qat: BatchNorm folded, the model the encodings refer to)
    #[arg(long, value_name = "TRAINED.onnx")]
    out: Option<PathBuf>,
    /// With --qat: write the learned encodings (AIMET's JSON format)
    #[arg(long, value_name = "E.json", requires = "qat")]
    encodings: Option<PathBuf>,
    /// With --qat: write the quantized model as QDQ ONNX
    #[arg(long, value_name = "QDQ.onnx", requires = "qat")]
    qdq_out: Option<PathBuf>,
    /// Write the report: settings and every epoch's loss, learning rate and score
    #[arg(long, value_name = "REPORT.json")]
    report: Option<PathBuf>,
    /// Print {"epochs", "final_loss", "score", "score_before", "seconds"} as one line
    #[arg(long)]
    json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BnArg {
    Fold,
    Keep,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DistillArg {
    Kl,
    Mse,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OptimizerArg {
    Adam,
    Sgd,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ScheduleArg {
    /// Half a cosine from the base rate to 0
    Cosine,
    /// The base rate divided by 10 after each third of the epochs
    Step,
    Constant,
}

/// The training set, stacked: samples, their shape, labels.
struct Stacked {
    x: Vec<f32>,
    shape: Vec<usize>,
    batches: Vec<Tensor>,
    labels: Option<Vec<i64>>,
}

fn stack(set: data::DataSet) -> CliResult<Stacked> {
    let first = set.batches.first().ok_or_else(|| CliError::Failed("the training set is empty".into()))?;
    let shape = first.shape()[1..].to_vec();
    let x = set.batches.iter().flat_map(|b| b.to_f32_vec()).collect();
    Ok(Stacked { x, shape, batches: set.batches, labels: set.labels })
}

/// The first output of `exec` on every batch, stacked, with the per-sample output shape.
fn outputs(run: &mut dyn FnMut(Tensor) -> qplay_core::Result<Vec<Tensor>>, batches: &[Tensor]) -> CliResult<(Vec<f32>, Vec<usize>)> {
    let mut y = Vec::new();
    let mut shape = Vec::new();
    for b in batches {
        let out = run(b.clone())?;
        let t = out.into_iter().next().ok_or_else(|| CliError::Failed("the model has no output".into()))?;
        shape = t.shape().get(1..).unwrap_or(&[]).to_vec();
        y.extend(t.to_f32_vec());
    }
    Ok((y, shape))
}

pub fn run(a: &Args, global: &Global) -> CliResult<()> {
    let (g, _) = global.load(&a.model)?;
    let limits = global.limits();
    let settings = a.preprocess.as_deref().map(Settings::read).transpose()?;
    if a.epochs == 0 || a.batch == 0 {
        return Err(CliError::Usage("--epochs and --batch must be at least 1".into()));
    }
    if !(a.lr > 0.0 && a.lr.is_finite()) {
        return Err(CliError::Usage(format!("--lr {} is not a positive number", a.lr)));
    }
    let set = stack(data::load(global, &g, &a.data, settings.as_ref(), 64)?)?;
    let n = set.x.len() / set.shape.iter().product::<usize>().max(1);
    // The model's own outputs on the data: the class count labels are checked against, and the
    // shape a teacher's outputs must have.
    let (_, out_shape) = outputs(&mut |x| Executor::new(g.clone(), limits.clone())?.run(vec![x]), &set.batches[..1])?;
    let labels = match (&a.labels, set.labels) {
        (Some(p), _) => {
            let l = global.read_npy(p)?.to_i64_vec();
            if l.len() != n {
                return Err(failed_at(p, format!("{} labels for {n} training samples", l.len())));
            }
            let k = out_shape.first().copied().unwrap_or(0);
            if let Some(bad) = l.iter().find(|&&c| c < 0 || c as usize >= k) {
                return Err(failed_at(p, format!("label {bad} is outside the model's {k} classes (0 to {})", k.saturating_sub(1))));
            }
            Some(l)
        }
        (None, l) => l,
    };
    let teacher = match &a.teacher {
        None => None,
        Some(p) => {
            let (tg, _) = global.load(p)?;
            let mut exec = Executor::new(tg, limits.clone()).map_err(|e| failed_at(p, e))?;
            let (y, shape) = outputs(&mut |x| exec.run(vec![x]), &set.batches).map_err(|e| match e {
                CliError::Failed(m) => failed_at(p, m),
                other => other,
            })?;
            if shape != out_shape {
                return Err(failed_at(p, format!("the teacher's output per sample is {shape:?}, the model's is {out_shape:?}")));
            }
            Some(y)
        }
    };
    if labels.is_none() && teacher.is_none() {
        return Err(CliError::Usage("training needs --labels Y.npy (or photos in class folders) or --teacher TEACHER.onnx".into()));
    }
    let eval = match &a.eval_data {
        None => None,
        Some(p) => {
            let es = data::load(global, &g, p, settings.as_ref(), 64)?;
            let target = match (&a.eval_labels, &a.eval_reference) {
                (Some(l), _) => Target::Labels(global.read_npy(l)?.to_i64_vec()),
                (None, Some(r)) => Target::Reference(global.read_tensor(r)?.to_f32_vec()),
                (None, None) => Target::Labels(es.labels.ok_or_else(|| CliError::Usage("--eval-data needs --eval-labels Y.npy or --eval-reference R.npy".into()))?),
            };
            Some(Evaluator { batches: es.batches, target, limits: limits.clone() })
        }
    };
    let progress = Progress::new(global.quiet);
    // The model to train, and for QAT the simulation's configuration.
    let (mut net, config) = if a.qat {
        let (config, init) = match &a.init_encodings {
            Some(p) => {
                let text = read_text(p)?;
                (encodings_config(&text), Some(text))
            }
            None => (QuantSimConfig { mode: a.mode.into(), weight_bits: a.weight_bits, act_bits: a.act_bits, per_channel: a.per_channel, ..Default::default() }, None),
        };
        // The first --calib-samples samples, in the batches they were loaded in.
        let mut calib = Vec::new();
        let mut taken = 0;
        for b in &set.batches {
            if taken >= a.calib_samples.max(1) {
                break;
            }
            taken += b.shape()[0];
            calib.push(b.clone());
        }
        let mut stage = progress.stage("calibrate", 1, "passes");
        let mut net = qat_net(g, &config, &calib, init.as_deref(), !a.fixed_ranges, a.bn == BnArg::Keep, limits.clone()).map_err(|e| match &a.init_encodings {
            Some(p) => failed_at(p, e),
            None => e.into(),
        })?;
        stage.set(1);
        stage.finish();
        net.freeze_bn = a.freeze_bn;
        (net, Some(config))
    } else {
        let mut net = Net::new(g, limits.clone()).map_err(|e| failed_at(&a.model, e))?;
        net.freeze_bn = a.freeze_bn;
        (net, None)
    };
    let score_of = |net: &Net| -> CliResult<Option<f64>> {
        let Some(ev) = &eval else { return Ok(None) };
        Ok(Some(match (&net.quant, &config) {
            (Some(q), Some(c)) => simulated_score(&q.to_sim(net.graph().clone(), c.clone())?, ev)?,
            _ => ev.score(net.graph())?,
        }))
    };
    let before = score_of(&net)?;
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        method: match a.optimizer {
            OptimizerArg::Adam => Method::adam(),
            OptimizerArg::Sgd => Method::Sgd { momentum: a.momentum },
        },
        weight_decay: a.weight_decay,
        schedule: match a.schedule {
            ScheduleArg::Cosine => Schedule::Cosine,
            ScheduleArg::Step => Schedule::Step { every: a.epochs.div_ceil(3), gamma: 0.1 },
            ScheduleArg::Constant => Schedule::Constant,
        },
        seed: a.seed,
        temperature: a.temperature,
        distill: match a.distill {
            DistillArg::Kl => train::Distill::Kl,
            DistillArg::Mse => train::Distill::Mse,
        },
        micro_batch: a.micro_batch,
    };
    let data = Data { x: &set.x, sample_shape: &set.shape, labels: labels.as_deref(), teacher: teacher.as_deref() };
    let mut stage: Option<(usize, Stage)> = None;
    let mut epoch_lines = Vec::new();
    let report = train::train(&mut net, &data, &cfg, eval.as_ref(), &mut |p| {
        if stage.as_ref().map(|s| s.0) != Some(p.epoch) {
            stage = Some((p.epoch, progress.stage(format!("epoch {}/{}", p.epoch + 1, p.epochs), p.steps, "batches")));
        }
        if let Some((_, s)) = stage.as_mut() {
            s.set(p.step);
            s.note(match p.finished.as_ref().and_then(|e| e.score) {
                Some(score) => format!("loss {:.4}, score {score:.2}", p.loss),
                None => format!("loss {:.4}", p.loss),
            });
        }
        if p.finished.is_some() {
            if let Some((_, s)) = stage.take() {
                s.finish();
            }
        }
        true
    })?;
    drop(stage);
    if a.qat && a.bn == BnArg::Keep {
        let mut stage = progress.stage("re-estimate BatchNorm", 1, "passes");
        train::reestimate_bn(&mut net, &data, a.batch)?;
        stage.set(1);
        stage.finish();
    }
    for e in &report.epochs {
        epoch_lines.push(match e.score {
            Some(s) => format!("epoch {}: loss {:.5}, lr {:.2e}, score {s:.2}", e.epoch + 1, e.loss, e.lr),
            None => format!("epoch {}: loss {:.5}, lr {:.2e}", e.epoch + 1, e.loss, e.lr),
        });
    }
    let after = score_of(&net)?;
    let sim: Option<QuantSim> = match (&net.quant, &config) {
        (Some(q), Some(c)) => Some(q.to_sim(net.graph().clone(), c.clone())?),
        _ => None,
    };
    if let Some(p) = &a.out {
        write_file(p, qplay_core::onnx::export::fp32_model(net.graph())?)?;
    }
    if let (Some(p), Some(sim)) = (&a.encodings, &sim) {
        write_file(p, serde_json::to_string_pretty(&sim.to_aimet_json()).unwrap_or_default())?;
    }
    if let (Some(p), Some(sim)) = (&a.qdq_out, &sim) {
        write_file(p, qplay_core::onnx::export::qdq_model(sim)?)?;
    }
    if let Some(p) = &a.report {
        let j = serde_json::json!({
            "model": a.model.display().to_string(),
            "qat": a.qat,
            "config": config.as_ref().map(|c| serde_json::json!({"weight_bits": c.weight_bits, "act_bits": c.act_bits, "per_channel": c.per_channel, "mode": format!("{:?}", c.mode)})),
            "samples": n,
            "score_before": before,
            "score": after,
            "train": report,
        });
        write_file(p, serde_json::to_string_pretty(&j).unwrap_or_default())?;
    }
    if let Stop::Diverged { epoch, step, loss } = report.stop {
        let kept = if epoch == 0 { "the starting weights".to_string() } else { format!("the weights after epoch {epoch}") };
        let written = if a.out.is_some() { " were written" } else { " were kept" };
        return Err(CliError::Failed(format!(
            "training diverged in epoch {} at batch {} (loss {loss:.4}: NaN, infinite or above 10 times the first batch's plus 10; try a lower --lr); {kept}{written}",
            epoch + 1,
            step + 1
        )));
    }
    let final_loss = report.final_loss();
    if a.json {
        out!("{}", serde_json::json!({"epochs": report.epochs.len(), "final_loss": final_loss, "score": after, "score_before": before, "seconds": report.seconds}));
    } else {
        for l in &epoch_lines {
            out!("{l}");
        }
        let what = if a.qat { "quantization-aware training" } else { "training" };
        match (before, after) {
            (Some(b), Some(s)) => out!("{what}: {} epochs in {:.1} s, score {b:.2} -> {s:.2}", report.epochs.len(), report.seconds),
            _ => out!("{what}: {} epochs in {:.1} s, final loss {:.5}", report.epochs.len(), report.seconds, final_loss.unwrap_or(f64::NAN)),
        }
    }
    Ok(())
}
