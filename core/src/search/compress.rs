//! Compression of a whole model to a MAC target: the layers a method applies to, AIMET's greedy
//! per-layer ratio search over them ([`super::greedy_ratio`]), and the compressed graph with a
//! report that is plain data (the sensitivity table, the choices, the costs before and after).

use super::greedy_ratio::{self, candidates, Ladder, RefineStep, Selection, SensitivityTable};
use crate::cost::{self, CostReport};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, ScoreKind};
use crate::graph::Graph;
use crate::passes::prune::{self, kept_for_ratio, PruneUnit, Sampling, UnitFit};
use crate::passes::svd::{SvdKind, SvdLayer};
use crate::tensor::Tensor;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    SpatialSvd,
    WeightSvd,
    ChannelPruning,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::SpatialSvd => "spatial-svd",
            Method::WeightSvd => "weight-svd",
            Method::ChannelPruning => "channel-pruning",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompressConfig {
    pub method: Method,
    /// Share of the model's MACs to keep, in (0, 1].
    pub target: f64,
    /// N: the candidate ratios are k/N for k = 1..N−1 (AIMET's default N = 10).
    pub candidates: usize,
    /// Nodes left as they are (by name): not chosen as a layer to compress.
    pub skip: Vec<String>,
    /// Round ranks and kept channels up to a multiple of this (1: no rounding).
    pub multiple: usize,
    /// Evaluations for the local search after AIMET's selection (see [`greedy_ratio::refine`]);
    /// 0 keeps AIMET's selection; None: 2 per layer plus 10.
    pub refine_steps: Option<usize>,
    /// Channel pruning: how channels are chosen and where the least-squares points come from.
    pub selection: prune::Selection,
    pub sampling: Sampling,
}

impl CompressConfig {
    pub fn new(method: Method, target: f64) -> Self {
        CompressConfig { method, target, candidates: 10, skip: vec![], multiple: 1, refine_steps: None, selection: prune::Selection::Magnitude, sampling: Sampling::default() }
    }
}

/// What was done to one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerChoice {
    pub name: String,
    /// The chosen candidate ratio, or None when the layer is kept as it is.
    pub ratio: Option<f64>,
    /// The rank (SVD) or the input channels (pruning) kept, of `of`.
    pub kept: usize,
    pub of: usize,
    /// The layer's own MACs before and after (pruning: its input channels only).
    pub macs_before: u64,
    pub macs_after: u64,
    /// Pruning: the layers whose output channels went with it, and the depthwise ones between.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub producers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompressReport {
    pub method: Method,
    pub target: f64,
    pub score_kind: ScoreKind,
    pub baseline_score: f64,
    pub score: f64,
    pub macs_before: u64,
    pub macs_after: u64,
    pub macs_ratio: f64,
    pub params_before: u64,
    pub params_after: u64,
    pub params_ratio: f64,
    pub table: SensitivityTable,
    pub selection: Selection,
    /// The score of AIMET's selection, before refinement.
    pub selection_score: f64,
    pub refine: Vec<RefineStep>,
    /// Every layer at one ratio, meeting the target (None when even the smallest misses it);
    /// delivered when it scores higher than the per-layer choice.
    pub uniform: Option<Uniform>,
    pub layers: Vec<LayerChoice>,
    /// Channel pruning: least-squares points per refitted layer (the most of any one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points: Option<usize>,
    /// The model's cost after compression, per layer.
    pub cost_after: CostReport,
    pub evaluations: usize,
}

/// The layers spatial or weight SVD applies to, in graph order, skipping `skip`.
/// The uniform-ratio baseline: every selectable layer at `ratio`.
#[derive(Debug, Clone, Serialize)]
pub struct Uniform {
    pub ratio: f64,
    pub macs_ratio: f64,
    pub score: f64,
    /// The per-layer searches that start from it.
    pub refine: Vec<RefineStep>,
}

pub fn svd_layers(g: &Graph, shapes: &[Option<Vec<usize>>], kind: SvdKind, skip: &[String]) -> Vec<SvdLayer> {
    (0..g.nodes.len()).filter(|&i| !skip.contains(&g.nodes[i].name)).filter_map(|i| SvdLayer::new(g, i, shapes, kind)).collect()
}

/// A method's layers, and how the model looks and costs for a choice of per-layer ratios.
trait Plan {
    fn names(&self) -> Vec<String>;
    fn model_macs(&self, rs: &[Option<f64>]) -> u64;
    /// The model with only layer `li` at ratio `r` (the sensitivity table's entry).
    fn single(&mut self, li: usize, r: f64) -> Result<Graph>;
    /// The model at `rs`, quickly (scored by the refinement).
    fn quick(&mut self, rs: &[Option<f64>]) -> Result<Graph>;
    /// Whether [`Plan::quick`] is the delivered model (else an estimate, and [`Plan::build`] is
    /// slow).
    fn quick_is_build(&self) -> bool;
    /// The model at `rs` as it is delivered.
    fn build(&mut self, rs: &[Option<f64>]) -> Result<Graph>;
    fn choices(&self, rs: &[Option<f64>]) -> Vec<LayerChoice>;
    fn points(&self) -> Option<usize> {
        None
    }
}

struct SvdPlan<'a> {
    g: &'a Graph,
    layers: Vec<SvdLayer>,
    total: u64,
    multiple: usize,
}

impl SvdPlan<'_> {
    fn rank(&self, l: &SvdLayer, r: Option<f64>) -> usize {
        r.map_or(l.max_rank(), |r| l.rank_for_ratio(r, self.multiple))
    }
}

impl Plan for SvdPlan<'_> {
    fn names(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.node.clone()).collect()
    }
    fn model_macs(&self, rs: &[Option<f64>]) -> u64 {
        let saved: i64 = self.layers.iter().zip(rs).filter(|(_, r)| r.is_some()).map(|(l, &r)| l.macs as i64 - l.macs_at(self.rank(l, r)) as i64).sum();
        (self.total as i64 - saved).max(0) as u64
    }
    fn single(&mut self, li: usize, r: f64) -> Result<Graph> {
        let mut rs = vec![None; self.layers.len()];
        rs[li] = Some(r);
        self.build(&rs)
    }
    fn quick(&mut self, rs: &[Option<f64>]) -> Result<Graph> {
        self.build(rs)
    }
    fn quick_is_build(&self) -> bool {
        true
    }
    fn build(&mut self, rs: &[Option<f64>]) -> Result<Graph> {
        let mut c = self.g.clone();
        for (l, &r) in self.layers.iter().zip(rs) {
            if r.is_some() {
                l.apply(&mut c, self.rank(l, r))?;
            }
        }
        Ok(c)
    }
    fn choices(&self, rs: &[Option<f64>]) -> Vec<LayerChoice> {
        self.layers
            .iter()
            .zip(rs)
            .map(|(l, &r)| {
                let k = self.rank(l, r);
                LayerChoice { name: l.node.clone(), ratio: r, kept: k, of: l.max_rank(), macs_before: l.macs, macs_after: if r.is_some() { l.macs_at(k) } else { l.macs }, producers: vec![], also: vec![] }
            })
            .collect()
    }
}

/// Per node: its MACs and the units whose kept share scales them: as a consumer (input
/// channels), as a producer (output channels), as a member of the group (a depthwise conv).
type Scale = (u64, Option<usize>, Option<usize>, Option<usize>);

struct PrunePlan<'a> {
    g: &'a Graph,
    shapes: &'a [Option<Vec<usize>>],
    units: Vec<PruneUnit>,
    fits: Vec<Option<UnitFit>>,
    scale: Vec<Scale>,
    calib: &'a [Tensor],
    eval: &'a Evaluator,
    cfg: &'a CompressConfig,
    /// (unit, kept) -> the channels kept and the consumers' refits on the original inputs: the
    /// table and the refinement ask for the same ones many times.
    solved: std::collections::HashMap<(usize, usize), (Vec<usize>, Vec<prune::Refit>)>,
}

impl PrunePlan<'_> {
    fn kept(&self, u: usize, r: Option<f64>) -> usize {
        let c = self.units[u].channels;
        r.map_or(c, |r| kept_for_ratio(c, r, self.cfg.multiple))
    }
    fn fit(&mut self, u: usize) -> Result<&UnitFit> {
        if self.fits[u].is_none() {
            let f = self.units[u].fit_original(self.g, self.shapes, self.calib, &self.eval.limits, self.cfg.sampling)?;
            self.fits[u] = Some(f);
        }
        self.fits[u].as_ref().ok_or_else(|| Error::Graph("no fit".into()))
    }
    fn apply_quick(&mut self, c: &mut Graph, u: usize, r: f64, rows: &mut prune::KeptRows) -> Result<()> {
        let k = self.kept(u, Some(r));
        if !self.solved.contains_key(&(u, k)) {
            let (sel, ridge) = (self.cfg.selection, self.cfg.sampling.ridge);
            self.fit(u)?;
            let fit = self.fits[u].as_ref().ok_or_else(|| Error::Graph("no fit".into()))?;
            let keep = self.units[u].choose(self.g, k, sel, Some(fit));
            let refits = self.units[u].solve(self.g, &keep, fit, ridge)?;
            self.solved.insert((u, k), (keep, refits));
        }
        let (keep, refits) = &self.solved[&(u, k)];
        self.units[u].apply_solved(c, keep, refits, rows)
    }
}

impl Plan for PrunePlan<'_> {
    fn names(&self) -> Vec<String> {
        self.units.iter().map(|u| u.name.clone()).collect()
    }
    fn model_macs(&self, rs: &[Option<f64>]) -> u64 {
        let share = |u: Option<usize>| u.map_or(1.0, |u| self.kept(u, rs[u]) as f64 / self.units[u].channels as f64);
        self.scale.iter().map(|&(m, i, o, d)| (m as f64 * share(i) * share(o) * share(d)).round() as u64).sum()
    }
    fn single(&mut self, li: usize, r: f64) -> Result<Graph> {
        let mut c = self.g.clone();
        self.apply_quick(&mut c, li, r, &mut Default::default())?;
        Ok(c)
    }
    fn quick(&mut self, rs: &[Option<f64>]) -> Result<Graph> {
        let (mut c, mut rows) = (self.g.clone(), prune::KeptRows::new());
        for (u, &r) in rs.iter().enumerate() {
            if let Some(r) = r {
                self.apply_quick(&mut c, u, r, &mut rows)?;
            }
        }
        Ok(c)
    }
    fn quick_is_build(&self) -> bool {
        false
    }
    fn build(&mut self, rs: &[Option<f64>]) -> Result<Graph> {
        let (mut c, mut rows) = (self.g.clone(), prune::KeptRows::new());
        for (u, &r) in rs.iter().enumerate() {
            if r.is_none() {
                continue;
            }
            let k = self.kept(u, r);
            self.fit(u)?;
            let fit = self.fits[u].as_ref().ok_or_else(|| Error::Graph("no fit".into()))?;
            self.units[u].apply_sequential(&mut c, self.g, self.shapes, k, self.cfg.selection, fit, self.calib, &self.eval.limits, self.cfg.sampling, &mut rows)?;
        }
        Ok(c)
    }
    fn choices(&self, rs: &[Option<f64>]) -> Vec<LayerChoice> {
        self.units
            .iter()
            .enumerate()
            .map(|(u, unit)| {
                let k = self.kept(u, rs[u]);
                let macs: u64 = unit.consumer_nodes().iter().map(|&ni| self.scale.get(ni).map_or(0, |s| s.0)).sum();
                let mut also: Vec<String> = unit.consumers[1..].to_vec();
                also.extend(unit.depthwise.iter().cloned());
                LayerChoice {
                    name: unit.name.clone(),
                    ratio: rs[u],
                    kept: k,
                    of: unit.channels,
                    macs_before: macs,
                    macs_after: (macs as f64 * k as f64 / unit.channels as f64).round() as u64,
                    producers: unit.producers.clone(),
                    also,
                }
            })
            .collect()
    }
    fn points(&self) -> Option<usize> {
        self.fits.iter().flatten().map(|f| f.points).max()
    }
}

/// Compresses `g` as `cfg` says, scoring with `eval`; channel pruning refits on `calib`.
/// `shapes` are `g`'s value shapes ([`cost::infer_shapes`]). `progress(stage, done, total)`
/// returning false cancels.
pub fn compress(g: &Graph, shapes: &[Option<Vec<usize>>], cfg: &CompressConfig, eval: &Evaluator, calib: &[Tensor], progress: &mut greedy_ratio::Progress) -> Result<(Graph, CompressReport)> {
    compress_scored(g, shapes, cfg, eval, calib, None, progress)
}

/// How many layers [`compress`]'s sensitivity table has (one row each, a column per candidate
/// ratio of `cfg`).
pub fn sensitivity_size(g: &Graph, shapes: &[Option<Vec<usize>>], cfg: &CompressConfig, eval: &Evaluator, calib: &[Tensor]) -> Result<usize> {
    Ok(make_plan(g, shapes, cfg, eval, calib)?.0.names().len())
}

/// Rows `layers` of [`compress`]'s sensitivity table, scored as `compress` scores them: each
/// layer alone at each candidate ratio. Rows are independent, so workers can share the table
/// and [`compress_scored`] takes it whole, with the same result as `compress`.
pub fn sensitivity_rows(g: &Graph, shapes: &[Option<Vec<usize>>], cfg: &CompressConfig, eval: &Evaluator, calib: &[Tensor], layers: std::ops::Range<usize>, progress: &mut greedy_ratio::Progress) -> Result<Vec<Vec<f64>>> {
    let (mut plan, _) = make_plan(g, shapes, cfg, eval, calib)?;
    let n = plan.names().len();
    if layers.start > layers.end || layers.end > n {
        return Err(Error::Graph(format!("sensitivity rows {layers:?}: the table has {n} layers")));
    }
    let names = plan.names()[layers.clone()].to_vec();
    // The baseline is not needed for the rows alone.
    let part = greedy_ratio::sensitivity(names, candidates(cfg.candidates), f64::NAN, &mut |i, r| eval.score(&plan.single(layers.start + i, r)?), progress)?;
    Ok(part.scores)
}

/// The plan of `cfg` on `g` and `g`'s cost, once the settings are checked.
fn make_plan<'a>(g: &'a Graph, shapes: &'a [Option<Vec<usize>>], cfg: &'a CompressConfig, eval: &'a Evaluator, calib: &'a [Tensor]) -> Result<(Box<dyn Plan + 'a>, CostReport)> {
    if !(cfg.target > 0.0 && cfg.target <= 1.0) {
        return Err(Error::Graph(format!("the MAC target {} is not in (0, 1]", cfg.target)));
    }
    for s in &cfg.skip {
        if !g.nodes.iter().any(|n| &n.name == s) {
            return Err(Error::Graph(format!("skip: the model has no node named '{s}'")));
        }
    }
    let before = cost::cost(g, shapes);
    if before.macs == 0 {
        return Err(Error::Graph("the model has no multiply-accumulates to compress (no Conv, Gemm or MatMul)".into()));
    }
    let plan: Box<dyn Plan + 'a> = match cfg.method {
        Method::SpatialSvd | Method::WeightSvd => {
            let kind = if cfg.method == Method::SpatialSvd { SvdKind::Spatial } else { SvdKind::Weight };
            let layers = svd_layers(g, shapes, kind, &cfg.skip);
            if layers.is_empty() {
                let what = match kind {
                    SvdKind::Spatial => "an ungrouped, undilated Conv with a constant weight",
                    SvdKind::Weight => "an ungrouped Conv, or a Gemm/MatMul with a constant 2-D weight",
                };
                return Err(Error::Graph(format!("nothing to compress with {}: no layer is {what}", cfg.method.name())));
            }
            Box::new(SvdPlan { g, layers, total: before.macs, multiple: cfg.multiple })
        }
        Method::ChannelPruning => {
            let units: Vec<PruneUnit> = prune::find_units(g, shapes).into_iter().filter(|u| !u.consumers.iter().any(|c| cfg.skip.contains(c))).collect();
            if units.is_empty() {
                return Err(Error::Graph("nothing to compress with channel-pruning: no channels run from ungrouped Convs to ungrouped Convs (through BatchNorm, activations, depthwise convs or Adds only)".into()));
            }
            let mut scale: Vec<Scale> = g.nodes.iter().map(|n| (cost::node_macs(n, shapes), None, None, None)).collect();
            for (u, unit) in units.iter().enumerate() {
                for &ni in unit.consumer_nodes() {
                    scale[ni].1 = Some(u);
                }
                for &ni in unit.producer_nodes() {
                    scale[ni].2 = Some(u);
                }
                for &ni in unit.member_nodes() {
                    scale[ni].3 = Some(u);
                }
            }
            let n = units.len();
            Box::new(PrunePlan { g, shapes, units, fits: (0..n).map(|_| None).collect(), scale, calib, eval, cfg, solved: Default::default() })
        }
    };
    Ok((plan, before))
}

/// [`compress`], with the sensitivity table's scores given (`rows`, from
/// [`sensitivity_rows`]) instead of computed; None computes them.
pub fn compress_scored(g: &Graph, shapes: &[Option<Vec<usize>>], cfg: &CompressConfig, eval: &Evaluator, calib: &[Tensor], rows: Option<Vec<Vec<f64>>>, progress: &mut greedy_ratio::Progress) -> Result<(Graph, CompressReport)> {
    let (mut plan, before) = make_plan(g, shapes, cfg, eval, calib)?;
    let total = before.macs as f64;
    let mut evaluations = 1;
    let baseline = eval.score(g)?;
    let names = plan.names();
    let n = names.len();
    let table = match rows {
        Some(scores) => {
            let ratios = candidates(cfg.candidates);
            if scores.len() != n || scores.iter().any(|r| r.len() != ratios.len()) {
                return Err(Error::Graph(format!("the sensitivity scores given are not {n} rows of {} ratios", ratios.len())));
            }
            evaluations += n * ratios.len();
            progress("sensitivity", n * ratios.len(), n * ratios.len());
            SensitivityTable { layers: names, ratios, scores, baseline }
        }
        None => {
            let plan = &mut plan;
            greedy_ratio::sensitivity(
                names,
                candidates(cfg.candidates),
                baseline,
                &mut |li, r| {
                    evaluations += 1;
                    eval.score(&plan.single(li, r)?)
                },
                progress,
            )?
        }
    };
    let selection = table.select(cfg.target, &mut |rs| plan.model_macs(rs) as f64 / total);
    let selection_quick = eval.score(&plan.quick(&selection.ratios)?)?;
    evaluations += 1;
    let steps = cfg.refine_steps.unwrap_or(2 * n + 10);
    let (mut chosen, _, refine) = refine_from(&mut plan, &table, Ladder::Candidates, (cfg.target, total), selection.ratios.clone(), selection_quick, steps, eval, &mut evaluations, progress)?;
    // The delivered model: AIMET's selection unless the refined one scores higher when built.
    let mut out = plan.build(&chosen)?;
    let mut score = eval.score(&out)?;
    let mut selection_score = score;
    evaluations += 1;
    if chosen != selection.ratios {
        let aimet = plan.build(&selection.ratios)?;
        selection_score = eval.score(&aimet)?;
        evaluations += 1;
        if selection_score > score {
            out = aimet;
            score = selection_score;
            chosen = selection.ratios.clone();
        }
    }
    // The baseline a per-layer search must beat: one ratio for every layer, the largest (in steps
    // of 0.005) that meets the target, built and scored like the delivered model. Single-layer
    // sensitivities say little about many layers compressed together, and it can beat AIMET's
    // selection; so the per-layer search also starts from it ([`from_uniform`]). The best model
    // found is delivered.
    let uniform = match (1..=200).rev().map(|k| k as f64 / 200.0).find(|&u| plan.model_macs(&vec![Some(u); n]) as f64 <= cfg.target * total) {
        Some(u) => {
            let rs = vec![Some(u); n];
            let built = plan.build(&rs)?;
            let uniform_score = eval.score(&built)?;
            evaluations += 1;
            let (best, best_score, trials) = if steps > 0 { from_uniform(&mut plan, &table, cfg, (total, steps), u, uniform_score, eval, &mut evaluations, progress)? } else { (rs.clone(), uniform_score, vec![]) };
            if best_score > score {
                out = if best == rs { built } else { plan.build(&best)? };
                (score, chosen) = (best_score, best);
            }
            Some(Uniform { ratio: u, macs_ratio: plan.model_macs(&rs) as f64 / total, score: uniform_score, refine: trials })
        }
        None => None,
    };
    let given: Vec<Vec<usize>> = g.inputs.iter().map(|&i| shapes.get(i).cloned().flatten().unwrap_or_default()).collect();
    let out_shapes = cost::infer_shapes(&out, &given, &eval.limits)?;
    let after = cost::cost(&out, &out_shapes);
    let report = CompressReport {
        method: cfg.method,
        target: cfg.target,
        score_kind: eval.kind(),
        baseline_score: baseline,
        score,
        macs_before: before.macs,
        macs_after: after.macs,
        macs_ratio: after.macs as f64 / total,
        params_before: before.params,
        params_after: after.params,
        params_ratio: after.params as f64 / before.params.max(1) as f64,
        layers: plan.choices(&chosen),
        points: plan.points(),
        table,
        selection,
        selection_score,
        refine,
        uniform,
        cost_after: after,
        evaluations,
    };
    Ok((out, report))
}

/// [`greedy_ratio::refine`] of `plan` from `start` (scored `score`), each trial built with
/// [`Plan::quick`].
#[allow(clippy::too_many_arguments)]
fn refine_from(
    plan: &mut Box<dyn Plan + '_>,
    table: &SensitivityTable,
    ladder: Ladder,
    (target, total): (f64, f64),
    start: Vec<Option<f64>>,
    score: f64,
    steps: usize,
    eval: &Evaluator,
    evaluations: &mut usize,
    progress: &mut greedy_ratio::Progress,
) -> Result<(Vec<Option<f64>>, f64, Vec<RefineStep>)> {
    if steps == 0 {
        return Ok((start, score, vec![]));
    }
    let cell = std::cell::RefCell::new(plan);
    greedy_ratio::refine(
        table,
        ladder,
        target,
        start,
        score,
        steps,
        &mut |rs| cell.borrow().model_macs(rs) as f64 / total,
        &mut |rs| {
            *evaluations += 1;
            let g = cell.borrow_mut().quick(rs)?;
            eval.score(&g)
        },
        progress,
    )
}

/// The per-layer search from the uniform ratio `u` (scored `score`), every trial built as
/// delivered:
/// 1. Leans ("tilts" in the progress): each layer at c + α·z, where z in [−1, 1] ranks the layer by the table's drop at
///    `u` (the most sensitive +1) and c is the largest ratio (in steps of 0.005) that meets the
///    target: α = ±0.05, then ±0.1 and ±0.2 in the better direction while the score rises (the
///    table's ranking can point either way once every layer is compressed).
/// 2. When a quick model is the built one (SVD), [`greedy_ratio::refine`] from the best so far,
///    in steps of half the candidates' spacing, n + 10 trials (at most `steps`). Pruning's
///    builds refit layer by layer on the calibration data (about 30 s on EfficientNet-Lite0),
///    and its quick models say little once every layer is pruned, so it stops at 1.
///
/// Returns the best ratios, their score and the trials.
#[allow(clippy::too_many_arguments)]
fn from_uniform(
    plan: &mut Box<dyn Plan + '_>,
    table: &SensitivityTable,
    cfg: &CompressConfig,
    (total, steps): (f64, usize),
    u: f64,
    score: f64,
    eval: &Evaluator,
    evaluations: &mut usize,
    progress: &mut greedy_ratio::Progress,
) -> Result<(Vec<Option<f64>>, f64, Vec<RefineStep>)> {
    let n = table.layers.len();
    let start = vec![Some(u); n];
    let drops: Vec<f64> = (0..n).map(|l| table.drop_at(l, Some(u))).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| drops[a].total_cmp(&drops[b]));
    let mut z = vec![0.0; n];
    for (rank, &l) in order.iter().enumerate() {
        z[l] = if n > 1 { 2.0 * rank as f64 / (n - 1) as f64 - 1.0 } else { 0.0 };
    }
    let (mut best, mut best_score, mut trials) = (start.clone(), score, vec![]);
    // α = ±0.05 first, then on in the better direction, doubling, while the score rises.
    let (mut alphas, mut last) = (vec![0.05, -0.05], f64::NEG_INFINITY);
    let mut i = 0;
    while i < alphas.len() {
        if !progress("tilts", i, 4) {
            return Err(Error::Graph("cancelled".into()));
        }
        let alpha = alphas[i];
        let at = |c: f64| -> Vec<Option<f64>> {
            z.iter()
                .map(|&zl| {
                    let r = ((c + alpha * zl) * 1e6).round() / 1e6;
                    (r < 1.0).then_some(r.max(0.005))
                })
                .collect()
        };
        let found = (1..=240).rev().map(|k| at(k as f64 / 200.0)).find(|rs| plan.model_macs(rs) as f64 <= cfg.target * total);
        let s = match found {
            Some(rs) => {
                let s = eval.score(&plan.build(&rs)?)?;
                *evaluations += 1;
                let changes = (0..n).filter(|&l| rs[l] != start[l]).map(|l| (table.layers[l].clone(), start[l], rs[l])).collect();
                trials.push(RefineStep { changes, model_ratio: plan.model_macs(&rs) as f64 / total, score: s, kept: s > best_score });
                if s > best_score {
                    (best, best_score) = (rs, s);
                }
                s
            }
            None => f64::NEG_INFINITY,
        };
        i += 1;
        if i == 2 && best_score > score {
            let dir = if best_score == last { 0.05 } else { -0.05 };
            alphas.extend([2.0 * dir, 4.0 * dir]);
            last = best_score;
        } else if i > 2 && s <= last {
            break;
        } else {
            last = s;
        }
    }
    progress("tilts", i, 4);
    if plan.quick_is_build() {
        let ladder = Ladder::Steps(0.5 / cfg.candidates.max(2) as f64);
        let (b, s, more) = refine_from(plan, table, ladder, (cfg.target, total), best, best_score, steps.min(n + 10), eval, evaluations, progress)?;
        (best, best_score) = (b, s);
        trials.extend(more);
    }
    Ok((best, best_score, trials))
}

/// AIMET's recommended order, spatial SVD then channel pruning, to `cfg.target` of the original
/// MACs: SVD to `svd_target` (None: √target) first, then channel pruning of the result (whose SVD
/// halves it can prune too) to the rest. Returns the model and both stages' reports (each against
/// its own input).
pub fn svd_then_pruning(g: &Graph, shapes: &[Option<Vec<usize>>], cfg: &CompressConfig, svd_target: Option<f64>, eval: &Evaluator, calib: &[Tensor], progress: &mut greedy_ratio::Progress) -> Result<(Graph, [CompressReport; 2])> {
    let t1 = svd_target.unwrap_or(cfg.target.sqrt()).clamp(cfg.target, 1.0);
    let first = CompressConfig { method: Method::SpatialSvd, target: t1, ..cfg.clone() };
    let (mid, r1) = compress(g, shapes, &first, eval, calib, progress)?;
    let given: Vec<Vec<usize>> = g.inputs.iter().map(|&i| shapes.get(i).cloned().flatten().unwrap_or_default()).collect();
    let mid_shapes = cost::infer_shapes(&mid, &given, &eval.limits)?;
    // The skipped nodes keep their names through the split (a skipped node is never split).
    let second = CompressConfig { method: Method::ChannelPruning, target: (cfg.target / r1.macs_ratio).min(1.0), ..cfg.clone() };
    let (out, r2) = compress(&mid, &mid_shapes, &second, eval, calib, progress)?;
    Ok((out, [r1, r2]))
}
