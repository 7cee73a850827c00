//! Compression passes against independent references: the SVD split at full rank against the
//! original layer, AIMET's ranks and costs from its own result files, pruning against the same
//! model with the removed channels' weights zeroed, and reconstruction against plain removal.

mod common;

use common::*;
use qplay_core::cost::{infer_shapes, input_shapes};
use qplay_core::graph::{Graph, Op};
use qplay_core::passes::prune::{find_units, kept_for_ratio, Sampling};
use qplay_core::passes::svd::{SvdKind, SvdLayer};
use qplay_core::{load_model, Executor, Limits, Tensor};
use serde_json::Value;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn shapes(g: &Graph) -> Vec<Option<Vec<usize>>> {
    infer_shapes(g, &input_shapes(g, &[]).unwrap(), &Limits::default()).unwrap()
}

/// Every value of `g` on `x` (unfused, so each keeps its id).
fn values(g: &Graph, x: &Tensor) -> Vec<Option<Vec<f32>>> {
    let mut out = vec![None; g.values.len()];
    Executor::with_fusion(g.clone(), Limits::default(), false)
        .unwrap()
        .run_with_hook(vec![x.clone()], &mut |id, t| {
            out[id] = Some(t.to_f32_vec());
            Ok(())
        })
        .unwrap();
    out
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max) / scale.max(1e-30)
}

/// At full rank each layer's split computes the layer's own output (its output value keeps its
/// name), for every distinct layer shape of the model.
fn full_rank_split_reproduces(model: &[u8], x: &Tensor, kinds: &[SvdKind]) -> usize {
    let (g, _) = load_model(model, &Limits::default()).unwrap();
    let s = shapes(&g);
    let reference = values(&g, x);
    let mut seen = std::collections::HashSet::new();
    let mut checked = 0;
    for &kind in kinds {
        for ni in 0..g.nodes.len() {
            let Some(layer) = SvdLayer::new(&g, ni, &s, kind) else { continue };
            let w = g.consts[g.nodes[ni].inputs[1].unwrap()].as_ref().unwrap().shape().to_vec();
            let out = g.nodes[ni].outputs[0];
            if !seen.insert((kind as u8, w, s[out].clone())) {
                continue;
            }
            let mut split = g.clone();
            layer.apply(&mut split, layer.max_rank()).unwrap();
            assert_eq!(split.nodes.len(), g.nodes.len() + 1);
            // Run only up to the split layer.
            split.nodes.truncate(ni + 2);
            split.outputs = vec![out];
            let got = Executor::with_fusion(split, Limits::default(), false).unwrap().run(vec![x.clone()]).unwrap().remove(0).to_f32_vec();
            let e = rel_err(reference[out].as_ref().unwrap(), &got);
            assert!(e < 1e-5, "{kind:?} {}: {e}", g.nodes[ni].name);
            checked += 1;
        }
    }
    checked
}

#[test]
fn full_rank_svd_reproduces_digits_layers() {
    let x = digits(TEST_X, 8, false);
    // Spatial: the four ungrouped convs; weight: those and the classifier's Gemm.
    assert_eq!(full_rank_split_reproduces(MOBILENET, &x, &[SvdKind::Spatial, SvdKind::Weight]), 9);
    let x = digits(TEST_X, 8, true);
    // The MLP's Gemms, of two distinct shapes (weight SVD only: spatial SVD takes convs).
    assert_eq!(full_rank_split_reproduces(MLP, &x, &[SvdKind::Spatial, SvdKind::Weight]), 2);
}

#[cfg(not(target_arch = "wasm32"))]
fn lite0() -> (Vec<u8>, Tensor) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../");
    let model = std::fs::read(format!("{root}assets/models/efficientnet_lite0.onnx")).unwrap();
    let x = qplay_core::npy::read_npy(&std::fs::read(format!("{root}tests/reference/efficientnet_lite0/chelsea.input.npy")).unwrap(), 1 << 22).unwrap();
    (model, x)
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn full_rank_svd_reproduces_lite0_layers() {
    let (model, x) = lite0();
    let n = full_rank_split_reproduces(&model, &x, &[SvdKind::Spatial, SvdKind::Weight]);
    assert!(n >= 20, "{n} distinct layers checked");
}

fn aimet_run(file: &str) -> Value {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/aimet/compression/");
    let text = match file {
        "digits_mobilenet/ssvd_t0.5.json" => include_str!("../../tests/aimet/compression/digits_mobilenet/ssvd_t0.5.json"),
        "efficientnet_lite0/ssvd_t0.5.json" => include_str!("../../tests/aimet/compression/efficientnet_lite0/ssvd_t0.5.json"),
        _ => panic!("{root}{file}"),
    };
    serde_json::from_str(text).unwrap()
}

/// AIMET's chosen ratio, rank and MACs of each split layer, against qplay's rank from the ratio
/// and AIMET's cost formula at that rank; and each layer's MACs as AIMET counts them.
fn ranks_and_costs_equal_aimets(model: &[u8], file: &str, name: &dyn Fn(&str) -> String) -> usize {
    let (g, _) = load_model(model, &Limits::default()).unwrap();
    let s = shapes(&g);
    let run = aimet_run(file);
    let mut checked = 0;
    for (layer, info) in run["stages"][0]["per_layer"].as_object().unwrap() {
        // The classifier (a Gemm in ONNX) is not a spatial-SVD layer.
        if info["orig"]["type"] == "Linear" {
            continue;
        }
        let node = name(layer);
        let ni = g.nodes.iter().position(|n| n.name == node).unwrap_or_else(|| panic!("{node}"));
        assert_eq!(qplay_core::cost::node_macs(&g.nodes[ni], &s), info["orig"]["macs"].as_u64().unwrap(), "{node}");
        let Some(ratio) = info["chosen_ratio"].as_str().and_then(|r| r.parse::<f64>().ok()) else { continue };
        let l = SvdLayer::new(&g, ni, &s, SvdKind::Spatial).unwrap();
        let rank = l.rank_for_ratio(ratio, 1);
        assert_eq!(rank as u64, info["rank"].as_u64().unwrap(), "{node} at {ratio}");
        let after = &info["after"];
        let macs = after["svd_a"]["macs"].as_u64().unwrap() + after["svd_b"]["macs"].as_u64().unwrap();
        assert_eq!(l.aimet_cost(rank), macs, "{node}");
        checked += 1;
    }
    checked
}

#[test]
fn ranks_and_costs_equal_aimets_on_digits() {
    let n = ranks_and_costs_equal_aimets(MOBILENET, "digits_mobilenet/ssvd_t0.5.json", &|l| format!("/features/features.{}/Conv", l.trim_start_matches("features_")));
    assert_eq!(n, 3);
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn ranks_and_costs_equal_aimets_on_lite0() {
    let (model, _) = lite0();
    // AIMET's torch names: blocks_3_expand_conv -> /_blocks.3/_expand_conv/Conv.
    let name = |l: &str| match l.strip_prefix("blocks_") {
        Some(rest) => {
            let (i, conv) = rest.split_once('_').unwrap();
            format!("/_blocks.{i}/_{conv}/Conv")
        }
        None => format!("/_{l}/Conv"),
    };
    let n = ranks_and_costs_equal_aimets(&model, "efficientnet_lite0/ssvd_t0.5.json", &name);
    assert!(n >= 20, "{n}");
}

#[test]
fn kept_channels_follow_aimets_rounding() {
    // max(1, floor(C·r)), then up to a multiple: digits CP 0.5 kept 14/16, 25/32, 25/64.
    assert_eq!(kept_for_ratio(16, 0.9, 1), 14);
    assert_eq!(kept_for_ratio(32, 0.8, 1), 25);
    assert_eq!(kept_for_ratio(64, 0.4, 1), 25);
    assert_eq!(kept_for_ratio(64, 0.4, 8), 32);
    assert_eq!(kept_for_ratio(10, 0.01, 1), 1);
}

/// The same model with the weights that read the removed channels set to zero: what pruning
/// must compute exactly.
fn zeroed(g: &Graph, consumers: &[String], keep: &[usize]) -> Graph {
    let mut z = g.clone();
    for n in &g.nodes {
        if !consumers.contains(&n.name) {
            continue;
        }
        let w = n.inputs[1].unwrap();
        let t = z.consts[w].as_ref().unwrap();
        let s = t.shape().to_vec();
        let mut d = t.to_f32_vec();
        let per = s[2] * s[3];
        for o in 0..s[0] {
            for c in (0..s[1]).filter(|c| !keep.contains(c)) {
                d[(o * s[1] + c) * per..(o * s[1] + c + 1) * per].fill(0.0);
            }
        }
        z.consts[w] = Some(Tensor::f32(s, d).unwrap());
    }
    z
}

/// Prunes each unit of `model` to every other channel, without refitting: the graph runs, the
/// weights have the kept sizes, and the outputs equal the zeroed model's.
fn pruning_removes_exactly_the_chosen_channels(model: &[u8], x: &Tensor) -> Vec<(usize, usize)> {
    let (g, _) = load_model(model, &Limits::default()).unwrap();
    let s = shapes(&g);
    let units = find_units(&g, &s);
    let mut seen = vec![];
    for u in &units {
        let keep: Vec<usize> = (0..u.channels).step_by(2).collect();
        let mut p = g.clone();
        u.prune(&mut p, &keep).unwrap();
        let k = keep.len();
        for n in &p.nodes {
            let w = |n: &qplay_core::graph::Node| p.consts[n.inputs[1].unwrap()].as_ref().unwrap().shape().to_vec();
            if u.producers.contains(&n.name) {
                assert_eq!(w(n)[0], k, "{}: producer {}", u.name, n.name);
            }
            if u.consumers.contains(&n.name) {
                assert_eq!(w(n)[1], k, "{}: consumer {}", u.name, n.name);
            }
            if u.depthwise.contains(&n.name) {
                assert_eq!(w(n)[0], k);
                assert!(matches!(n.op, Op::Conv { group, .. } if group == k));
            }
        }
        let got = Executor::new(p, Limits::default()).unwrap().run(vec![x.clone()]).unwrap()[0].to_f32_vec();
        let want = Executor::new(zeroed(&g, &u.consumers, &keep), Limits::default()).unwrap().run(vec![x.clone()]).unwrap()[0].to_f32_vec();
        let e = rel_err(&want, &got);
        assert!(e < 1e-5, "{}: {e}", u.name);
        seen.push((u.consumers.len(), u.depthwise.len()));
    }
    seen
}

#[test]
fn pruning_digits_goes_through_depthwise_convs() {
    let seen = pruning_removes_exactly_the_chosen_channels(MOBILENET, &digits(TEST_X, 4, false));
    // features_6, 12 and 18, each fed through a depthwise conv.
    assert_eq!(seen, vec![(1, 1), (1, 1), (1, 1)]);
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn pruning_lite0_goes_through_residual_groups() {
    let (model, x) = lite0();
    let seen = pruning_removes_exactly_the_chosen_channels(&model, &x);
    // Residual stages: channels read by several convs through the Adds, pruned as one.
    assert!(seen.iter().any(|&(consumers, _)| consumers >= 2), "{seen:?}");
    assert!(seen.iter().filter(|&&(_, dw)| dw > 0).count() >= 10, "{seen:?}");
}

#[test]
fn reconstruction_lowers_the_layer_error() {
    let (g, _) = load_model(MOBILENET, &Limits::default()).unwrap();
    let s = shapes(&g);
    let calib = calib_batches(false);
    let x = digits(TEST_X, 64, false);
    let reference = values(&g, &x);
    for u in find_units(&g, &s) {
        let fit = u.fit_original(&g, &s, &calib, &Limits::default(), Sampling::default()).unwrap();
        assert_eq!(fit.points, 2560, "10 pixels of each of the 256 samples");
        let keep = u.by_magnitude(&g, u.channels / 2);
        let (mut plain, mut refit) = (g.clone(), g.clone());
        u.apply_with_fit(&mut plain, &keep, None, 0.0, &mut Default::default()).unwrap();
        u.apply_with_fit(&mut refit, &keep, Some(&fit), 1e-3, &mut Default::default()).unwrap();
        let ni = g.nodes.iter().position(|n| n.name == u.name).unwrap();
        let out = g.nodes[ni].outputs[0];
        let err = |m: &Graph| {
            let v = values(m, &x);
            let (a, b) = (reference[out].as_ref().unwrap(), v[out].as_ref().unwrap());
            a.iter().zip(b).map(|(p, q)| ((p - q) as f64).powi(2)).sum::<f64>()
        };
        let (e_plain, e_refit) = (err(&plain), err(&refit));
        // On held-out samples (the test split), not the calibration ones.
        assert!(e_refit < 0.8 * e_plain, "{}: {e_refit} vs {e_plain}", u.name);
    }
}

/// Prunes every unit of `model` to half its channels at once, each consumer refitted, in graph
/// order and in reverse: the model runs and both orders give the same outputs. A project conv
/// can be both a consumer (of its depthwise chain) and a producer (of a residual group, Lite0's
/// block 2; of its own group, the held-out MobileNetV2's first block): its refit must write only
/// the output channels its group kept. Returns the output length.
fn pruning_every_group_at_once_keeps_the_model_valid(model: &[u8], x: &Tensor) -> usize {
    let (g, _) = load_model(model, &Limits::default()).unwrap();
    let s = shapes(&g);
    let units = find_units(&g, &s);
    let fits: Vec<_> = units.iter().map(|u| u.fit_original(&g, &s, std::slice::from_ref(x), &Limits::default(), Sampling::default()).unwrap()).collect();
    let prune_in = |order: &[usize]| -> Vec<f32> {
        let (mut c, mut rows) = (g.clone(), Default::default());
        for &u in order {
            let keep = units[u].by_magnitude(&g, kept_for_ratio(units[u].channels, 0.5, 1));
            units[u].apply_with_fit(&mut c, &keep, Some(&fits[u]), 1e-3, &mut rows).unwrap();
        }
        Executor::new(c, Limits::default()).unwrap().run(vec![x.clone()]).unwrap().remove(0).to_f32_vec()
    };
    let forward: Vec<usize> = (0..units.len()).collect();
    let backward: Vec<usize> = forward.iter().rev().copied().collect();
    let (a, b) = (prune_in(&forward), prune_in(&backward));
    assert!(rel_err(&a, &b) < 1e-5, "{}", rel_err(&a, &b));
    a.len()
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn pruning_every_lite0_group_at_once_keeps_the_model_valid() {
    let (model, x) = lite0();
    assert_eq!(pruning_every_group_at_once_keeps_the_model_valid(&model, &x), 1000);
}

// Held-out architectures (tests/heldout/make_models.py): a ResNet with projection shortcuts and
// BatchNorm nodes; a MobileNetV2 with ReLU6 as Clip, folded BatchNorm and inverted residual
// blocks, whose first block's project conv both reads and writes the residual group.
const RESNET_MINI: &[u8] = include_bytes!("../../tests/heldout/resnet_mini.onnx");
const MBV2_MINI: &[u8] = include_bytes!("../../tests/heldout/mbv2_mini.onnx");

fn heldout_input() -> Tensor {
    let x = qplay_core::npy::read_npy(include_bytes!("../../tests/heldout/calib.npy"), 1 << 22).unwrap();
    let d = x.to_f32_vec();
    Tensor::f32(vec![4, 3, 32, 32], d[..4 * 3 * 32 * 32].to_vec()).unwrap()
}

#[test]
fn pruning_heldout_models_removes_exactly_the_chosen_channels() {
    let x = heldout_input();
    let seen = pruning_removes_exactly_the_chosen_channels(RESNET_MINI, &x);
    // Stage 0's identity shortcuts tie the stem and both blocks' second convs to one group read
    // by four convs; the stride-2 stages have their own.
    assert!(seen.iter().any(|&(consumers, _)| consumers >= 4), "{seen:?}");
    let seen = pruning_removes_exactly_the_chosen_channels(MBV2_MINI, &x);
    assert!(seen.iter().filter(|&&(_, dw)| dw > 0).count() >= 5, "{seen:?}");
}

#[test]
fn pruning_every_heldout_group_at_once_keeps_the_model_valid() {
    let x = heldout_input();
    for model in [RESNET_MINI, MBV2_MINI] {
        assert_eq!(pruning_every_group_at_once_keeps_the_model_valid(model, &x), 40);
    }
}
