//! Statistics collectors. Observers only accumulate; encodings are computed from what they saw
//! by the pure functions in [`super::encoding`].

/// Running minimum and maximum over every value seen (AIMET's "tf" / min-max analyzer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinMax {
    pub min: f32,
    pub max: f32,
    /// True once a NaN was seen (calibration then fails with a clear error).
    pub saw_nan: bool,
    pub count: u64,
}

impl Default for MinMax {
    fn default() -> Self {
        MinMax { min: f32::INFINITY, max: f32::NEG_INFINITY, saw_nan: false, count: 0 }
    }
}

impl MinMax {
    pub fn observe(&mut self, xs: &[f32]) {
        // Sixteen independent lanes the compiler turns into vector min/max: a comparison with a
        // NaN is false, so NaNs never replace a bound (they are flagged apart).
        const L: usize = 16;
        let (mut lo, mut hi, mut nan) = ([f32::INFINITY; L], [f32::NEG_INFINITY; L], [false; L]);
        let chunks = xs.chunks_exact(L);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..L {
                let x = c[i];
                nan[i] |= x.is_nan();
                lo[i] = if x < lo[i] { x } else { lo[i] };
                hi[i] = if x > hi[i] { x } else { hi[i] };
            }
        }
        for (i, &x) in rest.iter().enumerate() {
            nan[i] |= x.is_nan();
            lo[i] = if x < lo[i] { x } else { lo[i] };
            hi[i] = if x > hi[i] { x } else { hi[i] };
        }
        for i in 0..L {
            self.min = self.min.min(lo[i]);
            self.max = self.max.max(hi[i]);
            self.saw_nan |= nan[i];
        }
        self.count += xs.len() as u64;
    }
}

/// Number of histogram bins of the SQNR-based range search (as AIMET's tf_enhanced).
pub const HIST_BINS: usize = 512;

/// Probability density over a range fixed by the first batch (AIMET's `TfEnhancedEncodingAnalyzer`):
/// centre `c = (min+max)/2`, range `[c - 3(c - min), c + 3(max - c)]`; later values outside it are
/// dropped; each batch's histogram is normalised and the batches are averaged with equal weight.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub lo: f64,
    pub bin: f64,
    /// The range is fixed (by the first batch, or given: [`Histogram::with_range`]).
    pub ranged: bool,
    pub pdf: Vec<f64>,
    pub batches: u32,
    pub saw_nan: bool,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { lo: 0.0, bin: 0.0, ranged: false, pdf: vec![0.0; HIST_BINS], batches: 0, saw_nan: false }
    }
}

impl Histogram {
    /// An empty histogram over the range `(lo, bin)` another one fixed.
    pub fn with_range(lo: f64, bin: f64) -> Self {
        Histogram { lo, bin, ranged: true, ..Default::default() }
    }

    pub fn observe(&mut self, xs: &[f32]) {
        if let Some((counts, inside)) = self.count(xs) {
            self.add(&counts, inside);
        }
    }

    /// The batch's bin counts and how many values fell inside the range (fixing the range from
    /// this batch if none is), or None if the batch is empty or holds a NaN (then recorded).
    pub fn count(&mut self, xs: &[f32]) -> Option<(Vec<u32>, u64)> {
        if xs.iter().any(|x| x.is_nan()) {
            self.saw_nan = true;
            return None;
        }
        if xs.is_empty() {
            return None;
        }
        if !self.ranged {
            let (mn, mx) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x as f64), b.max(x as f64)));
            let c = (mn + mx) / 2.0;
            let (lo, hi) = (c - 3.0 * (c - mn), c + 3.0 * (mx - c));
            self.lo = lo;
            self.bin = ((hi - lo) / HIST_BINS as f64).max(f64::MIN_POSITIVE);
            self.ranged = true;
        }
        let mut counts = vec![0u32; HIST_BINS];
        let mut inside = 0u64;
        for &x in xs {
            let i = ((x as f64 - self.lo) / self.bin).round();
            if i >= 0.0 && i < HIST_BINS as f64 {
                counts[i as usize] += 1;
                inside += 1;
            }
        }
        Some((counts, inside))
    }

    /// Adds one batch's normalised counts (as [`Histogram::count`] gave them).
    pub fn add(&mut self, counts: &[u32], inside: u64) {
        if inside > 0 {
            for (p, c) in self.pdf.iter_mut().zip(counts) {
                *p += *c as f64 / inside as f64;
            }
        }
        self.batches += 1;
    }

    /// The averaged density.
    pub fn density(&self) -> Vec<f64> {
        let b = self.batches.max(1) as f64;
        self.pdf.iter().map(|p| p / b).collect()
    }
}

/// Per-batch percentiles, averaged over batches: the range keeps `percentile` % of the values
/// on each side (e.g. 99.99 drops the 0.01 % most extreme values at each end). Each batch's pair
/// is kept, so that parts observed apart merge into exactly the sums of one pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Percentile {
    pub batches: Vec<(f64, f64)>,
    pub saw_nan: bool,
}

impl Percentile {
    pub fn observe(&mut self, xs: &[f32], percentile: f32) {
        if xs.is_empty() {
            return;
        }
        if xs.iter().any(|x| x.is_nan()) {
            self.saw_nan = true;
            return;
        }
        let mut v = xs.to_vec();
        let n = v.len();
        let q = (percentile as f64 / 100.0).clamp(0.5, 1.0);
        let hi_i = (((n - 1) as f64) * q).round() as usize;
        let lo_i = (((n - 1) as f64) * (1.0 - q)).round() as usize;
        let hi = *v.select_nth_unstable_by(hi_i, f32::total_cmp).1;
        let lo = *v.select_nth_unstable_by(lo_i, f32::total_cmp).1;
        self.batches.push((lo as f64, hi as f64));
    }

    pub fn range(&self) -> (f32, f32) {
        let b = self.batches.len().max(1) as f64;
        let (lo, hi) = self.batches.iter().fold((0.0, 0.0), |(l, h), (a, b)| (l + a, h + b));
        ((lo / b) as f32, (hi / b) as f32)
    }
}
