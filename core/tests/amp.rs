//! Mixed precision's budget fill against brute force: on the digits MobileNet with two
//! candidates every bit-width choice can be scored (2^8), so the best point within a budget is
//! known. Native only (256 evaluations).

use qplay_core::eval::Evaluator;
use qplay_core::npy::read_npy;
use qplay_core::passes::bn_fold::fold_batch_norms;
use qplay_core::quant::amp::{self, Candidate, Setup, Space};
use qplay_core::quant::QuantSimConfig;
use qplay_core::{load_model, Limits, Tensor};

const MOBILENET: &[u8] = include_bytes!("../../assets/models/digits_mobilenet.onnx");
const TRAIN_X: &[u8] = include_bytes!("../../assets/data/digits_train_x.npy");
const TEST_X: &[u8] = include_bytes!("../../assets/data/digits_test_x.npy");

fn digits(bytes: &[u8], rows: usize) -> Tensor {
    Tensor::f32(vec![rows, 1, 8, 8], read_npy(bytes, 1 << 24).unwrap().to_f32_vec()[..rows * 64].to_vec()).unwrap()
}

/// Every choice of `nc` candidates for `ng` groups.
fn all_choices(ng: usize, nc: usize) -> Vec<Vec<usize>> {
    (0..nc.pow(ng as u32)).map(|mut i| (0..ng).map(|_| (i % nc, i /= nc).0).collect()).collect()
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn filling_a_budget_reaches_the_brute_force_best_within_it() {
    let (g, _) = load_model(MOBILENET, &Limits::default()).unwrap();
    let (g, _) = fold_batch_norms(g);
    let config = QuantSimConfig { per_channel: true, ..Default::default() };
    let calib = [digits(TRAIN_X, 256)];
    let cands: Vec<Candidate> = ["w4a8", "w8a8", "w16a8"].iter().map(|c| Candidate::parse(c).unwrap()).collect();
    let space = Space::new(&Setup { graph: &g, config: &config, calib: &calib, limits: Limits::default(), adaround: None }, &cands, &mut |_, _| true).unwrap();
    let eval = Evaluator::against_model(&g, vec![digits(TEST_X, 64)], Limits::default()).unwrap();
    let mut result = amp::run(&space, &eval, &eval, 1, 1, &|_, _| true).unwrap();
    let (ng, nc) = (space.groups.len(), space.candidates.len());
    assert_eq!(ng, 8);
    let scores: Vec<(Vec<usize>, f64)> = all_choices(ng, nc).into_iter().map(|ch| { let s = eval.score_sim(&space.sim(&ch).unwrap()).unwrap(); (ch, s) }).collect();
    for budget in [0.6, 0.75, 0.9] {
        let within = |ch: &[usize]| space.relative_bops(ch) <= budget + 1e-12;
        let walked = result.pareto.iter().filter(|p| within(&p.choice)).map(|p| p.score).fold(f64::MIN, f64::max);
        let optimum = scores.iter().filter(|(ch, _)| within(ch)).map(|(_, s)| *s).fold(f64::MIN, f64::max);
        let evaluations = amp::fill(&space, &eval, &mut result, &within, nc * ng, &|_| true).unwrap();
        let chosen = amp::choose(&result.pareto, amp::Target::Bops(budget)).unwrap();
        println!("budget {budget}: walks {walked:.3} dB, filled {:.3} dB at {:.4} ({evaluations} evaluations), brute force {optimum:.3} dB", chosen.score, chosen.relative_bops);
        assert!(within(&chosen.choice) && chosen.score >= walked && chosen.score <= optimum + 1e-9);
        // The filled point is the best within the budget (of all nc^ng choices).
        assert!(chosen.score >= optimum - 1e-9, "budget {budget}: {} vs {optimum}", chosen.score);
    }
}
