//! Latency measured on this device (DONNA's hardware in the loop): every library block, the
//! stem and the head, timed alone on one sample with the FP32 or the INT8 engine, into a table
//! whose sums predict an architecture's latency. The table is plain data (JSON) and names its
//! space, so a table measured elsewhere can be imported and a table of another space refused.

use super::bkd::Library;
use super::{parts_of, BlockChoice, Spec};
use crate::error::{Error, Result};
use crate::exec::int8::Int8Executor;
use crate::exec::Executor;
use crate::graph::Graph;
use crate::quant::{QuantSim, QuantSimConfig};
use crate::tensor::Tensor;
use crate::timing;
use crate::Limits;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Fp32,
    Int8,
}

/// A graph ready to time on one engine.
pub enum Runner {
    Fp32(Box<Executor>),
    Int8(Box<Int8Executor>),
}

impl Runner {
    /// `g` on `engine`; INT8 is W8A8 per channel, calibrated on `calib`.
    pub fn new(g: &Graph, engine: Engine, calib: &Tensor) -> Result<Runner> {
        Ok(match engine {
            Engine::Fp32 => Runner::Fp32(Box::new(Executor::new(g.clone(), Limits::default())?)),
            Engine::Int8 => {
                let mut sim = QuantSim::new(g.clone(), QuantSimConfig { per_channel: true, ..Default::default() })?;
                sim.calibrate(std::slice::from_ref(calib))?;
                Runner::Int8(Box::new(Int8Executor::new(&sim)?))
            }
        })
    }

    pub fn run(&mut self, x: Tensor) -> Result<Vec<Tensor>> {
        match self {
            Runner::Fp32(e) => e.run(vec![x]),
            Runner::Int8(e) => e.run(vec![x]),
        }
    }

    /// Median milliseconds of one inference on `x` (see [`crate::timing`]).
    pub fn median_ms(&mut self, x: &Tensor, clock: &dyn Fn() -> f64, timings: usize) -> Result<f64> {
        timing::median_ms(&mut || self.run(x.clone()).map(|_| ()), clock, timings)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyEntry {
    pub choice: BlockChoice,
    pub ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyTable {
    pub space: Spec,
    pub engine: Engine,
    pub stem_ms: f64,
    pub head_ms: f64,
    /// Per block, each library choice's milliseconds.
    pub blocks: Vec<Vec<LatencyEntry>>,
    /// Timings per median.
    pub timings: usize,
    /// Where it was measured (e.g. the browser's user agent), as the caller states it.
    #[serde(default)]
    pub device: String,
}

/// The first sample of `x` as a batch of one.
fn first(x: &Tensor) -> Result<Tensor> {
    let per: usize = x.shape()[1..].iter().product();
    let mut shape = x.shape().to_vec();
    shape[0] = 1;
    Tensor::f32(shape, x.to_f32_vec()[..per].to_vec())
}

impl LatencyTable {
    /// Times every block of `lib`, and the reference's stem and head, on `engine`. `feats` are
    /// the reference's features at each block edge ([`super::bkd::teacher_features`] of a few
    /// samples: the INT8 engine calibrates on them; the first sample is timed). `progress(done,
    /// total)`; returning false cancels (None).
    #[allow(clippy::too_many_arguments)]
    pub fn measure(spec: &Spec, lib: &Library, reference: &Graph, images: &Tensor, feats: &[Tensor], engine: Engine, clock: &dyn Fn() -> f64, timings: usize, progress: &mut dyn FnMut(usize, usize) -> bool) -> Result<Option<LatencyTable>> {
        if feats.len() != spec.slots.len() + 1 {
            return Err(Error::Input { name: "latency".into(), msg: format!("{} feature sets for {} block edges", feats.len(), spec.slots.len() + 1) });
        }
        let parts = parts_of(spec, &vec![BlockChoice::largest(); spec.slots.len()], reference)?;
        let total = lib.blocks.iter().map(Vec::len).sum::<usize>() + 2;
        let mut done = 0;
        let time = |g: &Graph, calib: &Tensor| -> Result<f64> { Runner::new(g, engine, calib)?.median_ms(&first(calib)?, clock, timings) };
        let stem_ms = time(&parts[0], images)?;
        let head_ms = time(&parts[parts.len() - 1], &feats[spec.slots.len()])?;
        done += 2;
        let mut blocks = Vec::new();
        for (n, list) in lib.blocks.iter().enumerate() {
            let mut row = Vec::new();
            for e in list {
                if !progress(done, total) {
                    return Ok(None);
                }
                row.push(LatencyEntry { choice: e.choice, ms: time(&e.graph, &feats[n])? });
                done += 1;
            }
            blocks.push(row);
        }
        progress(total, total);
        Ok(Some(LatencyTable { space: spec.clone(), engine, stem_ms, head_ms, blocks, timings, device: String::new() }))
    }

    /// The predicted milliseconds of an architecture: stem, its blocks, head.
    pub fn predict(&self, choices: &[BlockChoice]) -> Result<f64> {
        let mut ms = self.stem_ms + self.head_ms;
        for (n, c) in choices.iter().enumerate() {
            let c = c.canonical();
            let e = self.blocks.get(n).and_then(|row| row.iter().find(|e| e.choice.canonical() == c));
            ms += e.ok_or_else(|| Error::Input { name: "latency table".into(), msg: format!("has no time for block {n} {}", c.label()) })?.ms;
        }
        Ok(ms)
    }

    /// A table read from JSON, checked against the space it will serve.
    pub fn from_json(text: &str, spec: &Spec) -> Result<LatencyTable> {
        let t: LatencyTable = serde_json::from_str(text).map_err(|e| Error::Input { name: "latency table".into(), msg: format!("is not a latency table: {e}") })?;
        if t.space != *spec {
            return Err(Error::Input { name: "latency table".into(), msg: format!("was measured for the space '{}' with other blocks, not '{}'", t.space.name, spec.name) });
        }
        let finite = |v: f64| v.is_finite() && v >= 0.0;
        if t.blocks.len() != spec.slots.len() || !finite(t.stem_ms) || !finite(t.head_ms) || t.blocks.iter().flatten().any(|e| !finite(e.ms) || e.choice.index().is_none()) {
            return Err(Error::Input { name: "latency table".into(), msg: "has a block count other than the space's, a choice outside it, or a time that is not a non-negative number".into() });
        }
        Ok(t)
    }
}
