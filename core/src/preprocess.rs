//! Image -> input tensor, following the preprocessing description shipped next to a model
//! (e.g. `efficientnet_lite0.json`): resize the shorter side with an antialiased triangle
//! filter in f64 (Pillow's BILINEAR window rule, no rounding), center crop, `(p/255 - mean)/std`,
//! HWC -> NCHW. Decoding is the caller's job (the `image` crate natively, the browser in the app).

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use serde::Deserialize;

/// The parts of a model's preprocessing JSON that qplay uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Preprocess {
    /// Input tensor shape, [1, 3, H, W].
    pub shape: Vec<usize>,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub resize: Resize,
    pub crop: Crop,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Resize {
    pub shorter_side: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Crop {
    pub size: [usize; 2],
}

impl Preprocess {
    pub fn from_json(text: &str) -> Result<Self> {
        let p: Preprocess = serde_json::from_str(text).map_err(|e| Error::Preprocess(e.to_string()))?;
        if p.shape.len() != 4 || p.shape[0] != 1 || p.shape[1] != 3 || p.shape[2] != p.crop.size[0] || p.shape[3] != p.crop.size[1] {
            return Err(Error::Preprocess(format!("shape {:?} must be [1, 3, crop_h, crop_w]", p.shape)));
        }
        if p.resize.shorter_side < p.crop.size[0].max(p.crop.size[1]) || p.resize.shorter_side > 8192 {
            return Err(Error::Preprocess("resize.shorter_side must be at least the crop size and at most 8192".into()));
        }
        if p.std.contains(&0.0) {
            return Err(Error::Preprocess("std must not be zero".into()));
        }
        Ok(p)
    }

    /// `rgb`: `width * height * 3` bytes, row-major, R G B.
    pub fn apply(&self, rgb: &[u8], width: usize, height: usize) -> Result<Tensor> {
        if width == 0 || height == 0 || width > 16384 || height > 16384 {
            return Err(Error::Image(format!("image size {width}x{height} is out of range")));
        }
        if rgb.len() != width * height * 3 {
            return Err(Error::Image(format!("{} bytes of RGB data for a {width}x{height} image", rgb.len())));
        }
        let s = self.resize.shorter_side;
        let (nw, nh) = if width <= height {
            (s, (s as f64 * height as f64 / width as f64) as usize)
        } else {
            ((s as f64 * width as f64 / height as f64) as usize, s)
        };
        let src: Vec<f64> = rgb.iter().map(|&b| b as f64).collect();
        let horiz = resize_axis(&src, height, width, nw, true);
        let full = resize_axis(&horiz, height, nw, nh, false);
        let [ch, cw] = self.crop.size;
        let top = round_half_even((nh - ch) as f64 / 2.0);
        let left = round_half_even((nw - cw) as f64 / 2.0);
        let mut out = vec![0.0f32; 3 * ch * cw];
        for c in 0..3 {
            for y in 0..ch {
                for x in 0..cw {
                    let p = full[((top + y) * nw + left + x) * 3 + c];
                    out[(c * ch + y) * cw + x] = ((p / 255.0 - self.mean[c]) / self.std[c]) as f32;
                }
            }
        }
        Tensor::f32(vec![1, 3, ch, cw], out)
    }
}

fn round_half_even(v: f64) -> usize {
    let r = v.round();
    let r = if (v - v.trunc()).abs() == 0.5 && r % 2.0 != 0.0 { r - 1.0 } else { r };
    r.max(0.0) as usize
}

/// Triangle-filter resize of an HWC f64 image along one axis: `horizontal` maps width
/// `from` -> `to` over `rows` rows; otherwise maps height `rows` -> `to` over width `from`.
fn resize_axis(src: &[f64], rows: usize, from: usize, to: usize, horizontal: bool) -> Vec<f64> {
    let n_in = if horizontal { from } else { rows };
    let weights = triangle_weights(n_in, to);
    if horizontal {
        let mut out = vec![0.0; rows * to * 3];
        for y in 0..rows {
            for (i, (lo, w)) in weights.iter().enumerate() {
                for c in 0..3 {
                    out[(y * to + i) * 3 + c] = w.iter().enumerate().map(|(k, wk)| wk * src[(y * from + lo + k) * 3 + c]).sum();
                }
            }
        }
        out
    } else {
        let width = from;
        let mut out = vec![0.0; to * width * 3];
        for (i, (lo, w)) in weights.iter().enumerate() {
            for x in 0..width {
                for c in 0..3 {
                    out[(i * width + x) * 3 + c] = w.iter().enumerate().map(|(k, wk)| wk * src[((lo + k) * width + x) * 3 + c]).sum();
                }
            }
        }
        out
    }
}

/// For each output sample: first input index and normalised weights.
fn triangle_weights(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = n_in as f64 / n_out as f64;
    let support = scale.max(1.0);
    (0..n_out)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).trunc().max(0.0)) as usize;
            let hi = ((center + support + 0.5).trunc() as usize).min(n_in);
            let mut w: Vec<f64> = (lo..hi).map(|j| (1.0 - ((j as f64 - center + 0.5) / support).abs()).max(0.0)).collect();
            let s: f64 = w.iter().sum();
            if s > 0.0 {
                w.iter_mut().for_each(|v| *v /= s);
            }
            (lo, w)
        })
        .collect()
}
