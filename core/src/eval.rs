//! One Evaluator: scores a graph's FP32 outputs on a data set, as accuracy against labels or as
//! pooled SQNR against reference outputs (the definitions of `qplay eval`). Every search scores
//! candidates through it.

use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::graph::Graph;
use crate::metrics;
use crate::onnx::Limits;
use crate::tensor::Tensor;
use serde::Serialize;

/// What a score is measured against.
#[derive(Debug, Clone)]
pub enum Target {
    /// One class index per sample: the score is top-1 accuracy in %.
    Labels(Vec<i64>),
    /// The reference outputs of every sample, concatenated: the score is pooled SQNR in dB.
    Reference(Vec<f32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    AccuracyPct,
    SqnrDb,
}

/// A data set and what its outputs are scored against.
#[derive(Debug, Clone)]
pub struct Evaluator {
    pub batches: Vec<Tensor>,
    pub target: Target,
    pub limits: Limits,
}

impl Evaluator {
    /// Scores against the outputs of `reference` (e.g. the uncompressed model) on `batches`.
    pub fn against_model(reference: &Graph, batches: Vec<Tensor>, limits: Limits) -> Result<Evaluator> {
        let outputs = run_all(reference, &batches, &limits)?;
        Ok(Evaluator { batches, target: Target::Reference(outputs), limits })
    }

    pub fn kind(&self) -> ScoreKind {
        match self.target {
            Target::Labels(_) => ScoreKind::AccuracyPct,
            Target::Reference(_) => ScoreKind::SqnrDb,
        }
    }

    /// The graph's first output on every batch, concatenated.
    pub fn outputs(&self, g: &Graph) -> Result<Vec<f32>> {
        run_all(g, &self.batches, &self.limits)
    }

    /// The score of `g` (higher is better): accuracy in %, or pooled SQNR in dB (capped at 200 dB
    /// so that equal outputs compare as a number).
    pub fn score(&self, g: &Graph) -> Result<f64> {
        let y = self.outputs(g)?;
        self.score_outputs(&y)
    }

    /// The score of a quantization simulation (the engine [`crate::quant::QuantSim::executor`]
    /// picks: integers in qplay mode, the float simulation in AIMET mode).
    pub fn score_sim(&self, sim: &crate::quant::QuantSim) -> Result<f64> {
        let mut exec = sim.executor()?;
        let mut y = Vec::new();
        for b in &self.batches {
            let out = exec.run(vec![b.clone()])?;
            y.extend(out.first().ok_or_else(|| Error::Graph("the model has no output".into()))?.to_f32_vec());
        }
        self.score_outputs(&y)
    }

    pub fn score_outputs(&self, y: &[f32]) -> Result<f64> {
        match &self.target {
            Target::Labels(labels) => {
                if labels.is_empty() || !y.len().is_multiple_of(labels.len()) {
                    return Err(Error::Input { name: "labels".into(), msg: format!("{} labels for {} output values", labels.len(), y.len()) });
                }
                Ok(100.0 * metrics::accuracy(y, labels, y.len() / labels.len()))
            }
            Target::Reference(r) => {
                if r.len() != y.len() {
                    return Err(Error::Input { name: "reference".into(), msg: format!("{} reference values, the model produced {}", r.len(), y.len()) });
                }
                Ok(metrics::sqnr_db(r, y).min(200.0))
            }
        }
    }
}

fn run_all(g: &Graph, batches: &[Tensor], limits: &Limits) -> Result<Vec<f32>> {
    let mut exec = Executor::new(g.clone(), limits.clone())?;
    let mut out = Vec::new();
    for b in batches {
        let y = exec.run(vec![b.clone()])?;
        out.extend(y.first().ok_or_else(|| Error::Graph("the model has no output".into()))?.to_f32_vec());
    }
    Ok(out)
}
