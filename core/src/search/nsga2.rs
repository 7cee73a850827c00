//! NSGA-II (Deb, Pratap, Agarwal and Meyarivan, IEEE TEVC 6(2), 2002), minimising every
//! objective: fast non-dominated sorting, crowding distance, (μ+λ) survival, binary tournaments,
//! and two gene codings: real genes within bounds (simulated binary crossover and polynomial
//! mutation, for the ZDT oracles) and categorical genes (uniform crossover and random-reset
//! mutation, for architecture search). Offspring that repeat a genome already in the population
//! (or each other) are redrawn before evaluation, since an evaluation may be a real measurement.

use crate::error::{Error, Result};
use crate::rng::SplitMix;
use serde::Serialize;

/// `a` dominates `b`: no worse in every objective and better in one (minimising).
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut better = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        better |= x < y;
    }
    better
}

/// Fast non-dominated sort: the indices of `objs` by front, the first front undominated.
pub fn non_dominated_sort(objs: &[Vec<f64>]) -> Vec<Vec<usize>> {
    let n = objs.len();
    let mut dominated_by = vec![0usize; n];
    let mut dominates_list: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in i + 1..n {
            if dominates(&objs[i], &objs[j]) {
                dominates_list[i].push(j);
                dominated_by[j] += 1;
            } else if dominates(&objs[j], &objs[i]) {
                dominates_list[j].push(i);
                dominated_by[i] += 1;
            }
        }
    }
    let mut fronts = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| dominated_by[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominates_list[i] {
                dominated_by[j] -= 1;
                if dominated_by[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        fronts.push(current);
        current = next;
    }
    fronts
}

/// Crowding distance of each member of one front (in the front's order), as pymoo computes it:
/// per objective the boundary points get infinity and an interior point adds the gap between
/// its neighbours over the objective's range (an objective without range adds nothing); the sum
/// is divided by the number of objectives. A point equal to an earlier one gets 0, the others
/// are computed without it.
pub fn crowding_distance(objs: &[&[f64]]) -> Vec<f64> {
    let unique: Vec<usize> = (0..objs.len()).filter(|&i| !objs[..i].contains(&objs[i])).collect();
    let n = unique.len();
    let mut out = vec![0.0; objs.len()];
    if n <= 2 {
        for &i in &unique {
            out[i] = f64::INFINITY;
        }
        return out;
    }
    let m_count = objs[0].len();
    let mut d = vec![0.0; n];
    #[allow(clippy::needless_range_loop)]
    for m in 0..m_count {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| objs[unique[a]][m].total_cmp(&objs[unique[b]][m]).then(a.cmp(&b)));
        let f = |k: usize| objs[unique[order[k]]][m];
        let range = f(n - 1) - f(0);
        if range > 0.0 {
            d[order[0]] = f64::INFINITY;
            d[order[n - 1]] = f64::INFINITY;
            for k in 1..n - 1 {
                d[order[k]] += (f(k + 1) - f(k - 1)) / range;
            }
        }
    }
    for (k, &i) in unique.iter().enumerate() {
        out[i] = d[k] / m_count as f64;
    }
    out
}

/// Hypervolume of two-objective points (minimising) against `reference`: the area dominated by
/// the points and bounded by it. Points not strictly better than the reference in both
/// objectives add nothing.
pub fn hypervolume_2d(points: &[[f64; 2]], reference: [f64; 2]) -> f64 {
    let mut p: Vec<[f64; 2]> = points.iter().copied().filter(|q| q[0] < reference[0] && q[1] < reference[1]).collect();
    p.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    let (mut hv, mut top) = (0.0, reference[1]);
    for q in p {
        if q[1] < top {
            hv += (reference[0] - q[0]) * (top - q[1]);
            top = q[1];
        }
    }
    hv
}

/// How genomes are drawn, recombined and mutated.
pub trait Genes {
    type Genome: Clone + PartialEq;
    fn sample(&self, rng: &mut SplitMix) -> Self::Genome;
    fn crossover(&self, a: &Self::Genome, b: &Self::Genome, rng: &mut SplitMix) -> (Self::Genome, Self::Genome);
    fn mutate(&self, g: &mut Self::Genome, rng: &mut SplitMix);
}

/// Real genes within bounds: simulated binary crossover (probability `crossover`, each variable
/// exchanged with probability 1/2, spread `eta_c`) and polynomial mutation (each variable with
/// probability min(1/2, 1/n), spread `eta_m`); pymoo's defaults.
#[derive(Debug, Clone)]
pub struct Real {
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    pub crossover: f64,
    pub eta_c: f64,
    pub eta_m: f64,
}

impl Real {
    pub fn new(lower: Vec<f64>, upper: Vec<f64>) -> Real {
        Real { lower, upper, crossover: 0.9, eta_c: 15.0, eta_m: 20.0 }
    }
}

impl Genes for Real {
    type Genome = Vec<f64>;
    fn sample(&self, rng: &mut SplitMix) -> Vec<f64> {
        self.lower.iter().zip(&self.upper).map(|(l, u)| l + rng.unit() * (u - l)).collect()
    }
    fn crossover(&self, a: &Vec<f64>, b: &Vec<f64>, rng: &mut SplitMix) -> (Vec<f64>, Vec<f64>) {
        let (mut c1, mut c2) = (a.clone(), b.clone());
        if rng.unit() >= self.crossover {
            return (c1, c2);
        }
        let e = self.eta_c + 1.0;
        let spread = |beta: f64, u: f64| {
            let alpha = 2.0 - beta.powf(-e);
            if u <= 1.0 / alpha { (u * alpha).powf(1.0 / e) } else { (1.0 / (2.0 - u * alpha)).powf(1.0 / e) }
        };
        for i in 0..a.len() {
            if rng.unit() >= 0.5 || (a[i] - b[i]).abs() <= 1e-14 {
                continue;
            }
            let (y1, y2) = (a[i].min(b[i]), a[i].max(b[i]));
            let (lo, hi) = (self.lower[i], self.upper[i]);
            let u = rng.unit();
            let lo_child = 0.5 * (y1 + y2 - spread(1.0 + 2.0 * (y1 - lo) / (y2 - y1), u) * (y2 - y1));
            let hi_child = 0.5 * (y1 + y2 + spread(1.0 + 2.0 * (hi - y2) / (y2 - y1), u) * (y2 - y1));
            let (x1, x2) = (lo_child.clamp(lo, hi), hi_child.clamp(lo, hi));
            if rng.unit() < 0.5 {
                (c1[i], c2[i]) = (x2, x1);
            } else {
                (c1[i], c2[i]) = (x1, x2);
            }
        }
        (c1, c2)
    }
    fn mutate(&self, g: &mut Vec<f64>, rng: &mut SplitMix) {
        let p = (1.0 / g.len() as f64).min(0.5);
        let power = 1.0 / (self.eta_m + 1.0);
        for (i, x) in g.iter_mut().enumerate() {
            if rng.unit() >= p {
                continue;
            }
            let (lo, hi) = (self.lower[i], self.upper[i]);
            if hi <= lo {
                continue;
            }
            let u = rng.unit();
            let dq = if u < 0.5 {
                let xy = 1.0 - (*x - lo) / (hi - lo);
                (2.0 * u + (1.0 - 2.0 * u) * xy.powf(self.eta_m + 1.0)).powf(power) - 1.0
            } else {
                let xy = 1.0 - (hi - *x) / (hi - lo);
                1.0 - (2.0 * (1.0 - u) + 2.0 * (u - 0.5) * xy.powf(self.eta_m + 1.0)).powf(power)
            };
            *x = (*x + dq * (hi - lo)).clamp(lo, hi);
        }
    }
}

/// Categorical genes: gene `i` is an index below `choices[i]`. Uniform crossover swaps each gene
/// with probability 1/2; random-reset mutation redraws each gene with probability 1/n.
#[derive(Debug, Clone)]
pub struct Categorical {
    pub choices: Vec<usize>,
}

impl Genes for Categorical {
    type Genome = Vec<usize>;
    fn sample(&self, rng: &mut SplitMix) -> Vec<usize> {
        self.choices.iter().map(|&c| rng.below(c)).collect()
    }
    fn crossover(&self, a: &Vec<usize>, b: &Vec<usize>, rng: &mut SplitMix) -> (Vec<usize>, Vec<usize>) {
        let (mut c1, mut c2) = (a.clone(), b.clone());
        for i in 0..a.len() {
            if rng.unit() < 0.5 {
                (c1[i], c2[i]) = (b[i], a[i]);
            }
        }
        (c1, c2)
    }
    fn mutate(&self, g: &mut Vec<usize>, rng: &mut SplitMix) {
        let p = 1.0 / g.len().max(1) as f64;
        for (x, &c) in g.iter_mut().zip(&self.choices) {
            if rng.unit() < p {
                *x = rng.below(c);
            }
        }
    }
}

impl Categorical {
    /// The number of distinct genomes (saturating).
    pub fn space_size(&self) -> u128 {
        self.choices.iter().fold(1u128, |a, &c| a.saturating_mul(c as u128))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub population: usize,
    pub generations: usize,
    pub seed: u64,
}

/// One evaluated member of the final population.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member<G> {
    pub genome: G,
    pub objectives: Vec<f64>,
    pub rank: usize,
    pub crowding: f64,
}

/// Where the search stands after a generation (generation 0 is the initial population).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub generation: usize,
    pub generations: usize,
    pub evaluations: usize,
}

#[derive(Debug, Clone)]
pub struct Outcome<G> {
    /// The final population, sorted by rank, then by descending crowding.
    pub population: Vec<Member<G>>,
    pub evaluations: usize,
    pub generations: usize,
    /// False when the progress callback asked to stop (the population is the last complete one).
    pub completed: bool,
}

impl<G: Clone> Outcome<G> {
    /// The first front.
    pub fn front(&self) -> Vec<&Member<G>> {
        self.population.iter().filter(|m| m.rank == 0).collect()
    }
}

/// Ranks and crowding of `objs`, then the indices of the best `keep` by (rank, −crowding); ties
/// on the last front broken at random.
fn survive(objs: &[Vec<f64>], keep: usize, rng: &mut SplitMix) -> (Vec<usize>, Vec<usize>, Vec<f64>) {
    let mut rank = vec![0; objs.len()];
    let mut crowd = vec![0.0; objs.len()];
    let mut chosen = Vec::with_capacity(keep);
    for (r, front) in non_dominated_sort(objs).into_iter().enumerate() {
        let d = crowding_distance(&front.iter().map(|&i| objs[i].as_slice()).collect::<Vec<_>>());
        for (k, &i) in front.iter().enumerate() {
            rank[i] = r;
            crowd[i] = d[k];
        }
        if chosen.len() >= keep {
            continue;
        }
        if chosen.len() + front.len() <= keep {
            chosen.extend(&front);
        } else {
            let mut last: Vec<(usize, f64, u64)> = front.iter().map(|&i| (i, crowd[i], rng.next())).collect();
            last.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
            chosen.extend(last.iter().take(keep - chosen.len()).map(|t| t.0));
        }
    }
    (chosen, rank, crowd)
}

/// Objective vectors for a batch of genomes.
pub type Evaluate<'a, G> = dyn FnMut(&[G]) -> Result<Vec<Vec<f64>>> + 'a;

/// Runs NSGA-II. `evaluate` receives each generation's new genomes (no two equal, none equal to
/// a member of the population) and returns one objective vector per genome, every vector of
/// the same length, all minimised. `progress` is called after each generation; returning false
/// stops the search with the population so far.
pub fn run<S: Genes>(genes: &S, cfg: &Config, evaluate: &mut Evaluate<S::Genome>, progress: &mut dyn FnMut(&Progress) -> bool) -> Result<Outcome<S::Genome>> {
    if cfg.population < 2 {
        return Err(Error::Input { name: "population".into(), msg: format!("must be at least 2 (got {})", cfg.population) });
    }
    if cfg.generations == 0 {
        return Err(Error::Input { name: "generations".into(), msg: "must be at least 1".into() });
    }
    let mut rng = SplitMix(cfg.seed ^ 0x6E53_4741_2D49_4900);
    let max_draws = 100 * cfg.population;
    let mut genomes: Vec<S::Genome> = Vec::with_capacity(cfg.population);
    let mut draws = 0;
    while genomes.len() < cfg.population && draws < max_draws {
        draws += 1;
        let g = genes.sample(&mut rng);
        if !genomes.contains(&g) {
            genomes.push(g);
        }
    }
    let mut objs = checked(evaluate(&genomes)?, genomes.len())?;
    let mut evaluations = genomes.len();
    let (keep, mut rank, mut crowd) = survive(&objs, cfg.population, &mut rng);
    (genomes, objs) = select(genomes, objs, &keep);
    (rank, crowd) = (keep.iter().map(|&i| rank[i]).collect(), keep.iter().map(|&i| crowd[i]).collect());
    let mut done = 0;
    let mut completed = progress(&Progress { generation: 0, generations: cfg.generations, evaluations });
    while completed && done < cfg.generations {
        let n = genomes.len();
        let better = |a: usize, b: usize, objs: &[Vec<f64>], rng: &mut SplitMix| {
            if dominates(&objs[a], &objs[b]) || (!dominates(&objs[b], &objs[a]) && rank[a] < rank[b]) {
                a
            } else if dominates(&objs[b], &objs[a]) || rank[b] < rank[a] {
                b
            } else if crowd[a] != crowd[b] {
                if crowd[a] > crowd[b] { a } else { b }
            } else if rng.next() & 1 == 0 {
                a
            } else {
                b
            }
        };
        let mut children: Vec<S::Genome> = Vec::with_capacity(cfg.population);
        let mut draws = 0;
        while children.len() < cfg.population && draws < max_draws {
            draws += 1;
            let pick = |rng: &mut SplitMix| {
                let (a, b) = (rng.below(n), rng.below(n));
                better(a, b, &objs, rng)
            };
            let (p1, p2) = (pick(&mut rng), pick(&mut rng));
            let (mut c1, mut c2) = genes.crossover(&genomes[p1], &genomes[p2], &mut rng);
            genes.mutate(&mut c1, &mut rng);
            genes.mutate(&mut c2, &mut rng);
            for c in [c1, c2] {
                if children.len() < cfg.population && !genomes.contains(&c) && !children.contains(&c) {
                    children.push(c);
                }
            }
        }
        let child_objs = checked(evaluate(&children)?, children.len())?;
        evaluations += children.len();
        genomes.extend(children);
        objs.extend(child_objs);
        let (keep, r, c) = survive(&objs, cfg.population, &mut rng);
        (genomes, objs) = select(genomes, objs, &keep);
        (rank, crowd) = (keep.iter().map(|&i| r[i]).collect(), keep.iter().map(|&i| c[i]).collect());
        done += 1;
        completed = progress(&Progress { generation: done, generations: cfg.generations, evaluations });
    }
    let mut population: Vec<Member<S::Genome>> = genomes.into_iter().zip(objs).enumerate().map(|(i, (genome, objectives))| Member { genome, objectives, rank: rank[i], crowding: crowd[i] }).collect();
    population.sort_by(|a, b| a.rank.cmp(&b.rank).then(b.crowding.total_cmp(&a.crowding)));
    Ok(Outcome { population, evaluations, generations: done, completed: completed || done == cfg.generations })
}

fn checked(objs: Vec<Vec<f64>>, n: usize) -> Result<Vec<Vec<f64>>> {
    let bad = |msg: String| Err(Error::Input { name: "objectives".into(), msg });
    if objs.len() != n {
        return bad(format!("{} objective vectors for {n} genomes", objs.len()));
    }
    let m = objs.first().map_or(0, Vec::len);
    if objs.iter().any(|o| o.len() != m || o.is_empty()) {
        return bad("every genome needs the same, non-zero number of objectives".into());
    }
    if objs.iter().flatten().any(|v| v.is_nan()) {
        return bad("an objective is NaN".into());
    }
    Ok(objs)
}

fn select<G>(genomes: Vec<G>, objs: Vec<Vec<f64>>, keep: &[usize]) -> (Vec<G>, Vec<Vec<f64>>) {
    let mut slots: Vec<Option<(G, Vec<f64>)>> = genomes.into_iter().zip(objs).map(Some).collect();
    keep.iter().map(|&i| slots[i].take().expect("each index kept once")).unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crowding_matches_pymoos_oracles() {
        let inf = f64::INFINITY;
        let cd = |p: &[&[f64]]| crowding_distance(p);
        assert_eq!(cd(&[&[0.0, 0.0], &[0.5, 50.0], &[1.0, 100.0]]), vec![inf, 1.0, inf]);
        assert_eq!(cd(&[&[1.0, 1.0], &[1.0, 1.0], &[0.5, 1.5], &[0.0, 2.0]]), vec![inf, 0.0, 1.0, inf]);
        assert_eq!(cd(&[&[1.0, 1.5, 0.5, 1.0], &[1.0, 0.5, 1.5, 1.0], &[1.0, 0.0, 2.0, 1.5]]), vec![inf, 0.75, inf]);
        assert_eq!(cd(&[&[1.0, 2.0], &[2.0, 1.0]]), vec![inf, inf]);
    }

    #[test]
    fn hypervolume_of_known_sets() {
        assert_eq!(hypervolume_2d(&[[0.0, 0.0]], [1.0, 1.0]), 1.0);
        assert_eq!(hypervolume_2d(&[[0.5, 0.0], [0.0, 0.5], [0.6, 0.6], [1.0, 0.0]], [1.0, 1.0]), 0.75);
        assert_eq!(hypervolume_2d(&[[2.0, 0.0]], [1.0, 1.0]), 0.0);
    }
}
