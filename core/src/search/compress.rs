//! Compression of a whole model to a MAC target: the layers a method applies to, AIMET's greedy
//! per-layer ratio search over them ([`super::greedy_ratio`]), and the compressed graph with a
//! report that is plain data (the sensitivity table, the choices, the costs before and after).

use super::greedy_ratio::{self, candidates, RefineStep, Selection, SensitivityTable};
use crate::cost::{self, CostReport};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, ScoreKind};
use crate::graph::Graph;
use crate::passes::svd::{SvdKind, SvdLayer};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    SpatialSvd,
    WeightSvd,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::SpatialSvd => "spatial-svd",
            Method::WeightSvd => "weight-svd",
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
    /// Nodes left as they are (by name).
    pub skip: Vec<String>,
    /// Round ranks up to a multiple of this (1: no rounding).
    pub rank_multiple: usize,
    /// Evaluations for the local search after AIMET's selection (see [`greedy_ratio::refine`]);
    /// 0 keeps AIMET's selection; None: 2 per layer plus 10.
    pub refine_steps: Option<usize>,
}

/// What was done to one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerChoice {
    pub name: String,
    /// The chosen candidate ratio, or None when the layer is kept as it is.
    pub ratio: Option<f64>,
    /// The rank kept (SVD), of `max_rank`.
    pub rank: usize,
    pub max_rank: usize,
    pub macs_before: u64,
    pub macs_after: u64,
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
    pub layers: Vec<LayerChoice>,
    /// The model's cost after compression, per layer.
    pub cost_after: CostReport,
    pub evaluations: usize,
}

/// The layers `method` applies to, in graph order, skipping `skip`.
pub fn svd_layers(g: &Graph, shapes: &[Option<Vec<usize>>], kind: SvdKind, skip: &[String]) -> Vec<SvdLayer> {
    (0..g.nodes.len()).filter(|&i| !skip.contains(&g.nodes[i].name)).filter_map(|i| SvdLayer::new(g, i, shapes, kind)).collect()
}

/// Compresses `g` as `cfg` says, scoring with `eval`. `shapes` are `g`'s value shapes
/// ([`cost::infer_shapes`]). `progress(stage, done, total)` returning false cancels.
pub fn compress(g: &Graph, shapes: &[Option<Vec<usize>>], cfg: &CompressConfig, eval: &Evaluator, progress: &mut greedy_ratio::Progress) -> Result<(Graph, CompressReport)> {
    if !(cfg.target > 0.0 && cfg.target <= 1.0) {
        return Err(Error::Graph(format!("the MAC target {} is not in (0, 1]", cfg.target)));
    }
    for s in &cfg.skip {
        if !g.nodes.iter().any(|n| &n.name == s) {
            return Err(Error::Graph(format!("skip: the model has no node named '{s}'")));
        }
    }
    let kind = match cfg.method {
        Method::SpatialSvd => SvdKind::Spatial,
        Method::WeightSvd => SvdKind::Weight,
    };
    let before = cost::cost(g, shapes);
    if before.macs == 0 {
        return Err(Error::Graph("the model has no multiply-accumulates to compress (no Conv, Gemm or MatMul)".into()));
    }
    let layers = svd_layers(g, shapes, kind, &cfg.skip);
    if layers.is_empty() {
        let what = match kind {
            SvdKind::Spatial => "an ungrouped, undilated Conv with a constant weight",
            SvdKind::Weight => "an ungrouped Conv, or a Gemm/MatMul with a constant 2-D weight",
        };
        return Err(Error::Graph(format!("nothing to compress with {}: no layer is {what}", cfg.method.name())));
    }
    let m = cfg.rank_multiple.max(1);
    let total = before.macs as f64;
    let rank = |l: &SvdLayer, r: Option<f64>| r.map_or(l.max_rank(), |r| l.rank_for_ratio(r, m));
    let mut model_ratio = |rs: &[Option<f64>]| -> f64 {
        let saved: i64 = layers.iter().zip(rs).filter(|(_, r)| r.is_some()).map(|(l, &r)| l.macs as i64 - l.macs_at(rank(l, r)) as i64).sum();
        (total - saved as f64) / total
    };
    let build = |rs: &[Option<f64>]| -> Result<Graph> {
        let mut c = g.clone();
        for (l, &r) in layers.iter().zip(rs) {
            if r.is_some() {
                l.apply(&mut c, rank(l, r))?;
            }
        }
        Ok(c)
    };
    let mut evaluations = 1;
    let baseline = eval.score(g)?;
    let ratios = candidates(cfg.candidates);
    let n = layers.len();
    let table = greedy_ratio::sensitivity(
        layers.iter().map(|l| l.node.clone()).collect(),
        ratios,
        baseline,
        &mut |li, r| {
            let mut choice = vec![None; n];
            choice[li] = Some(r);
            evaluations += 1;
            eval.score(&build(&choice)?)
        },
        progress,
    )?;
    let selection = table.select(cfg.target, &mut model_ratio);
    let selection_score = eval.score(&build(&selection.ratios)?)?;
    evaluations += 1;
    let steps = cfg.refine_steps.unwrap_or(2 * n + 10);
    let (chosen, score, refine) = if steps > 0 {
        greedy_ratio::refine(&table, cfg.target, selection.ratios.clone(), selection_score, steps, &mut model_ratio, &mut |rs| {
            evaluations += 1;
            eval.score(&build(rs)?)
        }, progress)?
    } else {
        (selection.ratios.clone(), selection_score, vec![])
    };
    let out = build(&chosen)?;
    let given: Vec<Vec<usize>> = g.inputs.iter().map(|&i| shapes.get(i).cloned().flatten().unwrap_or_default()).collect();
    let out_shapes = cost::infer_shapes(&out, &given, &eval.limits)?;
    let after = cost::cost(&out, &out_shapes);
    let choices = layers
        .iter()
        .zip(&chosen)
        .map(|(l, &r)| {
            let k = rank(l, r);
            LayerChoice { name: l.node.clone(), ratio: r, rank: k, max_rank: l.max_rank(), macs_before: l.macs, macs_after: if r.is_some() { l.macs_at(k) } else { l.macs } }
        })
        .collect();
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
        table,
        selection,
        selection_score,
        refine,
        layers: choices,
        cost_after: after,
        evaluations,
    };
    Ok((out, report))
}
