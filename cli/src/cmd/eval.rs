//! `qplay eval`: a model (FP32, simulated or integer) on a data set: accuracy against labels, or
//! logits SQNR and top-1 agreement against reference outputs.

use crate::data::{self, Settings};
use crate::common::{write_file, CliError, CliResult, Engine, Global, Model};
use crate::out;
use crate::progress::Progress;
use qplay_core::npy::write_npy_f32;
use qplay_core::Tensor;
use std::path::{Path, PathBuf};

/// Evaluate a model on a data set (accuracy, or SQNR and top-1 agreement against references)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model
    #[arg(value_name = "MODEL.onnx")]
    model: PathBuf,
    /// The inputs: one .npy with N samples along axis 0, a directory of .npy files, or a directory
    /// of photos (with --preprocess; labels from labels.csv, class folders or file names)
    #[arg(long, value_name = "X.npy|DIR")]
    data: PathBuf,
    /// How photos become the model's input (the preprocessing JSON)
    #[arg(long, value_name = "MODEL.json")]
    preprocess: Option<PathBuf>,
    /// Class indices, one per sample: prints accuracy (photos' own labels are used without it)
    #[arg(long, value_name = "Y.npy")]
    labels: Option<PathBuf>,
    /// Reference outputs (e.g. onnxruntime's FP32 logits): prints pooled SQNR and top-1 agreement
    #[arg(long, value_name = "R.npy")]
    reference: Option<PathBuf>,
    /// With --reference: also the IoU of the output and reference maps thresholded here (e.g. 0.3
    /// for a text detector's probability map; default: the --preprocess file's "threshold")
    #[arg(long, value_name = "T", requires = "reference")]
    threshold: Option<f32>,
    /// Write the outputs, [N, K]
    #[arg(long, value_name = "Y.npy")]
    output: Option<PathBuf>,
    #[command(flatten)]
    engine: Engine,
    /// Print {"n", "accuracy", "sqnr_db", "top1_agreement", "iou"} as one JSON object
    #[arg(long)]
    json: bool,
    /// With --encodings: write every quantized activation as DIR/NNN.npy, named in DIR/index.json
    #[arg(long, value_name = "DIR")]
    dump: Option<PathBuf>,
}

/// The simulation's quantized activations over all samples, concatenated along the first axis,
/// in the order they were produced.
#[derive(Default)]
struct Dump {
    values: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl Dump {
    fn add(&mut self, name: &str, t: &Tensor) {
        let Some(d) = t.as_f32() else { return };
        match self.values.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, shape, data)) if shape[1..] == t.shape()[1..] && !shape.is_empty() => {
                shape[0] += t.shape()[0];
                data.extend_from_slice(d);
            }
            Some(_) => {}
            None => self.values.push((name.to_string(), t.shape().to_vec(), d.to_vec())),
        }
    }

    fn write(&self, dir: &Path) -> CliResult<()> {
        std::fs::create_dir_all(dir).map_err(|e| crate::common::failed_at(dir, e))?;
        let mut index = serde_json::Map::new();
        for (i, (name, shape, data)) in self.values.iter().enumerate() {
            let file = format!("{i:03}.npy");
            write_file(&dir.join(&file), write_npy_f32(shape, data))?;
            index.insert(name.clone(), file.into());
        }
        write_file(&dir.join("index.json"), serde_json::to_string_pretty(&index).unwrap_or_default())
    }
}

pub fn run(a: &Args, global: &Global) -> CliResult<()> {
    if a.dump.is_some() && (a.engine.encodings.is_none() || a.engine.int8) {
        return Err(CliError::Usage("--dump needs --encodings (and no --int8): it writes the simulation's activations".into()));
    }
    let (g, _) = global.load(&a.model)?;
    let settings = a.preprocess.as_deref().map(Settings::read).transpose()?;
    let threshold = a.threshold.or_else(|| settings.as_ref().and_then(|s| s.preprocess.threshold).map(|t| t as f32));
    let set = data::load(global, &g, &a.data, settings.as_ref(), 64)?;
    if a.labels.is_none() && set.labels.is_none() && a.reference.is_none() && a.output.is_none() && a.dump.is_none() {
        return Err(CliError::Usage("give --labels Y.npy, --reference R.npy, --output Y.npy or --dump DIR".into()));
    }
    let data = set.batches;
    let mut model = Model::new(g, &a.engine, global)?;
    let mut logits = Vec::new();
    let mut k = 0;
    let mut dump = Dump::default();
    let total: usize = data.iter().map(|x| x.shape().first().copied().unwrap_or(1)).sum();
    let mut stage = Progress::new(global.quiet).stage("evaluate", total, "samples");
    let mut done = 0;
    for x in data {
        done += x.shape().first().copied().unwrap_or(1);
        let y = match (&mut model, a.dump.is_some()) {
            (Model::Sim(e), true) => e.run_visiting(vec![x], &mut |name, t| dump.add(name, t))?,
            _ => model.run(x)?,
        }
        .remove(0);
        k = *y.shape().last().unwrap_or(&1);
        logits.extend(y.to_f32_vec());
        stage.set(done);
    }
    stage.finish();
    let n = logits.len() / k.max(1);
    let mut result = serde_json::json!({"n": n});
    let labels = match &a.labels {
        Some(l) => {
            let labels = global.read_npy(l)?.to_i64_vec();
            if labels.len() != n {
                return Err(crate::common::failed_at(l, format!("{} labels for {n} samples", labels.len())));
            }
            Some(labels)
        }
        None => set.labels,
    };
    if let Some(labels) = labels {
        if labels.len() != n {
            return Err(crate::common::failed_at(&a.data, format!("{} labels for {n} outputs (a model with several outputs per photo?)", labels.len())));
        }
        result["accuracy"] = qplay_core::metrics::accuracy(&logits, &labels, k).into();
    }
    if let Some(r) = &a.reference {
        let reference = global.read_tensor(r)?.to_f32_vec();
        if reference.len() != logits.len() {
            return Err(crate::common::failed_at(r, format!("{} values, the model produced {}", reference.len(), logits.len())));
        }
        result["sqnr_db"] = qplay_core::metrics::sqnr_db(&reference, &logits).into();
        result["top1_agreement"] = qplay_core::metrics::top1_agreement(&reference, &logits, k).into();
        if let Some(t) = threshold {
            result["iou"] = qplay_core::metrics::iou_at(&reference, &logits, t).into();
        }
    }
    if let Some(p) = &a.output {
        write_file(p, write_npy_f32(&[n, k], &logits))?;
    }
    if let Some(dir) = &a.dump {
        dump.write(dir)?;
    }
    if a.json {
        out!("{result}");
    } else {
        if let Some(acc) = result["accuracy"].as_f64() {
            out!("accuracy {:.2} % on {n} samples", acc * 100.0);
        }
        if let Some(s) = result["sqnr_db"].as_f64() {
            out!("logits SQNR {s:.2} dB (pooled), top-1 agreement {:.2} % on {n} samples", result["top1_agreement"].as_f64().unwrap_or(0.0) * 100.0);
        }
        if let (Some(iou), Some(t)) = (result["iou"].as_f64(), threshold) {
            out!("IoU of the maps above {t}: {:.4}", iou);
        }
    }
    Ok(())
}
