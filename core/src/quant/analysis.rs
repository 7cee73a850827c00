//! Where quantization error comes from: the SQNR of every quantized activation against the FP32
//! model (same BN-folded graph, no quantization), the per-channel weight ranges, and the
//! end-to-end logits SQNR and top-1 agreement.

use super::sim::QuantSim;
use crate::error::{Error, Result};
use crate::exec::Executor;
use crate::metrics::argmax;
use crate::tensor::Tensor;
use serde::Serialize;
use std::collections::HashMap;

/// One quantized activation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerError {
    /// Tensor name.
    pub name: String,
    /// Op type of the node producing it ("input" for model inputs).
    pub op: String,
    pub bits: u8,
    /// Encoding range.
    pub min: f32,
    pub max: f32,
    /// SQNR of the quantized model's tensor against FP32, pooled over the samples, dB.
    pub sqnr_db: f64,
}

/// Per-output-channel range of one weight tensor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightRanges {
    pub name: String,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    pub layers: Vec<LayerError>,
    pub weights: Vec<WeightRanges>,
    pub logits_sqnr_db: f64,
    pub top1_agreement: f64,
    pub samples: usize,
}

fn db(sig: f64, err: f64) -> f64 {
    if err == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (sig / err).log10()
    }
}

/// Runs FP32 and the simulation on `samples` and compares every quantized activation.
pub fn analyze(sim: &QuantSim, samples: &[Tensor]) -> Result<Analysis> {
    let (qgraph, act) = sim.simulated_graph()?;
    let fp = sim.graph().clone();
    let mut fexec = Executor::with_fusion(fp, sim.limits().clone(), false)?;
    let mut qexec = Executor::with_fusion(qgraph, sim.limits().clone(), false)?;
    let watched: Vec<usize> = (0..act.len()).filter(|&v| act[v].is_some()).collect();
    let mut sums: HashMap<usize, (f64, f64)> = watched.iter().map(|&v| (v, (0.0, 0.0))).collect();
    let (mut lsig, mut lerr, mut agree, mut rows) = (0.0f64, 0.0f64, 0usize, 0usize);
    for x in samples {
        let mut fvals: HashMap<usize, Vec<f32>> = HashMap::new();
        let fy = fexec.run_with_hook(vec![x.clone()], &mut |id, t| {
            if act[id].is_some() {
                if let Some(d) = t.as_f32() {
                    fvals.insert(id, d.to_vec());
                }
            }
            Ok(())
        })?;
        let qy = qexec.run_with_hook(vec![x.clone()], &mut |id, t| {
            if let Some(e) = act[id] {
                e.qdq_tensor(t);
                if let (Some(q), Some(r)) = (t.as_f32(), fvals.get(&id)) {
                    let s = sums.entry(id).or_insert((0.0, 0.0));
                    for (&a, &b) in r.iter().zip(q) {
                        s.0 += (a as f64) * (a as f64);
                        s.1 += ((a - b) as f64).powi(2);
                    }
                }
            }
            Ok(())
        })?;
        if let (Some(f), Some(q)) = (fy.first(), qy.first()) {
            let (f, q) = (f.to_f32_vec(), q.to_f32_vec());
            for (a, b) in f.iter().zip(&q) {
                lsig += (*a as f64).powi(2);
                lerr += ((a - b) as f64).powi(2);
            }
            let k = fy[0].shape().last().copied().unwrap_or(1).max(1);
            for (rf, rq) in f.chunks(k).zip(q.chunks(k)) {
                rows += 1;
                agree += usize::from(argmax(rf) == argmax(rq));
            }
        }
    }
    let g = sim.graph();
    let producer: HashMap<usize, &str> = g.nodes.iter().flat_map(|n| n.outputs.iter().map(move |&o| (o, n.op_type.as_str()))).collect();
    let layers = watched
        .iter()
        .filter_map(|&v| {
            let e = act[v]?;
            let (s, err) = sums.get(&v).copied().unwrap_or((0.0, 0.0));
            Some(LayerError {
                name: g.values[v].name.clone(),
                op: producer.get(&v).map_or("input", |s| s).to_string(),
                bits: e.bw,
                min: e.min(),
                max: e.max(),
                sqnr_db: db(s, err),
            })
        })
        .collect();
    let weights = sim
        .params
        .iter()
        .filter_map(|p| {
            let t = g.consts[p.value].as_ref()?;
            let d = t.as_f32()?;
            let ch = t.shape().first().copied().unwrap_or(1).max(1);
            let per = d.len() / ch;
            let (min, max) = (0..ch)
                .map(|c| d[c * per..(c + 1) * per].iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x))))
                .unzip();
            Some(WeightRanges { name: g.values[p.value].name.clone(), min, max })
        })
        .collect();
    Ok(Analysis {
        layers,
        weights,
        logits_sqnr_db: db(lsig, lerr),
        top1_agreement: if rows == 0 { 0.0 } else { agree as f64 / rows as f64 },
        samples: samples.len(),
    })
}

/// The distribution of one activation as calibration sees it (quantized weights, float
/// activations), next to its encoding's range: what a student needs to see why a range set by
/// rare outliers wastes the grid.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ActivationHistogram {
    pub tensor: String,
    /// Bins of equal width over [lo, hi], the observed range.
    pub lo: f32,
    pub hi: f32,
    pub counts: Vec<u64>,
    /// The encoding's representable range and bit-width.
    pub enc_min: f32,
    pub enc_max: f32,
    pub bits: u8,
    /// Values more than half a step outside the encoding's range (their error exceeds rounding:
    /// the quantizer clips them).
    pub clipped: u64,
    pub total: u64,
}

/// [`ActivationHistogram`] of the quantized activation named `tensor` over `samples`.
pub fn activation_histogram(sim: &QuantSim, samples: &[Tensor], tensor: &str, bins: usize) -> Result<ActivationHistogram> {
    let g = sim.graph();
    let id = g.find_value(tensor).ok_or_else(|| Error::Quant(format!("tensor '{tensor}': not in the model")))?;
    let enc = sim
        .acts
        .iter()
        .find(|a| a.value == id)
        .and_then(|a| a.encoding)
        .ok_or_else(|| Error::Quant(format!("tensor '{tensor}': not a calibrated activation")))?;
    let mut values: Vec<f32> = Vec::new();
    let mut exec = Executor::with_fusion(sim.quantized_weights_graph(), sim.limits().clone(), false)?;
    for x in samples {
        exec.run_with_hook(vec![x.clone()], &mut |v, t| {
            if v == id {
                values.extend(t.as_f32().unwrap_or(&[]).iter().filter(|x| x.is_finite()));
            }
            Ok(())
        })?;
    }
    let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
    let bins = bins.clamp(1, 1000);
    let mut counts = vec![0u64; bins];
    let width = (hi - lo).max(f32::MIN_POSITIVE);
    for &x in &values {
        counts[(((x - lo) / width * bins as f32) as usize).min(bins - 1)] += 1;
    }
    let (enc_min, enc_max) = (enc.min(), enc.max());
    let half = enc.scale as f32 / 2.0;
    let clipped = values.iter().filter(|&&x| x < enc_min - half || x > enc_max + half).count() as u64;
    Ok(ActivationHistogram { tensor: tensor.to_string(), lo, hi, counts, enc_min, enc_max, bits: enc.bw, clipped, total: values.len() as u64 })
}
