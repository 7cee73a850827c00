//! Spatial SVD and weight SVD: a layer's weight replaced by a rank-r product, as two layers.
//!
//! - **Spatial SVD** (Jaderberg et al. 2014; AIMET `SpatialSvdModuleSplitter`): W (Cout, Cin, kh,
//!   kw) reshaped to (Cin·kh) × (Cout·kw), truncated to rank r, becomes a kh×1 conv Cin→r (stride
//!   (sh, 1), pads (ph, 0), no bias) then a 1×kw conv r→Cout (stride (1, sw), pads (0, pw), the
//!   bias). AIMET's cost: (Cin·r·kh·sw + r·Cout·kw)·Ho·Wo, max rank min(Cin·kh, Cout·kw).
//! - **Weight SVD** (AIMET `WeightSvdModuleSplitter`): a conv's W as Cin × (Cout·kh·kw) becomes a
//!   1×1 conv Cin→r then the kh×kw conv r→Cout with the original stride, pads and bias; AIMET's
//!   cost (Cin·r·sh·sw + r·Cout·kh·kw)·Ho·Wo, max rank Cin. Gemm and MatMul with a constant
//!   K × N weight become two products through r.
//!
//! The SVD of each layer is computed once ([`SvdLayer::new`]); every candidate rank only truncates
//! it. The singular values are split evenly between the two factors (`U√s`, `√s·Vt`).

use crate::cost::{node_macs, shape_of};
use crate::error::{Error, Result};
use crate::graph::{AutoPad, Graph, Node, Op, Window};
use crate::linalg::{svd, Svd};
use crate::onnx::attr;
use crate::tensor::Tensor;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SvdKind {
    Spatial,
    Weight,
}

/// The layer shapes the SVD and its cost need.
#[derive(Debug, Clone)]
enum Layout {
    Conv { cin: usize, cout: usize, k: [usize; 2], strides: [usize; 2], dilations: [usize; 2], pads: [usize; 4], batch: usize, in_hw: [usize; 2], out_hw: [usize; 2] },
    /// y = alpha·op(A)·B' + beta·C with B' (k × n) = op(B); `rows` = the product's M (times any
    /// batch dims of a MatMul).
    Product { k: usize, n: usize, rows: usize, gemm: Option<(f32, f32, bool)> },
}

/// One layer of a graph, ready to be split at any rank.
#[derive(Debug, Clone)]
pub struct SvdLayer {
    pub node: String,
    pub kind: SvdKind,
    layout: Layout,
    svd: Svd,
    /// The layer's MACs as it is.
    pub macs: u64,
}

fn conv_layout(g: &Graph, n: &Node, shapes: &[Option<Vec<usize>>], window: &Window) -> Option<Layout> {
    let x = shape_of(shapes, n.inputs.first().copied().flatten()?)?;
    let w = g.consts[n.inputs.get(1).copied().flatten()?].as_ref()?;
    let y = shape_of(shapes, *n.outputs.first()?)?;
    if x.len() != 4 || w.rank() != 4 || y.len() != 4 || w.as_f32().is_none() {
        return None;
    }
    let s = w.shape();
    let pads = crate::exec::resolve_pads(window, [x[2], x[3]], [s[2], s[3]]);
    Some(Layout::Conv { cin: s[1], cout: s[0], k: [s[2], s[3]], strides: window.strides, dilations: window.dilations, pads, batch: x[0], in_hw: [x[2], x[3]], out_hw: [y[2], y[3]] })
}

impl SvdLayer {
    /// Prepares node `ni` of `g` for `kind`, or None when the method does not apply to it: spatial
    /// SVD takes an ungrouped, undilated 2-D Conv with a constant weight; weight SVD also takes a
    /// dilated one, and a Gemm or MatMul whose second input is a constant matrix.
    pub fn new(g: &Graph, ni: usize, shapes: &[Option<Vec<usize>>], kind: SvdKind) -> Option<SvdLayer> {
        let n = &g.nodes[ni];
        let layout = match &n.op {
            Op::Conv { window, group: 1 } => {
                let l = conv_layout(g, n, shapes, window)?;
                if let Layout::Conv { dilations, .. } = &l {
                    if kind == SvdKind::Spatial && *dilations != [1, 1] {
                        return None;
                    }
                }
                l
            }
            Op::Gemm { alpha, beta, trans_b, .. } if kind == SvdKind::Weight => {
                let b = g.consts[n.inputs.get(1).copied().flatten()?].as_ref()?;
                let y = shape_of(shapes, *n.outputs.first()?)?;
                if b.rank() != 2 || y.len() != 2 || b.as_f32().is_none() {
                    return None;
                }
                let (k, nn) = if *trans_b { (b.shape()[1], b.shape()[0]) } else { (b.shape()[0], b.shape()[1]) };
                Layout::Product { k, n: nn, rows: y[0], gemm: Some((*alpha, *beta, *trans_b)) }
            }
            Op::MatMul if kind == SvdKind::Weight => {
                let b = g.consts[n.inputs.get(1).copied().flatten()?].as_ref()?;
                let y = shape_of(shapes, *n.outputs.first()?)?;
                if b.rank() != 2 || y.len() < 2 || b.as_f32().is_none() {
                    return None;
                }
                let rows = y[..y.len() - 1].iter().product();
                Layout::Product { k: b.shape()[0], n: b.shape()[1], rows, gemm: None }
            }
            _ => return None,
        };
        let w = g.consts[n.inputs[1]?].as_ref()?.as_f32()?;
        let (a, rows, cols) = matrix(&layout, kind, w);
        if rows == 0 || cols == 0 {
            return None;
        }
        Some(SvdLayer { node: n.name.clone(), kind, svd: svd(&a, rows, cols), macs: node_macs(n, shapes), layout })
    }

    /// The largest useful rank: min(rows, cols) of the factorized matrix.
    pub fn max_rank(&self) -> usize {
        self.svd.s.len()
    }

    /// AIMET's cost of the split layer at rank `r` (its `calculate_cost_given_rank`, MACs).
    pub fn aimet_cost(&self, r: usize) -> u64 {
        let r = r as u64;
        match (&self.layout, self.kind) {
            (Layout::Conv { cin, cout, k, strides, out_hw, .. }, SvdKind::Spatial) => (*cin as u64 * r * k[0] as u64 * strides[1] as u64 + r * *cout as u64 * k[1] as u64) * (out_hw[0] * out_hw[1]) as u64,
            (Layout::Conv { cin, cout, k, strides, out_hw, .. }, SvdKind::Weight) => (*cin as u64 * r * (strides[0] * strides[1]) as u64 + r * *cout as u64 * (k[0] * k[1]) as u64) * (out_hw[0] * out_hw[1]) as u64,
            (Layout::Product { k, n, .. }, _) => (*k as u64 + *n as u64) * r,
        }
    }

    /// AIMET's cost of the layer as it is (`compute_layer_cost`: prod(weight shape) · Ho · Wo).
    pub fn aimet_base_cost(&self) -> u64 {
        match &self.layout {
            Layout::Conv { cin, cout, k, out_hw, .. } => (cin * cout * k[0] * k[1] * out_hw[0] * out_hw[1]) as u64,
            Layout::Product { k, n, .. } => (k * n) as u64,
        }
    }

    /// The rank for compression ratio `ratio` as AIMET picks it (`calculate_rank_given_comp_ratio`):
    /// the largest rank, scanning down from the max, whose cost is at most `ratio` times the
    /// layer's, at least 1; then rounded up to a multiple of `multiple`, capped at the max.
    pub fn rank_for_ratio(&self, ratio: f64, multiple: usize) -> usize {
        let target = ratio * self.aimet_base_cost() as f64;
        let mut r = self.max_rank();
        while r > 1 && self.aimet_cost(r) as f64 > target {
            r -= 1;
        }
        let m = multiple.max(1);
        (r.div_ceil(m) * m).min(self.max_rank())
    }

    /// The MACs of the two layers at rank `r`, counted on their real output shapes (the first
    /// spatial-SVD conv runs at the input's width, the first weight-SVD conv at its resolution).
    pub fn macs_at(&self, r: usize) -> u64 {
        let r = r as u64;
        match (&self.layout, self.kind) {
            (Layout::Conv { cin, cout, k, batch, in_hw, out_hw, .. }, SvdKind::Spatial) => *batch as u64 * (r * *cin as u64 * k[0] as u64 * (out_hw[0] * in_hw[1]) as u64 + *cout as u64 * r * k[1] as u64 * (out_hw[0] * out_hw[1]) as u64),
            (Layout::Conv { cin, cout, k, batch, in_hw, out_hw, .. }, SvdKind::Weight) => *batch as u64 * (r * *cin as u64 * (in_hw[0] * in_hw[1]) as u64 + *cout as u64 * r * (k[0] * k[1] * out_hw[0] * out_hw[1]) as u64),
            (Layout::Product { k, n, rows, .. }, _) => *rows as u64 * r * (*k as u64 + *n as u64),
        }
    }

    /// Replaces the layer in `g` by its rank-`r` split: nodes `<name>.0` and `<name>.1`, the second
    /// one writing the original output.
    pub fn apply(&self, g: &mut Graph, r: usize) -> Result<()> {
        let ni = g.nodes.iter().position(|n| n.name == self.node).ok_or_else(|| Error::Graph(format!("no node '{}' to split", self.node)))?;
        let r = r.clamp(1, self.max_rank());
        let (l, rt) = self.svd.factors(r);
        let orig = g.nodes[ni].clone();
        let x = orig.inputs[0];
        let bias = orig.inputs.get(2).copied().flatten();
        let mid = g.add_value(&format!("{}.0_out", orig.name), None);
        let (rows, cols) = (self.svd.rows, self.svd.cols);
        let (first, second) = match (&self.layout, self.kind) {
            (Layout::Conv { cin, cout, k, strides, pads, .. }, SvdKind::Spatial) => {
                // L[(c, y), j] -> W1[j, c, y, 0]; R[j, (o, x)] -> W2[o, j, 0, x].
                let mut w1 = vec![0f32; r * rows];
                for i in 0..rows {
                    for j in 0..r {
                        w1[j * rows + i] = l[i * r + j] as f32;
                    }
                }
                let mut w2 = vec![0f32; cout * r * k[1]];
                for j in 0..r {
                    for o in 0..*cout {
                        for xk in 0..k[1] {
                            w2[(o * r + j) * k[1] + xk] = rt[j * cols + o * k[1] + xk] as f32;
                        }
                    }
                }
                let w1 = g.add_value(&format!("{}.0.weight", orig.name), Some(Tensor::f32(vec![r, *cin, k[0], 1], w1)?));
                let w2 = g.add_value(&format!("{}.1.weight", orig.name), Some(Tensor::f32(vec![*cout, r, 1, k[1]], w2)?));
                (
                    conv_node(&orig.name, ".0", x, w1, None, mid, [k[0], 1], [strides[0], 1], [1, 1], [pads[0], 0, pads[2], 0]),
                    conv_node(&orig.name, ".1", Some(mid), w2, bias, orig.outputs[0], [1, k[1]], [1, strides[1]], [1, 1], [0, pads[1], 0, pads[3]]),
                )
            }
            (Layout::Conv { cin, cout, k, strides, dilations, pads, .. }, SvdKind::Weight) => {
                // L[c, j] -> Wa[j, c, 0, 0]; R[j, (o, y, x)] -> Wb[o, j, y, x].
                let mut wa = vec![0f32; r * cin];
                for c in 0..*cin {
                    for j in 0..r {
                        wa[j * cin + c] = l[c * r + j] as f32;
                    }
                }
                let kk = k[0] * k[1];
                let mut wb = vec![0f32; cout * r * kk];
                for j in 0..r {
                    for o in 0..*cout {
                        for t in 0..kk {
                            wb[(o * r + j) * kk + t] = rt[j * cols + o * kk + t] as f32;
                        }
                    }
                }
                let wa = g.add_value(&format!("{}.0.weight", orig.name), Some(Tensor::f32(vec![r, *cin, 1, 1], wa)?));
                let wb = g.add_value(&format!("{}.1.weight", orig.name), Some(Tensor::f32(vec![*cout, r, k[0], k[1]], wb)?));
                (
                    conv_node(&orig.name, ".0", x, wa, None, mid, [1, 1], [1, 1], [1, 1], [0; 4]),
                    conv_node(&orig.name, ".1", Some(mid), wb, bias, orig.outputs[0], *k, *strides, *dilations, *pads),
                )
            }
            (Layout::Product { k, n, gemm, .. }, _) => {
                let pf = g.add_value(&format!("{}.0.weight", orig.name), Some(Tensor::f32(vec![*k, r], l.iter().map(|&v| v as f32).collect())?));
                let qf = g.add_value(&format!("{}.1.weight", orig.name), Some(Tensor::f32(vec![r, *n], rt.iter().map(|&v| v as f32).collect())?));
                match gemm {
                    Some((alpha, beta, _)) => {
                        let Op::Gemm { trans_a, .. } = orig.op else { unreachable!("a Gemm layout comes from a Gemm") };
                        (
                            gemm_node(&orig.name, ".0", x, pf, None, mid, *alpha, 1.0, trans_a),
                            gemm_node(&orig.name, ".1", Some(mid), qf, bias, orig.outputs[0], 1.0, *beta, false),
                        )
                    }
                    None => (matmul_node(&orig.name, ".0", x, pf, mid), matmul_node(&orig.name, ".1", Some(mid), qf, orig.outputs[0])),
                }
            }
        };
        g.nodes.splice(ni..=ni, [first, second]);
        Ok(())
    }
}

/// The matrix to factorize, row-major, with its rows and columns.
fn matrix(layout: &Layout, kind: SvdKind, w: &[f32]) -> (Vec<f64>, usize, usize) {
    match (layout, kind) {
        (Layout::Conv { cin, cout, k, .. }, SvdKind::Spatial) => {
            // A[(c, y), (o, x)] = W[o, c, y, x]
            let (rows, cols) = (cin * k[0], cout * k[1]);
            let mut a = vec![0.0; rows * cols];
            for o in 0..*cout {
                for c in 0..*cin {
                    for y in 0..k[0] {
                        for x in 0..k[1] {
                            a[(c * k[0] + y) * cols + o * k[1] + x] = w[((o * cin + c) * k[0] + y) * k[1] + x] as f64;
                        }
                    }
                }
            }
            (a, rows, cols)
        }
        (Layout::Conv { cin, cout, k, .. }, SvdKind::Weight) => {
            // A[c, (o, y, x)] = W[o, c, y, x]
            let kk = k[0] * k[1];
            let cols = cout * kk;
            let mut a = vec![0.0; cin * cols];
            for o in 0..*cout {
                for c in 0..*cin {
                    for t in 0..kk {
                        a[c * cols + o * kk + t] = w[(o * cin + c) * kk + t] as f64;
                    }
                }
            }
            (a, *cin, cols)
        }
        (Layout::Product { k, n, gemm, .. }, _) => {
            let trans_b = gemm.is_some_and(|(_, _, t)| t);
            let mut a = vec![0.0; k * n];
            for i in 0..*k {
                for j in 0..*n {
                    a[i * n + j] = if trans_b { w[j * k + i] } else { w[i * n + j] } as f64;
                }
            }
            (a, *k, *n)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_node(base: &str, suffix: &str, x: Option<usize>, w: usize, b: Option<usize>, y: usize, k: [usize; 2], strides: [usize; 2], dilations: [usize; 2], pads: [usize; 4]) -> Node {
    let i = |v: &[usize]| v.iter().map(|&d| d as i64).collect::<Vec<_>>();
    let mut inputs = vec![x, Some(w)];
    if b.is_some() {
        inputs.push(b);
    }
    Node {
        name: format!("{base}{suffix}"),
        op_type: "Conv".into(),
        op: Op::Conv { window: Window { kernel: Some(k), strides, dilations, pads, auto_pad: AutoPad::NotSet, ceil_mode: false }, group: 1 },
        inputs,
        outputs: vec![y],
        attrs: vec![attr::ints("kernel_shape", &i(&k)), attr::ints("strides", &i(&strides)), attr::ints("dilations", &i(&dilations)), attr::ints("pads", &i(&pads)), attr::int("group", 1)],
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm_node(base: &str, suffix: &str, x: Option<usize>, w: usize, c: Option<usize>, y: usize, alpha: f32, beta: f32, trans_a: bool) -> Node {
    let mut inputs = vec![x, Some(w)];
    if c.is_some() {
        inputs.push(c);
    }
    Node {
        name: format!("{base}{suffix}"),
        op_type: "Gemm".into(),
        op: Op::Gemm { alpha, beta, trans_a, trans_b: false },
        inputs,
        outputs: vec![y],
        attrs: vec![attr::float("alpha", alpha), attr::float("beta", beta), attr::int("transA", trans_a as i64), attr::int("transB", 0)],
    }
}

fn matmul_node(base: &str, suffix: &str, x: Option<usize>, w: usize, y: usize) -> Node {
    Node { name: format!("{base}{suffix}"), op_type: "MatMul".into(), op: Op::MatMul, inputs: vec![x, Some(w)], outputs: vec![y], attrs: vec![] }
}
