//! AMP's phase 1 and phase 2 (the greedy walks) on a [`Space`], and [`fill`], which spends what a
//! budget leaves after the curve's best point within it.

use super::{pareto_front, Amp, Point, Space};
use crate::error::{Error, Result};
use crate::eval::Evaluator;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs both phases on `space`: phase 1 measured by `sensitivity_eval` (AIMET measures it by
/// the outputs' SQNR against FP32, finer than an accuracy), the curve's points by `eval`. Phase 1
/// and the two walks run on up to `threads` threads (1: all on the caller's), with the same
/// result. `progress(done, total)` after each evaluation, from any of them; returning false
/// cancels.
pub fn run(space: &Space, eval: &Evaluator, sensitivity_eval: &Evaluator, lookahead: usize, threads: usize, progress: &(dyn Fn(usize, usize) -> bool + Sync)) -> Result<Amp> {
    let (ng, nc) = (space.groups.len(), space.candidates.len());
    let top = space.top();
    let cost = |c: usize| space.candidates[c].cost();
    let cheaper: Vec<usize> = (0..nc).filter(|&c| cost(c) < cost(top)).collect();
    // Phase 1, then at most `lookahead` per step of both walks, plus the uniform candidates.
    let total = 3 + ng * cheaper.len() + 2 * ng * cheaper.len() * lookahead.max(1) + nc;
    let done = AtomicUsize::new(0);
    let cancelled = AtomicBool::new(false);
    let evaluate = |choice: &[usize], ev: &Evaluator| -> Result<f64> {
        let cancel = || Error::Quant("mixed precision was cancelled".into());
        if cancelled.load(Ordering::Relaxed) {
            return Err(cancel());
        }
        let s = ev.score_sim(&space.sim(choice)?)?;
        if !progress(done.fetch_add(1, Ordering::Relaxed) + 1, total) {
            cancelled.store(true, Ordering::Relaxed);
            return Err(cancel());
        }
        Ok(s)
    };
    let all_top = vec![top; ng];
    let mut phase1 = vec![all_top.clone()];
    for gi in 0..ng {
        for &c in &cheaper {
            let mut choice = all_top.clone();
            choice[gi] = c;
            phase1.push(choice);
        }
    }
    let scores = in_parallel(threads, phase1.len(), &|i| evaluate(&phase1[i], sensitivity_eval))?;
    let mut sensitivity = vec![vec![scores[0]; nc]; ng];
    for (choice, &s) in phase1.iter().zip(&scores).skip(1) {
        let gi = choice.iter().position(|&c| c != top).unwrap_or(0);
        sensitivity[gi][choice[gi]] = s;
    }
    // The walks rank moves by phase 1's noise: output noise powers of separate quantizers add
    // (to first order), so a move's cost is the difference of its group's noise at both ends.
    let noise_of: Vec<Vec<f64>> = sensitivity.iter().map(|row| row.iter().map(|&s| noise(s)).collect()).collect();
    let down = |gi: usize, from: usize, to: usize| noise_of[gi][to] - noise_of[gi][from];
    let up = |gi: usize, from: usize, to: usize| noise_of[gi][from] - noise_of[gi][to];
    // Down from the most precise point; and up from the cheapest, by the same estimates (the
    // low-cost end of the curve, where a descent from the top arrives in big steps). Measuring
    // phase 1 again at the cheapest point gave the same curve on EfficientNet-Lite0 at twice the
    // cost.
    let bottom = (0..nc).min_by_key(|&c| (cost(c), space.candidates[c].w)).unwrap_or(top);
    let walks = in_parallel(threads, 2, &|i| {
        let (start, dir, estimate): (usize, i32, &(dyn Fn(usize, usize, usize) -> f64 + Sync)) = if i == 0 { (top, -1, &down) } else { (bottom, 1, &up) };
        let start = vec![start; ng];
        let at = evaluate(&start, eval)?;
        let mut visited = vec![space.point(&start, at)];
        walk(space, (start, at), dir, estimate, lookahead, &mut |ch| evaluate(ch, eval), &mut visited)?;
        Ok(visited)
    })?;
    let visited: Vec<Point> = walks.into_iter().flatten().collect();
    let mut uniform = Vec::new();
    for c in 0..nc {
        let ch = vec![c; ng];
        let s = match visited.iter().find(|p| p.choice == ch) {
            Some(p) => p.score,
            None => evaluate(&ch, eval)?,
        };
        uniform.push(space.point(&ch, s));
    }
    let evaluations = done.load(Ordering::Relaxed);
    let pareto = pareto_front(visited.iter().chain(&uniform).cloned().collect());
    Ok(Amp { candidates: space.candidates.clone(), groups: space.groups.clone(), sensitivity, visited, pareto, uniform, evaluations })
}

/// Spends what a budget leaves. The curve's points are where the walks stopped, so the best of
/// them within a budget may leave part of it unused. From that point, raises one group at a time
/// while `within(choice)` still holds: scores the `lookahead` raises that phase 1 estimates
/// remove the most noise per BOP, takes the best, and stops when none scores higher. The points
/// taken join `amp.visited` and the curve. `progress(evaluations)` after each; returning false
/// cancels. Returns the number of evaluations.
pub fn fill(space: &Space, eval: &Evaluator, amp: &mut Amp, within: &dyn Fn(&[usize]) -> bool, lookahead: usize, progress: &dyn Fn(usize) -> bool) -> Result<usize> {
    let Some(start) = amp.pareto.iter().filter(|p| within(&p.choice)).max_by(|a, b| a.score.total_cmp(&b.score)) else {
        return Ok(0);
    };
    let (mut choice, mut current) = (start.choice.clone(), start.score);
    let cost = |c: usize| space.candidates[c].cost() as f64;
    let noise_of: Vec<Vec<f64>> = amp.sensitivity.iter().map(|row| row.iter().map(|&s| noise(s)).collect()).collect();
    let mut evaluations = 0;
    loop {
        let mut moves: Vec<(f64, usize, usize)> = Vec::new();
        for (gi, &now) in choice.iter().enumerate() {
            for c in (0..space.candidates.len()).filter(|&c| cost(c) > cost(now)) {
                let mut trial = choice.clone();
                trial[gi] = c;
                if within(&trial) {
                    let bops = space.groups[gi].macs.max(1) as f64 * (cost(c) - cost(now));
                    moves.push((-(noise_of[gi][now] - noise_of[gi][c]).max(0.0) / bops, gi, c));
                }
            }
        }
        moves.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut best: Option<(f64, Vec<usize>)> = None;
        for &(_, gi, c) in moves.iter().take(lookahead.max(1)) {
            let mut trial = choice.clone();
            trial[gi] = c;
            let s = eval.score_sim(&space.sim(&trial)?)?;
            evaluations += 1;
            if !progress(evaluations) {
                return Err(Error::Quant("mixed precision was cancelled".into()));
            }
            if best.as_ref().is_none_or(|b| s > b.0) {
                best = Some((s, trial));
            }
        }
        match best {
            Some((s, trial)) if s > current => {
                (choice, current) = (trial, s);
                amp.visited.push(space.point(&choice, current));
            }
            _ => break,
        }
    }
    amp.pareto = pareto_front(amp.visited.iter().chain(&amp.uniform).cloned().collect());
    Ok(evaluations)
}

/// `f(0..n)` in order, on up to `threads` threads (item i on thread i mod threads); the first
/// error wins.
fn in_parallel<T: Send>(threads: usize, n: usize, f: &(dyn Fn(usize) -> Result<T> + Sync)) -> Result<Vec<T>> {
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 {
        return (0..n).map(f).collect();
    }
    let parts: Vec<Vec<(usize, Result<T>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|t| s.spawn(move || (t..n).step_by(threads).map(|i| (i, f(i))).collect::<Vec<_>>())).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let mut out: Vec<(usize, Result<T>)> = parts.into_iter().flatten().collect();
    if out.len() != n {
        return Err(Error::Quant("a mixed-precision thread failed".into()));
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Output noise power relative to the signal, from an SQNR in dB.
fn noise(sqnr_db: f64) -> f64 {
    10f64.powf(-sqnr_db / 10.0)
}

/// A greedy walk from `start` (scoring `at`), one group per step, lowering (`dir` -1) or
/// raising (`dir` 1) its candidate, until no group can move. Each step ranks the moves by
/// `estimate(group, from, to)` (noise added, or removed) per BOP moved, scores the best
/// `lookahead` of them (`evaluate(choice)`) and takes the best per BOP; every point taken
/// goes into `visited`.
fn walk(
    space: &Space,
    (start, at): (Vec<usize>, f64),
    dir: i32,
    estimate: &(dyn Fn(usize, usize, usize) -> f64 + Sync),
    lookahead: usize,
    evaluate: &mut dyn FnMut(&[usize]) -> Result<f64>,
    visited: &mut Vec<Point>,
) -> Result<()> {
    let cost = |c: usize| space.candidates[c].cost() as f64;
    let (mut choice, mut current) = (start, at);
    // Lowering: least loss per BOP saved first; raising: most gain per BOP added first.
    let rank = |delta: f64, bops: f64| if dir < 0 { (delta.max(0.0) + 1e-9) / bops } else { -(delta.max(0.0) + 1e-9) / bops };
    loop {
        let mut moves: Vec<(f64, usize, usize, f64)> = Vec::new();
        for (gi, &now) in choice.iter().enumerate() {
            for c in 0..space.candidates.len() {
                let step = (cost(c) - cost(now)) * dir as f64;
                if step <= 0.0 {
                    continue;
                }
                let bops = space.groups[gi].macs.max(1) as f64 * step;
                moves.push((rank(estimate(gi, now, c), bops), gi, c, bops));
            }
        }
        if moves.is_empty() {
            return Ok(());
        }
        moves.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (mut gi, mut c) = (moves[0].1, moves[0].2);
        if lookahead > 1 && moves.len() > 1 {
            // Measured by the score itself; ties keep the better estimate.
            let mut best: Option<(f64, usize, usize, f64)> = None;
            for &(_, g2, c2, bops) in moves.iter().take(lookahead) {
                let mut trial = choice.clone();
                trial[g2] = c2;
                let s = evaluate(&trial)?;
                let key = rank((current - s) * -dir as f64, bops);
                if best.is_none_or(|b| key < b.0) {
                    best = Some((key, g2, c2, s));
                }
            }
            if let Some((_, g2, c2, s)) = best {
                (gi, c) = (g2, c2);
                choice[gi] = c;
                current = s;
                visited.push(space.point(&choice, s));
                continue;
            }
        }
        choice[gi] = c;
        current = evaluate(&choice)?;
        visited.push(space.point(&choice, current));
    }
}
