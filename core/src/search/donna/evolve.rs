//! DONNA's step C: NSGA-II over the library's blocks (one categorical gene per block), on the
//! predicted accuracy and a cost (latency from a measured table, or MACs). Nothing is trained
//! or run here, so a new objective or budget re-runs only this step, in seconds.

use super::arch::Predictor;
use super::bkd::Library;
use super::BlockChoice;
use crate::error::{Error, Result};
use crate::search::nsga2::{self, Categorical, Config};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    LatencyInt8,
    LatencyFp32,
    Macs,
}

/// A point of the searched front.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub choices: Vec<BlockChoice>,
    pub block_nsr: Vec<f64>,
    pub predicted_accuracy: f64,
    /// Milliseconds (latency objectives) or MACs.
    pub cost: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchReport {
    /// The first front, by increasing cost.
    pub front: Vec<Candidate>,
    pub evaluations: usize,
    pub generations: usize,
    pub completed: bool,
}

/// Runs NSGA-II on (−predicted accuracy, cost). `cost` prices an architecture (an error there,
/// e.g. a latency table without that block, stops the search).
pub fn search(lib: &Library, predictor: &Predictor, cost: &dyn Fn(&[BlockChoice]) -> Result<f64>, cfg: &Config, progress: &mut dyn FnMut(&nsga2::Progress) -> bool) -> Result<SearchReport> {
    if lib.blocks.is_empty() || lib.blocks.iter().any(Vec::is_empty) {
        return Err(Error::Input { name: "search".into(), msg: "the block library has a block without any trained choice".into() });
    }
    let genes = Categorical { choices: lib.blocks.iter().map(Vec::len).collect() };
    let decode = |g: &[usize]| -> (Vec<BlockChoice>, Vec<f64>) { g.iter().enumerate().map(|(n, &i)| (lib.blocks[n][i].choice, lib.blocks[n][i].nsr)).unzip() };
    let mut evaluate = |gs: &[Vec<usize>]| -> Result<Vec<Vec<f64>>> {
        gs.iter()
            .map(|g| {
                let (choices, nsr) = decode(g);
                Ok(vec![-predictor.predict(&nsr), cost(&choices)?])
            })
            .collect()
    };
    let out = nsga2::run(&genes, cfg, &mut evaluate, progress)?;
    let mut front: Vec<Candidate> = out
        .front()
        .into_iter()
        .map(|m| {
            let (choices, block_nsr) = decode(&m.genome);
            Candidate { choices, block_nsr, predicted_accuracy: -m.objectives[0], cost: m.objectives[1] }
        })
        .collect();
    front.sort_by(|a, b| a.cost.total_cmp(&b.cost).then(b.predicted_accuracy.total_cmp(&a.predicted_accuracy)));
    front.dedup_by(|a, b| a.cost == b.cost && a.predicted_accuracy == b.predicted_accuracy);
    Ok(SearchReport { front, evaluations: out.evaluations, generations: out.generations, completed: out.completed })
}

/// Up to `k` points of a front sorted by cost, spread evenly along it (both ends included).
pub fn spread(front: &[Candidate], k: usize) -> Vec<Candidate> {
    if front.len() <= k {
        return front.to_vec();
    }
    let mut idx: Vec<usize> = (0..k).map(|i| (i * (front.len() - 1) + (k - 1) / 2) / (k - 1).max(1)).collect();
    idx.dedup();
    idx.into_iter().map(|i| front[i].clone()).collect()
}
