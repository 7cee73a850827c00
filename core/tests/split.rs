//! Work split over a pool of workers, against the same work done in one: calibration in parts
//! (every scheme, the graph travelling as ONNX and the parts as numbers), and inference of a batch
//! in slices by a simulation rebuilt in another worker from the ONNX graph and its named state.

mod common;

use common::{calib_batches, MOBILENET};
use qplay_core::quant::calib::{observe, Part, Plan};
use qplay_core::quant::{CalibScheme, QuantSim, QuantSimConfig};
use qplay_core::{load_model, Limits};

fn sim(scheme: CalibScheme) -> QuantSim {
    let (g, _) = load_model(MOBILENET, &Limits::default()).unwrap();
    let (g, _) = qplay_core::passes::bn_fold::fold_batch_norms(g);
    QuantSim::new(g, QuantSimConfig { weight_bits: 4, per_channel: true, scheme, ..Default::default() }).unwrap()
}

/// The plan as a worker sees it: the graph written as ONNX and read back.
fn through_onnx(plan: &Plan) -> Plan {
    let bytes = qplay_core::onnx::export::fp32_model(&plan.graph).unwrap();
    Plan { graph: load_model(&bytes, &Limits::default()).unwrap().0, ..plan.clone() }
}

fn encodings(s: &QuantSim) -> Vec<(String, i64, u64)> {
    s.acts.iter().filter_map(|a| a.encoding.map(|e| (s.graph().values[a.value].name.clone(), e.offset, e.scale.to_bits()))).collect()
}

#[test]
fn parts_merge_into_the_sequential_encodings_for_every_scheme() {
    let samples = calib_batches(false);
    for scheme in [CalibScheme::MinMax, CalibScheme::Sqnr, CalibScheme::Percentile(99.9)] {
        let mut whole = sim(scheme);
        whole.calibrate(&samples).unwrap();
        let want = encodings(&whole);
        assert!(want.len() >= 10, "{scheme:?}: {} encodings", want.len());

        let mut split = sim(scheme);
        let plan = split.calibration_plan(samples.len()).unwrap();
        let remote = through_onnx(&plan);
        // The first sample starts the sequence; the rest goes to two "workers" given its ranges.
        let mut part = observe(&plan, &samples[..1], None, &mut |_, _| true).unwrap();
        let ranges = part.ranges();
        for chunk in [&samples[1..4], &samples[4..]] {
            let p = observe(&remote, chunk, Some(&ranges), &mut |_, _| true).unwrap();
            part.merge(Part::from_f64s(&p.to_f64s()).unwrap()).unwrap();
        }
        assert_eq!(part.samples, samples.len());
        // The statistics themselves, not only the encodings drawn from them, are those of one pass.
        assert!(part == observe(&plan, &samples, None, &mut |_, _| true).unwrap(), "{scheme:?}: the merged statistics differ");
        split.finish_calibration(part).unwrap();
        assert_eq!(encodings(&split), want, "{scheme:?}");
    }
}

#[test]
fn a_histogram_part_left_unmerged_or_binned_apart_is_refused() {
    let samples = calib_batches(false);
    let mut s = sim(CalibScheme::Sqnr);
    let plan = s.calibration_plan(samples.len()).unwrap();
    let first = observe(&plan, &samples[..1], None, &mut |_, _| true).unwrap();
    // A later part on its own (its counts never added to a sequence).
    let later = observe(&plan, &samples[1..2], Some(&first.ranges()), &mut |_, _| true).unwrap();
    let err = s.finish_calibration(later).unwrap_err().to_string();
    assert!(err.contains("unmerged"), "{err}");
    // Two parts that each started a sequence.
    let mut a = first.clone();
    let err = a.merge(observe(&plan, &samples[1..2], None, &mut |_, _| true).unwrap()).unwrap_err().to_string();
    assert!(err.contains("own histogram sequence"), "{err}");
}

#[test]
fn malformed_parts_are_errors_not_panics() {
    let samples = calib_batches(false);
    let mut s = sim(CalibScheme::Sqnr);
    let plan = s.calibration_plan(samples.len()).unwrap();
    let good = observe(&plan, &samples[..1], None, &mut |_, _| true).unwrap().to_f64s();
    assert!(Part::from_f64s(&good).is_ok());
    for bad in [vec![], vec![1.0, 1e300], vec![1.0, 1.0, 7.0], good[..good.len() - 1].to_vec(), [good.clone(), vec![0.0]].concat(), vec![-1.0, 0.0], vec![1.0, 1.0, 1.0, 0.0, f64::NAN]] {
        assert!(Part::from_f64s(&bad).is_err(), "{:?}", &bad[..bad.len().min(4)]);
    }
    assert!(observe(&plan, &samples[..1], Some(&[None]), &mut |_, _| true).is_err());
}

/// A simulation rebuilt from its graph read back from ONNX and its state gives the same INT8
/// outputs, and a batch split in slices gives the outputs of the whole batch, FP32 and INT8; with
/// DFQ (per-channel Clip bounds, written to ONNX as Max/Min) and per-channel W4A8.
#[test]
fn a_simulation_rebuilt_elsewhere_runs_slices_of_a_batch_as_the_whole() {
    use qplay_core::exec::int8::Int8Executor;
    use qplay_core::passes::cle::{equalize_with, CleMode};
    let (g, _) = load_model(MOBILENET, &Limits::default()).unwrap();
    let (g, _) = equalize_with(g, CleMode::Preserving);
    let mut sim = QuantSim::new(g, QuantSimConfig { weight_bits: 4, per_channel: true, ..Default::default() }).unwrap();
    sim.calibrate(&calib_batches(false)).unwrap();
    let (x, _) = common::test_set(false);
    let want = Int8Executor::new(&sim).unwrap().run(vec![x.clone()]).unwrap().remove(0).to_f32_vec();

    let bytes = qplay_core::onnx::export::fp32_model(sim.graph()).unwrap();
    let (g2, _) = load_model(&bytes, &Limits::default()).unwrap();
    let state: qplay_core::quant::SimState = serde_json::from_str(&serde_json::to_string(&sim.to_state()).unwrap()).unwrap();
    let rebuilt = QuantSim::from_state(g2.clone(), state).unwrap();
    let mut int8 = Int8Executor::new(&rebuilt).unwrap();
    let mut fp32 = qplay_core::Executor::new(g2, Limits::default()).unwrap();
    let fp32_whole = qplay_core::Executor::new(sim.graph().clone(), Limits::default()).unwrap().run(vec![x.clone()]).unwrap().remove(0).to_f32_vec();
    let d = x.to_f32_vec();
    let (mut got, mut got_fp32) = (Vec::new(), Vec::new());
    for (a, b) in [(0, 150), (150, 301), (301, 450)] {
        let slice = qplay_core::Tensor::f32(vec![b - a, 1, 8, 8], d[a * 64..b * 64].to_vec()).unwrap();
        got.extend(int8.run(vec![slice.clone()]).unwrap().remove(0).to_f32_vec());
        got_fp32.extend(fp32.run(vec![slice]).unwrap().remove(0).to_f32_vec());
    }
    assert_eq!(want.len(), 4500);
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "INT8 outputs differ");
    assert!(got_fp32.iter().zip(&fp32_whole).all(|(a, b)| a.to_bits() == b.to_bits()), "FP32 outputs differ");
    // A state naming a value the graph lacks is refused.
    let mut bad = sim.to_state();
    bad.acts[0].0 = "no such value".into();
    let err = QuantSim::from_state(sim.graph().clone(), bad).unwrap_err().to_string();
    assert!(err.contains("no such value"), "{err}");
}

/// Compression's sensitivity table shared out by rows, the later rows scored on the graph read
/// back from ONNX (as a helper worker gets it), then the search from the whole table: the same
/// report (table, choices, scores, costs) and the same compressed model as one pass.
#[test]
fn compression_from_a_table_scored_in_rows_equals_one_pass() {
    use qplay_core::cost::{infer_shapes, input_shapes};
    use qplay_core::eval::{Evaluator, Target};
    use qplay_core::search::compress::{compress, compress_scored, sensitivity_rows, sensitivity_size, CompressConfig, Method};
    let limits = Limits::default();
    let (g, _) = load_model(MOBILENET, &limits).unwrap();
    let remote = load_model(&qplay_core::onnx::export::fp32_model(&g).unwrap(), &limits).unwrap().0;
    let shapes_of = |g: &qplay_core::Graph| infer_shapes(g, &input_shapes(g, &[]).unwrap(), &limits).unwrap();
    let (x, labels) = common::test_set(false);
    let eval = Evaluator { batches: vec![x.clone()], target: Target::Labels(labels), limits: limits.clone() };
    let calib = calib_batches(false);
    for method in [Method::ChannelPruning, Method::SpatialSvd] {
        let cfg = CompressConfig { candidates: 5, ..CompressConfig::new(method, 0.6) };
        let (want_g, want) = compress(&g, &shapes_of(&g), &cfg, &eval, &calib, &mut |_, _, _| true).unwrap();
        let n = sensitivity_size(&g, &shapes_of(&g), &cfg, &eval, &calib).unwrap();
        assert!(n >= 3, "{method:?}: {n} layers");
        let mut rows = sensitivity_rows(&g, &shapes_of(&g), &cfg, &eval, &calib, 0..n / 3, &mut |_, _, _| true).unwrap();
        rows.extend(sensitivity_rows(&remote, &shapes_of(&remote), &cfg, &eval, &calib, n / 3..n, &mut |_, _, _| true).unwrap());
        assert_eq!(rows, want.table.scores, "{method:?}: the table");
        let (got_g, got) = compress_scored(&g, &shapes_of(&g), &cfg, &eval, &calib, Some(rows.clone()), &mut |_, _, _| true).unwrap();
        assert_eq!(serde_json::to_string(&got).unwrap(), serde_json::to_string(&want).unwrap(), "{method:?}: the report");
        let run = |g: &qplay_core::Graph| qplay_core::Executor::new(g.clone(), limits.clone()).unwrap().run(vec![x.clone()]).unwrap()[0].to_f32_vec();
        assert!(run(&got_g).iter().zip(run(&want_g)).all(|(a, b)| a.to_bits() == b.to_bits()), "{method:?}: the compressed model");
        // A table of the wrong size, and rows past the end, are errors.
        rows.pop();
        assert!(compress_scored(&g, &shapes_of(&g), &cfg, &eval, &calib, Some(rows), &mut |_, _, _| true).is_err());
        assert!(sensitivity_rows(&g, &shapes_of(&g), &cfg, &eval, &calib, n - 1..n + 1, &mut |_, _, _| true).is_err());
    }
}
