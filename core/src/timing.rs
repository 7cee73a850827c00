//! Timing on a coarse clock: a browser's `performance.now()` ticks in 0.1 ms where a small model
//! runs in microseconds. A tick falls inside a call in proportion to the call's length, so means
//! over many calls are unbiased; medians over several such means keep out the outliers.

use crate::error::Result;

/// Most calls in one timing.
const MAX_CALLS: usize = 10_000;

/// How many calls of `f` fill about 10 ms, found by calling it for at least 2 ms (the warm-up).
/// `clock` returns milliseconds.
pub fn calls_per_timing(f: &mut dyn FnMut() -> Result<()>, clock: &dyn Fn() -> f64) -> Result<usize> {
    let (t0, mut n) = (clock(), 0usize);
    while n == 0 || (clock() - t0 < 2.0 && n < MAX_CALLS) {
        f()?;
        n += 1;
    }
    let once = ((clock() - t0) / n as f64).max(1e-4);
    Ok(((10.0 / once).ceil() as usize).clamp(1, MAX_CALLS))
}

/// The median over `timings` timings after a warm-up of one call of `f`, each timing the mean
/// over as many calls as fill about 10 ms.
pub fn median_ms(f: &mut dyn FnMut() -> Result<()>, clock: &dyn Fn() -> f64, timings: usize) -> Result<f64> {
    let calls = calls_per_timing(f, clock)?;
    let mut t = Vec::with_capacity(timings.max(1));
    for _ in 0..timings.max(1) {
        let t0 = clock();
        for _ in 0..calls {
            f()?;
        }
        t.push((clock() - t0) / calls as f64);
    }
    Ok(median(t))
}

/// The middle value (the upper one of an even count); NaN when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_coarse_clock_still_times_short_calls() {
        // A call takes 0.013 ms on a clock that ticks every 0.1 ms.
        let now = Cell::new(0.0f64);
        let clock = || (now.get() / 0.1).floor() * 0.1;
        let mut call = || {
            now.set(now.get() + 0.013);
            Ok(())
        };
        let ms = median_ms(&mut call, &clock, 5).unwrap();
        assert!((ms - 0.013).abs() < 0.013 * 0.02, "{ms}");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!(median(Vec::new()).is_nan());
    }
}
