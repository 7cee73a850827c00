//! AIMET's greedy per-layer compression-ratio selection (`GreedyCompRatioSelectAlgo`,
//! aimet_common/comp_ratio_select.py), with the table kept as data and a refinement step.
//!
//! 1. Sensitivity table: each layer compressed alone at each candidate ratio k/N (k = 1..N−1),
//!    scored by the evaluator.
//! 2. Binary search on a score threshold t between the table's min and max: each layer takes the
//!    ratio just before the first candidate (from the least compressed down) scoring below t;
//!    the model's MAC ratio decides which half to keep. It stops when the window is 1e-4 of the
//!    table's range (keeping the lower end) or the ratio is within 0.001 of the target.
//! 3. Refinement (qplay's addition, [`refine`]): AIMET often stops below the target, and its one
//!    threshold for all layers is a guess. A local search spends the MACs left and trades
//!    compression between layers, keeping only moves that raise the measured score, so the result
//!    is never worse than AIMET's selection on the same table.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The score of each layer alone at each candidate ratio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityTable {
    pub layers: Vec<String>,
    /// Candidate ratios, increasing (e.g. 0.1 … 0.9).
    pub ratios: Vec<f64>,
    /// `scores[layer][ratio]`.
    pub scores: Vec<Vec<f64>>,
    /// The score of the model as it is.
    pub baseline: f64,
}

/// The candidates AIMET evaluates for `n` candidates: k/n for k = 1..n−1.
pub fn candidates(n: usize) -> Vec<f64> {
    (1..n.max(2)).map(|k| k as f64 / n.max(2) as f64).collect()
}

/// Progress of a long search: `done` of `total` steps. Returning false cancels.
pub type Progress<'a> = dyn FnMut(&str, usize, usize) -> bool + 'a;

fn cancelled() -> Error {
    Error::Graph("cancelled".into())
}

/// Builds the table: `eval(layer, ratio)` scores the model with only that layer compressed.
pub fn sensitivity(layers: Vec<String>, ratios: Vec<f64>, baseline: f64, eval: &mut dyn FnMut(usize, f64) -> Result<f64>, progress: &mut Progress) -> Result<SensitivityTable> {
    let total = layers.len() * ratios.len();
    let mut scores = Vec::with_capacity(layers.len());
    for li in 0..layers.len() {
        let mut row = Vec::with_capacity(ratios.len());
        for (ri, &r) in ratios.iter().enumerate() {
            if !progress("sensitivity", li * ratios.len() + ri, total) {
                return Err(cancelled());
            }
            row.push(eval(li, r)?);
        }
        scores.push(row);
    }
    progress("sensitivity", total, total);
    Ok(SensitivityTable { layers, ratios, scores, baseline })
}

/// One step of the binary search, as data (the report shows it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchStep {
    pub lo: f64,
    pub hi: f64,
    pub threshold: f64,
    pub model_ratio: f64,
}

/// The chosen ratio per layer (None: left as it is) and how it was found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    pub ratios: Vec<Option<f64>>,
    pub threshold: f64,
    pub model_ratio: f64,
    pub trace: Vec<SearchStep>,
}

impl SensitivityTable {
    /// AIMET's `_find_layer_comp_ratio_given_eval_score` for layer `li` and threshold `t`.
    pub fn ratio_at(&self, li: usize, t: f64) -> Option<f64> {
        let s = &self.scores[li];
        let n = s.len();
        if n == 0 || t > s[n - 1] {
            return None;
        }
        if t < s[0] {
            return Some(self.ratios[0]);
        }
        // From the least compressed (last) down: the one before the first scoring below t.
        for i in (0..n - 1).rev() {
            if t > s[i] {
                return Some(self.ratios[i + 1]);
            }
        }
        None
    }

    pub fn ratios_at(&self, t: f64) -> Vec<Option<f64>> {
        (0..self.layers.len()).map(|li| self.ratio_at(li, t)).collect()
    }

    /// The binary search of step 2 for `target` (share of MACs kept); `model_ratio` gives the
    /// model's MAC ratio for a choice of per-layer ratios.
    pub fn select(&self, target: f64, model_ratio: &mut dyn FnMut(&[Option<f64>]) -> f64) -> Selection {
        let all = self.scores.iter().flatten().copied();
        let (mut lo, mut hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
        if !lo.is_finite() {
            return Selection { ratios: vec![None; self.layers.len()], threshold: 0.0, model_ratio: 1.0, trace: vec![] };
        }
        let exit = (hi - lo) * 1e-4;
        let mut trace = Vec::new();
        let chosen = loop {
            let mid = (lo + hi) / 2.0;
            let ratio = model_ratio(&self.ratios_at(mid));
            trace.push(SearchStep { lo, hi, threshold: mid, model_ratio: ratio });
            if (hi - lo).abs() <= exit || trace.len() > 200 {
                break lo;
            }
            if (ratio - target).abs() <= 0.001 {
                break mid;
            }
            if ratio > target {
                hi = mid;
            } else {
                lo = mid;
            }
        };
        let ratios = self.ratios_at(chosen);
        let ratio = model_ratio(&ratios);
        Selection { ratios, threshold: chosen, model_ratio: ratio, trace }
    }

    /// The table score of layer `li` at ratio `r` (None: the baseline), linear between the
    /// candidates and from the last one to the baseline at 1; below the first, the first's.
    fn score_at(&self, li: usize, r: Option<f64>) -> f64 {
        let Some(r) = r else { return self.baseline };
        let row = &self.scores[li];
        let points = self.ratios.iter().copied().zip(row.iter().copied()).chain(std::iter::once((1.0, self.baseline)));
        let mut prev: Option<(f64, f64)> = None;
        for (x, y) in points {
            if r <= x + 1e-12 {
                return match prev {
                    Some((x0, y0)) if x - r > 1e-12 => y0 + (y - y0) * (r - x0) / (x - x0),
                    _ => y,
                };
            }
            prev = Some((x, y));
        }
        self.baseline
    }
}

/// The ratios a refinement moves a layer between.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ladder {
    /// The table's candidates (and None, the layer kept, above the last).
    Candidates,
    /// Steps of this size from wherever the layer is; a ratio of 1 or more is the layer kept.
    Steps(f64),
}

impl Ladder {
    /// The next less compressed choice (None: there is none).
    fn up(self, t: &SensitivityTable, r: Option<f64>) -> Option<Option<f64>> {
        let r = r?;
        match self {
            Ladder::Candidates => {
                let i = t.ratios.iter().position(|&x| (x - r).abs() < 1e-12)?;
                Some(t.ratios.get(i + 1).copied())
            }
            Ladder::Steps(d) => {
                let x = round6(r + d);
                Some((x < 1.0).then_some(x))
            }
        }
    }

    /// The next more compressed choice (None: there is none).
    fn down(self, t: &SensitivityTable, r: Option<f64>) -> Option<Option<f64>> {
        match (self, r) {
            (Ladder::Candidates, None) => t.ratios.last().map(|&x| Some(x)),
            (Ladder::Candidates, Some(r)) => {
                let i = t.ratios.iter().position(|&x| (x - r).abs() < 1e-12)?;
                i.checked_sub(1).map(|j| Some(t.ratios[j]))
            }
            (Ladder::Steps(d), r) => {
                let x = round6(r.unwrap_or(1.0) - d);
                (x > 1e-6).then_some(Some(x))
            }
        }
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// A refinement step, as data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefineStep {
    /// (layer, from, to) for each layer the move changes.
    pub changes: Vec<(String, Option<f64>, Option<f64>)>,
    pub model_ratio: f64,
    pub score: f64,
    pub kept: bool,
}

impl SensitivityTable {
    /// The table's drop from the baseline for layer `li` at `r` (0 when kept).
    pub(crate) fn drop_at(&self, li: usize, r: Option<f64>) -> f64 {
        self.baseline - self.score_at(li, r)
    }
}

/// Step 3: a local search from `start` (scored `score`) under `target`. A move takes one layer
/// to its next less compressed choice on `ladder`, alone (spending MACs left) or together with another
/// layer's next more compressed one (a trade); the moves that fit are tried in the order of the
/// gain the table predicts (each layer's drop from the baseline, summed), each one measured with
/// `eval` and kept only when the model's score rises. At most `max_steps` evaluations.
#[allow(clippy::too_many_arguments)]
pub fn refine(
    table: &SensitivityTable,
    ladder: Ladder,
    target: f64,
    start: Vec<Option<f64>>,
    score: f64,
    max_steps: usize,
    model_ratio: &mut dyn FnMut(&[Option<f64>]) -> f64,
    eval: &mut dyn FnMut(&[Option<f64>]) -> Result<f64>,
    progress: &mut Progress,
) -> Result<(Vec<Option<f64>>, f64, Vec<RefineStep>)> {
    let (mut best, mut best_score) = (start, score);
    let mut tried: std::collections::HashSet<Vec<Option<u64>>> = std::collections::HashSet::new();
    let key = |c: &[Option<f64>]| c.iter().map(|r| r.map(f64::to_bits)).collect::<Vec<_>>();
    tried.insert(key(&best));
    let mut steps = Vec::new();
    let n = table.layers.len();
    while steps.len() < max_steps {
        if !progress("refine", steps.len(), max_steps) {
            return Err(cancelled());
        }
        let mut moves: Vec<(f64, Vec<Option<f64>>, f64)> = Vec::new();
        for i in 0..n {
            let Some(up) = ladder.up(table, best[i]) else {
                continue;
            };
            let gain_i = table.drop_at(i, best[i]) - table.drop_at(i, up);
            let mut c = best.clone();
            c[i] = up;
            for j in std::iter::once(None).chain((0..n).filter(|&j| j != i).map(Some)) {
                let mut c = c.clone();
                let mut gain = gain_i;
                if let Some(j) = j {
                    let Some(down) = ladder.down(table, best[j]) else {
                        continue;
                    };
                    gain -= table.drop_at(j, down) - table.drop_at(j, best[j]);
                    c[j] = down;
                }
                if tried.contains(&key(&c)) {
                    continue;
                }
                let r = model_ratio(&c);
                if r <= target + 1e-12 {
                    moves.push((gain, c, r));
                }
            }
        }
        let Some((_, c, r)) = moves.into_iter().max_by(|a, b| a.0.total_cmp(&b.0).then(a.2.total_cmp(&b.2))) else {
            break;
        };
        tried.insert(key(&c));
        let s = eval(&c)?;
        let kept = s > best_score;
        let changes = (0..n).filter(|&i| c[i] != best[i]).map(|i| (table.layers[i].clone(), best[i], c[i])).collect();
        steps.push(RefineStep { changes, model_ratio: r, score: s, kept });
        if kept {
            best = c;
            best_score = s;
        }
    }
    Ok((best, best_score, steps))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> SensitivityTable {
        // AIMET's own table for digits_mobilenet, spatial SVD (samples/aimet/compression/
        // digits_mobilenet/ssvd_t0.5.json, eval_scores_dict_raw).
        SensitivityTable {
            layers: vec!["features_6".into(), "features_12".into(), "features_18".into()],
            ratios: candidates(10),
            scores: vec![
                vec![18.0, 20.0, 24.0, 27.555555555555557, 29.555555555555557, 44.0, 51.33333333333333, 68.0, 84.22222222222221],
                vec![10.222222222222223, 28.22222222222222, 36.888888888888886, 51.55555555555556, 67.77777777777779, 82.22222222222221, 88.0, 95.33333333333334, 95.77777777777777],
                vec![45.77777777777778, 84.22222222222221, 97.33333333333334, 97.33333333333334, 97.33333333333334, 97.33333333333334, 97.33333333333334, 97.33333333333334, 97.33333333333334],
            ],
            baseline: 97.33333333333334,
        }
    }

    #[test]
    fn layer_choice_follows_aimet_rule() {
        let t = table();
        // Above the least compressed candidate's score: no compression.
        assert_eq!(t.ratio_at(0, 90.0), None);
        // Below the most compressed one's: the most compressed.
        assert_eq!(t.ratio_at(1, 5.0), Some(0.1));
        // features_18 scores 97.33 from 0.3 up and 84.2 at 0.2: a threshold of 90 gives 0.3.
        assert_eq!(t.ratio_at(2, 90.0), Some(0.3));
        // Equal to the scores from 0.3 up: still 0.3 (only a strictly lower score stops it).
        assert_eq!(t.ratio_at(2, 97.33333333333334), Some(0.3));
        // A row equal to the threshold everywhere: AIMET's loop finds no lower score, so None.
        let flat = SensitivityTable { layers: vec!["x".into()], ratios: vec![0.5], scores: vec![vec![1.0]], baseline: 1.0 };
        assert_eq!(flat.ratio_at(0, 1.0), None);
    }

    #[test]
    fn binary_search_reproduces_aimet_selection() {
        // MACs of digits_mobilenet's convs (AIMET's per_layer 'macs'); the three layers are 1x1
        // convs whose split costs (Cin + Cout)·r·H·W at rank r (AIMET's rank from ratio).
        let t = table();
        let fixed = 163_968u64 - (32_768 + 32_768 + 65_536);
        let layer = [(16usize, 32usize, 64usize), (32, 64, 16), (64, 64, 16)];
        let model_ratio = |rs: &[Option<f64>]| {
            let mut macs = fixed;
            for (&(m, n, hw), r) in layer.iter().zip(rs) {
                let base = m * n * hw;
                macs += match r {
                    None => base,
                    Some(r) => {
                        let mut k = m.min(n);
                        while k > 1 && ((m + n) * k * hw) as f64 > r * base as f64 {
                            k -= 1;
                        }
                        (m + n) * k * hw
                    }
                } as u64;
            }
            macs as f64 / 163_968.0
        };
        let s = t.select(0.5, &mut |rs| model_ratio(rs));
        assert!((s.model_ratio - 0.5003903200624512).abs() < 1e-12);
        assert_eq!(s.ratios[0], Some(0.8));
        assert_eq!(s.ratios[1], Some(0.4));
        assert_eq!(s.ratios[2], Some(0.2));
        // AIMET's trace (thresholds and model ratios at each step) as in the shared figures.
        let aimet = [(53.777777777777786, 0.5191256830601093), (32.00000000000001, 0.4067135050741608), (42.8888888888889, 0.42544886807181886), (48.33333333333334, 0.4816549570647931)];
        for (step, (t, r)) in s.trace.iter().zip(aimet) {
            assert!((step.threshold - t).abs() < 1e-9 && (step.model_ratio - r).abs() < 1e-12, "{step:?}");
        }
        assert_eq!(s.trace.len(), 8);
    }

    #[test]
    fn table_reads_between_candidates() {
        let t = table();
        // features_12 scores 28.22 at 0.2 and 36.89 at 0.3: halfway between at 0.25.
        assert!((t.score_at(1, Some(0.25)) - (28.22222222222222 + 36.888888888888886) / 2.0).abs() < 1e-9);
        // Above 0.9, towards the baseline at 1.
        assert!((t.score_at(0, Some(0.95)) - (84.22222222222221 + 97.33333333333334) / 2.0).abs() < 1e-9);
        assert_eq!(t.score_at(0, Some(0.05)), 18.0);
        assert_eq!(Ladder::Steps(0.05).up(&t, Some(0.95)), Some(None));
        assert_eq!(Ladder::Steps(0.05).down(&t, Some(0.05)), None);
        assert_eq!(Ladder::Candidates.down(&t, None), Some(Some(0.9)));
    }

    #[test]
    fn refinement_from_uniform_finds_the_known_optimum() {
        // Two layers of equal MACs; layer 0 is ten times as sensitive: the score is
        // -(10 (1 - r0)² + (1 - r1)²). Under 0.5 r0 + 0.5 r1 <= 0.6, on the steps of 0.05 from
        // the uniform 0.6, the best is (0.95, 0.25) (the continuous optimum is r0 = 1 - 0.8/11).
        let f = |r: &[Option<f64>]| {
            let p = |x: Option<f64>| (1.0 - x.unwrap_or(1.0)).powi(2);
            -(10.0 * p(r[0]) + p(r[1]))
        };
        let ratios = candidates(10);
        let scores = (0..2).map(|li| ratios.iter().map(|&x| f(&if li == 0 { [Some(x), None] } else { [None, Some(x)] })).collect()).collect();
        let t = SensitivityTable { layers: vec!["a".into(), "b".into()], ratios, scores, baseline: 0.0 };
        let start = vec![Some(0.6), Some(0.6)];
        let mr = |r: &[Option<f64>]| 0.5 * r[0].unwrap_or(1.0) + 0.5 * r[1].unwrap_or(1.0);
        let (best, score, steps) = refine(&t, Ladder::Steps(0.05), 0.6, start.clone(), f(&start), 40, &mut |r| mr(r), &mut |r| Ok(f(r)), &mut |_, _, _| true).unwrap();
        assert_eq!(best, vec![Some(0.95), Some(0.25)], "{steps:?}");
        assert!((score + 0.5875).abs() < 1e-9);
        // On the candidates alone it stops at (0.9, 0.3).
        let (best, _, _) = refine(&t, Ladder::Candidates, 0.6, start.clone(), f(&start), 40, &mut |r| mr(r), &mut |r| Ok(f(r)), &mut |_, _, _| true).unwrap();
        assert_eq!(best, vec![Some(0.9), Some(0.3)]);
    }
}
