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
        for &x in xs {
            if x.is_nan() {
                self.saw_nan = true;
            } else {
                self.min = self.min.min(x);
                self.max = self.max.max(x);
            }
        }
        self.count += xs.len() as u64;
    }
}
