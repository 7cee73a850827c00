//! DONNA's block-wise search space (Moons et al., ICCV 2021): a model cut into a stem, N blocks
//! with fixed strides and channel counts at their edges, and a head. Each block is a choice of
//! kernel, expansion, depth, squeeze-excitation, activation and width; a choice builds as a
//! stack of inverted-residual layers (1x1 expansion, depthwise k×k, optional SE, 1x1 projection,
//! a residual where shapes allow). Parts build as separate graphs (a block alone is what
//! blockwise distillation trains) and [`stitch`] joins them into one model. [`bkd`] builds the
//! block library by blockwise distillation from a reference.

pub mod arch;
pub mod bkd;
pub mod evolve;
pub mod latency;
pub mod pipeline;

use crate::error::{Error, Result};
use crate::graph::{Dim, Graph, Node, Op, TypeInfo, ValueId};
use crate::onnx::{attr, proto::AttributeProto, proto::NodeProto};
use crate::rng::SplitMix;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    Relu,
    Relu6,
    Hswish,
}

pub const KERNELS: [usize; 2] = [3, 5];
pub const EXPANSIONS: [usize; 5] = [1, 2, 3, 4, 6];
pub const DEPTHS: [usize; 3] = [1, 2, 3];
pub const ACTS: [Act; 3] = [Act::Relu, Act::Relu6, Act::Hswish];
/// Width multipliers, in percent, of the channels a block passes between its layers (a share of
/// its output channels; a block of depth 1 has none, so its width changes nothing).
pub const WIDTHS: [usize; 2] = [50, 100];

/// One block's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockChoice {
    pub kernel: usize,
    pub expand: usize,
    pub depth: usize,
    pub se: bool,
    pub act: Act,
    /// Percent.
    pub width: usize,
}

impl BlockChoice {
    /// Choices per block: 2 kernels × 5 expansions × 3 depths × SE or not × 3 activations × 2
    /// widths (300 distinct blocks: at depth 1 the width changes nothing).
    pub const COUNT: usize = 360;

    /// The choice of mixed-radix index `i` (kernel slowest, width fastest), `i < COUNT`.
    pub fn from_index(i: usize) -> BlockChoice {
        let w = i % 2;
        let a = i / 2 % 3;
        let s = i / 6 % 2;
        let d = i / 12 % 3;
        let e = i / 36 % 5;
        let k = i / 180 % 2;
        BlockChoice { kernel: KERNELS[k], expand: EXPANSIONS[e], depth: DEPTHS[d], se: s == 1, act: ACTS[a], width: WIDTHS[w] }
    }

    /// The index of this choice, or None when a field is outside the space.
    pub fn index(&self) -> Option<usize> {
        let pos = |v: usize, list: &[usize]| list.iter().position(|&x| x == v);
        let (k, e, d) = (pos(self.kernel, &KERNELS)?, pos(self.expand, &EXPANSIONS)?, pos(self.depth, &DEPTHS)?);
        let (a, w) = (ACTS.iter().position(|&x| x == self.act)?, pos(self.width, &WIDTHS)?);
        Some(((((k * 5 + e) * 3 + d) * 2 + self.se as usize) * 3 + a) * 2 + w)
    }

    /// The largest choice (the reference's).
    pub fn largest() -> BlockChoice {
        BlockChoice { kernel: 5, expand: 6, depth: 3, se: true, act: Act::Hswish, width: 100 }
    }

    /// A short label, e.g. `k5 e6 d3 se hswish w100`.
    pub fn label(&self) -> String {
        format!("k{} e{} d{}{} {} w{}", self.kernel, self.expand, self.depth, if self.se { " se" } else { "" }, serde_json::to_value(self.act).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(), self.width)
    }

    /// The same block with the width that changes nothing (depth 1) set to 100: choices with
    /// equal canonical forms build the same block.
    pub fn canonical(&self) -> BlockChoice {
        BlockChoice { width: if self.depth == 1 { 100 } else { self.width }, ..*self }
    }

    /// Channels in and out of each layer of a block from `cin` to `cout`: the layers between
    /// pass `width` percent of `cout` (at least 4).
    pub fn layer_channels(&self, cin: usize, cout: usize) -> Vec<(usize, usize)> {
        let mid = ((cout * self.width) as f64 / 100.0).round().max(4.0) as usize;
        (0..self.depth).map(|l| (if l == 0 { cin } else { mid }, if l + 1 == self.depth { cout } else { mid })).collect()
    }
}

/// A block's edges: channels in and out, and the stride of its first layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub in_ch: usize,
    pub out_ch: usize,
    pub stride: usize,
}

/// A search space: the input, the stem's channels, the blocks' edges and the classes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    /// Channels, height, width of one sample.
    pub input: [usize; 3],
    pub stem_ch: usize,
    pub slots: Vec<Slot>,
    pub classes: usize,
}

impl Spec {
    /// The 8×8 digits space: a 3x3 stem to 16 channels, blocks 16→24 (stride 1, 8×8), 24→40
    /// (stride 2, 4×4) and 40→64 (stride 2, 2×2), then global pooling and 10 classes.
    pub fn digits() -> Spec {
        let slot = |in_ch, out_ch, stride| Slot { in_ch, out_ch, stride };
        Spec { name: "digits".into(), input: [1, 8, 8], stem_ch: 16, slots: vec![slot(16, 24, 1), slot(24, 40, 2), slot(40, 64, 2)], classes: 10 }
    }

    /// The number of architectures: 360 to the power of the block count (saturating).
    pub fn size(&self) -> u128 {
        (0..self.slots.len()).fold(1u128, |a, _| a.saturating_mul(BlockChoice::COUNT as u128))
    }

    /// The input shape `[channels, height, width]` of block `n` (n = the block count: the head).
    pub fn block_input(&self, n: usize) -> [usize; 3] {
        let (mut h, mut w) = (self.input[1], self.input[2]);
        for s in &self.slots[..n] {
            (h, w) = (h.div_ceil(s.stride), w.div_ceil(s.stride));
        }
        let c = if n == 0 { self.stem_ch } else { self.slots[n - 1].out_ch };
        [c, h, w]
    }

    fn check(&self) -> Result<()> {
        let mut c = self.stem_ch;
        for (n, s) in self.slots.iter().enumerate() {
            if s.in_ch != c || s.out_ch == 0 || !(1..=2).contains(&s.stride) {
                return Err(Error::Input { name: format!("block {n}"), msg: format!("edges {}→{} stride {} do not follow channel {c}", s.in_ch, s.out_ch, s.stride) });
            }
            c = s.out_ch;
        }
        Ok(())
    }
}

/// Builds one part's graph: one float input `[N, c, h, w]`, nodes added in order, weights drawn
/// (He-uniform, biases zero) from a seeded generator.
struct Builder {
    g: Graph,
    rng: SplitMix,
}

impl Builder {
    fn new(input: &str, shape: [usize; 3], seed: u64) -> (Builder, ValueId) {
        let mut g = Graph { values: Vec::new(), nodes: Vec::new(), inputs: Vec::new(), outputs: Vec::new(), consts: Vec::new(), opset: 14 };
        let x = g.add_value(input, None);
        let dims = std::iter::once(Dim::Symbolic("N".into())).chain(shape.iter().map(|&d| Dim::Fixed(d))).collect();
        g.values[x].ty = Some(TypeInfo { elem_type: "float".into(), dims: Some(dims) });
        g.inputs.push(x);
        (Builder { g, rng: SplitMix(seed) }, x)
    }

    fn konst(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) -> Result<ValueId> {
        Ok(self.g.add_value(name, Some(Tensor::f32(shape, data)?)))
    }

    fn node(&mut self, op_type: &str, name: &str, inputs: &[ValueId], attrs: Vec<AttributeProto>) -> Result<ValueId> {
        let y = self.g.add_value(name, None);
        let proto = NodeProto { name: Some(name.into()), op_type: Some(op_type.into()), attribute: attrs.clone(), ..Default::default() };
        let op = Op::parse(&proto, self.g.opset)?;
        self.g.nodes.push(Node { name: name.into(), op_type: op_type.into(), op, inputs: inputs.iter().map(|&i| Some(i)).collect(), outputs: vec![y], attrs });
        Ok(y)
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(&mut self, name: &str, x: ValueId, cin: usize, cout: usize, k: usize, stride: usize, group: usize) -> Result<ValueId> {
        let fan_in = cin / group * k * k;
        let bound = (6.0 / fan_in as f32).sqrt();
        let w = self.rng.f32s(cout * fan_in).into_iter().map(|v| v * bound).collect();
        let w = self.konst(&format!("{name}.weight"), vec![cout, cin / group, k, k], w)?;
        let b = self.konst(&format!("{name}.bias"), vec![cout], vec![0.0; cout])?;
        let p = (k / 2) as i64;
        let attrs = vec![attr::ints("kernel_shape", &[k as i64; 2]), attr::ints("strides", &[stride as i64; 2]), attr::ints("pads", &[p; 4]), attr::int("group", group as i64)];
        self.node("Conv", name, &[x, w, b], attrs)
    }

    fn act(&mut self, name: &str, x: ValueId, act: Act) -> Result<ValueId> {
        match act {
            Act::Relu => self.node("Relu", name, &[x], vec![]),
            Act::Relu6 => {
                let lo = self.konst(&format!("{name}.min"), vec![], vec![0.0])?;
                let hi = self.konst(&format!("{name}.max"), vec![], vec![6.0])?;
                self.node("Clip", name, &[x, lo, hi], vec![])
            }
            Act::Hswish => self.node("HardSwish", name, &[x], vec![]),
        }
    }

    /// Squeeze-excitation: x · hardsigmoid(W₂ relu(W₁ mean(x))), a quarter of the channels inside.
    fn se(&mut self, name: &str, x: ValueId, c: usize) -> Result<ValueId> {
        let r = (c / 4).max(4);
        let p = self.node("GlobalAveragePool", &format!("{name}.pool"), &[x], vec![])?;
        let a = self.conv(&format!("{name}.reduce"), p, c, r, 1, 1, 1)?;
        let a = self.node("Relu", &format!("{name}.relu"), &[a], vec![])?;
        let s = self.conv(&format!("{name}.expand"), a, r, c, 1, 1, 1)?;
        let s = self.node("HardSigmoid", &format!("{name}.gate"), &[s], vec![attr::float("alpha", 1.0 / 6.0), attr::float("beta", 0.5)])?;
        self.node("Mul", &format!("{name}.scale"), &[x, s], vec![])
    }

    /// Ends the part at `y`.
    fn finish(mut self, y: ValueId) -> Result<Graph> {
        self.g.outputs.push(y);
        canonical(self.g)
    }
}

/// The stem: a 3x3 convolution to `stem_ch` channels and ReLU.
pub fn stem(spec: &Spec, seed: u64) -> Result<Graph> {
    spec.check()?;
    let (mut b, x) = Builder::new("input", spec.input, seed);
    let y = b.conv("stem.conv", x, spec.input[0], spec.stem_ch, 3, 1, 1)?;
    let y = b.act("stem.act", y, Act::Relu)?;
    b.finish(y)
}

/// Block `n` at `choice`, alone: input `b{n}.input`, output `b{n}.output`.
pub fn block(spec: &Spec, n: usize, choice: &BlockChoice, seed: u64) -> Result<Graph> {
    spec.check()?;
    if choice.index().is_none() {
        return Err(Error::Input { name: format!("block {n}"), msg: format!("{choice:?} is outside the search space") });
    }
    let slot = *spec.slots.get(n).ok_or_else(|| Error::Input { name: format!("block {n}"), msg: format!("the space has {} blocks", spec.slots.len()) })?;
    let (mut b, mut x) = Builder::new(&format!("b{n}.input"), spec.block_input(n), seed);
    for (l, (cin, cout)) in choice.layer_channels(slot.in_ch, slot.out_ch).into_iter().enumerate() {
        let stride = if l == 0 { slot.stride } else { 1 };
        let p = format!("b{n}.l{l}");
        let hidden = cin * choice.expand;
        let mut h = x;
        if hidden != cin {
            h = b.conv(&format!("{p}.expand"), h, cin, hidden, 1, 1, 1)?;
            h = b.act(&format!("{p}.expand_act"), h, choice.act)?;
        }
        h = b.conv(&format!("{p}.dw"), h, hidden, hidden, choice.kernel, stride, hidden)?;
        h = b.act(&format!("{p}.dw_act"), h, choice.act)?;
        if choice.se {
            h = b.se(&format!("{p}.se"), h, hidden)?;
        }
        h = b.conv(&format!("{p}.project"), h, hidden, cout, 1, 1, 1)?;
        if stride == 1 && cin == cout {
            h = b.node("Add", &format!("{p}.residual"), &[x, h], vec![])?;
        }
        x = h;
    }
    let y = b.node("Identity", &format!("b{n}.output"), &[x], vec![])?;
    b.finish(y)
}

/// The head: global average pooling and a fully connected layer to the classes (logits).
pub fn head(spec: &Spec, seed: u64) -> Result<Graph> {
    spec.check()?;
    let [c, ..] = spec.block_input(spec.slots.len());
    let (mut b, x) = Builder::new("head.input", spec.block_input(spec.slots.len()), seed);
    let p = b.node("GlobalAveragePool", "head.pool", &[x], vec![])?;
    let f = b.node("Flatten", "head.flatten", &[p], vec![attr::int("axis", 1)])?;
    let bound = (6.0 / c as f32).sqrt();
    let w = b.rng.f32s(spec.classes * c).into_iter().map(|v| v * bound).collect();
    let w = b.konst("head.fc.weight", vec![spec.classes, c], w)?;
    let bias = b.konst("head.fc.bias", vec![spec.classes], vec![0.0; spec.classes])?;
    let y = b.node("Gemm", "logits", &[f, w, bias], vec![attr::int("transB", 1)])?;
    b.finish(y)
}

/// Joins parts in sequence: each part's single output feeds the next part's single input. The
/// parts' value names must not collide (each part names its values by its own prefix).
pub fn stitch(parts: &[Graph]) -> Result<Graph> {
    let first = parts.first().ok_or_else(|| Error::Graph("nothing to stitch".into()))?;
    let mut g = Graph { values: Vec::new(), nodes: Vec::new(), inputs: Vec::new(), outputs: Vec::new(), consts: Vec::new(), opset: first.opset };
    let mut carried: Option<ValueId> = None;
    for (i, part) in parts.iter().enumerate() {
        let ([input], [output]) = (&part.inputs[..], &part.outputs[..]) else {
            return Err(Error::Graph(format!("part {i} needs exactly one input and one output to be stitched")));
        };
        let mut map = vec![usize::MAX; part.values.len()];
        for (id, v) in part.values.iter().enumerate() {
            if id == *input && carried.is_some() {
                map[id] = carried.unwrap_or_default();
                continue;
            }
            if g.find_value(&v.name).is_some() {
                return Err(Error::Graph(format!("part {i}: the value name '{}' is taken by an earlier part", v.name)));
            }
            map[id] = g.add_value(&v.name, part.consts[id].clone());
            g.values[map[id]].ty = v.ty.clone();
        }
        if carried.is_none() {
            g.inputs.push(map[*input]);
        }
        for n in &part.nodes {
            let mut n = n.clone();
            n.inputs.iter_mut().flatten().for_each(|v| *v = map[*v]);
            n.outputs.iter_mut().for_each(|v| *v = map[*v]);
            g.nodes.push(n);
        }
        carried = Some(map[*output]);
    }
    g.outputs.push(carried.unwrap_or_default());
    canonical(g)
}

/// `g` with its output's type declared (float, `[N, …]` from shape inference), checked by a
/// round trip through ONNX (what the loader accepts).
fn canonical(mut g: Graph) -> Result<Graph> {
    let (shapes, _) = crate::cost::analyze(&g, &[], &crate::Limits::default())?;
    let y = g.outputs[0];
    let dims = crate::cost::shape_of(&shapes, y).ok_or_else(|| Error::Graph("the output's shape is unknown".into()))?;
    let dims = std::iter::once(Dim::Symbolic("N".into())).chain(dims[1..].iter().map(|&d| Dim::Fixed(d))).collect();
    g.values[y].ty = Some(TypeInfo { elem_type: "float".into(), dims: Some(dims) });
    let bytes = crate::onnx::export::fp32_model(&g)?;
    Ok(crate::onnx::load_model(&bytes, &crate::Limits::default())?.0)
}

/// `per_block` distinct blocks for each block of the space (all 300 when it asks for more): the
/// largest (the reference's) and the smallest, then a seeded uniform draw.
pub fn sample_choices(spec: &Spec, per_block: usize, seed: u64) -> Vec<Vec<BlockChoice>> {
    let mut rng = SplitMix(seed ^ 0x424c_4f43);
    let distinct: Vec<BlockChoice> = (0..BlockChoice::COUNT).map(BlockChoice::from_index).filter(|c| c.canonical() == *c).collect();
    (0..spec.slots.len())
        .map(|_| {
            let mut pool = distinct.clone();
            let mut out = vec![pool.pop().unwrap_or_else(BlockChoice::largest), pool.remove(0)];
            out.truncate(per_block);
            while out.len() < per_block && !pool.is_empty() {
                out.push(pool.swap_remove(rng.below(pool.len())));
            }
            out
        })
        .collect()
}

/// The parts of the architecture `choices` (stem, blocks, head) with the weights of `model`,
/// a model built by [`architecture`] with the same choices (weights matched by name).
pub fn parts_of(spec: &Spec, choices: &[BlockChoice], model: &Graph) -> Result<Vec<Graph>> {
    let mut parts = vec![stem(spec, 0)?];
    for (n, c) in choices.iter().enumerate() {
        parts.push(block(spec, n, c, 0)?);
    }
    parts.push(head(spec, 0)?);
    for part in &mut parts {
        for id in 0..part.values.len() {
            let Some(t) = &part.consts[id] else { continue };
            let name = &part.values[id].name;
            let src = model.find_value(name).and_then(|v| model.consts[v].as_ref()).filter(|s| s.shape() == t.shape());
            part.consts[id] = Some(src.ok_or_else(|| Error::Graph(format!("the model has no weight '{name}' of shape {:?}: it is not this architecture", t.shape())))?.clone());
        }
    }
    Ok(parts)
}

/// A whole architecture, freshly initialised: the stem, one block per choice, the head.
pub fn architecture(spec: &Spec, choices: &[BlockChoice], seed: u64) -> Result<Graph> {
    if choices.len() != spec.slots.len() {
        return Err(Error::Input { name: "architecture".into(), msg: format!("{} block choices for a space of {} blocks", choices.len(), spec.slots.len()) });
    }
    let mut parts = vec![stem(spec, seed)?];
    for (n, c) in choices.iter().enumerate() {
        parts.push(block(spec, n, c, seed.wrapping_add(n as u64 + 1))?);
    }
    parts.push(head(spec, seed.wrapping_add(1000))?);
    stitch(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_enumerate_the_space_once() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..BlockChoice::COUNT {
            let c = BlockChoice::from_index(i);
            assert_eq!(c.index(), Some(i));
            assert!(seen.insert(c));
        }
        assert_eq!(BlockChoice::largest().index(), Some(BlockChoice::COUNT - 1));
        assert_eq!(BlockChoice { kernel: 7, ..BlockChoice::largest() }.index(), None);
        assert_eq!(Spec::digits().size(), 46_656_000);
        let distinct: std::collections::HashSet<BlockChoice> = (0..BlockChoice::COUNT).map(|i| BlockChoice::from_index(i).canonical()).collect();
        assert_eq!(distinct.len(), 300);
        let s = sample_choices(&Spec::digits(), 10, 1);
        assert!(s.iter().all(|b| b.len() == 10 && b[0] == BlockChoice::largest() && b[1].index() == Some(1)));
        assert!(s.iter().all(|b| b.iter().collect::<std::collections::HashSet<_>>().len() == 10));
        assert!(sample_choices(&Spec::digits(), 1000, 1).iter().all(|b| b.len() == 300));
        assert_eq!(BlockChoice::largest().label(), "k5 e6 d3 se hswish w100");
    }
}
