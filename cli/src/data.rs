//! Data sets for `--calib` and `--data`: tensors (.npy) or photos preprocessed as `--preprocess`
//! says, with labels found beside the photos.
//!
//! - `X.npy`: N samples along axis 0; a directory of `.npy` files: each file's samples, by name.
//! - A directory of photos (PNG, JPEG), each one sample. Labels, when they can be found, come
//!   from (first match): a `labels.csv` in the directory (`file,label` lines), one sub-directory
//!   per class (`DIR/<class>/*.png`), or file names `<class>_<anything>.png`. A class is a name
//!   from the preprocessing's labels file, or else a number (the class index).

use crate::common::{failed_at, read_file, read_text, CliError, CliResult, Global};
use qplay_core::graph::Dim;
use qplay_core::labels;
use qplay_core::preprocess::Preprocess;
use qplay_core::{Graph, Tensor};
use std::path::{Path, PathBuf};

/// Photos larger than this are refused before decoding.
const MAX_PHOTO_BYTES: usize = 64 << 20;
const PHOTO_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

pub struct DataSet {
    /// Batches of samples, in order.
    pub batches: Vec<Tensor>,
    /// One class index per sample, when the photos' names or folders give them.
    pub labels: Option<Vec<i64>>,
    pub samples: usize,
}

/// The preprocessing settings and the class names its `labels` file holds (if any).
pub struct Settings {
    pub preprocess: Preprocess,
    pub classes: Option<Vec<String>>,
}

impl Settings {
    pub fn read(path: &Path) -> CliResult<Settings> {
        let preprocess = Preprocess::from_json(&read_text(path)?).map_err(|e| failed_at(path, e))?;
        let classes = match &preprocess.labels {
            None => None,
            Some(f) => {
                let p = path.parent().unwrap_or(Path::new(".")).join(f);
                Some(read_text(&p)?.lines().map(str::to_string).collect())
            }
        };
        Ok(Settings { preprocess, classes })
    }

    /// Decodes and preprocesses one photo.
    pub fn photo(&self, path: &Path) -> CliResult<Tensor> {
        let bytes = read_file(path, MAX_PHOTO_BYTES, "photos")?;
        let decoded = image::load_from_memory(&bytes).map_err(|e| failed_at(path, format!("cannot decode image: {e}")))?;
        let rgb = decoded.to_rgb8();
        self.preprocess.apply(rgb.as_raw(), rgb.width() as usize, rgb.height() as usize).map_err(|e| failed_at(path, e))
    }

    /// The class index `name` stands for (see [`labels::class_of`]).
    fn class(&self, name: &str) -> Option<i64> {
        labels::class_of(self.classes.as_deref(), name)
    }
}

fn is_photo(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| PHOTO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> CliResult<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map_err(|e| failed_at(dir, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

/// The model's fixed batch size, if its first input declares one.
fn fixed_batch(g: &Graph) -> Option<usize> {
    let dims = g.inputs.first().and_then(|&i| g.values[i].ty.as_ref()).and_then(|t| t.dims.as_ref())?;
    match dims.first() {
        Some(Dim::Fixed(b)) => Some(*b),
        _ => None,
    }
}

/// Stacks single samples [1, ...] into batches of `step`.
fn batch(samples: Vec<Tensor>, step: usize) -> CliResult<Vec<Tensor>> {
    Ok(Tensor::stack(&samples, step)?)
}

/// Reads a data set (see the module doc). `settings` is required for photos; `batch` is the
/// batch size for models without a fixed one.
pub fn load(global: &Global, g: &Graph, path: &Path, settings: Option<&Settings>, batch_size: usize) -> CliResult<DataSet> {
    let step = fixed_batch(g).unwrap_or(batch_size).max(1);
    if path.is_dir() {
        let entries = sorted_entries(path)?;
        let class_dirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
        let photos: Vec<&PathBuf> = entries.iter().filter(|p| is_photo(p)).collect();
        if !photos.is_empty() || !class_dirs.is_empty() && !entries.iter().any(|p| p.extension().is_some_and(|x| x == "npy")) {
            let settings = settings.ok_or_else(|| CliError::Usage(format!("{}: a folder of photos needs --preprocess MODEL.json (how the model wants its input)", path.display())))?;
            return photos_set(path, &entries, settings, step);
        }
    }
    let batches = npy_set(global, path, step)?;
    if let Some(b) = batches.first() {
        check_fits(g, path, b.shape())?;
    }
    let samples = batches.iter().map(|t| t.shape().first().copied().unwrap_or(1)).sum();
    Ok(DataSet { batches, labels: None, samples })
}

/// Samples from one .npy (N along axis 0) or a directory of .npy files (sorted by name), in
/// batches of up to `step`. All files together must fit in `--max-memory-mb`.
fn npy_set(global: &Global, path: &Path, step: usize) -> CliResult<Vec<Tensor>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        sorted_entries(path)?.into_iter().filter(|p| p.extension().is_some_and(|x| x == "npy")).collect()
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(failed_at(path, "no .npy files"));
    }
    let budget = global.limits().max_total_bytes as u64;
    let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    if total > budget {
        return Err(failed_at(path, format!("{total} bytes of data, over --max-memory-mb ({budget} bytes)")));
    }
    let mut out = Vec::new();
    for f in &files {
        let t = global.read_tensor(f)?;
        let n = *t.shape().first().ok_or_else(|| failed_at(f, "a scalar is not a sample"))?;
        let d = t.to_f32_vec();
        let per = d.len().checked_div(n).unwrap_or(0);
        let mut i = 0;
        while i < n {
            let b = step.min(n - i);
            let mut shape = t.shape().to_vec();
            shape[0] = b;
            out.push(Tensor::f32(shape, d[i * per..(i + b) * per].to_vec())?);
            i += b;
        }
    }
    Ok(out)
}

/// A data set's samples must have the model's input shape (its declared rank and fixed sizes,
/// the batch axis aside): the error names the file, not just the model's input.
fn check_fits(g: &Graph, path: &Path, shape: &[usize]) -> CliResult<()> {
    let Some(&input) = g.inputs.first() else { return Ok(()) };
    let Some(dims) = g.values[input].ty.as_ref().and_then(|t| t.dims.as_ref()) else { return Ok(()) };
    let fits = dims.len() == shape.len() && dims.iter().zip(shape).skip(1).all(|(d, &n)| !matches!(d, Dim::Fixed(f) if *f != n));
    if fits {
        return Ok(());
    }
    let want: Vec<String> = dims.iter().enumerate().map(|(i, d)| if i == 0 { "N".into() } else { d.to_string() }).collect();
    Err(failed_at(path, format!("samples of shape {:?} do not fit the model's input '{}' [{}]", &shape[1.min(shape.len())..], g.values[input].name, want.join(", "))))
}

fn photos_set(dir: &Path, entries: &[PathBuf], settings: &Settings, step: usize) -> CliResult<DataSet> {
    let csv = dir.join("labels.csv");
    let mut files: Vec<PathBuf> = entries.iter().filter(|p| is_photo(p)).cloned().collect();
    let mut labels: Option<Vec<i64>> = None;
    if csv.is_file() {
        let by_file = labels::read_labels_csv(&read_text(&csv)?, settings.classes.as_deref()).map_err(|e| failed_at(&csv, e))?;
        let mut v = Vec::new();
        for f in &files {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            v.push(*by_file.get(name).ok_or_else(|| failed_at(&csv, format!("no label for {name}")))?);
        }
        labels = Some(v);
    } else if files.is_empty() {
        // One sub-directory per class.
        let mut v = Vec::new();
        for (k, sub) in entries.iter().filter(|p| p.is_dir()).enumerate() {
            let name = sub.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let class = settings.class(name).unwrap_or(k as i64);
            for f in sorted_entries(sub)?.into_iter().filter(|p| is_photo(p)) {
                files.push(f);
                v.push(class);
            }
        }
        labels = Some(v);
    } else {
        let from_names: Option<Vec<i64>> = files.iter().map(|f| f.file_name().and_then(|s| s.to_str()).and_then(|s| labels::class_of_file_name(settings.classes.as_deref(), s))).collect();
        labels = labels.or(from_names);
    }
    if files.is_empty() {
        return Err(failed_at(dir, "no photos (.png, .jpg) and no .npy files"));
    }
    if let Some(n) = settings.classes.as_ref().map(Vec::len) {
        if let Some((f, l)) = labels.as_ref().and_then(|ls| files.iter().zip(ls).find(|(_, &l)| l as usize >= n)) {
            return Err(failed_at(f, format!("class {l} is beyond the {n} classes of the labels file")));
        }
    }
    let samples = files.iter().map(|f| settings.photo(f)).collect::<CliResult<Vec<_>>>()?;
    let n = samples.len();
    Ok(DataSet { batches: batch(samples, step)?, labels, samples: n })
}
