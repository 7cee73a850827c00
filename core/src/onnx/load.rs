//! Decoding and validating an ONNX model.

use super::proto::{self, type_proto, ModelProto};
use crate::error::{Error, Result};
use crate::graph::{BinaryOp, Dim, Graph, Node, Op, TypeInfo, Value, ValueId};
use crate::tensor::Tensor;
use prost::Message;
use std::collections::HashMap;

/// The default-domain opsets qplay reads: 7 (the oldest most exporters still write, e.g. old
/// paddle2onnx) to 21.
pub const MIN_OPSET: i64 = 7;
pub const MAX_OPSET: i64 = 21;

/// Resource limits, checked before anything proportional to them is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Size of the model file.
    pub max_file_bytes: usize,
    /// Elements in any one tensor (constant or computed).
    pub max_tensor_elements: usize,
    /// Sum of the bytes of all initializers and constants.
    pub max_total_bytes: usize,
    pub max_nodes: usize,
    pub max_rank: usize,
    /// Longest chain of nodes from an input to an output.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 256 << 20,
            max_tensor_elements: 64 << 20,
            max_total_bytes: 512 << 20,
            max_nodes: 20_000,
            max_rank: 8,
            max_depth: 10_000,
        }
    }
}

/// Facts about a model file that the graph itself does not keep.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelInfo {
    pub file_bytes: usize,
    pub ir_version: i64,
    pub opset: i64,
    pub producer: String,
    /// Op types and counts as stored in the file (before constant folding).
    pub op_counts: Vec<(String, usize)>,
    /// Every node as stored in the file, Constant nodes included, in file order.
    pub nodes: Vec<FileNode>,
}

/// A node as the file states it: its name (`{op_type}_{index}` when it has none), op type, and
/// the names of the values it reads and writes (an omitted optional input is skipped).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileNode {
    pub name: String,
    pub op_type: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

fn elem_type_name(t: i32) -> String {
    proto::tensor_proto::DataType::try_from(t)
        .map(|d| d.as_str_name().to_ascii_lowercase())
        .unwrap_or_else(|_| format!("type {t}"))
}

fn type_info(v: &proto::ValueInfoProto) -> Option<TypeInfo> {
    let ty = v.r#type.as_ref()?;
    match ty.value.as_ref()? {
        type_proto::Value::TensorType(t) => Some(TypeInfo {
            elem_type: elem_type_name(t.elem_type()),
            dims: t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as usize),
                        Some(proto::tensor_shape_proto::dimension::Value::DimParam(p)) => Dim::Symbolic(p.clone()),
                        _ => Dim::Symbolic(String::new()),
                    })
                    .collect()
            }),
        }),
        _ => None,
    }
}

/// Value of a `Constant` node as a tensor.
fn constant_value(node: &proto::NodeProto, limits: &Limits, budget: &mut usize) -> Result<Tensor> {
    let err = |m: &str| Error::node(node.name(), "Constant", m);
    let attr = node.attribute.first().ok_or_else(|| err("has no value attribute"))?;
    if node.attribute.len() != 1 {
        return Err(err("must have exactly one attribute"));
    }
    match attr.name() {
        "value" => {
            let t = attr.t.as_ref().ok_or_else(|| err("attribute 'value' holds no tensor"))?;
            super::tensor_from_proto(t, limits, budget)
        }
        "value_float" => Ok(Tensor::scalar_f32(attr.f())),
        "value_floats" => Tensor::f32(vec![attr.floats.len()], attr.floats.clone()),
        "value_int" => Tensor::i64(vec![], vec![attr.i()]),
        "value_ints" => Tensor::i64(vec![attr.ints.len()], attr.ints.clone()),
        "sparse_value" => Err(err("sparse constants are not supported")),
        other => Err(err(&format!("attribute '{other}' is not supported"))),
    }
}

/// Files people drop by mistake, recognised by their first bytes.
fn other_format(bytes: &[u8]) -> Option<&'static str> {
    const MAGIC: [(&[u8], usize, &str); 8] = [
        (b"\x89PNG", 0, "a PNG image"),
        (b"\xff\xd8\xff", 0, "a JPEG image"),
        (b"GIF8", 0, "a GIF image"),
        (b"\x1f\x8b", 0, "a gzip archive (decompress it first)"),
        (b"PK\x03\x04", 0, "a zip archive (a PyTorch .pt/.pth checkpoint or a zipped model; export it to ONNX first)"),
        (b"\x89HDF", 0, "a Keras/HDF5 model (convert it to ONNX first)"),
        (b"TFL3", 4, "a TensorFlow Lite model (convert it to ONNX first)"),
        (b"%PDF", 0, "a PDF document"),
    ];
    MAGIC.iter().find(|(m, at, _)| bytes.get(*at..at + m.len()) == Some(*m)).map(|&(_, _, what)| what)
}

/// A one-line decoding error: where (byte offset of the top-level field, the outermost fields of
/// prost's path) and what.
fn decode_error(bytes: &[u8], e: &prost::DecodeError) -> Error {
    let text = e.to_string();
    let text = text.strip_prefix("failed to decode Protobuf message: ").unwrap_or(&text);
    // prost writes "Msg.field: " for each enclosing field, innermost first, then what went wrong.
    let is_field = |p: &&str| p.contains('.') && !p.contains(' ');
    let mut parts: Vec<&str> = text.split(": ").take_while(is_field).collect();
    let what = text.split(": ").skip(parts.len()).collect::<Vec<_>>().join(": ");
    parts.reverse();
    let path = if parts.len() > 4 {
        format!("{} > {} > … ({} more) … > {}", parts[0], parts[1], parts.len() - 3, parts[parts.len() - 1])
    } else {
        parts.join(" > ")
    };
    let mut place = top_level_fault(bytes).map(|off| format!("at byte {off}")).unwrap_or_default();
    if !path.is_empty() {
        place = format!("{place} in {path}").trim_start().to_string();
    }
    Error::Decode(if place.is_empty() { what } else { format!("{place}: {what}") })
}

/// The byte offset of the first top-level protobuf field that is malformed or runs past the end of
/// the file (None when every top-level field is well framed and the fault is nested deeper).
fn top_level_fault(bytes: &[u8]) -> Option<usize> {
    fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*pos)?;
            *pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut pos = 0;
    while pos < bytes.len() {
        let start = pos;
        let ok = (|| {
            let tag = varint(bytes, &mut pos)?;
            if tag >> 3 == 0 {
                return None;
            }
            let skip = match tag & 7 {
                0 => varint(bytes, &mut pos).map(|_| 0)?,
                1 => 8,
                2 => usize::try_from(varint(bytes, &mut pos)?).ok()?,
                5 => 4,
                _ => return None,
            };
            pos = pos.checked_add(skip).filter(|&p| p <= bytes.len())?;
            Some(())
        })();
        if ok.is_none() {
            return Some(start);
        }
    }
    None
}

/// Decodes `bytes` as an ONNX model and builds a validated [`Graph`].
pub fn load_model(bytes: &[u8], limits: &Limits) -> Result<(Graph, ModelInfo)> {
    if bytes.is_empty() {
        return Err(Error::EmptyFile);
    }
    if bytes.len() > limits.max_file_bytes {
        return Err(Error::FileTooLarge { size: bytes.len(), limit: limits.max_file_bytes });
    }
    if let Some(kind) = other_format(bytes) {
        return Err(Error::WrongFormat(kind));
    }
    let model = ModelProto::decode(bytes).map_err(|e| decode_error(bytes, &e))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .map(|o| o.version())
        .ok_or(Error::NoOpset)?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(Error::UnsupportedOpset { version: opset });
    }
    let g = model.graph.as_ref().ok_or(Error::NoGraph)?;
    if g.node.is_empty() {
        return Err(Error::Graph("the graph has no nodes".into()));
    }
    if g.node.len() > limits.max_nodes {
        return Err(Error::Limit(format!("{} nodes, over the limit of {}", g.node.len(), limits.max_nodes)));
    }
    if !g.sparse_initializer.is_empty() {
        return Err(Error::tensor(g.sparse_initializer[0].values.as_ref().map(|t| t.name()).unwrap_or("<sparse>"), "is a sparse initializer; sparse tensors are not supported"));
    }

    let mut values: Vec<Value> = Vec::new();
    let mut consts: Vec<Option<Tensor>> = Vec::new();
    let mut ids: HashMap<String, ValueId> = HashMap::new();
    let mut budget = limits.max_total_bytes;

    let declared: HashMap<&str, &proto::ValueInfoProto> =
        g.input.iter().chain(&g.output).map(|v| (v.name(), v)).collect();
    let add_value = |name: &str,
                     values: &mut Vec<Value>,
                     consts: &mut Vec<Option<Tensor>>,
                     ids: &mut HashMap<String, ValueId>,
                     c: Option<Tensor>|
     -> ValueId {
        let id = values.len();
        values.push(Value { name: name.to_string(), ty: declared.get(name).and_then(|v| type_info(v)) });
        consts.push(c);
        ids.insert(name.to_string(), id);
        id
    };

    for t in &g.initializer {
        if t.name().is_empty() {
            return Err(Error::Graph("an initializer has no name".into()));
        }
        if ids.contains_key(t.name()) {
            return Err(Error::tensor(t.name(), "is defined by two initializers"));
        }
        let tensor = super::tensor_from_proto(t, limits, &mut budget)?;
        add_value(t.name(), &mut values, &mut consts, &mut ids, Some(tensor));
    }
    let mut inputs = Vec::new();
    for i in &g.input {
        if i.name().is_empty() {
            return Err(Error::Graph("a graph input has no name".into()));
        }
        if let Some(&id) = ids.get(i.name()) {
            if consts[id].is_some() {
                continue; // IR < 4: initializers are listed as inputs too
            }
            return Err(Error::Input { name: i.name().to_string(), msg: "is declared twice".into() });
        }
        let id = add_value(i.name(), &mut values, &mut consts, &mut ids, None);
        if let Some(TypeInfo { elem_type, .. }) = &values[id].ty {
            if elem_type != "float" {
                return Err(Error::Input { name: i.name().to_string(), msg: format!("has element type {elem_type}; qplay runs float32 inputs") });
            }
        }
        inputs.push(id);
    }
    if inputs.is_empty() {
        return Err(Error::Graph("the graph has no (non-constant) inputs".into()));
    }

    // Outputs of nodes; Constant nodes become constants right away.
    let mut producer: Vec<Option<usize>> = vec![None; values.len()];
    let mut raw_nodes: Vec<(&proto::NodeProto, Vec<ValueId>)> = Vec::new();
    for (ni, n) in g.node.iter().enumerate() {
        let label = if n.name().is_empty() { format!("#{ni}") } else { n.name().to_string() };
        let mut outs = Vec::new();
        for o in &n.output {
            if o.is_empty() {
                continue;
            }
            if ids.contains_key(o.as_str()) {
                return Err(Error::node(&label, n.op_type(), format!("output '{o}' is already defined by another node, initializer or input")));
            }
            let c = if n.op_type() == "Constant" && n.domain().is_empty() {
                let mut named = n.clone();
                named.name = Some(label.clone());
                Some(constant_value(&named, limits, &mut budget)?)
            } else {
                None
            };
            producer.push(if c.is_some() { None } else { Some(raw_nodes.len()) });
            let id = add_value(o, &mut values, &mut consts, &mut ids, c);
            outs.push(id);
        }
        if n.op_type() != "Constant" {
            raw_nodes.push((n, outs));
        }
    }

    // Resolve inputs and parse ops.
    let mut nodes: Vec<Node> = Vec::with_capacity(raw_nodes.len());
    let mut op_counts: Vec<(String, usize)> = Vec::new();
    for (ni, (n, outs)) in raw_nodes.iter().enumerate() {
        let name = if n.name().is_empty() { format!("{}_{ni}", n.op_type()) } else { n.name().to_string() };
        let mut node_inputs = Vec::with_capacity(n.input.len());
        for i in &n.input {
            if i.is_empty() {
                node_inputs.push(None);
                continue;
            }
            let id = *ids.get(i.as_str()).ok_or_else(|| {
                Error::node(&name, n.op_type(), format!("input '{i}' is not defined by any node, initializer or graph input"))
            })?;
            node_inputs.push(Some(id));
        }
        if outs.is_empty() {
            return Err(Error::node(&name, n.op_type(), "has no outputs"));
        }
        let mut named = (*n).clone();
        named.name = Some(name.clone());
        let op: Op = Op::parse(&named, opset)?;
        match op_counts.iter_mut().find(|(k, _)| k == n.op_type()) {
            Some((_, c)) => *c += 1,
            None => op_counts.push((n.op_type().to_string(), 1)),
        }
        nodes.push(Node { name, op_type: n.op_type().to_string(), op, inputs: node_inputs, outputs: outs.clone(), attrs: n.attribute.clone() });
    }

    let nodes = fuse_vector_clips(topo_sort(nodes, &producer, &consts, limits)?, &consts, outputs_named(g, &ids));

    let mut outputs = Vec::new();
    for o in &g.output {
        let id = *ids
            .get(o.name())
            .ok_or_else(|| Error::Graph(format!("graph output '{}' is not produced by any node", o.name())))?;
        outputs.push(id);
    }
    if outputs.is_empty() {
        return Err(Error::Graph("the graph has no outputs".into()));
    }

    let info = ModelInfo {
        file_bytes: bytes.len(),
        ir_version: model.ir_version(),
        opset,
        producer: format!("{} {}", model.producer_name(), model.producer_version()).trim().to_string(),
        op_counts,
        nodes: g
            .node
            .iter()
            .enumerate()
            .map(|(ni, n)| FileNode {
                name: if n.name().is_empty() { format!("{}_{ni}", n.op_type()) } else { n.name().to_string() },
                op_type: n.op_type().to_string(),
                inputs: n.input.iter().filter(|i| !i.is_empty()).cloned().collect(),
                outputs: n.output.iter().filter(|o| !o.is_empty()).cloned().collect(),
            })
            .collect(),
    };
    Ok((Graph { values, nodes, inputs, outputs, consts, opset }, info))
}

fn outputs_named(g: &proto::GraphProto, ids: &HashMap<String, ValueId>) -> Vec<ValueId> {
    g.output.iter().filter_map(|o| ids.get(o.name()).copied()).collect()
}

/// `Max(x, lo) -> Min(., hi)` with constant bounds of which one has several values (how qplay
/// exports a Clip with per-channel bounds, which ONNX's Clip cannot hold) becomes that Clip again.
fn fuse_vector_clips(mut nodes: Vec<Node>, consts: &[Option<Tensor>], outputs: Vec<ValueId>) -> Vec<Node> {
    let mut readers: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for &v in n.inputs.iter().flatten() {
            readers.entry(v).or_default().push(i);
        }
    }
    let konst = |n: &Node| n.inputs.get(1).copied().flatten().filter(|&v| consts[v].is_some());
    let mut fused = vec![false; nodes.len()];
    for i in 0..nodes.len() {
        let a = &nodes[i];
        let (Op::Binary(BinaryOp::Max), Some(lo), Some(&mid)) = (&a.op, konst(a), a.outputs.first()) else { continue };
        let Some(&[j]) = readers.get(&mid).map(Vec::as_slice) else { continue };
        let b = &nodes[j];
        let (Op::Binary(BinaryOp::Min), Some(hi)) = (&b.op, konst(b)) else { continue };
        let vector = [lo, hi].iter().any(|&v| consts[v].as_ref().is_some_and(|t| t.len() > 1));
        if b.inputs[0] != Some(mid) || outputs.contains(&mid) || !vector {
            continue;
        }
        let name = a.name.strip_suffix("/Max").unwrap_or(&a.name).to_string();
        let x = a.inputs[0];
        let clip = Node { name, op_type: "Clip".into(), op: Op::Clip { min: None, max: None }, inputs: vec![x, Some(lo), Some(hi)], outputs: b.outputs.clone(), attrs: vec![] };
        nodes[j] = clip;
        fused[i] = true;
    }
    nodes.into_iter().zip(fused).filter(|(_, f)| !f).map(|(n, _)| n).collect()
}

/// Kahn's algorithm over node dependencies; reports a cycle by naming a node on it.
fn topo_sort(nodes: Vec<Node>, producer: &[Option<usize>], consts: &[Option<Tensor>], limits: &Limits) -> Result<Vec<Node>> {
    let n = nodes.len();
    let mut indeg = vec![0usize; n];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in nodes.iter().enumerate() {
        for id in node.inputs.iter().flatten() {
            if consts[*id].is_some() {
                continue;
            }
            if let Some(p) = producer[*id] {
                indeg[i] += 1;
                users[p].push(i);
            }
        }
    }
    let mut depth = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    ready.reverse();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop() {
        order.push(i);
        if depth[i] > limits.max_depth {
            return Err(Error::Limit(format!("graph depth over {} at node '{}'", limits.max_depth, nodes[i].name)));
        }
        for &u in users[i].iter().rev() {
            depth[u] = depth[u].max(depth[i] + 1);
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.push(u);
            }
        }
    }
    if order.len() != n {
        let stuck = (0..n).find(|&i| indeg[i] > 0).map(|i| nodes[i].name.clone()).unwrap_or_default();
        return Err(Error::Graph(format!("the graph has a cycle through node '{stuck}'")));
    }
    let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}
