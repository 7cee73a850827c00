//! Outputs that are maps (a detector's heatmap, a segmenter's class scores, a super-resolved
//! image): how to tell them from class scores, how to draw them, and how far a quantized map is
//! from the FP32 one.

use crate::metrics::{iou_at, sqnr_db};
use serde::{Deserialize, Serialize};

/// How a map output is drawn and measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum MapKind {
    /// One channel: a heatmap, thresholded for the IoU.
    Heat { threshold: f32 },
    /// Several channels of class scores: the arg-max class of each pixel.
    Classes { classes: usize },
    /// Three channels at the input's size: an RGB image.
    Image,
}

/// The layout of a map output: `channels` planes of `height` x `width` (batch 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// `[1, C, H, W]` or `[1, H, W]` with more than one pixel on each side is a map; `[1, K]` and
/// `[1, K, 1, 1]` are class scores.
pub fn map_shape(shape: &[usize]) -> Option<MapShape> {
    let (channels, height, width) = match *shape {
        [1, c, h, w] => (c, h, w),
        [1, h, w] => (1, h, w),
        _ => return None,
    };
    (height > 1 && width > 1 && channels > 0).then_some(MapShape { channels, height, width })
}

impl MapShape {
    /// A single channel is a heatmap; three at the model input's size an image; else classes.
    pub fn kind(&self, input_hw: [usize; 2], threshold: f32) -> MapKind {
        match self.channels {
            1 => MapKind::Heat { threshold },
            3 if [self.height, self.width] == input_hw => MapKind::Image,
            c => MapKind::Classes { classes: c },
        }
    }
    fn pixels(&self) -> usize {
        self.height * self.width
    }
}

/// How the quantized map differs from the FP32 one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapMetrics {
    /// Pooled SQNR of all values, dB (`None`: identical).
    pub sqnr_db: Option<f64>,
    /// Heat: IoU of the two maps above the threshold.
    pub iou: Option<f64>,
    /// Classes: the fraction of pixels with the same class, and the mean IoU over the classes
    /// present in either map.
    pub pixel_agreement: Option<f64>,
    pub miou: Option<f64>,
    /// Image: PSNR against the FP32 image's value range, dB.
    pub psnr_db: Option<f64>,
}

/// Heat: the fraction of pixels above the threshold.
pub fn above(map: &[f32], threshold: f32) -> f64 {
    map.iter().filter(|&&v| v > threshold).count() as f64 / map.len().max(1) as f64
}

/// The arg-max class of each pixel of `C` planes (first class on ties).
pub fn class_map(values: &[f32], s: MapShape) -> Vec<usize> {
    let n = s.pixels();
    (0..n)
        .map(|p| {
            let mut best = 0;
            for c in 1..s.channels {
                if values[c * n + p] > values[best * n + p] {
                    best = c;
                }
            }
            best
        })
        .collect()
}

/// Mean over the classes present in either map of |a = c and b = c| / |a = c or b = c|.
pub fn mean_iou(a: &[usize], b: &[usize], classes: usize) -> f64 {
    let (mut inter, mut union) = (vec![0usize; classes], vec![0usize; classes]);
    for (&x, &y) in a.iter().zip(b) {
        if x == y {
            inter[x] += 1;
            union[x] += 1;
        } else {
            union[x] += 1;
            union[y] += 1;
        }
    }
    let present: Vec<f64> = inter.iter().zip(&union).filter(|(_, &u)| u > 0).map(|(&i, &u)| i as f64 / u as f64).collect();
    if present.is_empty() {
        1.0
    } else {
        present.iter().sum::<f64>() / present.len() as f64
    }
}

/// `10 log10(peak² / MSE)` with `peak` the reference's value range.
pub fn psnr_db(reference: &[f32], test: &[f32]) -> Option<f64> {
    let (lo, hi) = range(reference);
    let mse = reference.iter().zip(test).map(|(&r, &t)| ((r - t) as f64).powi(2)).sum::<f64>() / reference.len().max(1) as f64;
    (mse > 0.0).then(|| 10.0 * ((hi - lo) as f64).powi(2).max(f64::MIN_POSITIVE).log10() - 10.0 * mse.log10())
}

fn range(v: &[f32]) -> (f32, f32) {
    v.iter().filter(|x| x.is_finite()).fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// The metrics of `test` against `reference`, both laid out as `s`.
pub fn compare(kind: MapKind, s: MapShape, reference: &[f32], test: &[f32]) -> MapMetrics {
    let sqnr = sqnr_db(reference, test);
    let mut m = MapMetrics { sqnr_db: sqnr.is_finite().then_some(sqnr), iou: None, pixel_agreement: None, miou: None, psnr_db: None };
    match kind {
        MapKind::Heat { threshold } => m.iou = Some(iou_at(reference, test, threshold)),
        MapKind::Classes { classes } => {
            let (a, b) = (class_map(reference, s), class_map(test, s));
            m.pixel_agreement = Some(a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64);
            m.miou = Some(mean_iou(&a, &b, classes));
        }
        MapKind::Image => m.psnr_db = psnr_db(reference, test),
    }
    m
}

/// Longest side of a drawn map; larger maps are drawn with every k-th pixel.
pub const MAX_DRAWN_SIDE: usize = 512;

/// A map drawn as RGBA pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drawing {
    pub width: usize,
    pub height: usize,
    /// `width * height * 4` bytes (a typed array, not a list of numbers, in JavaScript).
    #[serde(with = "serde_bytes")]
    pub rgba: Vec<u8>,
}

/// Draws maps of one shape alike, so that two of them can be compared by eye: heatmaps on the
/// reference's value range (or [0, 1] for probabilities), classes in fixed colours, images on
/// the reference's range.
pub struct Painter {
    kind: MapKind,
    shape: MapShape,
    lo: f32,
    hi: f32,
    step: usize,
}

impl Painter {
    pub fn new(kind: MapKind, shape: MapShape, reference: &[f32]) -> Painter {
        let (mut lo, mut hi) = range(reference);
        if kind != MapKind::Image && lo >= 0.0 && hi <= 1.0 {
            (lo, hi) = (0.0, 1.0);
        }
        if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
            (lo, hi) = (lo.min(0.0), lo.max(0.0) + 1.0);
        }
        Painter { kind, shape, lo, hi, step: shape.height.max(shape.width).div_ceil(MAX_DRAWN_SIDE) }
    }

    fn canvas(&self, pixel: impl Fn(usize) -> [u8; 3]) -> Drawing {
        let s = self.shape;
        let (width, height) = (s.width.div_ceil(self.step), s.height.div_ceil(self.step));
        let mut rgba = Vec::with_capacity(width * height * 4);
        for y in (0..s.height).step_by(self.step) {
            for x in (0..s.width).step_by(self.step) {
                rgba.extend(pixel(y * s.width + x));
                rgba.push(255);
            }
        }
        Drawing { width, height, rgba }
    }

    fn unit(&self, v: f32) -> f32 {
        ((v - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
    }

    /// One map (laid out as the painter's shape).
    pub fn draw(&self, values: &[f32]) -> Drawing {
        let n = self.shape.pixels();
        match self.kind {
            MapKind::Heat { .. } => self.canvas(|p| heat(self.unit(values[p]))),
            MapKind::Classes { .. } => {
                let classes = class_map(values, self.shape);
                self.canvas(|p| class_colour(classes[p]))
            }
            MapKind::Image => self.canvas(|p| [0, 1, 2].map(|c| (self.unit(values[c * n + p]) * 255.0).round() as u8)),
        }
    }

    /// Where `test` differs from `reference`: |difference| in red on black, the largest
    /// difference full red (classes: the pixels whose class differs). Returns the drawing and
    /// the largest difference.
    pub fn draw_difference(&self, reference: &[f32], test: &[f32]) -> (Drawing, f32) {
        let n = self.shape.pixels();
        if let MapKind::Classes { .. } = self.kind {
            let (a, b) = (class_map(reference, self.shape), class_map(test, self.shape));
            return (self.canvas(|p| if a[p] == b[p] { [0, 0, 0] } else { [255, 60, 60] }), 1.0);
        }
        let diff: Vec<f32> = (0..n).map(|p| (0..self.shape.channels).map(|c| (reference[c * n + p] - test[c * n + p]).abs()).fold(0.0, f32::max)).collect();
        let max = diff.iter().copied().fold(0.0, f32::max);
        let d = self.canvas(|p| {
            let u = if max > 0.0 { diff[p] / max } else { 0.0 };
            [(u * 255.0).round() as u8, (u * 60.0).round() as u8, (u * 60.0).round() as u8]
        });
        (d, max)
    }
}

/// A dark-blue-to-yellow ramp (perceptually ordered: dark is low).
fn heat(u: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [[12.0, 7.0, 60.0], [80.0, 18.0, 123.0], [182.0, 54.0, 121.0], [251.0, 136.0, 97.0], [252.0, 253.0, 191.0]];
    let x = u * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let t = x - i as f32;
    [0, 1, 2].map(|c| (STOPS[i][c] + (STOPS[i + 1][c] - STOPS[i][c]) * t).round() as u8)
}

/// Distinct colours for class indices (hue steps of the golden angle; class 0 dark grey).
fn class_colour(c: usize) -> [u8; 3] {
    if c == 0 {
        return [40, 40, 40];
    }
    let h = (c as f32 * 137.508) % 360.0 / 60.0;
    let x = 1.0 - (h % 2.0 - 1.0).abs();
    let (r, g, b) = match h as usize {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    [r, g, b].map(|v: f32| (60.0 + v * 180.0) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_class_scores_are_told_apart() {
        assert_eq!(map_shape(&[1, 1, 256, 256]), Some(MapShape { channels: 1, height: 256, width: 256 }));
        assert_eq!(map_shape(&[1, 64, 64]), Some(MapShape { channels: 1, height: 64, width: 64 }));
        assert_eq!(map_shape(&[1, 1000]), None);
        assert_eq!(map_shape(&[1, 1000, 1, 1]), None);
        assert_eq!(map_shape(&[2, 1, 8, 8]), None);
        let s = MapShape { channels: 3, height: 8, width: 8 };
        assert_eq!(s.kind([8, 8], 0.5), MapKind::Image);
        assert_eq!(s.kind([4, 4], 0.5), MapKind::Classes { classes: 3 });
    }

    #[test]
    fn class_metrics_by_hand() {
        // Two classes over 4 pixels, scores laid out [C, H*W].
        let s = MapShape { channels: 2, height: 2, width: 2 };
        let a = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0]; // classes 0 1 0 1
        let b = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // classes 0 1 1 1
        assert_eq!(class_map(&a, s), vec![0, 1, 0, 1]);
        assert_eq!(class_map(&b, s), vec![0, 1, 1, 1]);
        let m = compare(MapKind::Classes { classes: 2 }, s, &a, &b);
        assert_eq!(m.pixel_agreement, Some(0.75));
        // class 0: 1 / 2; class 1: 2 / 3.
        assert!((m.miou.unwrap() - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn psnr_of_known_noise() {
        // Range 2, every value off by 0.02: 10 log10(4 / 4e-4) = 40 dB.
        let r = [-1.0, 1.0, 0.0, 0.5];
        let t: Vec<f32> = r.iter().map(|v| v + 0.02).collect();
        assert!((psnr_db(&r, &t).unwrap() - 40.0).abs() < 1e-3);
        assert_eq!(psnr_db(&r, &r), None);
    }

    #[test]
    fn drawings_share_the_reference_scale_and_are_subsampled() {
        let s = MapShape { channels: 1, height: 1024, width: 600 };
        let mut r = vec![0.0f32; s.pixels()];
        r[0] = 1.0;
        let p = Painter::new(MapKind::Heat { threshold: 0.5 }, s, &r);
        let d = p.draw(&r);
        assert_eq!((d.width, d.height), (300, 512));
        assert_eq!(d.rgba.len(), 300 * 512 * 4);
        assert_eq!(&d.rgba[..4], &[252, 253, 191, 255]);
        assert_eq!(&d.rgba[4..8], &[12, 7, 60, 255]);
        let mut t = r.clone();
        t[2] = 0.25;
        let (diff, max) = p.draw_difference(&r, &t);
        assert_eq!(max, 0.25);
        assert_eq!(&diff.rgba[4..8], &[255, 60, 60, 255]);
        assert_eq!(&diff.rgba[..4], &[0, 0, 0, 255]);
    }
}
