//! Calibration in parts: the forward passes over the calibration samples split into runs of
//! samples that can be observed apart (in several workers, each with the graph as ONNX) and then
//! merged, in sample order, into exactly the statistics of one pass.
//!
//! - [`QuantSim::calibration_plan`] gives the graph to run (weights quantized) and the activations
//!   to watch;
//! - [`observe`] runs a slice of the samples and returns a [`Part`];
//! - [`Part::merge`] appends a later part; [`QuantSim::finish_calibration`] turns the merged part
//!   into encodings.
//!
//! Min-max merges by min and max. The percentile scheme keeps each sample's pair and sums them in
//! order at the end. The SQNR scheme's histogram range is fixed by the first sample: the part that
//! starts the sequence adds each sample's normalised histogram as it goes; a later part is given
//! that part's ranges ([`Part::ranges`]) and keeps each sample's counts, which the merge adds in
//! order. So every merge gives the bits of one sequential pass.
//!
//! [`QuantSim::calibration_plan`]: super::QuantSim::calibration_plan
//! [`QuantSim::finish_calibration`]: super::QuantSim::finish_calibration

use super::observer::{Histogram, MinMax, Percentile, HIST_BINS};
use super::sim::CalibScheme;
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::Graph;
use crate::onnx::Limits;
use crate::tensor::Tensor;

/// What a calibration pass runs: the graph with quantized weights and the values it watches.
#[derive(Debug, Clone)]
pub struct Plan {
    pub graph: Graph,
    /// Names of the watched values (the computed activations with a quantizer).
    pub watched: Vec<String>,
    pub scheme: CalibScheme,
    pub limits: Limits,
}

/// What one watched value showed over a run of samples.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    MinMax(MinMax),
    /// `hist` holds the batches added in sequence; `later` the counts (and number of values
    /// inside the range) of each batch of a part that does not start the sequence.
    Hist { hist: Histogram, later: Vec<(u64, Vec<u32>)>, leading: bool },
    Pct(Percentile),
}

impl Seen {
    pub(crate) fn new(scheme: CalibScheme, leading: bool, range: Option<(f64, f64)>) -> Self {
        match scheme {
            CalibScheme::MinMax => Seen::MinMax(MinMax::default()),
            CalibScheme::Sqnr => {
                let hist = range.map_or_else(Histogram::default, |(lo, bin)| Histogram::with_range(lo, bin));
                Seen::Hist { hist, later: Vec::new(), leading }
            }
            CalibScheme::Percentile(_) => Seen::Pct(Percentile::default()),
        }
    }

    pub(crate) fn observe(&mut self, xs: &[f32], scheme: CalibScheme) {
        match self {
            Seen::MinMax(m) => m.observe(xs),
            Seen::Hist { hist, later, leading } => {
                if let Some((counts, inside)) = hist.count(xs) {
                    if *leading {
                        hist.add(&counts, inside);
                    } else {
                        later.push((inside, counts));
                    }
                }
            }
            Seen::Pct(p) => p.observe(xs, if let CalibScheme::Percentile(q) = scheme { q } else { 100.0 }),
        }
    }

    pub(crate) fn saw_nan(&self) -> bool {
        match self {
            Seen::MinMax(m) => m.saw_nan,
            Seen::Hist { hist, .. } => hist.saw_nan,
            Seen::Pct(p) => p.saw_nan,
        }
    }

    pub(crate) fn seen(&self) -> bool {
        match self {
            Seen::MinMax(m) => m.count > 0,
            Seen::Hist { hist, later, .. } => hist.batches > 0 || !later.is_empty(),
            Seen::Pct(p) => !p.batches.is_empty(),
        }
    }

    /// Appends what `next` saw after `self`.
    fn merge(&mut self, next: Seen) -> Result<()> {
        match (self, next) {
            (Seen::MinMax(a), Seen::MinMax(b)) => {
                a.min = a.min.min(b.min);
                a.max = a.max.max(b.max);
                a.saw_nan |= b.saw_nan;
                a.count += b.count;
            }
            (Seen::Pct(a), Seen::Pct(b)) => {
                a.batches.extend(b.batches);
                a.saw_nan |= b.saw_nan;
            }
            (Seen::Hist { hist: a, later: a_later, leading }, Seen::Hist { hist: b, later: b_later, .. }) => {
                a.saw_nan |= b.saw_nan;
                if b.batches > 0 {
                    return Err(Error::Quant("a later calibration part started its own histogram sequence".into()));
                }
                if b.ranged {
                    if !a.ranged {
                        (a.lo, a.bin, a.ranged) = (b.lo, b.bin, true);
                    } else if (a.lo, a.bin) != (b.lo, b.bin) {
                        return Err(Error::Quant("calibration parts binned with different histogram ranges".into()));
                    }
                }
                for (inside, counts) in b_later {
                    if *leading {
                        a.add(&counts, inside);
                    } else {
                        a_later.push((inside, counts));
                    }
                }
            }
            _ => return Err(Error::Quant("calibration parts of different schemes".into())),
        }
        Ok(())
    }
}

/// What a run of samples showed, one [`Seen`] per watched value (in the plan's order).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub seen: Vec<Seen>,
    /// Samples observed.
    pub samples: usize,
}

impl Part {
    /// Appends a part observed on the samples that follow this one's.
    pub fn merge(&mut self, next: Part) -> Result<()> {
        if next.seen.len() != self.seen.len() {
            return Err(Error::Quant(format!("calibration parts of {} and {} values", self.seen.len(), next.seen.len())));
        }
        for (a, b) in self.seen.iter_mut().zip(next.seen) {
            a.merge(b)?;
        }
        self.samples += next.samples;
        Ok(())
    }

    /// The histogram ranges this part fixed (SQNR scheme; None elsewhere), to give to the parts
    /// that follow it.
    pub fn ranges(&self) -> Vec<Option<(f64, f64)>> {
        self.seen
            .iter()
            .map(|s| match s {
                Seen::Hist { hist, .. } if hist.ranged => Some((hist.lo, hist.bin)),
                _ => None,
            })
            .collect()
    }

    /// The part as numbers (to post to another worker): exact, as every value is an f32, a
    /// count below 2^53, or an f64.
    pub fn to_f64s(&self) -> Vec<f64> {
        let mut v = vec![self.samples as f64, self.seen.len() as f64];
        for s in &self.seen {
            match s {
                Seen::MinMax(m) => v.extend([0.0, m.min as f64, m.max as f64, m.saw_nan as u8 as f64, m.count as f64]),
                Seen::Pct(p) => {
                    v.extend([1.0, p.saw_nan as u8 as f64, p.batches.len() as f64]);
                    v.extend(p.batches.iter().flat_map(|&(l, h)| [l, h]));
                }
                Seen::Hist { hist, later, leading } => {
                    v.extend([2.0, *leading as u8 as f64, hist.ranged as u8 as f64, hist.lo, hist.bin, hist.saw_nan as u8 as f64, hist.batches as f64]);
                    v.extend(&hist.pdf);
                    v.push(later.len() as f64);
                    for (inside, counts) in later {
                        v.push(*inside as f64);
                        v.extend(counts.iter().map(|&c| c as f64));
                    }
                }
            }
        }
        v
    }

    /// Reads [`Part::to_f64s`] back; an error (not a panic) on anything malformed.
    pub fn from_f64s(v: &[f64]) -> Result<Part> {
        let bad = || Error::Quant("malformed calibration part".into());
        let mut it = v.iter().copied();
        let mut next = || it.next().ok_or_else(bad);
        let count = |x: f64| if x >= 0.0 && x.fract() == 0.0 && x < 9.0e15 { Ok(x as u64) } else { Err(bad()) };
        let samples = count(next()?)? as usize;
        let n = count(next()?)? as usize;
        if n > v.len() {
            return Err(bad());
        }
        let mut seen = Vec::with_capacity(n);
        for _ in 0..n {
            let tag = next()?;
            seen.push(if tag == 0.0 {
                let (min, max, nan, count_) = (next()? as f32, next()? as f32, next()? != 0.0, count(next()?)?);
                Seen::MinMax(MinMax { min, max, saw_nan: nan, count: count_ })
            } else if tag == 1.0 {
                let saw_nan = next()? != 0.0;
                let k = count(next()?)? as usize;
                if k > v.len() {
                    return Err(bad());
                }
                let batches = (0..k).map(|_| Ok((next()?, next()?))).collect::<Result<Vec<_>>>()?;
                Seen::Pct(Percentile { batches, saw_nan })
            } else if tag == 2.0 {
                let leading = next()? != 0.0;
                let ranged = next()? != 0.0;
                let (lo, bin, saw_nan) = (next()?, next()?, next()? != 0.0);
                let batches = u32::try_from(count(next()?)?).map_err(|_| bad())?;
                let pdf = (0..HIST_BINS).map(|_| next()).collect::<Result<Vec<_>>>()?;
                let k = count(next()?)? as usize;
                if k > v.len() / HIST_BINS {
                    return Err(bad());
                }
                let mut later = Vec::with_capacity(k);
                for _ in 0..k {
                    let inside = count(next()?)?;
                    let counts = (0..HIST_BINS).map(|_| count(next()?).and_then(|c| u32::try_from(c).map_err(|_| bad()))).collect::<Result<Vec<_>>>()?;
                    later.push((inside, counts));
                }
                Seen::Hist { hist: Histogram { lo, bin, ranged, pdf, batches, saw_nan }, later, leading }
            } else {
                return Err(bad());
            });
        }
        if next().is_ok() {
            return Err(bad());
        }
        Ok(Part { seen, samples })
    }
}

/// Runs `samples` through the plan's graph and records what each watched value showed.
/// `ranges` (from [`Part::ranges`] of the part before) makes this a part that continues a
/// sequence; None starts one. `progress(done, total)` after each sample; false cancels.
pub fn observe(plan: &Plan, samples: &[Tensor], ranges: Option<&[Option<(f64, f64)>]>, progress: &mut dyn FnMut(usize, usize) -> bool) -> Result<Part> {
    if let Some(r) = ranges {
        if r.len() != plan.watched.len() {
            return Err(Error::Quant(format!("{} histogram ranges for {} watched values", r.len(), plan.watched.len())));
        }
    }
    let mut seen: Vec<Seen> = (0..plan.watched.len()).map(|i| Seen::new(plan.scheme, ranges.is_none(), ranges.and_then(|r| r[i]))).collect();
    let by_name: std::collections::HashMap<&str, usize> = plan.watched.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let slot: Vec<Option<usize>> = plan.graph.values.iter().map(|v| by_name.get(v.name.as_str()).copied()).collect();
    let mut exec = Executor::with_fusion(plan.graph.clone(), plan.limits.clone(), false)?;
    let scheme = plan.scheme;
    for (done, x) in samples.iter().enumerate() {
        exec.run_with_hook(vec![x.clone()], &mut |id, t| {
            if let (Some(Some(i)), Some(d)) = (slot.get(id), t.as_f32()) {
                seen[*i].observe(d, scheme);
            }
            Ok(())
        })?;
        if !progress(done + 1, samples.len()) {
            return Err(Error::Quant("calibration was cancelled".into()));
        }
    }
    Ok(Part { seen, samples: samples.len() })
}
