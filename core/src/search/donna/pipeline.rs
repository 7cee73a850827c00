//! DONNA's steps on the digits space as one sequence the CLI and the page's worker share: the
//! data splits, step B (block library, architecture library), the cost of an architecture, step
//! D (the front finetuned and measured) and the width-scaled baselines. Each step reports
//! progress and can be cancelled (None).

use super::arch::{self, ArchRecord, FinetuneConfig, Split};
use super::bkd::{self, BkdConfig, Library};
use super::evolve::Candidate;
use super::latency::{Engine, Runner};
use super::{BlockChoice, Slot, Spec};
use crate::error::Result;
use crate::graph::Graph;
use crate::tensor::Tensor;
use crate::train::{self, Data, Net, TrainConfig};
use crate::Limits;
use serde::{Deserialize, Serialize};

/// Training samples of the digits training split used for distillation and finetuning; the rest
/// is the validation split (block NSRs, architecture accuracies).
pub const FIT: usize = 1077;

/// The digits splits.
pub struct Digits {
    pub fit: Split,
    pub val: Split,
    /// The whole training split (step D and the baselines train on it).
    pub all: Split,
    pub test: Split,
    /// A few validation images: the INT8 engine calibrates on them, the first is timed.
    pub probe: Tensor,
}

fn rows(x: &Tensor, from: usize, to: usize) -> Result<Tensor> {
    let per: usize = x.shape()[1..].iter().product();
    let mut shape = x.shape().to_vec();
    shape[0] = to - from;
    Tensor::f32(shape, x.to_f32_vec()[from * per..to * per].to_vec())
}

impl Digits {
    pub fn new(train_x: Tensor, train_y: Vec<i64>, test_x: Tensor, test_y: Vec<i64>) -> Result<Digits> {
        let n = train_y.len();
        let split = |from: usize, to: usize| -> Result<Split> { Ok(Split { x: rows(&train_x, from, to)?, labels: train_y[from..to].to_vec() }) };
        Ok(Digits { fit: split(0, FIT)?, val: split(FIT, n)?, all: split(0, n)?, probe: rows(&train_x, FIT, (FIT + 32).min(n))?, test: Split { x: test_x, labels: test_y } })
    }
}

/// What steps B and D take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub library: usize,
    pub architectures: usize,
    pub bkd_epochs: usize,
    pub finetune_epochs: usize,
    pub final_epochs: usize,
    pub seed: u64,
}

/// Step B's products.
pub struct Built {
    pub lib: Library,
    pub records: Vec<ArchRecord>,
}

#[derive(Serialize, Deserialize)]
struct PackedEntry {
    block: usize,
    choice: BlockChoice,
    train_nsr: Vec<f64>,
    nsr: f64,
    macs: u64,
    params: u64,
    /// Bytes of its ONNX model after the header.
    len: usize,
}

#[derive(Serialize, Deserialize)]
struct PackedHeader {
    space: Spec,
    settings: Settings,
    blocks: Vec<PackedEntry>,
    records: Vec<ArchRecord>,
}

impl Built {
    /// One blob that keeps step B (to cache it, or to hand it across a worker restart): an
    /// 8-byte little-endian header length, the JSON header (space, settings, entries, records),
    /// then each block's ONNX model.
    pub fn pack(&self, spec: &Spec, settings: &Settings) -> Result<Vec<u8>> {
        let mut models = Vec::new();
        let mut blocks = Vec::new();
        for e in self.lib.blocks.iter().flatten() {
            let bytes = crate::onnx::export::fp32_model(&e.graph)?;
            blocks.push(PackedEntry { block: e.block, choice: e.choice, train_nsr: e.train_nsr.clone(), nsr: e.nsr, macs: e.macs, params: e.params, len: bytes.len() });
            models.extend(bytes);
        }
        let header = serde_json::to_vec(&PackedHeader { space: spec.clone(), settings: settings.clone(), blocks, records: self.records.clone() }).map_err(|e| crate::Error::Graph(e.to_string()))?;
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header);
        out.extend(models);
        Ok(out)
    }

    /// The step B packed by [`Built::pack`], if it was built for `spec` with `settings` (None
    /// otherwise); a damaged blob is an error.
    pub fn unpack(bytes: &[u8], spec: &Spec, settings: &Settings) -> Result<Option<Built>> {
        let bad = |msg: String| crate::Error::Input { name: "search cache".into(), msg };
        let n = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize).ok_or_else(|| bad("is shorter than its header".into()))?;
        let header = bytes.get(8..8usize.saturating_add(n)).ok_or_else(|| bad(format!("announces a {n}-byte header it does not hold")))?;
        let h: PackedHeader = serde_json::from_slice(header).map_err(|e| bad(format!("has an unreadable header: {e}")))?;
        if h.space != *spec || h.settings != *settings {
            return Ok(None);
        }
        let mut lib = Library { blocks: vec![Vec::new(); spec.slots.len()], complete: true };
        let mut at = 8 + n;
        for e in h.blocks {
            let model = bytes.get(at..at.saturating_add(e.len)).ok_or_else(|| bad("ends inside a block's model".into()))?;
            at += e.len;
            let (graph, _) = crate::onnx::load_model(model, &Limits::default())?;
            let slot = lib.blocks.get_mut(e.block).filter(|_| e.choice.index().is_some()).ok_or_else(|| bad(format!("names block {} of a space with {}", e.block, spec.slots.len())))?;
            slot.push(super::bkd::BlockEntry { block: e.block, choice: e.choice, train_nsr: e.train_nsr, nsr: e.nsr, macs: e.macs, params: e.params, graph });
        }
        Ok(Some(Built { lib, records: h.records }))
    }
}

/// Where a step is: `stage` (0 = block library, 1 = architecture library, 2 = latency table,
/// 3 = finetuning the front, 4 = baselines), done of total, a note.
pub type Progress<'a> = dyn FnMut(usize, f64, usize, Option<String>) -> bool + 'a;

/// Step B: the block library, then the architecture library.
pub fn build(spec: &Spec, reference: &Graph, d: &Digits, s: &Settings, progress: &mut Progress) -> Result<Option<Built>> {
    let choices = super::sample_choices(spec, s.library, s.seed);
    let cfg = BkdConfig { epochs: s.bkd_epochs, seed: s.seed, ..Default::default() };
    let lib = bkd::build_library(spec, reference, &d.fit.x, &d.val.x, &choices, &cfg, &mut |done, total, last| progress(0, done, total, last.map(|e| format!("block {} {}: NSR {:.3}", e.block, e.choice.label(), e.nsr))))?;
    if !lib.complete {
        return Ok(None);
    }
    let archs = arch::sample_architectures(&lib, s.architectures, s.seed);
    let ft = FinetuneConfig { epochs: s.finetune_epochs, seed: s.seed, ..Default::default() };
    let (records, done) = arch::build_arch_library(spec, &lib, reference, &archs, &d.fit, &d.val, &ft, &mut |done, total| progress(1, done, total, None))?;
    Ok(done.then_some(Built { lib, records }))
}

/// MACs of an architecture: the reference's stem and head (counted once, here), the library's
/// blocks.
pub fn macs<'a>(spec: &Spec, reference: &Graph, lib: &'a Library) -> Result<impl Fn(&[BlockChoice]) -> u64 + use<'a>> {
    let (_, cost) = crate::cost::analyze(reference, &[], &Limits::default())?;
    let blocks = move |c: &[BlockChoice]| -> u64 { c.iter().enumerate().map(|(n, c)| lib.entry(n, c).map_or(0, |e| e.macs)).sum() };
    let fixed = cost.macs - blocks(&vec![BlockChoice::largest(); spec.slots.len()]);
    Ok(move |c: &[BlockChoice]| fixed + blocks(c))
}

/// A finetuned, measured model.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub arch: Vec<String>,
    /// Test accuracy in %.
    pub accuracy: f64,
    /// Whole-model median on one sample, on the search's engine.
    pub latency_ms: f64,
    pub macs: u64,
    #[serde(skip)]
    pub graph: Graph,
}

fn measured(g: Graph, arch: Vec<String>, d: &Digits, engine: Engine, clock: &dyn Fn() -> f64, timings: usize) -> Result<Measured> {
    let (_, cost) = crate::cost::analyze(&g, &[], &Limits::default())?;
    let latency_ms = Runner::new(&g, engine, &d.probe)?.median_ms(&rows(&d.probe, 0, 1)?, clock, timings)?;
    Ok(Measured { arch, accuracy: d.test.accuracy(&g)?, latency_ms, macs: cost.macs, graph: g })
}

/// The reference measured like the others.
pub fn reference(reference: &Graph, d: &Digits, engine: Engine, clock: &dyn Fn() -> f64, timings: usize) -> Result<Measured> {
    measured(reference.clone(), vec![BlockChoice::largest().label(); 3], d, engine, clock, timings)
}

/// The reference's logits on the whole training split, which steps D and the baselines distill.
pub fn teacher_logits(reference: &Graph, d: &Digits) -> Result<Vec<f32>> {
    Ok(crate::exec::Executor::new(reference.clone(), Limits::default())?.run(vec![d.all.x.clone()])?.remove(0).to_f32_vec())
}

/// Step D: each chosen point finetuned from its distilled blocks (labels + distillation from the
/// reference, on the whole training split), then measured.
#[allow(clippy::too_many_arguments)]
pub fn finetune_front(spec: &Spec, reference: &Graph, lib: &Library, chosen: &[Candidate], d: &Digits, teacher: &[f32], s: &Settings, engine: Engine, clock: &dyn Fn() -> f64, timings: usize, progress: &mut Progress) -> Result<Option<Vec<Measured>>> {
    let ft = FinetuneConfig { epochs: s.final_epochs, seed: s.seed, ..Default::default() };
    let mut out = Vec::new();
    for (i, c) in chosen.iter().enumerate() {
        let g = arch::stitched(spec, lib, reference, &c.choices)?;
        let Some(g) = arch::finetune(g, &d.all, teacher, &ft, &mut |step, steps| progress(3, i as f64 + step as f64 / steps.max(1) as f64, chosen.len(), None))? else {
            return Ok(None);
        };
        out.push(measured(g, c.choices.iter().map(BlockChoice::label).collect(), d, engine, clock, timings)?);
        if !progress(3, (i + 1) as f64, chosen.len(), None) {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// The reference's shape at `width` times its channels, trained from scratch as long as step D
/// (labels + distillation from the reference), then measured.
#[allow(clippy::too_many_arguments)]
pub fn baseline(spec: &Spec, width: f64, d: &Digits, teacher: &[f32], s: &Settings, engine: Engine, clock: &dyn Fn() -> f64, timings: usize, progress: &mut Progress) -> Result<Option<Measured>> {
    let scaled = |c: usize| ((c as f64 * width).round() as usize).max(4);
    let small = Spec { name: format!("{} x{width}", spec.name), stem_ch: scaled(spec.stem_ch), slots: spec.slots.iter().map(|sl| Slot { in_ch: scaled(sl.in_ch), out_ch: scaled(sl.out_ch), stride: sl.stride }).collect(), ..spec.clone() };
    let g = super::architecture(&small, &vec![BlockChoice::largest(); small.slots.len()], s.seed)?;
    let mut net = Net::new(g, Limits::default())?;
    let xd = d.all.x.to_f32_vec();
    let data = Data { x: &xd, sample_shape: &d.all.x.shape()[1..], labels: Some(&d.all.labels), teacher: Some(teacher) };
    let ft = FinetuneConfig::default();
    let tc = TrainConfig { epochs: s.final_epochs, lr: ft.lr, temperature: ft.temperature, seed: s.seed, ..Default::default() };
    let report = train::train(&mut net, &data, &tc, None, &mut |p| progress(4, p.epoch as f64 + p.step as f64 / p.steps.max(1) as f64, s.final_epochs, None))?;
    if report.stop == train::Stop::Cancelled {
        return Ok(None);
    }
    Ok(Some(measured(net.into_graph(), vec![format!("reference x{width}")], d, engine, clock, timings)?))
}
