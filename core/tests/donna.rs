//! DONNA's search space: blocks build to the hand-counted shapes and MACs, a stitched model
//! computes what its parts compute in sequence, and blockwise distillation (the per-channel
//! noise-to-signal ratio against a teacher block's outputs) lowers the block's loss.

mod common;

use qplay_core::search::donna::{self, Act, BlockChoice, Spec};
use qplay_core::train::{self, Data, Distill, Net, TrainConfig};
use qplay_core::{Executor, Limits, Tensor};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn run(g: &qplay_core::Graph, x: Tensor) -> Tensor {
    Executor::new(g.clone(), Limits::default()).unwrap().run(vec![x]).unwrap().remove(0)
}

#[test]
fn a_block_has_the_hand_counted_shape_and_macs() {
    let spec = Spec::digits();
    // Block 1 (24 → 40, stride 2, from 8×8), k3 e2 d2, no SE:
    // layer 0: expand 24·48·64, depthwise 48·9·16 (stride 2), project 48·40·16;
    // layer 1: expand 40·80·16, depthwise 80·9·16, project 80·40·16 (and a residual).
    let c = BlockChoice { kernel: 3, expand: 2, depth: 2, se: false, act: Act::Relu6, width: 100 };
    let g = donna::block(&spec, 1, &c, 1).unwrap();
    let (shapes, cost) = qplay_core::cost::analyze(&g, &[("b1.input".into(), vec![1, 24, 8, 8])], &Limits::default()).unwrap();
    assert_eq!(cost.macs, 24 * 48 * 64 + 48 * 9 * 16 + 48 * 40 * 16 + 40 * 80 * 16 + 80 * 9 * 16 + 80 * 40 * 16);
    assert_eq!(qplay_core::cost::shape_of(&shapes, g.outputs[0]), Some(&[1, 40, 4, 4][..]));
    assert_eq!(g.nodes.iter().filter(|n| n.op_type == "Add").count(), 1);
    // Depth 3 at half width, SE, from block 0 (16 → 24, 8×8): layers 16→12, 12→12, 12→24 with
    // expansion 2 (hidden 32, 24, 24), depthwise 5×5, SE (c → max(c/4, 4) → c at 1×1), and a
    // residual around the middle layer only.
    let c = BlockChoice { kernel: 5, expand: 2, depth: 3, se: true, act: Act::Hswish, width: 50 };
    let g = donna::block(&spec, 0, &c, 1).unwrap();
    let (_, cost) = qplay_core::cost::analyze(&g, &[("b0.input".into(), vec![1, 16, 8, 8])], &Limits::default()).unwrap();
    let layer = |cin: usize, h: usize, cout: usize| cin * h * 64 + h * 25 * 64 + 2 * h * (h / 4).max(4) + h * cout * 64;
    assert_eq!(cost.macs as usize, layer(16, 32, 12) + layer(12, 24, 12) + layer(12, 24, 24));
    assert_eq!(g.nodes.iter().filter(|n| n.op_type == "Add").count(), 1);
    assert_eq!(g.nodes.iter().filter(|n| n.op_type == "HardSwish").count(), 6);
    // Expansion 1 at full width has no expansion layer.
    let c = BlockChoice { kernel: 3, expand: 1, depth: 1, se: false, act: Act::Relu, width: 100 };
    assert!(!donna::block(&spec, 0, &c, 1).unwrap().nodes.iter().any(|n| n.name.contains("expand")));
    // Outside the space, or a block the space lacks.
    assert!(donna::block(&spec, 1, &BlockChoice { depth: 4, ..c }, 1).is_err());
    assert!(donna::block(&spec, 3, &c, 1).unwrap_err().to_string().contains("3 blocks"));
    assert!(donna::architecture(&spec, &[c, c], 0).unwrap_err().to_string().contains("2 block choices"));
}

#[test]
fn a_stitched_model_computes_its_parts_in_sequence() {
    let spec = Spec::digits();
    let choices = [BlockChoice::largest(), BlockChoice::from_index(17), BlockChoice::from_index(200)];
    let whole = donna::architecture(&spec, &choices, 5).unwrap();
    let x = common::digits(common::TEST_X, 16, false);
    let mut h = run(&donna::stem(&spec, 5).unwrap(), x.clone());
    for (n, c) in choices.iter().enumerate() {
        h = run(&donna::block(&spec, n, c, 5 + n as u64 + 1).unwrap(), h);
    }
    let logits = run(&donna::head(&spec, 5 + 1000).unwrap(), h);
    let y = run(&whole, x);
    assert_eq!(y.shape(), &[16, 10]);
    assert_eq!(y.to_f32_vec(), logits.to_f32_vec());
    assert!(y.to_f32_vec().iter().any(|v| *v != 0.0));
    // Written as ONNX and read back: the same model.
    let bytes = qplay_core::onnx::export::fp32_model(&whole).unwrap();
    let (back, _) = qplay_core::load_model(&bytes, &Limits::default()).unwrap();
    assert_eq!(run(&back, common::digits(common::TEST_X, 16, false)).to_f32_vec(), y.to_f32_vec());
}

/// A small block learns the largest block's outputs (the teacher's block 0 on the stem's
/// features of the digits training set) by the per-channel NSR: the loss falls epoch by epoch
/// and ends well below its start.
#[test]
fn blockwise_distillation_lowers_the_block_loss() {
    let spec = Spec::digits();
    let x = common::digits(common::TRAIN_X, 512, false);
    let feats = run(&donna::stem(&spec, 1).unwrap(), x);
    let teacher = run(&donna::block(&spec, 0, &BlockChoice::largest(), 2).unwrap(), feats.clone());
    let student = BlockChoice { kernel: 3, expand: 2, depth: 1, se: false, act: Act::Relu, width: 100 };
    let mut net = Net::new(donna::block(&spec, 0, &student, 3).unwrap(), Limits::default()).unwrap();
    let (fx, tx) = (feats.to_f32_vec(), teacher.to_f32_vec());
    let data = Data { x: &fx, sample_shape: &feats.shape()[1..], labels: None, teacher: Some(&tx) };
    let cfg = TrainConfig { epochs: 4, batch: 32, lr: 3e-3, distill: Distill::Nsr, ..Default::default() };
    let report = train::train(&mut net, &data, &cfg, None, &mut |_| true).unwrap();
    let losses: Vec<f64> = report.epochs.iter().map(|e| e.loss).collect();
    println!("BKD NSR by epoch: {losses:?}");
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "{losses:?}");
    assert!(losses[3] < 0.5 * losses[0], "{losses:?}");
}

const REFERENCE: &[u8] = include_bytes!("../../assets/models/donna_digits_reference.onnx");

/// The block library on the reference: the reference's parts reproduce its logits, each
/// entry's training NSR falls, and a block as large as the reference's beats the smallest one
/// on the held-out split. Cancelling keeps the finished entries.
#[test]
fn the_block_library_ranks_blocks_by_held_out_nsr() {
    let spec = Spec::digits();
    let (reference, _) = qplay_core::load_model(REFERENCE, &Limits::default()).unwrap();
    let x = common::digits(common::TRAIN_X, 640, false);
    let (train_x, held_x) = (slice(&x, 0, 512), slice(&x, 512, 640));
    // The parts in sequence are the reference.
    let feats = donna::bkd::teacher_features(&spec, &reference, &held_x).unwrap();
    assert_eq!(feats.len(), 4);
    assert_eq!(feats[3].shape(), &[128, 64, 2, 2]);
    let parts = donna::parts_of(&spec, &[BlockChoice::largest(); 3], &reference).unwrap();
    let logits = run(parts.last().unwrap(), feats[3].clone());
    assert_eq!(logits.to_f32_vec(), run(&reference, held_x.clone()).to_f32_vec());
    // Another architecture's weights do not fit the reference's parts.
    let small = BlockChoice { kernel: 3, expand: 1, depth: 1, se: false, act: Act::Relu, width: 100 };
    assert!(donna::parts_of(&spec, &[small; 3], &reference).unwrap_err().to_string().contains("not this architecture"));

    let big = BlockChoice { kernel: 5, expand: 6, depth: 2, se: false, act: Act::Hswish, width: 100 };
    let choices = vec![vec![small, big, BlockChoice { width: 50, ..small }], vec![small], vec![small]];
    let cfg = donna::bkd::BkdConfig { epochs: 3, ..Default::default() };
    let mut calls = 0;
    let lib = donna::bkd::build_library(&spec, &reference, &train_x, &held_x, &choices, &cfg, &mut |_, total, _| {
        assert_eq!(total, 4); // the half-width depth-1 block is the same block as `small`
        calls += 1;
        true
    })
    .unwrap();
    assert!(lib.complete && calls > 4);
    for e in lib.blocks.iter().flatten() {
        println!("block {} {}: train NSR {:?}, held-out {:.4}, {} MACs", e.block, e.choice.label(), e.train_nsr, e.nsr, e.macs);
        assert!(e.train_nsr.windows(2).all(|w| w[1] < w[0]) && e.nsr.is_finite(), "{:?}", e.train_nsr);
    }
    let (s, b) = (lib.entry(0, &small).unwrap(), lib.entry(0, &big).unwrap());
    assert!(b.nsr < s.nsr && b.macs > 5 * s.macs, "big {} vs small {}", b.nsr, s.nsr);
    assert!(std::ptr::eq(lib.entry(0, &BlockChoice { width: 50, ..small }).unwrap(), s));
    // Cancelled after the first block: one entry kept.
    let lib = donna::bkd::build_library(&spec, &reference, &train_x, &held_x, &choices, &cfg, &mut |done, _, last| !(done >= 1.0 && last.is_some())).unwrap();
    assert!(!lib.complete && lib.blocks.iter().flatten().count() == 1);
}

fn slice(x: &Tensor, from: usize, to: usize) -> Tensor {
    let per: usize = x.shape()[1..].iter().product();
    let mut shape = x.shape().to_vec();
    shape[0] = to - from;
    Tensor::f32(shape, x.to_f32_vec()[from * per..to * per].to_vec()).unwrap()
}

fn labels(bytes: &[u8], from: usize, to: usize) -> Vec<i64> {
    qplay_core::npy::read_npy(bytes, 1 << 20).unwrap().to_i64_vec()[from..to].to_vec()
}

const TRAIN_Y: &[u8] = include_bytes!("../../assets/data/digits_train_y.npy");

/// A small block library (three choices per block) on the reference, and eight architectures
/// stitched from it and finetuned: built once for the tests below.
#[cfg(not(target_arch = "wasm32"))]
struct Fixture {
    spec: Spec,
    reference: qplay_core::Graph,
    lib: donna::bkd::Library,
    archs: Vec<Vec<BlockChoice>>,
    records: Vec<donna::arch::ArchRecord>,
    train: donna::arch::Split,
    val: donna::arch::Split,
    stitched_before: f64,
}

#[cfg(not(target_arch = "wasm32"))]
fn fixture() -> &'static Fixture {
    use donna::arch::{self, FinetuneConfig, Split};
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let spec = Spec::digits();
        let (reference, _) = qplay_core::load_model(REFERENCE, &Limits::default()).unwrap();
        let x = common::digits(common::TRAIN_X, 1347, false);
        let (train_x, val_x) = (slice(&x, 0, 640), slice(&x, 1077, 1347));
        let pick = |i: &[usize]| i.iter().map(|&i| BlockChoice::from_index(i)).collect::<Vec<_>>();
        let choices = vec![pick(&[0, 75, 190]), pick(&[14, 111, 222]), pick(&[1, 98, 203])];
        let lib = donna::bkd::build_library(&spec, &reference, &train_x, &val_x, &choices, &Default::default(), &mut |_, _, _| true).unwrap();
        let archs = arch::sample_architectures(&lib, 8, 0);
        let train = Split { x: train_x, labels: labels(TRAIN_Y, 0, 640) };
        let val = Split { x: val_x, labels: labels(TRAIN_Y, 1077, 1347) };
        let stitched_before = val.accuracy(&arch::stitched(&spec, &lib, &reference, &archs[0]).unwrap()).unwrap();
        let (records, done) = arch::build_arch_library(&spec, &lib, &reference, &archs, &train, &val, &FinetuneConfig::default(), &mut |_, _| true).unwrap();
        assert!(done);
        Fixture { spec, reference, lib, archs, records, train, val, stitched_before }
    })
}

/// The architecture library and the predictor: a stitched model has the reference's stem and
/// head around the library's blocks, finetuning lifts its validation accuracy, and the ridge
/// predictor fits the records.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn architectures_stitch_finetune_and_fit_the_predictor() {
    use donna::arch::{self, FinetuneConfig, Predictor};
    let f = fixture();
    assert_eq!(f.archs.len(), 8);
    assert_eq!(arch::sample_architectures(&f.lib, 100, 0).len(), 27);
    // Stitched: the reference's stem and head, the library's blocks.
    let g = arch::stitched(&f.spec, &f.lib, &f.reference, &f.archs[0]).unwrap();
    let (_, cost) = qplay_core::cost::analyze(&g, &[], &Limits::default()).unwrap();
    let blocks: u64 = f.archs[0].iter().enumerate().map(|(n, c)| f.lib.entry(n, c).unwrap().macs).sum();
    assert_eq!(cost.macs, blocks + 16 * 9 * 64 + 64 * 10);
    assert_eq!(f.records.len(), 8);
    for r in &f.records {
        println!("{:?} NSR {:?} → {:.2} % ({} MACs)", r.choices.iter().map(|c| c.label()).collect::<Vec<_>>(), r.block_nsr, r.accuracy, r.macs);
        assert!(r.accuracy > 70.0);
    }
    println!("stitched before finetuning {:.2} %, after {:.2} %", f.stitched_before, f.records[0].accuracy);
    assert!(f.records[0].accuracy > f.stitched_before + 5.0);
    let p = Predictor::fit(&f.records).unwrap();
    println!("LOO τ {:.3}, summed-NSR τ {:.3}", p.kendall_tau, p.summed_nsr_tau);
    assert_eq!((p.n_architectures, p.loo_predicted.len()), (8, 8));
    assert!((-1.0..=1.0).contains(&p.kendall_tau));
    // Cancelled during the second architecture: one record kept.
    let (records, done) = arch::build_arch_library(&f.spec, &f.lib, &f.reference, &f.archs, &f.train, &f.val, &FinetuneConfig::default(), &mut |d, _| d < 1.5).unwrap();
    assert!(!done && records.len() == 1);
}

/// Step C on the fixture: latency tables on both engines (their sums against whole stitched
/// models), and NSGA-II fronts on MACs and on latency that are non-dominated, sorted, and
/// reach the cheapest and the most accurate architecture of the library.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn the_search_finds_the_library_front() {
    use donna::arch::{self, Predictor};
    use donna::evolve::{self, Candidate};
    use donna::latency::{Engine, LatencyTable, Runner};
    let f = fixture();
    let p = Predictor::fit(&f.records).unwrap();
    let t0 = std::time::Instant::now();
    let clock = || t0.elapsed().as_secs_f64() * 1e3;
    let images = slice(&f.val.x, 0, 16);
    let feats = donna::bkd::teacher_features(&f.spec, &f.reference, &images).unwrap();
    let macs = |c: &[BlockChoice]| -> qplay_core::Result<f64> { Ok(c.iter().enumerate().map(|(n, c)| f.lib.entry(n, c).unwrap().macs as f64).sum::<f64>() + 9856.0) };
    let cfg = qplay_core::search::nsga2::Config { population: 12, generations: 10, seed: 0 };
    let check = |front: &[Candidate], cost: &dyn Fn(&[BlockChoice]) -> f64| {
        // The exact front of all 27 architectures by brute force.
        let all: Vec<(f64, f64)> = arch::sample_architectures(&f.lib, 27, 0).iter().map(|a| {
            let nsr: Vec<f64> = a.iter().enumerate().map(|(n, c)| f.lib.entry(n, c).unwrap().nsr).collect();
            (p.predict(&nsr), cost(a))
        }).collect();
        for w in front.windows(2) {
            assert!(w[0].cost < w[1].cost && w[0].predicted_accuracy < w[1].predicted_accuracy, "not a sorted front");
        }
        let cheapest = all.iter().map(|a| a.1).fold(f64::INFINITY, f64::min);
        let best = all.iter().map(|a| a.0).fold(f64::NEG_INFINITY, f64::max);
        assert!((front[0].cost - cheapest).abs() < 1e-9 && (front.last().unwrap().predicted_accuracy - best).abs() < 1e-9);
        for c in front {
            assert!(!all.iter().any(|a| a.0 > c.predicted_accuracy && a.1 < c.cost), "a dominated point on the front");
        }
    };
    let r = evolve::search(&f.lib, &p, &macs, &cfg, &mut |_| true).unwrap();
    check(&r.front, &|c| macs(c).unwrap());
    for engine in [Engine::Fp32, Engine::Int8] {
        let table = LatencyTable::measure(&f.spec, &f.lib, &f.reference, &images, &feats, engine, &clock, 3, &mut |_, _| true).unwrap().unwrap();
        for a in &f.archs[..3] {
            let whole = Runner::new(&arch::stitched(&f.spec, &f.lib, &f.reference, a).unwrap(), engine, &images).unwrap().median_ms(&slice(&images, 0, 1), &clock, 3).unwrap();
            println!("{engine:?}: predicted {:.4} ms, whole {whole:.4} ms", table.predict(a).unwrap());
        }
        let r = evolve::search(&f.lib, &p, &|c| table.predict(c), &cfg, &mut |_| true).unwrap();
        check(&r.front, &|c| table.predict(c).unwrap());
        // A table survives JSON, and refuses another space.
        let json = serde_json::to_string(&table).unwrap();
        assert_eq!(LatencyTable::from_json(&json, &f.spec).unwrap(), table);
        let other = Spec { name: "other".into(), stem_ch: 8, ..f.spec.clone() };
        assert!(LatencyTable::from_json(&json, &other).unwrap_err().to_string().contains("space"));
    }
    assert_eq!(evolve::spread(&r.front, 1).len(), 1);
    // Population or generations of 0: a clear error.
    let e = evolve::search(&f.lib, &p, &macs, &qplay_core::search::nsga2::Config { generations: 0, ..cfg }, &mut |_| true).unwrap_err();
    assert!(e.to_string().contains("generations"), "{e}");
}

/// Step B packed into one blob and back: the same blocks (same outputs) and records; other
/// settings give None, and damaged blobs a clear error.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn step_b_packs_and_unpacks() {
    use donna::pipeline::{Built, Settings};
    let f = fixture();
    let settings = Settings { library: 3, architectures: 8, bkd_epochs: 4, finetune_epochs: 4, final_epochs: 1, seed: 0 };
    let built = Built { lib: f.lib.clone(), records: f.records.clone() };
    let blob = built.pack(&f.spec, &settings).unwrap();
    let back = Built::unpack(&blob, &f.spec, &settings).unwrap().unwrap();
    assert_eq!(back.records, f.records);
    let x = donna::bkd::teacher_features(&f.spec, &f.reference, &slice(&f.val.x, 0, 8)).unwrap();
    for (a, b) in f.lib.blocks.iter().flatten().zip(back.lib.blocks.iter().flatten()) {
        assert_eq!((a.block, a.choice, a.nsr, a.macs), (b.block, b.choice, b.nsr, b.macs));
        assert_eq!(run(&a.graph, x[a.block].clone()).to_f32_vec(), run(&b.graph, x[b.block].clone()).to_f32_vec());
    }
    assert!(Built::unpack(&blob, &f.spec, &Settings { seed: 1, ..settings.clone() }).unwrap().is_none());
    for (damaged, what) in [(&blob[..5], "shorter"), (&blob[..blob.len() - 10], "ends inside"), (&[255u8; 16][..], "header")] {
        let e = Built::unpack(damaged, &f.spec, &settings).err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(e.to_string().contains(what), "{e}");
    }
}
