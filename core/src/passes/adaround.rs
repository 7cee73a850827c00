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
use crate::kernels::conv::{im2col, ConvGeom};
use crate::kernels::gemm::{gemm_add, gemm_nt};
use crate::kernels::{for_each_tap, gemm, vmath};
use crate::quant::encoding::Encoding;
use crate::quant::sim::QuantSim;
use crate::rng::SplitMix;
use crate::tensor::Tensor;
use serde::Serialize;

const ZETA: f32 = 1.1;
const GAMMA: f32 = -0.1;
/// Column matrices of a layer's whole calibration set are kept when they fit in this many floats.
const COLUMN_CACHE: usize = 16 << 20;

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

/// One layer's data: its input and FP32 target per calibration batch.
struct Problem<'a> {
    xs: Vec<&'a [f32]>,
    ts: Vec<&'a [f32]>,
    /// Samples per batch.
    items: Vec<usize>,
    /// Per batch: the convolution's geometry (None for dense layers).
    geoms: Vec<Option<ConvGeom>>,
    /// Output positions per sample (pixels, or rows of a matrix product).
    per_item: Vec<usize>,
    /// Input elements per sample.
    in_per_item: Vec<usize>,
    /// Per batch: the column matrices of every sample, when they fit in [`COLUMN_CACHE`].
    cols: Vec<Option<Vec<f32>>>,
    m: usize,
    k: usize,
    /// The layer's bias (zeros without one).
    bias: Vec<f32>,
    lo: Vec<f32>,
    hi: Vec<f32>,
}

impl<'a> Problem<'a> {
    fn new(l: &'a Layer, xs: &[&'a Tensor], ts: &[&'a Tensor]) -> Result<Self> {
        let err = |msg: String| Error::Quant(format!("AdaRound, node '{}': {msg}", l.name));
        let mut p = Problem {
            xs: Vec::new(),
            ts: Vec::new(),
            items: Vec::new(),
            geoms: Vec::new(),
            per_item: Vec::new(),
            in_per_item: Vec::new(),
            cols: Vec::new(),
            m: l.m,
            k: l.k,
            bias: l.bias.clone().unwrap_or_else(|| vec![0.0; l.m]),
            lo: vec![f32::NEG_INFINITY; l.m],
            hi: vec![f32::INFINITY; l.m],
        };
        if let Some((lo, hi)) = &l.act {
            for c in 0..l.m {
                p.lo[c] = lo[if lo.len() == 1 { 0 } else { c }];
                p.hi[c] = hi[if hi.len() == 1 { 0 } else { c }];
            }
        }
        for (x, t) in xs.iter().zip(ts) {
            let (xd, td) = (x.as_f32().ok_or_else(|| err("input is not float".into()))?, t.as_f32().ok_or_else(|| err("output is not float".into()))?);
            let b = *x.shape().first().ok_or_else(|| err("scalar input".into()))?;
            if b == 0 {
                return Err(err("empty batch".into()));
            }
            let (geom, per_item) = match &l.kind {
                Kind::Conv { window, group, kernel } => {
                    let s = x.shape();
                    if s.len() != 4 || s[1] != group * (l.k / (kernel[0] * kernel[1])) {
                        return Err(err(format!("input shape {s:?} does not match the weight")));
                    }
                    let g = ConvGeom {
                        c_in: s[1],
                        h: s[2],
                        w: s[3],
                        c_out: l.m,
                        kh: kernel[0],
                        kw: kernel[1],
                        stride: window.strides,
                        dilation: window.dilations,
                        pads: crate::exec::resolve_pads(window, [s[2], s[3]], *kernel),
                        group: *group,
                    };
                    let (oh, ow) = g.out_hw().ok_or_else(|| err("kernel does not fit the input".into()))?;
                    (Some(g), oh * ow)
                }
                Kind::Dense { .. } => {
                    if x.shape().last() != Some(&l.k) || xd.len() % (b * l.k) != 0 {
                        return Err(err(format!("input shape {:?} does not match the weight", x.shape())));
                    }
                    (None, xd.len() / (b * l.k))
                }
            };
            if td.len() != b * per_item * l.m || xd.len() % b != 0 {
                return Err(err(format!("output shape {:?} does not match the layer", t.shape())));
            }
            p.xs.push(xd);
            p.ts.push(td);
            p.items.push(b);
            p.geoms.push(geom);
            p.per_item.push(per_item);
            p.in_per_item.push(xd.len() / b);
        }
        // Convolutions other than 1x1 rebuild the same column matrices at every iteration:
        // build them once when they fit.
        let size = |r: usize| p.geoms[r].filter(|g| !pointwise(g) && !is_depthwise(g)).map_or(0, |g| p.items[r] * g.c_in * g.kh * g.kw * p.per_item[r]);
        let total: usize = (0..p.xs.len()).map(size).sum();
        for r in 0..p.xs.len() {
            let cache = match p.geoms[r] {
                Some(g) if total <= COLUMN_CACHE && size(r) > 0 => {
                    let per = size(r) / p.items[r];
                    let mut c = vec![0.0f32; size(r)];
                    for j in 0..p.items[r] {
                        columns(&g, &p.xs[r][j * p.in_per_item[r]..(j + 1) * p.in_per_item[r]], &mut c[j * per..(j + 1) * per]);
                    }
                    Some(c)
                }
                _ => None,
            };
            p.cols.push(cache);
        }
        Ok(p)
    }

    /// Reconstruction loss of weights `wq` ([m, k]) on samples `items` of batch `r`; with
    /// `grad`, adds `∂loss/∂wq` to it.
    fn loss(&self, r: usize, items: &[usize], wq: &[f32], mut grad: Option<&mut [f32]>, ws: &mut Work) -> f64 {
        let (m, k, per) = (self.m, self.k, self.per_item[r]);
        let scale = 1.0 / (items.len() * per) as f32;
        let mut total = 0.0f64;
        match self.geoms[r] {
            Some(g) => {
                let depthwise = is_depthwise(&g);
                let (cg, mg) = (g.c_in / g.group, m / g.group);
                let kk = cg * g.kh * g.kw;
                let ipi = self.in_per_item[r];
                for &j in items {
                    let x = &self.xs[r][j * ipi..][..ipi];
                    let t = &self.ts[r][j * m * per..][..m * per];
                    ws.y.resize(m * per, 0.0);
                    if depthwise {
                        // Channels last: every tap is then a run of m channels, whatever the
                        // image size (Lite0 ends at 7 x 7 with 1,152 channels).
                        transpose(x, m, g.h * g.w, &mut ws.cols);
                        transpose(&wq[..m * kk], m, kk, &mut ws.t);
                        depthwise_nhwc(&g, &ws.cols, &ws.t, &mut ws.y);
                        transpose(t, m, per, &mut ws.tgt);
                        total += self.finish(&mut ws.y, &ws.tgt, m, false, scale);
                        if let Some(gr) = grad.as_deref_mut() {
                            ws.rows.clear();
                            ws.rows.resize(kk * m, 0.0);
                            depthwise_nhwc_weight_grad(&g, &ws.cols, &ws.y, &mut ws.rows);
                            for c in 0..m {
                                for tap in 0..kk {
                                    gr[c * kk + tap] += ws.rows[tap * m + c];
                                }
                            }
                        }
                        continue;
                    }
                    // Column matrices [group][kk][per] of this sample: cached, the input itself
                    // (1x1 kernels), or built now.
                    let cols: &[f32] = match (&self.cols[r], pointwise(&g)) {
                        (Some(c), _) => &c[j * g.group * kk * per..][..g.group * kk * per],
                        (None, true) => x,
                        (None, false) => {
                            ws.cols.resize(g.group * kk * per, 0.0);
                            columns(&g, x, &mut ws.cols);
                            &ws.cols
                        }
                    };
                    for grp in 0..g.group {
                        let cg_cols = &cols[grp * kk * per..(grp + 1) * kk * per];
                        let y = &mut ws.y[grp * mg * per..(grp + 1) * mg * per];
                        gemm(mg, per, kk, &wq[grp * mg * kk..(grp + 1) * mg * kk], cg_cols, y);
                    }
                    total += self.finish(&mut ws.y, t, per, true, scale);
                    let Some(gr) = grad.as_deref_mut() else { continue };
                    for grp in 0..g.group {
                        let cg_cols = &cols[grp * kk * per..(grp + 1) * kk * per];
                        // dy · colsᵀ by the packed GEMM: the columns transposed once cost a
                        // fraction (1 / mg) of the product.
                        transpose(cg_cols, kk, per, &mut ws.t);
                        gemm_add(mg, kk, per, &ws.y[grp * mg * per..(grp + 1) * mg * per], &ws.t, &mut gr[grp * mg * kk..(grp + 1) * mg * kk]);
                    }
                }
            }
            None => {
                let ipi = self.in_per_item[r];
                let rows = items.len() * per;
                ws.rows.clear();
                for &j in items {
                    ws.rows.extend_from_slice(&self.xs[r][j * ipi..(j + 1) * ipi]);
                }
                ws.tgt.clear();
                for &j in items {
                    ws.tgt.extend_from_slice(&self.ts[r][j * per * m..(j + 1) * per * m]);
                }
                ws.y.clear();
                ws.y.resize(rows * m, 0.0);
                gemm_nt(rows, m, k, &ws.rows, wq, &mut ws.y);
                let tgt = std::mem::take(&mut ws.tgt);
                total += self.finish(&mut ws.y, &tgt, m, false, scale);
                ws.tgt = tgt;
                if let Some(gr) = grad {
                    transpose(&ws.y, rows, m, &mut ws.t);
                    gemm_add(m, k, rows, &ws.t, &ws.rows, gr);
                }
            }
        }
        total
    }

    /// Adds the bias, applies the activation to the output `y` and the target `t`, and turns `y`
    /// into `∂loss/∂y` (`2 (act(y) - act(t)) scale` where the activation passes the gradient).
    /// `y` is [channel][run] (`channel_major`, convolutions) or [run][channel] (matrix products)
    /// with runs of `run` elements. Returns the loss `Σ (act(y) - act(t))^2 scale`.
    fn finish(&self, y: &mut [f32], t: &[f32], run: usize, channel_major: bool, scale: f32) -> f64 {
        let two = 2.0 * scale;
        let loss: f64 = if channel_major {
            y.chunks_mut(run).zip(t.chunks(run)).enumerate().map(|(c, (ys, ts))| finish_run(ys, ts, (self.bias[c], self.lo[c], self.hi[c]), two) as f64).sum()
        } else {
            y.chunks_mut(run).zip(t.chunks(run)).map(|(ys, ts)| finish_row(ys, ts, (&self.bias, &self.lo, &self.hi), two) as f64).sum()
        };
        loss * scale as f64
    }
}

/// One output element of [`Problem::finish`]: `(act(y + b) - act(t))^2` and the gradient that
/// replaces `y` (`two` = 2 scale).
#[inline(always)]
fn finish_one(y: &mut f32, t: f32, (b, lo, hi): (f32, f32, f32), two: f32) -> f32 {
    let v = *y + b;
    let d = vmath::clamp(v, lo, hi) - vmath::clamp(t, lo, hi);
    *y = if v > lo && v < hi { two * d } else { 0.0 };
    d * d
}

/// [`finish_one`] over a run of one channel, summed in 8 lanes so that it vectorises.
#[inline(never)]
fn finish_run(y: &mut [f32], t: &[f32], c: (f32, f32, f32), two: f32) -> f32 {
    let split = y.len().min(t.len()) / 8 * 8;
    let ((yh, yt), (th, tt)) = (y.split_at_mut(split), t.split_at(split));
    let rest: f32 = yt.iter_mut().zip(tt).map(|(yv, &tv)| finish_one(yv, tv, c, two)).sum();
    let mut acc = [0.0f32; 8];
    for (yb, tb) in yh.chunks_exact_mut(8).zip(th.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += finish_one(&mut yb[l], tb[l], c, two);
        }
    }
    vmath::sum(&acc) + rest
}

/// [`finish_one`] over a row holding every channel once.
#[inline(never)]
fn finish_row(y: &mut [f32], t: &[f32], (b, lo, hi): (&[f32], &[f32], &[f32]), two: f32) -> f32 {
    let mut d2 = [0.0f32; BLOCK];
    let mut total = 0.0;
    for ((((y, t), b), lo), hi) in y.chunks_mut(BLOCK).zip(t.chunks(BLOCK)).zip(b.chunks(BLOCK)).zip(lo.chunks(BLOCK)).zip(hi.chunks(BLOCK)) {
        let n = y.len();
        let (t, b, lo, hi, d2) = (&t[..n], &b[..n], &lo[..n], &hi[..n], &mut d2[..n]);
        for i in 0..n {
            d2[i] = finish_one(&mut y[i], t[i], (b[i], lo[i], hi[i]), two);
        }
        total += vmath::sum(d2);
    }
    total
}

/// Scratch buffers reused across iterations.
#[derive(Default)]
struct Work {
    y: Vec<f32>,
    cols: Vec<f32>,
    rows: Vec<f32>,
    t: Vec<f32>,
    tgt: Vec<f32>,
}

fn pointwise(g: &ConvGeom) -> bool {
    g.kh == 1 && g.kw == 1 && g.stride == [1, 1] && g.pads == [0; 4]
}

/// One input channel per group and one output channel per group: computed directly, tap by tap,
/// without column matrices.
fn is_depthwise(g: &ConvGeom) -> bool {
    g.group == g.c_in && g.group == g.c_out && g.group > 1
}

/// A depthwise convolution channels last: `x` [h*w][c], taps `w` [kh*kw][c], `y` [oh*ow][c]
/// (resized; no bias).
fn depthwise_nhwc(g: &ConvGeom, x: &[f32], w: &[f32], y: &mut Vec<f32>) {
    let (oh, ow) = g.out_hw().unwrap_or((0, 0));
    let c = g.c_out;
    y.clear();
    y.resize(oh * ow * c, 0.0);
    for oy in 0..oh {
        for ox in 0..ow {
            let out = &mut y[(oy * ow + ox) * c..][..c];
            for_each_tap((g.h, g.w), (g.kh, g.kw), g.stride, g.dilation, g.pads, (oy, ox), |tap, pixel| {
                for ((o, &xv), &wv) in out.iter_mut().zip(&x[pixel * c..(pixel + 1) * c]).zip(&w[tap * c..(tap + 1) * c]) {
                    *o += wv * xv;
                }
            });
        }
    }
}

/// Adds `∂loss/∂w` of [`depthwise_nhwc`] to `gw` [kh*kw][c] from the output gradient `dy`
/// [oh*ow][c].
fn depthwise_nhwc_weight_grad(g: &ConvGeom, x: &[f32], dy: &[f32], gw: &mut [f32]) {
    let (oh, ow) = g.out_hw().unwrap_or((0, 0));
    let c = g.c_out;
    for oy in 0..oh {
        for ox in 0..ow {
            let d = &dy[(oy * ow + ox) * c..][..c];
            for_each_tap((g.h, g.w), (g.kh, g.kw), g.stride, g.dilation, g.pads, (oy, ox), |tap, pixel| {
                for ((gv, &xv), &dv) in gw[tap * c..(tap + 1) * c].iter_mut().zip(&x[pixel * c..(pixel + 1) * c]).zip(d) {
                    *gv += dv * xv;
                }
            });
        }
    }
}

/// Column matrices [group][cg*kh*kw][out pixels] of one sample (`cols` sized by the caller).
fn columns(g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    let (oh, ow) = g.out_hw().unwrap_or((0, 0));
    let cg = g.c_in / g.group;
    let n = cg * g.kh * g.kw * oh * ow;
    for grp in 0..g.group {
        im2col(g, &x[grp * cg * g.h * g.w..(grp + 1) * cg * g.h * g.w], cg, oh, ow, &mut cols[grp * n..(grp + 1) * n]);
    }
}

fn transpose(a: &[f32], rows: usize, cols: usize, out: &mut Vec<f32>) {
    out.resize(rows * cols, 0.0);
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = a[r * cols + c];
        }
    }
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

/// `σ(v)`.
#[inline(always)]
fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + vmath::exp(-v))
}

/// The soft-rounded weight `W̃` of a rounding variable `v` with `s = σ(v)` over
/// `floor = ⌊W/Δ⌋` with encoding `(Δ, offset, steps)`, and its derivatives: `∂W̃/∂v`, `∂h/∂v`,
/// and `h`.
#[inline(always)]
fn soft(s: f32, floor: f32, (d, o, qm): (f32, f32, f32)) -> (f32, f32, f32, f32) {
    let hr = s * (ZETA - GAMMA) + GAMMA;
    let h = vmath::clamp(hr, 0.0, 1.0);
    let q = floor + h - o;
    let wq = (vmath::clamp(q, 0.0, qm) + o) * d;
    let hm = if (0.0..=1.0).contains(&hr) { (ZETA - GAMMA) * s * (1.0 - s) } else { 0.0 };
    let dm = if (0.0..=qm).contains(&q) { d * hm } else { 0.0 };
    (wq, dm, hm, h)
}

/// Adam's constants for one step, its bias corrections folded into `step` (lr / (1 - β1^t))
/// and `c2` (1 / (1 - β2^t)).
struct Adam {
    b1: f32,
    b2: f32,
    eps: f32,
    step: f32,
    c2: f32,
}

/// One Adam step on a row of rounding variables sharing encoding `e`, from the reconstruction
/// gradient `grad` (with respect to the weights) and, with `reg = Some((λ, β))`, the
/// regulariser's; then `σ(v)` and the weights at the new values. Returns the sum of the
/// regulariser's terms `1 - |2h - 1|^β` before the step (0 without it).
///
/// The work goes block by block of [`BLOCK`] weights in three short passes (gradient, Adam, new
/// weights) through buffers on the stack: one long loop body chains exp, ln, sqrt and divisions
/// into a latency the processor cannot hide, while short ones overlap their iterations.
#[allow(clippy::too_many_arguments)]
fn step_row(v: &mut [f32], sg: &mut [f32], floor: &[f32], m1: &mut [f32], m2: &mut [f32], grad: &[f32], wq: &mut [f32], e: (f32, f32, f32), reg: Option<(f32, f32)>, a: &Adam) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the processor has AVX2.
        return unsafe { step_row_avx2(v, sg, floor, m1, m2, grad, wq, e, reg, a) };
    }
    step_row_lanes(v, sg, floor, m1, m2, grad, wq, e, reg, a)
}

/// [`step_row_lanes`] in 8 lanes natively where the processor has AVX2. Without FMA (and Rust
/// does not fuse a multiply and an add by itself) every operation rounds as in 4 lanes: the
/// results are identical, which the tests check.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn step_row_avx2(v: &mut [f32], sg: &mut [f32], floor: &[f32], m1: &mut [f32], m2: &mut [f32], grad: &[f32], wq: &mut [f32], e: (f32, f32, f32), reg: Option<(f32, f32)>, a: &Adam) -> f32 {
    step_row_lanes(v, sg, floor, m1, m2, grad, wq, e, reg, a)
}

/// The body of [`step_row`], inlined into each target's version.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn step_row_lanes(v: &mut [f32], sg: &mut [f32], floor: &[f32], m1: &mut [f32], m2: &mut [f32], grad: &[f32], wq: &mut [f32], e: (f32, f32, f32), reg: Option<(f32, f32)>, a: &Adam) -> f32 {
    let (mut gb, mut tb) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
    let mut total = 0.0;
    let blocks = v.chunks_mut(BLOCK).zip(sg.chunks_mut(BLOCK)).zip(floor.chunks(BLOCK)).zip(m1.chunks_mut(BLOCK)).zip(m2.chunks_mut(BLOCK)).zip(grad.chunks(BLOCK)).zip(wq.chunks_mut(BLOCK));
    for ((((((v, sg), floor), m1), m2), grad), wq) in blocks {
        let n = v.len();
        let (sg, floor, m1, m2, grad, wq) = (&mut sg[..n], &floor[..n], &mut m1[..n], &mut m2[..n], &grad[..n], &mut wq[..n]);
        let (gb, tb) = (&mut gb[..n], &mut tb[..n]);
        if let Some((lam, beta)) = reg {
            for i in 0..n {
                let (_, dm, hm, h) = soft(sg[i], floor[i], e);
                // d/dh of λ (1 - |2h - 1|^β), with |u|^(β-1) as exp((β-1) ln|u|).
                let u = 2.0 * h - 1.0;
                let au = u.abs();
                let pw = if au > 0.0 { vmath::exp((beta - 1.0) * vmath::ln(au)) } else { 0.0 };
                tb[i] = 1.0 - pw * au;
                gb[i] = grad[i] * dm - lam * beta * pw * 2.0 * hm * if u < 0.0 { -1.0 } else { 1.0 };
            }
            total += vmath::sum(tb);
        } else {
            for i in 0..n {
                gb[i] = grad[i] * soft(sg[i], floor[i], e).1;
            }
        }
        for i in 0..n {
            let g = gb[i];
            m1[i] = a.b1 * m1[i] + (1.0 - a.b1) * g;
            m2[i] = a.b2 * m2[i] + (1.0 - a.b2) * g * g;
            v[i] -= a.step * m1[i] / ((m2[i] * a.c2).sqrt() + a.eps);
        }
        for i in 0..n {
            sg[i] = sigmoid(v[i]);
            wq[i] = soft(sg[i], floor[i], e).0;
        }
    }
    total
}

/// Weights per block of [`step_row`].
const BLOCK: usize = 256;

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
    use crate::kernels::conv2d_naive;

    fn window(stride: usize, pad: usize) -> Window {
        Window { kernel: None, strides: [stride; 2], dilations: [1; 2], pads: [pad; 4], auto_pad: AutoPad::NotSet, ceil_mode: false }
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

    /// The AVX2 build of the step gives the same bits as the 4-lane one (on a processor with AVX2).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn step_row_is_identical_in_8_lanes() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut rng = SplitMix(11);
        let n = 1000;
        let v0: Vec<f32> = rng.f32s(n).iter().map(|x| 4.0 * x).collect();
        let floor: Vec<f32> = (0..n).map(|i| (i % 17) as f32 - 8.0).collect();
        let grad: Vec<f32> = rng.f32s(n).iter().map(|x| 0.1 * x).collect();
        let a = Adam { b1: 0.9, b2: 0.999, eps: 1e-8, step: 1e-3 / 0.1, c2: 1.0 / 0.001 };
        for reg in [None, Some((0.01, 7.5))] {
            let run = |avx: bool| {
                let (mut v, mut sg) = (v0.clone(), v0.iter().map(|&x| sigmoid(x)).collect::<Vec<_>>());
                let (mut m1, mut m2, mut wq) = (vec![0.01; n], vec![1e-4; n], vec![0.0; n]);
                let args = (&mut v, &mut sg, &floor, &mut m1, &mut m2, &grad, &mut wq);
                let round = if avx {
                    unsafe { step_row_avx2(args.0, args.1, args.2, args.3, args.4, args.5, args.6, (0.05, -3.0, 15.0), reg, &a) }
                } else {
                    step_row_lanes(args.0, args.1, args.2, args.3, args.4, args.5, args.6, (0.05, -3.0, 15.0), reg, &a)
                };
                (round.to_bits(), [v, sg, m1, m2, wq].map(|x| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>()))
            };
            assert_eq!(run(true), run(false), "{reg:?}");
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
