//! `qplay run`: one input through the FP32 executor, the simulated quantized model or the integer
//! engine; prints the output's shape and, for class scores, the top 5.

use crate::common::{read_text, top_k, write_file, CliError, CliResult, Engine, Global, Model};
use crate::data::Settings;
use crate::out;
use qplay_core::npy::write_npy_f32;
use qplay_core::Tensor;
use std::path::PathBuf;
use std::time::Instant;

/// Run a model on one input (a tensor, or a photo with its preprocessing)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model
    #[arg(value_name = "MODEL.onnx")]
    model: PathBuf,
    #[command(flatten)]
    input: Input,
    /// Write the first output here
    #[arg(long, value_name = "Y.npy")]
    output: Option<PathBuf>,
    /// Class names, one per line (default: the `labels` file the preprocessing JSON names)
    #[arg(long, value_name = "CLASSES.txt")]
    labels: Option<PathBuf>,
    #[command(flatten)]
    engine: Engine,
}

/// The model's input: a tensor, or a photo and the preprocessing that turns it into one.
#[derive(clap::Args, Debug)]
pub struct Input {
    /// The input tensor
    #[arg(long, value_name = "X.npy", conflicts_with = "image")]
    pub input: Option<PathBuf>,
    /// A photo (PNG or JPEG), preprocessed as --preprocess says
    #[arg(long, value_name = "PHOTO", requires = "preprocess")]
    pub image: Option<PathBuf>,
    /// The model's preprocessing settings (JSON, as in assets/models/*.json)
    #[arg(long, value_name = "MODEL.json")]
    pub preprocess: Option<PathBuf>,
}

impl Input {
    /// The tensor given, if any.
    pub fn tensor(&self, global: &Global) -> CliResult<Option<Tensor>> {
        if let Some(p) = &self.input {
            return global.read_tensor(p).map(Some);
        }
        let (Some(img), Some(pp)) = (&self.image, &self.preprocess) else { return Ok(None) };
        Settings::read(pp)?.photo(img).map(Some)
    }
}

/// Class names: --labels, else the `labels` file named by the preprocessing JSON.
fn labels(a: &Args) -> CliResult<Option<Vec<String>>> {
    match (&a.labels, &a.input.preprocess) {
        (Some(l), _) => Ok(Some(read_text(l)?.lines().map(str::to_string).collect())),
        (None, Some(pp)) => Ok(Settings::read(pp)?.classes),
        _ => Ok(None),
    }
}

pub fn run(a: &Args, global: &Global) -> CliResult<()> {
    let (g, _) = global.load(&a.model)?;
    let x = a.input.tensor(global)?.ok_or_else(|| CliError::Usage("give one of --input X.npy or --image PHOTO".into()))?;
    if g.inputs.len() != 1 {
        return Err(CliError::Failed(format!("the model has {} inputs; qplay run feeds exactly one", g.inputs.len())));
    }
    let mut model = Model::new(g, &a.engine, global)?;
    let t0 = Instant::now();
    let outs = model.run(x)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let y = &outs[0];
    let data = y.to_f32_vec();
    if let Some(p) = &a.output {
        write_file(p, write_npy_f32(y.shape(), &data))?;
    }
    out!("output {:?} in {ms:.1} ms", y.shape());
    let rows = if y.rank() == 2 { y.shape()[0] } else { 1 };
    let is_vector = y.rank() <= 1 || (y.rank() == 2 && y.shape()[1] > 1);
    if is_vector && !data.is_empty() {
        let names = labels(a)?;
        let k = data.len() / rows;
        for r in 0..rows.min(8) {
            let row = &data[r * k..(r + 1) * k];
            if rows > 1 {
                out!("row {r}:");
            }
            for (rank, &(i, v)) in top_k(row, 5).iter().enumerate() {
                let name = names.as_ref().and_then(|n| n.get(i)).map(String::as_str).unwrap_or("");
                out!("  {}. {i:>4} {v:>10.4}  {name}", rank + 1);
            }
        }
        if rows > 8 {
            out!("({} more rows)", rows - 8);
        }
    }
    Ok(())
}
