//! Image -> input tensor, following the preprocessing JSON shipped next to a model (e.g.
//! `efficientnet_lite0.json`). Steps, in order:
//!
//! 1. colour: RGB, BGR, or GRAY (ITU-R 601-2 luma in Pillow's integer arithmetic, as
//!    `Image.convert("L")`);
//! 2. resize, in f64 with no rounding, separable (horizontal pass first):
//!    - `shorter_side`: the shorter side to S (the longer one truncated, aspect kept), then a centre
//!      crop (offsets rounded half to even), padded where the image is smaller than the crop;
//!    - `stretch`: to the tensor's height and width;
//!    - `fit`: the largest size that fits the tensor with the aspect kept (rounded), placed at the
//!      top left or the centre, the rest padded;
//!
//!    with the `triangle` filter (Pillow's BILINEAR: antialiased, the window grows when shrinking),
//!    `bilinear` (OpenCV's INTER_LINEAR: half-pixel centres, two taps, no antialiasing) or
//!    `nearest` (Pillow's NEAREST: the pixel under the output pixel's centre);
//! 3. `(pixel * scale - mean) / std` per channel (`scale` defaults to 1/255); padding takes
//!    `pad_value` (in the normalized units, default 0);
//! 4. layout NCHW or NHWC.
//!
//! Decoding is the caller's job (the `image` crate natively, the browser in the app).

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Layout {
    #[serde(rename = "NCHW")]
    Nchw,
    #[serde(rename = "NHWC")]
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Color {
    Rgb,
    Bgr,
    Gray,
}

impl Color {
    pub fn channels(self) -> usize {
        if self == Color::Gray {
            1
        } else {
            3
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    Triangle,
    Bilinear,
    Nearest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Align {
    TopLeft,
    Center,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Resize {
    /// Shorter side to `shorter_side`, then the centre crop.
    ShorterSide { shorter_side: usize },
    Stretch,
    Fit { align: Align },
}

/// A model's image preprocessing. Build it with [`Preprocess::from_json`] (which checks every
/// field) or [`Preprocess::imagenet_like`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preprocess {
    /// The input tensor's shape: [1, C, H, W] (NCHW) or [1, H, W, C] (NHWC).
    pub shape: Vec<usize>,
    pub layout: Layout,
    pub color: Color,
    /// Each pixel (0..255) is multiplied by this before `mean` and `std`.
    pub scale: f64,
    /// One value per channel.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub resize: Resize,
    pub filter: Filter,
    /// Centre crop [h, w] after `shorter_side` (the tensor's size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop: Option<[usize; 2]>,
    /// The value of padded pixels in the tensor (after normalization).
    pub pad_value: f64,
    /// Class names file, relative to the JSON's folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    /// For a model whose output is a heatmap: the value above which a pixel is foreground (the
    /// IoU of quantized against FP32 maps is measured there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// Largest image side accepted, before or after resizing.
const MAX_SIDE: usize = 16384;

fn bad(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::Preprocess(format!("field '{field}': {msg}"))
}

/// Reads `field` of `obj` as one of `names` (returning its index), or `default` when absent.
fn choice(obj: &Value, field: &str, path: &str, names: &[&str], default: usize) -> Result<usize> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => {
            let s = s.to_ascii_lowercase();
            names.iter().position(|n| *n == s).ok_or_else(|| bad(path, format!("'{s}' is not one of {}", names.join(", "))))
        }
        Some(v) => Err(bad(path, format!("expected one of {}, got {v}", names.join(", ")))),
    }
}

fn number(v: &Value, path: &str) -> Result<f64> {
    v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| bad(path, format!("expected a number, got {v}")))
}

fn size(v: &Value, path: &str) -> Result<usize> {
    v.as_u64().filter(|&x| x >= 1 && x as usize <= MAX_SIDE).map(|x| x as usize).ok_or_else(|| bad(path, format!("expected a whole number from 1 to {MAX_SIDE}, got {v}")))
}

fn pair(v: &Value, path: &str) -> Result<[usize; 2]> {
    match v.as_array().map(Vec::as_slice) {
        Some([h, w]) => Ok([size(h, &format!("{path}[0]"))?, size(w, &format!("{path}[1]"))?]),
        _ => Err(bad(path, format!("expected [height, width], got {v}"))),
    }
}

impl Preprocess {
    /// Parses and checks the preprocessing JSON. Every error names the field. Files of the
    /// first format (`shape`, `mean`, `std`, `resize.shorter_side`, `crop.size`, descriptive
    /// strings elsewhere) stay valid.
    pub fn from_json(text: &str) -> Result<Self> {
        let j: Value = serde_json::from_str(text).map_err(|e| Error::Preprocess(format!("not valid JSON: {e}")))?;
        if !j.is_object() {
            return Err(Error::Preprocess("expected a JSON object".into()));
        }
        let layout = if choice(&j, "layout", "layout", &["nchw", "nhwc"], 0)? == 0 { Layout::Nchw } else { Layout::Nhwc };
        let color = [Color::Rgb, Color::Bgr, Color::Gray][choice(&j, "color", "color", &["rgb", "bgr", "gray"], 0)?];
        let channels = color.channels();
        let shape: Vec<usize> = match j.get("shape").and_then(Value::as_array) {
            Some(s) if s.len() == 4 => s.iter().enumerate().map(|(i, d)| size(d, &format!("shape[{i}]"))).collect::<Result<_>>()?,
            _ => return Err(bad("shape", "expected the input tensor's shape [1, C, H, W] (or [1, H, W, C] with layout NHWC)")),
        };
        let c = if layout == Layout::Nchw { shape[1] } else { shape[3] };
        if shape[0] != 1 || c != channels {
            return Err(bad("shape", format!("{shape:?} must be one image of {channels} channel(s) for color {color:?} in layout {layout:?}")));
        }
        let per_channel = |field: &str, default: f64| -> Result<Vec<f64>> {
            let v = match j.get(field) {
                None | Some(Value::Null) => vec![default],
                Some(Value::Array(a)) => a.iter().enumerate().map(|(i, x)| number(x, &format!("{field}[{i}]"))).collect::<Result<_>>()?,
                Some(x) => vec![number(x, field)?],
            };
            match v.len() {
                1 => Ok(vec![v[0]; channels]),
                n if n == channels => Ok(v),
                n => Err(bad(field, format!("{n} values for {channels} channel(s)"))),
            }
        };
        let mean = per_channel("mean", 0.0)?;
        let std = per_channel("std", 1.0)?;
        if std.contains(&0.0) {
            return Err(bad("std", "must not be zero"));
        }
        // The first format described the scale in words: a string means the default.
        let scale = match j.get("scale") {
            None | Some(Value::Null) | Some(Value::String(_)) => 1.0 / 255.0,
            Some(v) => number(v, "scale")?,
        };
        let r = j.get("resize").cloned().unwrap_or(Value::Null);
        if !(r.is_object() || r.is_null()) {
            return Err(bad("resize", "expected an object such as {\"mode\": \"stretch\"}"));
        }
        let filter = [Filter::Triangle, Filter::Bilinear, Filter::Nearest][choice(&r, "filter", "resize.filter", &["triangle", "bilinear", "nearest"], 0).or_else(|e| {
            // The first format described the filter in words.
            if r.get("filter").is_some_and(Value::is_string) && r.get("mode").is_none() {
                Ok(0)
            } else {
                Err(e)
            }
        })?];
        let default_mode = if r.get("shorter_side").is_some() { 0 } else { 1 };
        let resize = match choice(&r, "mode", "resize.mode", &["shorter_side", "stretch", "fit"], default_mode)? {
            0 => Resize::ShorterSide { shorter_side: size(r.get("shorter_side").unwrap_or(&Value::Null), "resize.shorter_side")? },
            1 => Resize::Stretch,
            _ => Resize::Fit { align: [Align::TopLeft, Align::Center][choice(&r, "align", "resize.align", &["top_left", "center"], 0)?] },
        };
        let (h, w) = if layout == Layout::Nchw { (shape[2], shape[3]) } else { (shape[1], shape[2]) };
        let crop = match j.get("crop") {
            None | Some(Value::Null) => None,
            Some(c) => Some(pair(c.get("size").unwrap_or(&Value::Null), "crop.size")?),
        };
        if let Some(cs) = crop {
            if !matches!(resize, Resize::ShorterSide { .. }) {
                return Err(bad("crop", "a crop follows resize mode shorter_side only"));
            }
            if cs != [h, w] {
                return Err(bad("crop.size", format!("{cs:?} must equal the tensor's height and width [{h}, {w}]")));
            }
        }
        let pad_value = match j.get("pad_value") {
            None | Some(Value::Null) => 0.0,
            Some(v) => number(v, "pad_value")?,
        };
        let labels = match j.get("labels") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => return Err(bad("labels", format!("expected a file name, got {v}"))),
        };
        let threshold = match j.get("threshold") {
            None | Some(Value::Null) => None,
            Some(v) => Some(number(v, "threshold")?),
        };
        Ok(Preprocess { shape, layout, color, scale, mean, std, resize, filter, crop, pad_value, labels, threshold })
    }

    /// The JSON [`Preprocess::from_json`] reads back to `self`.
    pub fn to_json(&self) -> String {
        let mut j = serde_json::to_value(self).unwrap_or_default();
        // `resize` carries the filter; `crop` is {"size": [h, w]}.
        if let Some(o) = j.as_object_mut() {
            let filter = o.remove("filter");
            if let (Some(r), Some(f)) = (o.get_mut("resize").and_then(Value::as_object_mut), filter) {
                r.insert("filter".into(), f);
            }
            if let Some(c) = o.remove("crop") {
                o.insert("crop".into(), serde_json::json!({ "size": c }));
            }
        }
        serde_json::to_string_pretty(&j).unwrap_or_default()
    }

    /// EfficientNet-style settings for an RGB NCHW model of the given input size: shorter side to
    /// 256/224 of the crop, then a centre crop, `(p - 127) / 128`.
    pub fn imagenet_like(height: usize, width: usize) -> Preprocess {
        Preprocess {
            shape: vec![1, 3, height, width],
            layout: Layout::Nchw,
            color: Color::Rgb,
            scale: 1.0 / 255.0,
            mean: vec![127.0 / 255.0; 3],
            std: vec![128.0 / 255.0; 3],
            resize: Resize::ShorterSide { shorter_side: (height.max(width) * 256).div_ceil(224) },
            filter: Filter::Triangle,
            crop: Some([height, width]),
            pad_value: 0.0,
            labels: None,
            threshold: None,
        }
    }

    /// The tensor's height and width.
    pub fn size(&self) -> [usize; 2] {
        match self.layout {
            Layout::Nchw => [self.shape[2], self.shape[3]],
            Layout::Nhwc => [self.shape[1], self.shape[2]],
        }
    }

    /// `rgb`: `width * height * 3` bytes, row-major, R G B.
    pub fn apply(&self, rgb: &[u8], width: usize, height: usize) -> Result<Tensor> {
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(Error::Image(format!("image size {width}x{height} is out of range")));
        }
        if rgb.len() != width * height * 3 {
            return Err(Error::Image(format!("{} bytes of RGB data for a {width}x{height} image", rgb.len())));
        }
        let ch = self.color.channels();
        let src: Vec<f64> = match self.color {
            Color::Rgb => rgb.iter().map(|&b| b as f64).collect(),
            Color::Bgr => rgb.chunks_exact(3).flat_map(|p| [p[2] as f64, p[1] as f64, p[0] as f64]).collect(),
            Color::Gray => rgb.chunks_exact(3).map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as f64).collect(),
        };
        let [th, tw] = self.size();
        // The resized image's size and where the tensor's window starts in it (negative: padding).
        let (nw, nh, top, left) = match self.resize {
            Resize::ShorterSide { shorter_side: s } => {
                let (nw, nh) = if width <= height { (s, (s as f64 * height as f64 / width as f64) as usize) } else { ((s as f64 * width as f64 / height as f64) as usize, s) };
                let off = |n: usize, t: usize| -> isize {
                    let d = n as f64 - t as f64;
                    (d / 2.0).round_ties_even() as isize
                };
                (nw.max(1), nh.max(1), off(nh, th), off(nw, tw))
            }
            Resize::Stretch => (tw, th, 0, 0),
            Resize::Fit { align } => {
                let r = (th as f64 / height as f64).min(tw as f64 / width as f64);
                let nh = ((height as f64 * r).round() as usize).clamp(1, th);
                let nw = ((width as f64 * r).round() as usize).clamp(1, tw);
                match align {
                    Align::TopLeft => (nw, nh, 0, 0),
                    Align::Center => (nw, nh, -(((th - nh) / 2) as isize), -(((tw - nw) / 2) as isize)),
                }
            }
        };
        if nw > MAX_SIDE || nh > MAX_SIDE {
            return Err(Error::Image(format!("resizing {width}x{height} gives {nw}x{nh}, over {MAX_SIDE} pixels a side")));
        }
        let horiz = resize_axis(&src, ch, height, width, &weights(self.filter, width, nw), true);
        let full = resize_axis(&horiz, ch, height, nw, &weights(self.filter, height, nh), false);
        let mut out = vec![0.0f32; ch * th * tw];
        for y in 0..th {
            for x in 0..tw {
                let (sy, sx) = (top + y as isize, left + x as isize);
                let inside = (0..nh as isize).contains(&sy) && (0..nw as isize).contains(&sx);
                for c in 0..ch {
                    let v = if inside {
                        let p = full[((sy as usize) * nw + sx as usize) * ch + c];
                        (p * self.scale - self.mean[c]) / self.std[c]
                    } else {
                        self.pad_value
                    };
                    let at = match self.layout {
                        Layout::Nchw => (c * th + y) * tw + x,
                        Layout::Nhwc => (y * tw + x) * ch + c,
                    };
                    out[at] = v as f32;
                }
            }
        }
        Tensor::f32(self.shape.clone(), out)
    }
}

/// Resize of an HWC f64 image of `ch` channels along one axis: `horizontal` maps width `from`
/// over `rows` rows; otherwise maps height `rows` over width `from`. `w` gives, for each output
/// sample, its first input index and the weights from there.
fn resize_axis(src: &[f64], ch: usize, rows: usize, from: usize, w: &[(usize, Vec<f64>)], horizontal: bool) -> Vec<f64> {
    let to = w.len();
    if horizontal {
        let mut out = vec![0.0; rows * to * ch];
        for y in 0..rows {
            for (i, (lo, wi)) in w.iter().enumerate() {
                for c in 0..ch {
                    out[(y * to + i) * ch + c] = wi.iter().enumerate().map(|(k, wk)| wk * src[(y * from + lo + k) * ch + c]).sum();
                }
            }
        }
        out
    } else {
        let width = from;
        let mut out = vec![0.0; to * width * ch];
        for (i, (lo, wi)) in w.iter().enumerate() {
            for x in 0..width {
                for c in 0..ch {
                    out[(i * width + x) * ch + c] = wi.iter().enumerate().map(|(k, wk)| wk * src[((lo + k) * width + x) * ch + c]).sum();
                }
            }
        }
        out
    }
}

fn weights(filter: Filter, n_in: usize, n_out: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = n_in as f64 / n_out as f64;
    let last = n_in - 1;
    match filter {
        Filter::Triangle => triangle_weights(n_in, n_out),
        Filter::Bilinear => (0..n_out)
            .map(|i| {
                let x = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (x.floor() as usize).min(last);
                let f = if i0 == last { 0.0 } else { x - i0 as f64 };
                (i0, if f == 0.0 { vec![1.0] } else { vec![1.0 - f, f] })
            })
            .collect(),
        // The input pixel under each output pixel's centre, the position accumulated step by step
        // in f64 as Pillow does (which decides exact ties like 7.5 * 12.8).
        Filter::Nearest => {
            let mut x = scale * 0.5;
            (0..n_out)
                .map(|_| {
                    let i = (x as usize).min(last);
                    x += scale;
                    (i, vec![1.0])
                })
                .collect()
        }
    }
}

/// For each output sample: first input index and normalised weights (Pillow's BILINEAR window).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let p = Preprocess::from_json(r#"{"shape": [1, 48, 192, 1], "layout": "NHWC", "color": "gray", "scale": 0.5, "mean": 0.25, "std": [2],
            "resize": {"mode": "fit", "align": "center", "filter": "bilinear"}, "pad_value": -1, "labels": "l.txt", "threshold": 0.3}"#)
        .unwrap();
        assert_eq!(Preprocess::from_json(&p.to_json()).unwrap(), p);
        let q = Preprocess::imagenet_like(48, 192);
        assert_eq!(Preprocess::from_json(&q.to_json()).unwrap(), q);
    }

    #[test]
    fn errors_name_the_field() {
        for (text, field) in [
            (r#"{"shape": [1, 3, 4]}"#, "'shape'"),
            (r#"{"shape": [1, 3, 4, 4], "color": "cmyk"}"#, "'color'"),
            (r#"{"shape": [1, 3, 4, 4], "mean": [0, 0]}"#, "'mean'"),
            (r#"{"shape": [1, 3, 4, 4], "std": [1, 0, 1]}"#, "'std'"),
            (r#"{"shape": [1, 3, 4, 4], "std": [1, "x", 1]}"#, "'std[1]'"),
            (r#"{"shape": [1, 3, 4, 4], "resize": {"mode": "zoom"}}"#, "'resize.mode'"),
            (r#"{"shape": [1, 3, 4, 4], "resize": {"shorter_side": 0}}"#, "'resize.shorter_side'"),
            (r#"{"shape": [1, 3, 4, 4], "resize": {"mode": "fit"}, "crop": {"size": [4, 4]}}"#, "'crop'"),
            (r#"{"shape": [1, 3, 4, 4], "resize": {"shorter_side": 8}, "crop": {"size": [4, 5]}}"#, "'crop.size'"),
            (r#"{"shape": [1, 1, 4, 4]}"#, "'shape'"),
            (r#"{"shape": [1, 3, 4, 4], "pad_value": "x"}"#, "'pad_value'"),
            (r#"[1]"#, "JSON object"),
        ] {
            let e = Preprocess::from_json(text).unwrap_err().to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }

    /// A shorter side smaller than the crop pads (a text-line model's "shorter side 48, centre crop
    /// 48x192"): a 100x48 image becomes 100x48 inside a 192-wide window, padded both sides.
    #[test]
    fn a_crop_larger_than_the_image_pads() {
        let p = Preprocess::from_json(r#"{"shape": [1, 3, 48, 192], "resize": {"shorter_side": 48}, "crop": {"size": [48, 192]}, "mean": 0, "std": 1, "scale": 1, "pad_value": -7}"#).unwrap();
        let img = vec![200u8; 100 * 48 * 3];
        let x = p.apply(&img, 100, 48).unwrap().to_f32_vec();
        let row = &x[..192];
        // (192 - 100) / 2 = 46 padded columns on the left, 46 on the right.
        assert!(row[..46].iter().all(|&v| v == -7.0) && row[146..].iter().all(|&v| v == -7.0));
        assert!(row[46..146].iter().all(|&v| (v - 200.0).abs() < 1e-9));
    }
}
