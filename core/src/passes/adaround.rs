//! AdaRound (Nagel et al., "Up or Down? Adaptive Rounding for Post-Training Quantization",
//! ICML 2020, <https://arxiv.org/abs/2004.10568>), as AIMET implements it (aimet-onnx 2.42,
//! tests/aimet/SEMANTICS.md section 7).
//!
//! Rounding to nearest minimises the error of each weight, not of the layer's output. AdaRound
//! learns, per weight, whether to round down or up so that the layer's output stays close to the
//! FP32 model's. With `Δ`, `o` the weight encoding (per channel or per tensor, fixed before and
//! never changed) and `b` the bit-width, each weight becomes
//!
//! `W̃ = (clamp(⌊W/Δ⌋ + h(V) - o, 0, 2^b - 1) + o) Δ`, `h(V) = clamp(σ(V)(ζ - γ) + γ, 0, 1)`,
//! `ζ = 1.1`, `γ = -0.1`,
//!
//! with `V` initialised so that `h(V) = W/Δ - ⌊W/Δ⌋` (W̃ = W). Layer by layer, in topological
//! order, Adam (lr 1e-3, β 0.9/0.999, ε 1e-8) minimises
//!
//! `mean_{n, pixel} Σ_channel (act(x W̃ + b) - act_fp)^2 + λ Σ (1 - |2h(V) - 1|^β)`
//!
//! where `x` is the layer's input in the model with all weights quantized (upstream layers
//! already AdaRounded) and activations in float, `act_fp` the original FP32 model's output of
//! the layer, `act` the following Relu or Clip when there is one (applied to both), `λ = 0.01`
//! after a warm start of 20 % of the iterations (0 before), and `β` annealed from 20 to 2 with a
//! cosine. The regulariser pushes every `h` to 0 or 1; the result rounds up iff `V >= 0`.
//! Iteration `t` uses calibration batch `t mod batches` (up to 32 of its samples, drawn with a
//! seeded generator when it holds more). The gradients are written by hand: the output error
//! goes back through the activation mask to `∂L/∂W̃` (the weight gradient of the convolution or
//! matrix product, computed with the same GEMM as inference), then through the clamps to
//! `∂W̃/∂V = Δ (ζ - γ) σ(V) (1 - σ(V))`.
//!
//! Differences from AIMET: Relu and Clip are the activations recognised after a layer (AIMET also
//! takes PRelu, Tanh, Sigmoid and Softmax); the sample subsets come from qplay's generator, not
//! torch's.

use crate::error::{Error, Result};
use crate::exec::{activation_bounds, Executor, Run};
use crate::graph::{Graph, Op, ValueId, Window};
use crate::quant::encoding::Encoding;
use crate::quant::sim::QuantSim;
use crate::rng::SplitMix;
use crate::tensor::Tensor;
use serde::Serialize;

mod problem;
mod step;

use problem::{transpose, Problem, Work};
use step::{sigmoid, soft, step_row, Adam};

const ZETA: f32 = 1.1;
const GAMMA: f32 = -0.1;

/// AdaRound's hyper-parameters; the defaults are AIMET's.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaroundConfig {
    /// Adam steps per layer (AIMET: 10,000).
    pub iterations: usize,
    /// λ, the weight of the rounding regulariser (0.01).
    pub reg_weight: f32,
    /// β at the end of the warm start and at the last iteration (20 -> 2).
    pub beta: (f32, f32),
    /// Fraction of the iterations without the regulariser (0.2).
    pub warm_start: f32,
    pub learning_rate: f32,
    /// Samples per iteration, at most (32).
    pub batch: usize,
    /// Seed of the generator drawing the samples of a batch larger than `batch`.
    pub seed: u64,
    /// Each layer learns from its FP32 input instead of the input computed with the layers
    /// before it already rounded (AIMET's way): its rounding then does not depend on how the
    /// other layers are quantized (mixed precision combines layers rounded this way).
    pub fp32_inputs: bool,
}

impl Default for AdaroundConfig {
    fn default() -> Self {
        AdaroundConfig { iterations: 10_000, reg_weight: 0.01, beta: (20.0, 2.0), warm_start: 0.2, learning_rate: 1e-3, batch: 32, seed: 0, fp32_inputs: false }
    }
}

/// One point of a layer's loss curve (means over the iterations since the previous point).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LossPoint {
    pub iteration: usize,
    pub recon: f32,
    pub round: f32,
}

/// What AdaRound did to one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerReport {
    pub node: String,
    pub weight: String,
    pub weights: usize,
    /// Weights rounded in the other direction than nearest rounding would.
    pub changed: usize,
    /// Reconstruction loss over all calibration samples with nearest rounding and with AdaRound.
    pub recon_nearest: f32,
    pub recon_adaround: f32,
    pub curve: Vec<LossPoint>,
}

/// The report of [`adaround`].
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct AdaroundReport {
    pub iterations: usize,
    pub layers: Vec<LayerReport>,
    /// (node, reason) for layers with quantized weights that were left at nearest rounding.
    pub skipped: Vec<(String, String)>,
}

/// Progress of a running [`adaround`], passed to its callback.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// 0-based index of the layer being optimised, of `layers`.
    pub layer: usize,
    pub layers: usize,
    pub node: &'a str,
    pub iteration: usize,
    pub iterations: usize,
    pub recon: f32,
    pub round: f32,
}

/// How a layer computes: a convolution (im2col + GEMM), a depthwise convolution (direct loops),
/// or a matrix product `x W^T` with the weight stored [M, K] or, `transposed`, [K, M].
#[derive(Debug, Clone)]
enum Kind {
    Conv { window: Window, group: usize, kernel: [usize; 2] },
    Dense { transposed: bool },
}

#[derive(Debug, Clone)]
struct Layer {
    node: usize,
    name: String,
    x: ValueId,
    w: ValueId,
    out: ValueId,
    bias: Option<Vec<f32>>,
    kind: Kind,
    /// Output channels and weights per output channel.
    m: usize,
    k: usize,
    /// Activation bounds per output channel (or one for all).
    act: Option<(Vec<f32>, Vec<f32>)>,
}

/// Learns the rounding of every quantized Conv / Gemm / MatMul weight of `sim` (see the module
/// doc) from the calibration `batches` (each one input tensor, batch along axis 0). Weight
/// encodings are computed first and frozen; the learned weights replace the originals in `sim`
/// only when every layer is done. Calibrate the activations afterwards.
/// `progress` is called about every 1 % of a layer's iterations; returning false cancels (the
/// simulation is then left unchanged).
pub fn adaround(sim: &mut QuantSim, batches: &[Tensor], cfg: &AdaroundConfig, progress: &mut dyn FnMut(&Progress) -> bool) -> Result<AdaroundReport> {
    if batches.is_empty() {
        return Err(Error::Quant("AdaRound needs calibration samples".into()));
    }
    if cfg.iterations == 0 || cfg.batch == 0 || !(0.0..1.0).contains(&cfg.warm_start) || !(cfg.learning_rate > 0.0) {
        return Err(Error::Quant(format!("invalid AdaRound settings: {cfg:?}")));
    }
    let mut fresh = QuantSim::new(sim.graph().clone(), sim.config().clone())?;
    fresh.compute_param_encodings()?;
    let mut fp = Executor::with_fusion(fresh.graph().clone(), sim.limits().clone(), false)?;
    let mut q = Executor::with_fusion(fresh.quantized_weights_graph(), sim.limits().clone(), false)?;
    let (layers, skipped) = find_layers(&fresh, fp.graph());
    let mut report = AdaroundReport { iterations: cfg.iterations, layers: Vec::new(), skipped };
    let Some(last) = layers.last().map(|l| l.node) else { return Ok(report) };

    let noop = &mut |_: ValueId, _: &mut Tensor| Ok(());
    let mut fp_runs = batches.iter().map(|b| fp.start(vec![b.clone()], noop)).collect::<Result<Vec<Run>>>()?;
    let mut q_runs = batches.iter().map(|b| q.start(vec![b.clone()], noop)).collect::<Result<Vec<Run>>>()?;
    let mut rng = SplitMix(cfg.seed);
    let mut learned: Vec<(ValueId, Tensor)> = Vec::new();
    let mut li = 0;
    for ni in 0..=last {
        let layer = layers.get(li).filter(|l| l.node == ni);
        // The layer's FP32 input, taken before the step frees it.
        let fp_xs: Option<Vec<Tensor>> = match layer {
            Some(l) if cfg.fp32_inputs => Some(fp_runs.iter().map(|r| fp.value(r, l.x).cloned()).collect::<Option<_>>().ok_or_else(|| Error::Quant(format!("input of '{}' was not computed", l.name)))?),
            _ => None,
        };
        for r in &mut fp_runs {
            fp.step(r, noop)?;
        }
        if let Some(l) = layer {
            let encs = fresh.param_encodings_of(l.w).ok_or_else(|| Error::Quant(format!("weight of '{}' has no encoding", l.name)))?.to_vec();
            let w = fp.graph().consts[l.w].as_ref().ok_or_else(|| Error::Quant(format!("weight of '{}' is not constant", l.name)))?;
            let xs: Vec<&Tensor> = match &fp_xs {
                Some(xs) => xs.iter().collect(),
                None => q_runs.iter().map(|r| q.value(r, l.x)).collect::<Option<_>>().ok_or_else(|| Error::Quant(format!("input of '{}' was not computed", l.name)))?,
            };
            let ts: Vec<&Tensor> = fp_runs.iter().map(|r| fp.value(r, l.out)).collect::<Option<_>>().ok_or_else(|| Error::Quant(format!("output of '{}' was not computed", l.name)))?;
            let problem = Problem::new(l, &xs, &ts)?;
            let (hard, layer_report) = optimize(&problem, l, w, &encs, cfg, &mut rng, &mut |it, recon, round| {
                progress(&Progress { layer: li, layers: layers.len(), node: &l.name, iteration: it, iterations: cfg.iterations, recon, round })
            })?;
            report.layers.push(LayerReport { weight: fp.graph().values[l.w].name.clone(), ..layer_report });
            q.set_const(l.w, hard.clone());
            learned.push((l.w, hard));
            li += 1;
        }
        if !cfg.fp32_inputs {
            for r in &mut q_runs {
                q.step(r, noop)?;
            }
        }
    }
    for (w, t) in learned {
        fresh.set_weights_frozen(w, t);
    }
    *sim = fresh;
    Ok(report)
}

/// The layers AdaRound optimises, in execution order, and those it leaves alone (with why).
fn find_layers(sim: &QuantSim, g: &Graph) -> (Vec<Layer>, Vec<(String, String)>) {
    let readers = g.reader_counts();
    let (mut layers, mut skipped) = (Vec::new(), Vec::new());
    for (ni, n) in g.nodes.iter().enumerate() {
        let (Some(x), Some(w)) = (n.inputs.first().copied().flatten(), n.inputs.get(1).copied().flatten()) else { continue };
        if !matches!(n.op, Op::Conv { .. } | Op::Gemm { .. } | Op::MatMul) || sim.param_encodings_of(w).is_none() {
            continue;
        }
        let Some(wt) = g.consts[w].as_ref() else { continue };
        let mut skip = |why: &str| skipped.push((n.name.clone(), why.to_string()));
        if readers[w] > 1 {
            skip("its weight is shared with another node");
            continue;
        }
        if g.consts[x].is_some() {
            skip("its input is constant");
            continue;
        }
        let shape = wt.shape().to_vec();
        let (kind, m, k) = match &n.op {
            Op::Conv { window, group } if shape.len() == 4 => {
                (Kind::Conv { window: window.clone(), group: *group, kernel: [shape[2], shape[3]] }, shape[0], shape[1] * shape[2] * shape[3])
            }
            Op::Gemm { trans_a: false, trans_b, alpha, beta } if *alpha == 1.0 && *beta == 1.0 && shape.len() == 2 => {
                let (m, k) = if *trans_b { (shape[0], shape[1]) } else { (shape[1], shape[0]) };
                (Kind::Dense { transposed: !*trans_b }, m, k)
            }
            Op::MatMul if shape.len() == 2 => (Kind::Dense { transposed: true }, shape[1], shape[0]),
            _ => {
                skip("unsupported form (transposed input, alpha/beta != 1, or weight rank)");
                continue;
            }
        };
        let bias = match n.inputs.get(2).copied().flatten() {
            None => None,
            Some(b) => match g.consts[b].as_ref().map(Tensor::to_f32_vec) {
                Some(v) if v.len() == m => Some(v),
                Some(v) if v.len() == 1 => Some(vec![v[0]; m]),
                _ => {
                    skip("its bias is not a constant vector");
                    continue;
                }
            },
        };
        let out = n.outputs[0];
        let act = if readers[out] == 1 && !g.outputs.contains(&out) {
            g.nodes.iter().find(|c| c.inputs.first().copied().flatten() == Some(out)).and_then(|c| activation_bounds(g, c, m))
        } else {
            None
        };
        layers.push(Layer { node: ni, name: n.name.clone(), x, w, out, bias, kind, m, k, act });
    }
    (layers, skipped)
}

/// The weights of `l` between their own layout and [m, k] (output channel major): only a
/// dense weight stored [k, m] differs, by a transpose; `to_rows` gives the direction.
fn rows_layout(l: &Layer, w: &[f32], to_rows: bool) -> Vec<f32> {
    match l.kind {
        Kind::Dense { transposed: true } => {
            let (r, c) = if to_rows { (l.k, l.m) } else { (l.m, l.k) };
            let mut out = Vec::new();
            transpose(w, r, c, &mut out);
            out
        }
        _ => w.to_vec(),
    }
}

/// Runs Adam on one layer; returns the hard-rounded weights (in the weight's own layout).
fn optimize(
    p: &Problem,
    l: &Layer,
    w: &Tensor,
    encs: &[Encoding],
    cfg: &AdaroundConfig,
    rng: &mut SplitMix,
    progress: &mut dyn FnMut(usize, f32, f32) -> bool,
) -> Result<(Tensor, LayerReport)> {
    let (m, k) = (l.m, l.k);
    let wr = rows_layout(l, &w.to_f32_vec(), true);
    let n = m * k;
    let enc = |row: usize| encs[if encs.len() == 1 { 0 } else { row }];
    if encs.len() != 1 && encs.len() != m {
        return Err(Error::Quant(format!("AdaRound, node '{}': {} encodings for {m} channels", l.name, encs.len())));
    }
    let (delta, off, qmax): (Vec<f32>, Vec<f32>, Vec<f32>) =
        (0..m).map(|r| (enc(r).scale as f32, enc(r).offset as f32, enc(r).steps() as f32)).fold((vec![], vec![], vec![]), |mut a, (d, o, q)| {
            a.0.push(d);
            a.1.push(o);
            a.2.push(q);
            a
        });
    let mut floor = vec![0.0f32; n];
    let mut v = vec![0.0f32; n];
    for i in 0..n {
        let r = wr[i] / delta[i / k];
        floor[i] = r.floor();
        let f = r - floor[i];
        v[i] = -((ZETA - GAMMA) / (f - GAMMA) - 1.0).ln();
    }
    let weights_of = |hard: &dyn Fn(usize) -> f32| -> Vec<f32> {
        (0..n).map(|i| ((floor[i] + hard(i) - off[i / k]).clamp(0.0, qmax[i / k]) + off[i / k]) * delta[i / k]).collect()
    };
    let mut ws = Work::default();
    let full_loss = |wq: &[f32], ws: &mut Work| -> f32 {
        let (mut s, mut cnt) = (0.0f64, 0usize);
        for r in 0..p.xs.len() {
            let items: Vec<usize> = (0..p.items[r]).collect();
            s += p.loss(r, &items, wq, None, ws) * p.items[r] as f64;
            cnt += p.items[r];
        }
        (s / cnt.max(1) as f64) as f32
    };
    let nearest: Vec<f32> = (0..n).map(|i| enc(i / k).qdq(wr[i])).collect();
    let recon_nearest = full_loss(&nearest, &mut ws);

    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    let (mut m1, mut m2) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut wq, mut grad) = (vec![0.0f32; n], vec![0.0f32; n]);
    // σ(v), kept from one step to the next.
    let mut sg: Vec<f32> = v.iter().map(|&vi| sigmoid(vi)).collect();
    // Row by row, so that the per-channel encoding is a scalar.
    for r in 0..m {
        let (row, e) = (r * k..(r + 1) * k, (delta[r], off[r], qmax[r]));
        for ((wqi, &s), &fl) in wq[row.clone()].iter_mut().zip(&sg[row.clone()]).zip(&floor[row]) {
            *wqi = soft(s, fl, e).0;
        }
    }
    let t_total = cfg.iterations;
    let warm = (cfg.warm_start * t_total as f32) as usize;
    let every = (t_total / 100).max(1);
    let mut curve = Vec::new();
    let (mut acc_rec, mut acc_round, mut acc_n) = (0.0f64, 0.0f64, 0usize);
    let (mut b1t, mut b2t) = (1.0f32, 1.0f32);
    for t in 0..t_total {
        let r = t % p.xs.len();
        let items = pick(p.items[r], cfg.batch, rng);
        grad.fill(0.0);
        let recon = p.loss(r, &items, &wq, Some(&mut grad), &mut ws);
        let reg = t >= warm;
        let beta = if reg {
            let (bs, be) = cfg.beta;
            let frac = (t - warm) as f32 / (t_total - warm).max(1) as f32;
            be + 0.5 * (bs - be) * (1.0 + (std::f32::consts::PI * frac).cos())
        } else {
            0.0
        };
        b1t *= b1;
        b2t *= b2;
        // Adam with its bias corrections folded into two factors.
        let adam = Adam { b1, b2, eps, step: cfg.learning_rate / (1.0 - b1t), c2: 1.0 / (1.0 - b2t) };
        let reg = reg.then_some((cfg.reg_weight, beta));
        let mut round = 0.0f64;
        for r in 0..m {
            let row = r * k..(r + 1) * k;
            let e = (delta[r], off[r], qmax[r]);
            round += step_row(&mut v[row.clone()], &mut sg[row.clone()], &floor[row.clone()], &mut m1[row.clone()], &mut m2[row.clone()], &grad[row.clone()], &mut wq[row], e, reg, &adam) as f64;
        }
        let round = if reg.is_some() { (round * cfg.reg_weight as f64) as f32 } else { 0.0 };
        acc_rec += recon;
        acc_round += round as f64;
        acc_n += 1;
        if (t + 1) % every == 0 || t + 1 == t_total {
            let (rec, rnd) = ((acc_rec / acc_n as f64) as f32, (acc_round / acc_n as f64) as f32);
            curve.push(LossPoint { iteration: t + 1, recon: rec, round: rnd });
            (acc_rec, acc_round, acc_n) = (0.0, 0.0, 0);
            if !progress(t + 1, rec, rnd) {
                return Err(Error::Quant("AdaRound was cancelled".into()));
            }
        }
    }
    let hard = weights_of(&|i| if v[i] >= 0.0 { 1.0 } else { 0.0 });
    let recon_adaround = full_loss(&hard, &mut ws);
    let changed = hard.iter().zip(&nearest).filter(|(a, b)| a != b).count();
    let t = Tensor::from_parts_f32(w.shape().to_vec(), rows_layout(l, &hard, false));
    Ok((t, LayerReport { node: l.name.clone(), weight: String::new(), weights: n, changed, recon_nearest, recon_adaround, curve }))
}

/// All of `0..len` when it holds at most `batch` samples, else `batch` of them drawn at random.
fn pick(len: usize, batch: usize, rng: &mut SplitMix) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    if len <= batch {
        return idx;
    }
    for i in 0..batch {
        let j = i + rng.below(len - i);
        idx.swap(i, j);
    }
    idx.truncate(batch);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::AutoPad;
    // In wasm too: the finish has its own SIMD128 path there.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;
    use crate::kernels::{conv2d_naive, ConvGeom};

    fn window(stride: usize, pad: usize) -> Window {
        Window { kernel: None, strides: [stride; 2], dilations: [1; 2], pads: [pad; 4], auto_pad: AutoPad::NotSet, ceil_mode: false }
    }

    /// The run-wise finish (vectors in wasm) gives the bits of the element-wise one.
    #[test]
    fn finish_run_matches_finish_one() {
        let mut rng = SplitMix(3);
        for (n, c) in [(1, (0.1, 0.0, 6.0)), (7, (0.0, f32::NEG_INFINITY, f32::INFINITY)), (300, (-0.2, 0.0, 0.5)), (513, (0.3, -1.0, 1.0))] {
            let y0: Vec<f32> = rng.f32s(n).iter().map(|v| 3.0 * v).collect();
            let t: Vec<f32> = rng.f32s(n).iter().map(|v| 3.0 * v).collect();
            let (mut y, mut y1) = (y0.clone(), y0.clone());
            let total = problem::finish_run(&mut y, &t, c, 0.25);
            let d2: Vec<f32> = y1.iter_mut().zip(&t).map(|(yv, &tv)| problem::finish_one(yv, tv, c, 0.25)).collect();
            assert_eq!(y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), y1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "n = {n}");
            let want: f64 = d2.iter().map(|&v| v as f64).sum();
            assert!((total as f64 - want).abs() <= 1e-5 * want.max(1.0), "n = {n}: {total} vs {want}");
        }
    }

    fn layer(kind: Kind, m: usize, k: usize, bias: Vec<f32>, act: Option<(Vec<f32>, Vec<f32>)>) -> Layer {
        Layer { node: 0, name: "test".into(), x: 0, w: 1, out: 2, bias: Some(bias), kind, m, k, act }
    }

    /// Reference output of a layer by the naive kernels: conv2d_naive, or a triple loop.
    fn reference(l: &Layer, x: &Tensor, w: &[f32]) -> Vec<f32> {
        let b = x.shape()[0];
        let xd = x.as_f32().unwrap();
        match &l.kind {
            Kind::Conv { window, group, kernel } => {
                let s = x.shape();
                let g = ConvGeom { c_in: s[1], h: s[2], w: s[3], c_out: l.m, kh: kernel[0], kw: kernel[1], stride: window.strides, dilation: window.dilations, pads: window.pads, group: *group };
                let (oh, ow) = g.out_hw().unwrap();
                let per = l.m * oh * ow;
                let mut out = vec![0.0; b * per];
                for j in 0..b {
                    conv2d_naive(&g, &xd[j * s[1] * s[2] * s[3]..][..s[1] * s[2] * s[3]], w, l.bias.as_deref(), &mut out[j * per..(j + 1) * per]);
                }
                out
            }
            Kind::Dense { .. } => {
                let rows = xd.len() / l.k;
                let mut out = vec![0.0; rows * l.m];
                for r in 0..rows {
                    for o in 0..l.m {
                        out[r * l.m + o] = l.bias.as_ref().map_or(0.0, |b| b[o]) + (0..l.k).map(|i| xd[r * l.k + i] * w[o * l.k + i]).sum::<f32>();
                    }
                }
                out
            }
        }
    }

    fn cases() -> Vec<(Layer, Vec<usize>)> {
        let relu6 = |m: usize| Some((vec![0.0], (0..m).map(|c| 0.3 + c as f32 * 0.1).collect()));
        vec![
            (layer(Kind::Conv { window: window(2, 1), group: 1, kernel: [3, 3] }, 4, 3 * 9, vec![0.1, -0.2, 0.0, 0.3], relu6(4)), vec![3, 3, 7, 6]),
            (layer(Kind::Conv { window: window(1, 0), group: 1, kernel: [1, 1] }, 5, 3, vec![0.0; 5], Some((vec![0.0], vec![f32::INFINITY]))), vec![2, 3, 4, 4]),
            (layer(Kind::Conv { window: window(1, 1), group: 2, kernel: [3, 3] }, 4, 2 * 9, vec![0.05; 4], None), vec![2, 4, 5, 5]),
            (layer(Kind::Conv { window: window(2, 1), group: 6, kernel: [3, 3] }, 6, 9, vec![0.2; 6], relu6(6)), vec![3, 6, 6, 6]),
            (layer(Kind::Conv { window: window(1, 2), group: 4, kernel: [5, 5] }, 4, 25, vec![-0.1; 4], relu6(4)), vec![2, 4, 7, 9]),
            (layer(Kind::Conv { window: window(2, 2), group: 3, kernel: [5, 5] }, 3, 25, vec![0.0; 3], None), vec![2, 3, 9, 8]),
            (layer(Kind::Dense { transposed: false }, 7, 5, vec![0.1; 7], Some((vec![0.0], vec![f32::INFINITY]))), vec![6, 5]),
        ]
    }

    /// The forward pass equals the naive kernels' (loss 0 against their output), and the
    /// hand-written gradient equals central finite differences of the loss.
    #[test]
    fn forward_matches_naive_and_gradient_matches_finite_differences() {
        let mut rng = SplitMix(7);
        for (l, shape) in cases() {
            let x = Tensor::f32(shape.clone(), rng.f32s(shape.iter().product())).unwrap();
            let w = rng.f32s(l.m * l.k);
            let exact = reference(&l, &x, &w);
            let t = Tensor::f32(vec![exact.len()], exact.clone()).unwrap();
            let p = Problem::new(&l, &[&x], &[&t]).unwrap();
            let items: Vec<usize> = (0..shape[0]).collect();
            let mut ws = Work::default();
            let zero = p.loss(0, &items, &w, None, &mut ws);
            assert!(zero < 1e-10, "{}: loss against the naive output {zero}", l.name);

            // Targets away from the output, so that the loss has a gradient.
            let noisy: Vec<f32> = exact.iter().map(|v| v + 0.5 * (rng.next() % 3) as f32 - 0.5).collect();
            let t = Tensor::f32(vec![noisy.len()], noisy).unwrap();
            let p = Problem::new(&l, &[&x], &[&t]).unwrap();
            let mut grad = vec![0.0f32; w.len()];
            p.loss(0, &items, &w, Some(&mut grad), &mut ws);
            for i in (0..w.len()).step_by(3) {
                let h = 1e-3f32;
                let (mut a, mut b) = (w.clone(), w.clone());
                a[i] += h;
                b[i] -= h;
                let fd = ((p.loss(0, &items, &a, None, &mut ws) - p.loss(0, &items, &b, None, &mut ws)) / (2.0 * h as f64)) as f32;
                assert!((fd - grad[i]).abs() <= 2e-3 + 2e-2 * fd.abs(), "{:?} weight {i}: gradient {} vs finite difference {fd}", l.kind, grad[i]);
            }
        }
    }

    /// The AVX build of the loss and its gradient gives the bits of the portable one.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_loss_and_gradient_are_identical_to_the_portable_ones() {
        if !std::arch::is_x86_feature_detected!("avx") {
            return;
        }
        let mut rng = SplitMix(9);
        for (l, shape) in cases() {
            let x = Tensor::f32(shape.clone(), rng.f32s(shape.iter().product())).unwrap();
            let w = rng.f32s(l.m * l.k);
            let t: Vec<f32> = reference(&l, &x, &w).iter().map(|v| v + 0.5 * (rng.next() % 3) as f32 - 0.5).collect();
            let t = Tensor::f32(vec![t.len()], t).unwrap();
            let p = Problem::new(&l, &[&x], &[&t]).unwrap();
            let items: Vec<usize> = (0..shape[0]).collect();
            let run = |avx: bool| {
                let (mut grad, mut ws) = (vec![0.0f32; w.len()], Work::default());
                let loss = if avx { unsafe { p.loss_avx(0, &items, &w, Some(&mut grad), &mut ws) } } else { p.loss_body(0, &items, &w, Some(&mut grad), &mut ws) };
                (loss.to_bits(), grad.iter().map(|g| g.to_bits()).collect::<Vec<_>>())
            };
            assert_eq!(run(true), run(false), "{:?}", l.kind);
        }
    }

    #[test]
    fn subsets_are_distinct_and_seeded() {
        let (mut a, mut b) = (SplitMix(3), SplitMix(3));
        let s = pick(100, 32, &mut a);
        assert_eq!(s, pick(100, 32, &mut b));
        let mut u = s.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), 32);
        assert!(u.iter().all(|&i| i < 100));
        assert_eq!(pick(5, 32, &mut a), vec![0, 1, 2, 3, 4]);
    }
}
