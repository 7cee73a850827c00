//! Reverse-mode gradients over a [`Graph`]. The forward pass runs each node with the executor's
//! own op implementations (so training computes exactly what inference computes), keeps every
//! value, and BatchNormalization uses batch statistics in training mode. The backward pass walks
//! the nodes in reverse and accumulates the gradient of each value; [`super::grad`] holds the
//! per-op rules. With a [`FakeQuant`], weights and activations are quantize-dequantized as the
//! quantization simulation places them, and the straight-through estimator carries gradients
//! through the rounding to the weights and to the quantizers' ranges.

use super::grad;
use super::qat::FakeQuant;
use crate::error::{Error, Result};
use crate::exec::{eval_node, Ctx};
use crate::graph::{Graph, Op, ValueId};
use crate::onnx::Limits;
use crate::tensor::Tensor;

/// A graph whose float constants can be trained.
#[derive(Debug, Clone)]
pub struct Net {
    pub(crate) graph: Graph,
    limits: Limits,
    /// The trainable constants: the weights and biases of Conv, ConvTranspose, Gemm and MatMul,
    /// BatchNormalization's scale and shift, PRelu's slope.
    params: Vec<ValueId>,
    /// Whether each value depends on a trainable constant (its gradient is needed).
    needs: Vec<bool>,
    /// ONNX's BatchNormalization momentum: `running = running * m + batch * (1 - m)`.
    pub bn_momentum: f32,
    /// BatchNormalization keeps its running statistics in training passes too (a model
    /// fine-tuned on little data, or QAT with BatchNorm kept).
    pub freeze_bn: bool,
    pub quant: Option<FakeQuant>,
}

/// How a forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Batch statistics in BatchNormalization (running averages updated), values kept for
    /// [`Net::backward`].
    Train,
    /// Running statistics, nothing updated.
    Eval,
}

/// What a training forward pass keeps for the backward pass.
#[derive(Debug)]
pub struct Tape {
    vals: Vec<Option<Tensor>>,
    /// Quantize-dequantized weights (the values the nodes read), by value.
    wq: Vec<Option<Tensor>>,
    /// An activation quantizer's input, by value (its output is in `vals`).
    pre: Vec<Option<Tensor>>,
    /// Per node: BatchNormalization's batch mean and 1/sqrt(var + eps) in training mode.
    bn: Vec<Option<(Vec<f32>, Vec<f32>)>>,
}

/// Gradients of the loss with respect to the trainable parameters (in [`Net::params`] order)
/// and to the quantizers' range parameters.
#[derive(Debug, Clone)]
pub struct Grads {
    pub params: Vec<Vec<f32>>,
    pub ranges: Vec<f32>,
}

impl Net {
    /// Prepares `graph` for training (constant sub-graphs are expected to be folded already,
    /// as [`crate::load_model`] leaves them).
    pub fn new(graph: Graph, limits: Limits) -> Result<Net> {
        let mut params = Vec::new();
        for n in &graph.nodes {
            let slots: &[usize] = match n.op {
                Op::Conv { .. } | Op::ConvTranspose { .. } | Op::Gemm { .. } => &[1, 2],
                Op::MatMul => &[0, 1],
                Op::BatchNorm { .. } => &[1, 2],
                Op::PRelu => &[1],
                _ => &[],
            };
            for &s in slots {
                if let Some(v) = n.inputs.get(s).copied().flatten() {
                    if graph.consts[v].as_ref().is_some_and(|t| t.as_f32().is_some()) && !params.contains(&v) {
                        params.push(v);
                    }
                }
            }
        }
        if params.is_empty() {
            return Err(Error::Graph("the model has no trainable weights (Conv, Gemm, MatMul or BatchNormalization constants)".into()));
        }
        let mut needs = vec![false; graph.values.len()];
        for &p in &params {
            needs[p] = true;
        }
        for n in &graph.nodes {
            if n.inputs.iter().flatten().any(|&i| needs[i]) {
                for &o in &n.outputs {
                    needs[o] = true;
                }
            }
        }
        Ok(Net { graph, limits, params, needs, bn_momentum: 0.9, freeze_bn: false, quant: None })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }
    pub fn into_graph(self) -> Graph {
        self.graph
    }
    pub fn params(&self) -> &[ValueId] {
        &self.params
    }
    /// The current values of the trainable parameters.
    pub fn param_data(&self) -> Vec<Vec<f32>> {
        self.params.iter().map(|&p| self.graph.consts[p].as_ref().map(Tensor::to_f32_vec).unwrap_or_default()).collect()
    }
    /// Sets the trainable parameters (same order and lengths as [`Net::param_data`]).
    pub fn set_param_data(&mut self, data: &[Vec<f32>]) {
        for (&p, d) in self.params.iter().zip(data) {
            if let Some(t) = self.graph.consts[p].as_mut() {
                *t = Tensor::from_parts_f32(t.shape().to_vec(), d.clone());
            }
        }
    }
    /// Updates parameters in place: `f(index, values)` for each.
    pub(crate) fn with_params(&mut self, mut f: impl FnMut(usize, &mut [f32])) {
        for (i, &p) in self.params.iter().enumerate() {
            if let Some(t) = self.graph.consts[p].take() {
                let shape = t.shape().to_vec();
                let mut d = t.into_f32().unwrap_or_default();
                f(i, &mut d);
                self.graph.consts[p] = Some(Tensor::from_parts_f32(shape, d));
            }
        }
    }

    /// Runs the graph on `x` (the first input). Returns the outputs and, for [`Pass::Train`],
    /// the tape for [`Net::backward`].
    pub fn forward(&mut self, x: Tensor, pass: Pass) -> Result<(Vec<Tensor>, Option<Tape>)> {
        let g = &self.graph;
        if g.inputs.len() != 1 {
            return Err(Error::Graph(format!("training needs a model with one input, this one has {}", g.inputs.len())));
        }
        crate::exec::check_input(g, g.inputs[0], &x)?;
        let nv = g.values.len();
        let mut tape = Tape { vals: vec![None; nv], wq: vec![None; nv], pre: vec![None; nv], bn: vec![None; g.nodes.len()] };
        if let Some(q) = &self.quant {
            q.quantize_weights(g, &mut tape.wq);
        }
        let mut x = x;
        if let Some(q) = &self.quant {
            q.quantize_act(g.inputs[0], &mut x);
        }
        tape.vals[g.inputs[0]] = Some(x);
        let mut scratch = Vec::new();
        let mut running: Vec<(ValueId, Vec<f32>)> = Vec::new();
        for (ni, node) in g.nodes.iter().enumerate() {
            let mut ins: Vec<Option<&Tensor>> = Vec::with_capacity(node.inputs.len());
            for i in &node.inputs {
                ins.push(match *i {
                    None => None,
                    Some(id) => Some(tape.wq[id].as_ref().or(g.consts[id].as_ref()).or(tape.vals[id].as_ref()).ok_or_else(|| {
                        Error::node(&node.name, &node.op_type, format!("input '{}' has no value", g.values[id].name))
                    })?),
                });
            }
            let outs = match node.op {
                Op::BatchNorm { epsilon } if pass == Pass::Train && !self.freeze_bn => {
                    let (y, mean, inv, var) = grad::batch_norm_train(node, &ins, epsilon)?;
                    let m = self.bn_momentum;
                    for (slot, batch) in [(3, &mean), (4, &var)] {
                        if let Some(Some(id)) = node.inputs.get(slot) {
                            let old = g.consts[*id].as_ref().map(Tensor::to_f32_vec).unwrap_or_default();
                            running.push((*id, old.iter().zip(batch).map(|(&r, &b)| r * m + b * (1.0 - m)).collect()));
                        }
                    }
                    tape.bn[ni] = Some((mean, inv));
                    vec![y]
                }
                _ => eval_node(node, &ins, &mut Ctx { limits: &self.limits, scratch: &mut scratch, clamp: None })?,
            };
            for (&o, mut t) in node.outputs.iter().zip(outs) {
                if let Some(q) = &self.quant {
                    if q.has_act(o) {
                        if pass == Pass::Train {
                            tape.pre[o] = Some(t.clone());
                        }
                        q.quantize_act(o, &mut t);
                    }
                }
                tape.vals[o] = Some(t);
            }
        }
        for (id, v) in running {
            if let Some(t) = self.graph.consts[id].as_mut() {
                *t = Tensor::from_parts_f32(t.shape().to_vec(), v);
            }
        }
        let g = &self.graph;
        let outs = g
            .outputs
            .iter()
            .map(|&o| g.consts[o].clone().or_else(|| tape.vals[o].clone()).ok_or_else(|| Error::Graph(format!("output '{}' was not computed", g.values[o].name))))
            .collect::<Result<Vec<_>>>()?;
        Ok((outs, (pass == Pass::Train).then_some(tape)))
    }

    /// Gradients of a loss whose gradients with respect to the graph outputs are `dout` (one
    /// per output, same lengths; an empty vector for an output the loss does not use).
    pub fn backward(&self, tape: &Tape, dout: Vec<Vec<f32>>) -> Result<Grads> {
        let g = &self.graph;
        let mut grads: Vec<Option<Vec<f32>>> = vec![None; g.values.len()];
        for (&o, d) in g.outputs.iter().zip(dout) {
            if !d.is_empty() {
                grad::accumulate(&mut grads, o, d);
            }
        }
        let mut ranges = self.quant.as_ref().map_or_else(Vec::new, |q| vec![0.0; q.range_len()]);
        for (ni, node) in g.nodes.iter().enumerate().rev() {
            if !node.outputs.iter().any(|&o| grads[o].is_some()) {
                continue;
            }
            let mut dys: Vec<Option<Vec<f32>>> = node.outputs.iter().map(|&o| grads[o].take()).collect();
            if let Some(q) = &self.quant {
                for (&o, dy) in node.outputs.iter().zip(&mut dys) {
                    if let (Some(pre), Some(d)) = (tape.pre[o].as_ref(), dy.as_mut()) {
                        q.act_backward(o, pre, d, &mut ranges);
                    }
                }
            }
            if !node.inputs.iter().flatten().any(|&i| self.needs[i]) {
                continue;
            }
            let value = |id: ValueId| tape.wq[id].as_ref().or(g.consts[id].as_ref()).or(tape.vals[id].as_ref());
            let ins: Vec<Option<&Tensor>> = node.inputs.iter().map(|i| i.and_then(value)).collect();
            let outs: Vec<Option<&Tensor>> = node.outputs.iter().map(|&o| tape.pre[o].as_ref().or(value(o))).collect();
            let want: Vec<bool> = node.inputs.iter().map(|i| i.is_some_and(|i| self.needs[i])).collect();
            let dins = grad::backward(node, &ins, &outs, dys, &want, tape.bn[ni].as_ref())?;
            for (i, d) in node.inputs.iter().zip(dins) {
                if let (Some(i), Some(d)) = (i, d) {
                    if self.needs[*i] {
                        grad::accumulate(&mut grads, *i, d);
                    }
                }
            }
        }
        let mut params = Vec::with_capacity(self.params.len());
        for &p in &self.params {
            let n = g.consts[p].as_ref().map_or(0, Tensor::len);
            let mut d = grads[p].take().unwrap_or_else(|| vec![0.0; n]);
            if let (Some(q), Some(w)) = (&self.quant, g.consts[p].as_ref()) {
                q.weight_backward(p, w, &mut d, &mut ranges);
            }
            params.push(d);
        }
        Ok(Grads { params, ranges })
    }
}
