//! Where quantization error comes from: the SQNR of every quantized activation against the FP32
//! model (same BN-folded graph, no quantization), the per-channel weight ranges, and the
//! end-to-end logits SQNR and top-1 agreement.

use super::sim::QuantSim;
use crate::error::Result;
use crate::exec::Executor;
use crate::metrics::argmax;
use crate::onnx::Limits;
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
    let mut fexec = Executor::with_fusion(fp, Limits::default(), false)?;
    let mut qexec = Executor::with_fusion(qgraph, Limits::default(), false)?;
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
