//! The worker's data readers: calibration samples (bundled photos, the user's files, the
//! training digits), labelled test and training sets, the user's `.npy` files, and photos decoded
//! by the browser.

use super::{post, scope, Loaded, DIGITS_TRAIN_X, DIGITS_X, DIGITS_Y};
use crate::protocol::{InputKind, Response};
use js_sys::{Array, Uint8Array};
use qplay_core::npy::read_npy;
use qplay_core::preprocess::Preprocess;
use qplay_core::{Graph, Tensor};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// Calibration samples and the probe of the per-layer analysis: the user's files (the
/// payload), else the bundled photos `photos` (then mirrored), or the training digits; `n`
/// samples (0: all).
pub(super) async fn samples_for(state: &Rc<RefCell<Option<Loaded>>>, job: u32, photos: &[String], n: usize, payload: &JsValue) -> Result<(Vec<Tensor>, Vec<Tensor>), String> {
    let kind = state.borrow().as_ref().ok_or("load a model first")?.kind.clone();
    Ok(match kind {
        InputKind::Image { height, width } => {
            let pre = state.borrow().as_ref().ok_or("load a model first")?.preprocess(height, width)?;
            match payload.dyn_ref::<js_sys::Array>().filter(|a| a.length() > 0) {
                Some(files) => user_calibration(job, files, n, &pre).await?,
                None => calibration_photos(job, photos, n, &pre).await?,
            }
        }
        InputKind::Digits => {
            let graph_rank = input_rank(&state.borrow().as_ref().ok_or("load a model first")?.graph);
            let rows = match n {
                0 => 256,
                n => n.min(256),
            };
            (digits_batches(graph_rank, rows)?, digits_batches(graph_rank, 128)?)
        }
        InputKind::Other => return Err("this model's input is not an image or a digit: nothing to calibrate with".into()),
    })
}

/// The rank of the model's first input (4 when the file does not say).
pub(super) fn input_rank(g: &Graph) -> usize {
    g.values[g.inputs[0]].ty.as_ref().and_then(|t| t.dims.as_ref()).map_or(4, Vec::len)
}

/// Digits (64 values each) as one tensor for a model whose input has rank `rank`: [N, 64] or
/// [N, 1, 8, 8].
pub(super) fn digits_tensor(rank: usize, d: &[f32]) -> Result<Tensor, String> {
    let n = d.len() / 64;
    Tensor::f32(if rank == 2 { vec![n, 64] } else { vec![n, 1, 8, 8] }, d[..n * 64].to_vec()).map_err(|e| e.to_string())
}

/// The first `rows` training digits in batches of 32, shaped by [`digits_tensor`].
pub(super) fn digits_batches(rank: usize, rows: usize) -> Result<Vec<Tensor>, String> {
    let d = read_npy(DIGITS_TRAIN_X, 1 << 20).map_err(|e| e.to_string())?.to_f32_vec();
    d[..rows.min(d.len() / 64) * 64].chunks(32 * 64).map(|c| digits_tensor(rank, c)).collect()
}

/// The digits test split in batches of 64 shaped by [`digits_tensor`], with labels.
pub(super) fn digits_test(rank: usize) -> Result<(Vec<Tensor>, Vec<i64>), String> {
    let x = read_npy(DIGITS_X, 1 << 20).map_err(|e| e.to_string())?.to_f32_vec();
    let y = read_npy(DIGITS_Y, 1 << 20).map_err(|e| e.to_string())?.to_i64_vec();
    Ok((x.chunks(64 * 64).map(|c| digits_tensor(rank, c)).collect::<Result<_, _>>()?, y))
}

/// Fetches, decodes and preprocesses `n` calibration samples (0: all): the bundled photos first,
/// then their mirror images (left-right), in the same order. Also returns the first 4 photos, the
/// probe of the per-layer analysis.
pub(super) async fn calibration_photos(job: u32, photos: &[String], n: usize, pre: &Preprocess) -> Result<(Vec<Tensor>, Vec<Tensor>), String> {
    const PROBE: usize = 4;
    let n = if n == 0 { 2 * photos.len() } else { n.min(2 * photos.len()) };
    let width = pre.size()[1];
    let mut originals = Vec::new();
    let used = &photos[..n.max(PROBE).min(photos.len())];
    for (i, p) in used.iter().enumerate() {
        post(&Response::Progress { job, stage: "Preparing calibration photos".into(), done: i, total: used.len() });
        let resp = JsFuture::from(scope().fetch_with_str(&format!("assets/images/{p}"))).await.map_err(|_| format!("cannot fetch {p}"))?;
        let resp: web_sys::Response = resp.unchecked_into();
        if !resp.ok() {
            return Err(format!("cannot fetch {p}: HTTP {}", resp.status()));
        }
        let blob: web_sys::Blob = JsFuture::from(resp.blob().map_err(|_| "no body")?).await.map_err(|_| format!("cannot read {p}"))?.unchecked_into();
        let (rgb, w, h) = decode_image(&blob).await?;
        originals.push(pre.apply(&rgb, w as usize, h as usize).map_err(|e| e.to_string())?);
    }
    let probe = originals[..PROBE.min(originals.len())].to_vec();
    let mut samples: Vec<Tensor> = originals.iter().take(n).cloned().collect();
    for x in originals.iter().take(n - samples.len()) {
        let mirrored: Vec<f32> = x.to_f32_vec().chunks(width).flat_map(|row| row.iter().rev().copied().collect::<Vec<_>>()).collect();
        samples.push(Tensor::f32(x.shape().to_vec(), mirrored).map_err(|e| e.to_string())?);
    }
    Ok((samples, probe))
}

/// The user's calibration data (File objects: photos, decoded and preprocessed, or `.npy`
/// tensors of samples), `n` samples (0: all); the first 4 are also the probe of the per-layer
/// analysis. An undecodable photo or a tensor of the wrong shape is an error naming the file.
pub(super) async fn user_calibration(job: u32, files: &js_sys::Array, n: usize, pre: &Preprocess) -> Result<(Vec<Tensor>, Vec<Tensor>), String> {
    let total = files.length() as usize;
    let n = if n == 0 { usize::MAX } else { n };
    let mut samples = Vec::new();
    let mut count = 0;
    for i in 0..total {
        if count >= n {
            break;
        }
        post(&Response::Progress { job, stage: "Preparing your calibration data".into(), done: i, total });
        let item = files.get(i as u32);
        let name = item.dyn_ref::<web_sys::File>().map_or_else(|| format!("calibration file {}", i + 1), |f| f.name());
        let blob: web_sys::Blob = item.dyn_into().map_err(|_| format!("{name}: not a file"))?;
        if let Some(f) = npy_file(&blob) {
            for t in npy_samples_of(&f.name(), read_user_npy(&f).await?, &pre.shape, 8)? {
                let take = t.shape()[0].min(n - count);
                if take > 0 {
                    count += take;
                    samples.push(if take == t.shape()[0] { t } else { leading(&t, take)? });
                }
            }
        } else {
            let (rgb, w, h) = decode_image(&blob).await.map_err(|e| format!("{name}: {e}"))?;
            samples.push(pre.apply(&rgb, w as usize, h as usize).map_err(|e| format!("{name}: {e}"))?);
            count += 1;
        }
    }
    let probe: Vec<Tensor> = samples.iter().take(4).map(|t| if t.shape()[0] > 4 { leading(t, 4) } else { Ok(t.clone()) }).collect::<Result<_, _>>()?;
    Ok((samples, probe))
}

/// Most samples in a test set the page runs.
pub(super) const MAX_TEST_SAMPLES: usize = 2000;

/// The user's labelled data (a test or a training set), one sample per tensor, with labels (and
/// where they come from) when every sample has one. Photos (prepared by `pre`; none: the model
/// takes no photos) are labelled by a `labels.csv` among the files, else the folder each is in
/// (when a folder was picked), else the file names. `.npy` files hold samples of the model's
/// `input` shape, or (integer, one axis) the labels of those samples in order.
pub(super) async fn labelled_set(job: u32, files: &Array, pre: Option<&Preprocess>, input: &[usize], classes: Option<&[String]>, what: &str, max: usize) -> Result<(Vec<Tensor>, Option<Vec<i64>>, Option<String>), String> {
    let files: Vec<web_sys::File> = files.iter().filter_map(|f| f.dyn_into().ok()).collect();
    let csv = match files.iter().find(|f| f.name().eq_ignore_ascii_case("labels.csv")) {
        Some(f) => {
            let text = JsFuture::from(f.text()).await.ok().and_then(|t| t.as_string()).ok_or("labels.csv: cannot read the file")?;
            Some(qplay_core::labels::read_labels_csv(&text, classes).map_err(|e| format!("labels.csv: {e}"))?)
        }
        None => None,
    };
    let data: Vec<&web_sys::File> = files.iter().filter(|f| !f.name().eq_ignore_ascii_case("labels.csv")).collect();
    let folder = |f: &web_sys::File| {
        let rel = js_sys::Reflect::get(f, &"webkitRelativePath".into()).ok().and_then(|v| v.as_string()).unwrap_or_default();
        let parts: Vec<&str> = rel.split('/').collect();
        (parts.len() >= 3).then(|| parts[parts.len() - 2].to_string())
    };
    let label_of = |f: &web_sys::File| -> Result<Option<i64>, String> {
        Ok(match (&csv, folder(f)) {
            (Some(by_file), _) => Some(*by_file.get(&f.name()).ok_or_else(|| format!("labels.csv: no label for {}", f.name()))?),
            (None, Some(dir)) => qplay_core::labels::class_of(classes, &dir),
            (None, None) => qplay_core::labels::class_of_file_name(classes, &f.name()),
        })
    };
    let (mut samples, mut labels, mut names) = (Vec::new(), Vec::new(), Vec::new());
    // The .npy samples (their indices) and an integer .npy of their labels.
    let (mut npy_samples, mut npy_labels) = (Vec::new(), None);
    for (i, f) in data.iter().enumerate() {
        post(&Response::Progress { job, stage: format!("Preparing your {what} data"), done: i, total: data.len() });
        if npy_file(f).is_some() {
            let t = read_user_npy(f).await?;
            if t.as_i64().is_some() && t.rank() == 1 {
                if npy_labels.replace((f.name(), t.to_i64_vec())).is_some() {
                    return Err(format!("{}: a second .npy of labels (give one)", f.name()));
                }
                continue;
            }
            for t in npy_samples_of(&f.name(), t, input, 1)? {
                npy_samples.push(samples.len());
                samples.push(t);
                labels.push(None);
                names.push(f.name());
            }
        } else {
            let pre = pre.ok_or_else(|| format!("{}: this model takes no photos; give .npy tensors of its input", f.name()))?;
            let (rgb, w, h) = decode_image(f).await.map_err(|e| format!("{}: {e}", f.name()))?;
            samples.push(pre.apply(&rgb, w as usize, h as usize).map_err(|e| format!("{}: {e}", f.name()))?);
            labels.push(label_of(f)?);
            names.push(f.name());
        }
        if samples.len() > max {
            return Err(format!("more than {max} {what} samples of this model's input: give fewer (the page holds up to {} MB of training data)", super::train::MAX_FLOATS * 4 / 1_000_000));
        }
    }
    if samples.is_empty() {
        return Err(format!("no {what} photos or .npy samples among the files given"));
    }
    let npy_from = match npy_labels {
        Some((name, l)) if l.len() != npy_samples.len() => return Err(format!("{name}: {} labels for the {} .npy samples", l.len(), npy_samples.len())),
        Some((name, l)) => {
            for (&i, l) in npy_samples.iter().zip(l) {
                labels[i] = Some(l);
            }
            Some(name)
        }
        None => None,
    };
    if let Some(k) = classes.map(<[String]>::len) {
        if let Some((name, l)) = names.iter().zip(&labels).find_map(|(n, l)| l.filter(|&l| l < 0 || l as usize >= k).map(|l| (n, l))) {
            return Err(format!("{name}: class {l} is beyond the {k} classes of the labels file"));
        }
    }
    let from = if let Some(name) = npy_from.filter(|_| npy_samples.len() == samples.len()) {
        name
    } else if csv.is_some() {
        "labels.csv".to_string()
    } else if data.iter().find(|f| npy_file(f).is_none()).is_some_and(|f| folder(f).is_some()) {
        "their folders".to_string()
    } else {
        "their file names".to_string()
    };
    let labels: Option<Vec<i64>> = labels.into_iter().collect();
    let from = labels.as_ref().map(|_| from);
    Ok((samples, labels, from))
}

/// The picked file, if it is a `.npy` tensor rather than a photo.
pub(super) fn npy_file(blob: &web_sys::Blob) -> Option<web_sys::File> {
    blob.dyn_ref::<web_sys::File>().filter(|f| f.name().to_ascii_lowercase().ends_with(".npy")).cloned()
}

/// Largest .npy the page reads (elements): 64 Mi floats, 256 MB.
const MAX_NPY_ELEMENTS: usize = 1 << 26;

/// The user's `.npy` file as a tensor.
pub(super) async fn read_user_npy(file: &web_sys::File) -> Result<Tensor, String> {
    let name = file.name();
    if file.size() > (MAX_NPY_ELEMENTS * 8) as f64 {
        return Err(format!("{name}: {:.0} MB is more than the page reads ({} MB)", file.size() / 1e6, MAX_NPY_ELEMENTS * 8 / 1_000_000));
    }
    let buf = JsFuture::from(file.array_buffer()).await.map_err(|_| format!("{name}: cannot read the file"))?;
    read_npy(&Uint8Array::new(&buf).to_vec(), MAX_NPY_ELEMENTS).map_err(|e| format!("{name}: {e}"))
}

/// The samples of a `.npy` tensor `t` (file `name`) for a model whose input is `input` ([1, ...]):
/// `[N, ...]` (or one sample without the batch axis), in batches of at most `batch` samples. A
/// tensor of another shape is an error naming the file and its shape.
pub(super) fn npy_samples_of(name: &str, t: Tensor, input: &[usize], batch: usize) -> Result<Vec<Tensor>, String> {
    let sample = &input[1..];
    match t.shape() {
        s if s == sample => {}
        [n, rest @ ..] if rest == sample && *n > 0 => {}
        s => return Err(format!("{name}: field 'shape': {s:?} does not fit the model's input {input:?} (give [N, {}])", sample.iter().map(usize::to_string).collect::<Vec<_>>().join(", "))),
    }
    let per = sample.iter().product::<usize>();
    let data = t.to_f32_vec();
    data.chunks(batch * per)
        .map(|c| Tensor::f32([vec![c.len() / per], sample.to_vec()].concat(), c.to_vec()).map_err(|e| format!("{name}: {e}")))
        .collect()
}

/// The first `k` samples of `t` (along axis 0).
pub(super) fn leading(t: &Tensor, k: usize) -> Result<Tensor, String> {
    let per: usize = t.shape()[1..].iter().product();
    Tensor::f32([vec![k], t.shape()[1..].to_vec()].concat(), t.to_f32_vec()[..k * per].to_vec()).map_err(|e| e.to_string())
}


/// Decodes a photo with the browser's decoders (in the worker) into RGB bytes.
pub(super) async fn decode_image(blob: &web_sys::Blob) -> Result<(Vec<u8>, u32, u32), String> {
    let js = |e: JsValue| format!("cannot decode the image: {}", e.as_string().unwrap_or_else(|| format!("{e:?}")));
    let opts = web_sys::ImageBitmapOptions::new();
    opts.set_color_space_conversion(web_sys::ColorSpaceConversion::None);
    opts.set_premultiply_alpha(web_sys::PremultiplyAlpha::None);
    let promise = scope().create_image_bitmap_with_blob_and_image_bitmap_options(blob, &opts).map_err(js)?;
    let bmp: web_sys::ImageBitmap = JsFuture::from(promise).await.map_err(|_| "cannot decode the image: not a supported image file".to_string())?.unchecked_into();
    let (w, h) = (bmp.width(), bmp.height());
    if w == 0 || h == 0 || w > 8192 || h > 8192 {
        return Err(format!("image size {w}x{h} is out of range (1 to 8192 pixels a side)"));
    }
    let canvas = web_sys::OffscreenCanvas::new(w, h).map_err(js)?;
    let ctx: web_sys::OffscreenCanvasRenderingContext2d = canvas.get_context("2d").map_err(js)?.ok_or("no 2d context")?.unchecked_into();
    ctx.draw_image_with_image_bitmap(&bmp, 0.0, 0.0).map_err(js)?;
    let rgba = ctx.get_image_data(0.0, 0.0, w as f64, h as f64).map_err(js)?.data().0;
    let rgb = rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    Ok((rgb, w, h))
}
