//! The in-memory model: values, typed nodes in topological order, constants.

mod op;

pub use op::{AutoPad, BinaryOp, CastTo, CoordMode, NearestMode, Op, PadMode, ReduceKind, ResizeMode, SliceAttrs, UnaryOp, Window};

use crate::tensor::Tensor;

/// Index of a value (tensor name) in [`Graph::values`].
pub type ValueId = usize;

/// A declared dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Symbolic(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(d) => write!(f, "{d}"),
            Dim::Symbolic(s) if s.is_empty() => write!(f, "?"),
            Dim::Symbolic(s) => write!(f, "{s}"),
        }
    }
}

/// Declared element type and shape of a graph input/output, when the model states them.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeInfo {
    pub elem_type: String,
    pub dims: Option<Vec<Dim>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub name: String,
    pub ty: Option<TypeInfo>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub op: Op,
    /// `None` for an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
    /// The attributes as the model stated them (written back on export).
    pub attrs: Vec<crate::onnx::proto::AttributeProto>,
}

/// A validated model graph. Invariants: `nodes` is in topological order; every node input is
/// a graph input, a constant, or an output of an earlier node; no value has two producers.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub values: Vec<Value>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// Constant tensors (initializers, Constant nodes, folded sub-graphs), indexed by ValueId.
    pub consts: Vec<Option<Tensor>>,
    /// Default-domain opset.
    pub opset: i64,
}

impl Graph {
    pub fn value_name(&self, id: ValueId) -> &str {
        &self.values[id].name
    }
    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.values.iter().position(|v| v.name == name)
    }
    /// Number of f32 parameters held in constants, not counting BatchNormalization's running
    /// mean and variance (statistics) nor Clip's bounds (PyTorch's parameter count agrees).
    pub fn parameter_count(&self) -> usize {
        let stats: std::collections::HashSet<ValueId> = self
            .nodes
            .iter()
            .flat_map(|n| {
                let skip = match n.op {
                    Op::BatchNorm { .. } => 3,
                    Op::Clip { .. } => 1,
                    _ => n.inputs.len(),
                };
                n.inputs.iter().skip(skip).flatten().copied()
            })
            .collect();
        self.consts
            .iter()
            .enumerate()
            .filter(|(i, t)| !stats.contains(i) && t.as_ref().is_some_and(|t| t.as_f32().is_some()))
            .map(|(_, t)| t.as_ref().map_or(0, Tensor::len))
            .sum()
    }
    /// For each value, how many node inputs read it, plus one if it is a graph output.
    pub fn reader_counts(&self) -> Vec<usize> {
        let mut n = vec![0usize; self.values.len()];
        for node in &self.nodes {
            for &i in node.inputs.iter().flatten() {
                n[i] += 1;
            }
        }
        for &o in &self.outputs {
            n[o] += 1;
        }
        n
    }

    /// Adds a value named `base` (or `base_1`, `base_2`, ... when taken), holding `konst` when
    /// it is a constant.
    pub fn add_value(&mut self, base: &str, konst: Option<Tensor>) -> ValueId {
        let mut name = base.to_string();
        let mut i = 1;
        while self.find_value(&name).is_some() {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.values.push(Value { name, ty: None });
        self.consts.push(konst);
        self.values.len() - 1
    }

    /// Op-type histogram in first-seen order.
    pub fn op_counts(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for n in &self.nodes {
            match out.iter_mut().find(|(k, _)| *k == n.op_type) {
                Some((_, c)) => *c += 1,
                None => out.push((n.op_type.clone(), 1)),
            }
        }
        out
    }
}
