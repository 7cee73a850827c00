//! The FP32 executor: constant folding and Conv+BN(+activation) fusion at load time, then
//! node-by-node evaluation with values freed after their last use and the im2col scratch reused
//! across runs.

mod fuse;
pub mod int8;
mod ops;

pub(crate) use ops::resolve_pads_pub as resolve_pads;
pub(crate) use ops::eval as eval_node;
pub(crate) use ops::broadcast_shape;

use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};
use crate::onnx::Limits;
use crate::tensor::Tensor;

/// Runs a [`Graph`] on f32 inputs.
#[derive(Debug)]
pub struct Executor {
    graph: Graph,
    limits: Limits,
    /// For each value computed at run time, the index of the last node reading it.
    last_use: Vec<Option<usize>>,
    /// Per node: an activation clamp fused into its output (Conv followed by Relu/Clip).
    clamps: Vec<Option<(f32, f32)>>,
    scratch: Vec<f32>,
}

/// Per-run state handed to op implementations.
pub(crate) struct Ctx<'a> {
    pub limits: &'a Limits,
    pub scratch: &'a mut Vec<f32>,
    /// Clamp the node's output to this range (a fused activation).
    pub clamp: Option<(f32, f32)>,
}

/// Hook called with each value as it is computed (graph inputs first, then every node output):
/// observers use it to collect statistics, quantization simulation to quantize in place.
pub type ValueHook<'h> = dyn FnMut(ValueId, &mut Tensor) -> Result<()> + 'h;

impl Executor {
    /// Folds every node whose inputs are all constants (shape sub-graphs, Constant chains), fuses
    /// Conv+BatchNormalization(+Relu/Clip), and prepares the plan.
    pub fn new(graph: Graph, limits: Limits) -> Result<Self> {
        Self::with_fusion(graph, limits, true)
    }

    /// Like [`Executor::new`]; with `fuse = false` every value of the graph stays observable
    /// (needed when a hook must see the output of each node as stored).
    pub fn with_fusion(mut graph: Graph, limits: Limits, fuse: bool) -> Result<Self> {
        let mut scratch = Vec::new();
        let nodes = std::mem::take(&mut graph.nodes);
        let mut kept = Vec::with_capacity(nodes.len());
        for node in nodes {
            let foldable = node.inputs.iter().flatten().all(|&i| graph.consts[i].is_some());
            if !foldable {
                kept.push(node);
                continue;
            }
            let ins: Vec<Option<&Tensor>> = node.inputs.iter().map(|i| i.and_then(|i| graph.consts[i].as_ref())).collect();
            let outs = ops::eval(&node, &ins, &mut Ctx { limits: &limits, scratch: &mut scratch, clamp: None })?;
            for (id, t) in node.outputs.iter().zip(outs) {
                graph.consts[*id] = Some(t);
            }
        }
        graph.nodes = kept;
        let clamps = if fuse {
            graph = crate::passes::bn_fold::fold_batch_norms(graph).0;
            fuse::fuse_activations(&mut graph)
        } else {
            vec![None; graph.nodes.len()]
        };
        let mut last_use = vec![None; graph.values.len()];
        for (ni, n) in graph.nodes.iter().enumerate() {
            for &i in n.inputs.iter().flatten() {
                last_use[i] = Some(ni);
            }
        }
        for &o in &graph.outputs {
            last_use[o] = None; // outputs are kept to the end
        }
        Ok(Executor { graph, limits, last_use, clamps, scratch })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs the graph. `inputs` are in the order of [`Graph::inputs`]; returns the graph outputs
    /// in order.
    pub fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        self.run_with_hook(inputs, &mut |_, _| Ok(()))
    }

    /// [`Executor::run`], calling `hook` on every value as it is produced.
    pub fn run_with_hook(&mut self, inputs: Vec<Tensor>, hook: &mut ValueHook) -> Result<Vec<Tensor>> {
        let mut run = self.start(inputs, hook)?;
        while !self.done(&run) {
            self.step(&mut run, hook)?;
        }
        self.finish(run)
    }

    /// Begins a run that the caller advances node by node with [`Executor::step`] (several runs
    /// can be interleaved, e.g. to change a weight between nodes as AdaRound does).
    pub fn start(&self, inputs: Vec<Tensor>, hook: &mut ValueHook) -> Result<Run> {
        let g = &self.graph;
        if inputs.len() != g.inputs.len() {
            return Err(Error::Graph(format!("the model takes {} inputs but {} were given", g.inputs.len(), inputs.len())));
        }
        let mut vals: Vec<Option<Tensor>> = vec![None; g.values.len()];
        for (&id, mut t) in g.inputs.iter().zip(inputs) {
            check_input(g, id, &t)?;
            hook(id, &mut t)?;
            vals[id] = Some(t);
        }
        Ok(Run { vals, next: 0 })
    }

    /// Whether every node of `run` has been evaluated.
    pub fn done(&self, run: &Run) -> bool {
        run.next >= self.graph.nodes.len()
    }

    /// Evaluates the next node of `run` (runs go through [`Executor::graph`]'s nodes in order).
    pub fn step(&mut self, run: &mut Run, hook: &mut ValueHook) -> Result<()> {
        let (g, ni) = (&self.graph, run.next);
        let Some(node) = g.nodes.get(ni) else { return Ok(()) };
        let outs = {
            let mut ins: Vec<Option<&Tensor>> = Vec::with_capacity(node.inputs.len());
            for i in &node.inputs {
                ins.push(match i {
                    None => None,
                    Some(id) => Some(g.consts[*id].as_ref().or(run.vals[*id].as_ref()).ok_or_else(|| {
                        Error::node(&node.name, &node.op_type, format!("input '{}' has no value", g.values[*id].name))
                    })?),
                });
            }
            ops::eval(node, &ins, &mut Ctx { limits: &self.limits, scratch: &mut self.scratch, clamp: self.clamps[ni] })?
        };
        for (id, mut t) in node.outputs.iter().zip(outs) {
            hook(*id, &mut t)?;
            run.vals[*id] = Some(t);
        }
        for &i in node.inputs.iter().flatten() {
            if self.last_use[i] == Some(ni) && g.consts[i].is_none() {
                run.vals[i] = None;
            }
        }
        run.next += 1;
        Ok(())
    }

    /// The graph outputs of a completed run.
    pub fn finish(&self, mut run: Run) -> Result<Vec<Tensor>> {
        let g = &self.graph;
        g.outputs
            .iter()
            .map(|&o| {
                g.consts[o].clone().or_else(|| run.vals[o].take()).ok_or_else(|| Error::Graph(format!("output '{}' was not computed", g.values[o].name)))
            })
            .collect()
    }

    /// The current value of `id` in `run` (a constant, or a computed value still alive).
    pub fn value<'a>(&'a self, run: &'a Run, id: ValueId) -> Option<&'a Tensor> {
        self.graph.consts[id].as_ref().or(run.vals[id].as_ref())
    }

    /// Replaces the constant `id` (same shape) for the nodes evaluated from now on.
    pub(crate) fn set_const(&mut self, id: ValueId, t: Tensor) {
        self.graph.consts[id] = Some(t);
    }
}

/// A run in progress (see [`Executor::start`]).
#[derive(Debug)]
pub struct Run {
    vals: Vec<Option<Tensor>>,
    next: usize,
}

/// Checks a given input against the declared rank and fixed dims.
pub(crate) fn check_input(g: &Graph, id: ValueId, t: &Tensor) -> Result<()> {
    let v = &g.values[id];
    let err = |msg: String| Error::Input { name: v.name.clone(), msg };
    if t.as_f32().is_none() {
        return Err(err(format!("expected float32 data, got {}", t.dtype_name())));
    }
    if let Some(dims) = v.ty.as_ref().and_then(|ty| ty.dims.as_ref()) {
        if dims.len() != t.rank() {
            return Err(err(format!("expected rank {} ({}), got shape {:?}", dims.len(), fmt_dims(dims), t.shape())));
        }
        for (d, &s) in dims.iter().zip(t.shape()) {
            if let crate::graph::Dim::Fixed(f) = d {
                if *f != s {
                    return Err(err(format!("expected shape [{}], got {:?}", fmt_dims(dims), t.shape())));
                }
            }
        }
    }
    Ok(())
}

/// The output range of node `n` when it is Relu or a Clip with constant bounds: scalars (one
/// value each) or per channel (`m` values, as qplay's equalization leaves ReLU6 bounds).
pub(crate) fn activation_bounds(g: &Graph, n: &crate::graph::Node, m: usize) -> Option<(Vec<f32>, Vec<f32>)> {
    use crate::graph::{Op, UnaryOp};
    match n.op {
        Op::Unary(UnaryOp::Relu) => Some((vec![0.0], vec![f32::INFINITY])),
        Op::Clip { min, max } => {
            let b = |k: usize, attr: Option<f32>, d: f32| -> Option<Vec<f32>> {
                match n.inputs.get(k).copied().flatten() {
                    None => Some(vec![attr.unwrap_or(d)]),
                    Some(id) => g.consts[id].as_ref().filter(|t| t.len() == 1 || t.len() == m).map(|t| t.to_f32_vec()),
                }
            };
            Some((b(1, min, f32::NEG_INFINITY)?, b(2, max, f32::INFINITY)?))
        }
        _ => None,
    }
}

pub(crate) fn fmt_dims(dims: &[crate::graph::Dim]) -> String {
    dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
}
