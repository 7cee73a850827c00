//! Training: every op's gradient, the losses and the QAT quantizer against central differences;
//! natively and in wasm32.

use prost::Message;
use qplay_core::onnx::proto::{
    attribute_proto::AttributeType, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto,
};
use qplay_core::rng::SplitMix;
use qplay_core::train::{loss, Net, Pass};
use qplay_core::{load_model, Limits, Tensor};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn node(op: &str, ins: &[&str], outs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(format!("{op}_{}", outs[0])),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Ints as i32), ints: v.to_vec(), ..Default::default() }
}
fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Int as i32), i: Some(v), ..Default::default() }
}
fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Float as i32), f: Some(v), ..Default::default() }
}

/// A float initializer with seeded values in [-scale, scale) (`offset` added).
fn init(name: &str, dims: &[i64], seed: u64, scale: f32, offset: f32) -> TensorProto {
    let n = dims.iter().product::<i64>() as usize;
    let v = SplitMix(seed).f32s(n).iter().map(|x| x * scale + offset).collect();
    TensorProto { name: Some(name.into()), dims: dims.to_vec(), data_type: Some(1), float_data: v, ..Default::default() }
}
fn i64s(name: &str, v: &[i64]) -> TensorProto {
    TensorProto { name: Some(name.into()), dims: vec![v.len() as i64], data_type: Some(7), int64_data: v.to_vec(), ..Default::default() }
}
fn scalar(name: &str, v: f32) -> TensorProto {
    TensorProto { name: Some(name.into()), dims: vec![], data_type: Some(1), float_data: vec![v], ..Default::default() }
}

fn net(nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> Net {
    let vi = |n: &str| ValueInfoProto { name: Some(n.into()), ..Default::default() };
    let m = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(13) }],
        graph: Some(GraphProto { name: Some("g".into()), node: nodes, initializer: inits, input: vec![vi("x")], output: vec![vi("y")], ..Default::default() }),
        ..Default::default()
    };
    let (g, _) = load_model(&m.encode_to_vec(), &Limits::default()).unwrap();
    Net::new(g, Limits::default()).unwrap()
}

fn input(shape: &[usize], seed: u64) -> Tensor {
    Tensor::f32(shape.to_vec(), SplitMix(seed).f32s(shape.iter().product())).unwrap()
}

/// L = Σ r·y for fixed random r, in `pass`.
fn objective(net: &mut Net, x: &Tensor, r: &[f32], pass: Pass) -> f64 {
    let (y, _) = net.forward(x.clone(), pass).unwrap();
    y[0].as_f32().unwrap().iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Checks every parameter's gradient (up to 24 entries each) against central differences of
/// a training pass.
fn check(what: &str, mut net: Net, x: Tensor) {
    let (y, tape) = net.forward(x.clone(), Pass::Train).unwrap();
    let r = SplitMix(99).f32s(y[0].len());
    let grads = net.backward(&tape.unwrap(), vec![r.clone()]).unwrap();
    let data = net.param_data();
    let (mut checked, mut kinks) = (0, 0);
    let base = objective(&mut net, &x, &r, Pass::Train);
    for (pi, d) in data.iter().enumerate() {
        let step = (d.len() / 24).max(1);
        for j in (0..d.len()).step_by(step) {
            let eps = 1e-3f32 * d[j].abs().max(0.5);
            let mut at = |v: f32| {
                let mut p = data.clone();
                p[pi][j] = v;
                net.set_param_data(&p);
                objective(&mut net, &x, &r, Pass::Train)
            };
            let (up, down) = (at(d[j] + eps), at(d[j] - eps));
            let (fd, an) = ((up - down) / (2.0 * eps as f64), grads.params[pi][j] as f64);
            let tol = 2e-2 * fd.abs().max(an.abs()).max(0.5);
            // One-sided slopes that disagree: a kink (ReLU, a max, a clip) inside the step.
            if ((up - base) - (base - down)).abs() / eps as f64 > tol {
                kinks += 1;
                continue;
            }
            assert!((fd - an).abs() <= tol, "{what}: parameter {pi} [{j}]: backward {an} vs central difference {fd}");
            checked += 1;
        }
    }
    assert!(kinks * 4 <= checked, "{what}: {kinks} entries at kinks, {checked} checked");
    net.set_param_data(&data);
    assert!(checked > 0, "{what}: no parameter checked");
}

/// x [2,3,6,5] -> Conv(W0) -> op chain -> y: the convolution's weights see every later op's
/// input gradient.
fn conv_then(ops: Vec<NodeProto>, mut inits: Vec<TensorProto>) -> Net {
    let mut nodes = vec![node("Conv", &["x", "W0", "B0"], &["c0"], vec![ints("pads", &[1, 1, 1, 1])])];
    nodes.extend(ops);
    inits.push(init("W0", &[4, 3, 3, 3], 1, 0.5, 0.0));
    inits.push(init("B0", &[4], 2, 0.5, 0.0));
    net(nodes, inits)
}

fn x4() -> Tensor {
    input(&[2, 3, 6, 5], 7)
}

#[test]
fn conv_gradients_match_finite_differences() {
    let w = |name: &str, dims: &[i64], seed| init(name, dims, seed, 0.5, 0.0);
    // Strides, asymmetric pads and dilation.
    let n = net(vec![node("Conv", &["x", "W", "B"], &["y"], vec![ints("strides", &[2, 1]), ints("pads", &[1, 0, 2, 1]), ints("dilations", &[1, 2])])], vec![w("W", &[4, 3, 3, 2], 3), w("B", &[4], 4)]);
    check("conv stride/pad/dilation", n, x4());
    // 1x1 (the pointwise path), no bias.
    let n = net(vec![node("Conv", &["x", "W"], &["y"], vec![])], vec![w("W", &[5, 3, 1, 1], 5)]);
    check("conv 1x1", n, x4());
    // Grouped and depthwise, after a first convolution so that their input gradient is checked.
    let n = conv_then(vec![node("Conv", &["c0", "W"], &["y"], vec![int("group", 2), ints("pads", &[0, 1, 0, 1])])], vec![w("W", &[6, 2, 3, 3], 6)]);
    check("grouped conv", n, x4());
    let n = conv_then(vec![node("Conv", &["c0", "W", "B"], &["y"], vec![int("group", 4), ints("pads", &[1, 1, 1, 1]), ints("strides", &[2, 2])])], vec![w("W", &[4, 1, 3, 3], 8), w("B", &[4], 9)]);
    check("depthwise conv", n, x4());
    // auto_pad SAME_UPPER with stride 2.
    let mut a = AttributeProto { name: Some("auto_pad".into()), r#type: Some(AttributeType::String as i32), ..Default::default() };
    a.s = Some(b"SAME_UPPER".to_vec());
    let n = conv_then(vec![node("Conv", &["c0", "W"], &["y"], vec![a, ints("strides", &[2, 2])])], vec![w("W", &[3, 4, 3, 3], 10)]);
    check("conv SAME_UPPER", n, x4());
}

#[test]
fn gemm_and_matmul_gradients_match_finite_differences() {
    let w = |name: &str, dims: &[i64], seed| init(name, dims, seed, 0.5, 0.0);
    for (ta, tb) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        let ws: [i64; 2] = if tb == 1 { [4, 5] } else { [5, 4] };
        // A first Gemm makes the second one's A a computed value (its gradient is checked).
        let n = net(
            vec![
                node("Gemm", &["x", "W1"], &["h"], vec![int("transA", ta)]),
                node("Gemm", &["h", "W2", "C"], &["y"], vec![int("transB", tb), float("alpha", 0.7), float("beta", 1.3)]),
            ],
            vec![w("W1", &[5, 5], 11), w("W2", &ws, 12), w("C", &[4], 13)],
        );
        check(&format!("gemm transA={ta} transB={tb}"), n, input(if ta == 1 { &[5, 5] } else { &[3, 5] }, 14));
    }
    // C as a [M, 1] column.
    let n = net(vec![node("Gemm", &["x", "W", "C"], &["y"], vec![])], vec![w("W", &[5, 4], 15), w("C", &[3, 1], 16)]);
    check("gemm C column", n, input(&[3, 5], 17));
    // MatMul with a 2-D weight on a rank-3 input, then a batched MatMul of two computed values.
    let n = net(vec![node("MatMul", &["x", "W"], &["h"], vec![]), node("Transpose", &["h"], &["t"], vec![ints("perm", &[0, 2, 1])]), node("MatMul", &["h", "t"], &["y"], vec![])], vec![w("W", &[4, 3], 18)]);
    check("matmul 2-D and batched", n, input(&[2, 5, 4], 19));
}

#[test]
fn batchnorm_gradients_match_finite_differences_in_both_modes() {
    let bn = || {
        conv_then(
            vec![node("BatchNormalization", &["c0", "S", "Bb", "M", "V"], &["y"], vec![float("epsilon", 1e-3)])],
            vec![init("S", &[4], 20, 0.5, 1.0), init("Bb", &[4], 21, 0.5, 0.0), init("M", &[4], 22, 0.3, 0.0), init("V", &[4], 23, 0.3, 1.0)],
        )
    };
    check("batchnorm, batch statistics", bn(), x4());
    // Frozen: the running statistics normalize and are constants.
    let mut n = bn();
    n.freeze_bn = true;
    check("batchnorm, frozen statistics", n, x4());
}

#[test]
fn batchnorm_running_averages_follow_onnx_momentum() {
    let mut n = conv_then(
        vec![node("BatchNormalization", &["c0", "S", "Bb", "M", "V"], &["y"], vec![float("momentum", 0.9)])],
        vec![init("S", &[4], 20, 0.0, 1.0), init("Bb", &[4], 21, 0.0, 0.0), init("M", &[4], 22, 0.0, 0.0), init("V", &[4], 23, 0.0, 1.0)],
    );
    let x = x4();
    // The conv output's per-channel batch mean and unbiased variance, computed directly.
    let (c0, _) = net(vec![node("Conv", &["x", "W0", "B0"], &["y"], vec![ints("pads", &[1, 1, 1, 1])])], vec![init("W0", &[4, 3, 3, 3], 1, 0.5, 0.0), init("B0", &[4], 2, 0.5, 0.0)]).forward(x.clone(), Pass::Eval).unwrap();
    let c = c0[0].as_f32().unwrap();
    n.forward(x, Pass::Train).unwrap();
    let g = n.graph();
    let find = |name: &str| g.consts[g.find_value(name).unwrap()].as_ref().unwrap().to_f32_vec();
    let (m, v) = (find("M"), find("V"));
    for ch in 0..4 {
        let vals: Vec<f64> = (0..2).flat_map(|b| c[(b * 4 + ch) * 30..(b * 4 + ch + 1) * 30].iter().map(|&v| v as f64)).collect();
        let mean = vals.iter().sum::<f64>() / 60.0;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 59.0;
        assert!((m[ch] as f64 - 0.1 * mean).abs() < 1e-5, "channel {ch}: running mean {} vs {}", m[ch], 0.1 * mean);
        assert!((v[ch] as f64 - (0.9 + 0.1 * var)).abs() < 1e-4, "channel {ch}: running var {} vs {}", v[ch], 0.9 + 0.1 * var);
    }
}

#[test]
fn activation_gradients_match_finite_differences() {
    let one = |op: &str, attrs: Vec<AttributeProto>| conv_then(vec![node(op, &["c0"], &["y"], attrs)], vec![]);
    check("relu", one("Relu", vec![]), x4());
    check("leaky relu", one("LeakyRelu", vec![float("alpha", 0.2)]), x4());
    check("sigmoid", one("Sigmoid", vec![]), x4());
    check("tanh", one("Tanh", vec![]), x4());
    check("hardswish", one("HardSwish", vec![]), x4());
    check("hardsigmoid", one("HardSigmoid", vec![float("alpha", 0.3), float("beta", 0.4)]), x4());
    // Swish as exported: x * sigmoid(x).
    let n = conv_then(vec![node("Sigmoid", &["c0"], &["s"], vec![]), node("Mul", &["c0", "s"], &["y"], vec![])], vec![]);
    check("swish", n, x4());
    // ReLU6 as Clip with bound inputs.
    let n = conv_then(vec![node("Clip", &["c0", "lo", "hi"], &["y"], vec![])], vec![scalar("lo", 0.0), scalar("hi", 0.6)]);
    check("clip", n, x4());
    let n = conv_then(vec![node("PRelu", &["c0", "sl"], &["y"], vec![])], vec![init("sl", &[4, 1, 1], 30, 0.3, 0.2)]);
    check("prelu", n, x4());
}

#[test]
fn broadcasting_binary_gradients_match_finite_differences() {
    // a [2,4,6,5] with b [2,4,1,1] (GAP of a second conv), [4,1,1] and [5] constants.
    for op in ["Add", "Sub", "Mul", "Div"] {
        let n = net(
            vec![
                node("Conv", &["x", "W0", "B0"], &["a"], vec![ints("pads", &[1, 1, 1, 1])]),
                node("Conv", &["x", "W1", "B1"], &["c1"], vec![]),
                node("GlobalAveragePool", &["c1"], &["g1"], vec![]),
                node("Sigmoid", &["g1"], &["s1"], vec![]),
                node("Add", &["s1", "one"], &["b"], vec![]),
                node(op, &["a", "b"], &["ab"], vec![]),
                node(op, &["ab", "K"], &["abk"], vec![]),
                node(if op == "Div" { "Mul" } else { op }, &["R", "abk"], &["y"], vec![]),
            ],
            vec![
                init("W0", &[4, 3, 3, 3], 1, 0.5, 0.0),
                init("B0", &[4], 2, 0.5, 0.0),
                init("W1", &[4, 3, 1, 1], 3, 0.5, 0.0),
                init("B1", &[4], 4, 0.5, 0.0),
                scalar("one", 1.0),
                init("K", &[4, 1, 1], 5, 0.3, 1.0),
                init("R", &[5], 6, 0.3, 2.0),
            ],
        );
        check(&format!("{op} with broadcasting"), n, x4());
    }
}

#[test]
fn pooling_and_layout_gradients_match_finite_differences() {
    let pool = |op: &str, attrs: Vec<AttributeProto>| conv_then(vec![node(op, &["c0"], &["y"], attrs)], vec![]);
    check("global average pool", pool("GlobalAveragePool", vec![]), x4());
    check("global max pool", pool("GlobalMaxPool", vec![]), x4());
    check("max pool", pool("MaxPool", vec![ints("kernel_shape", &[3, 2]), ints("strides", &[2, 1]), ints("pads", &[1, 0, 1, 1])]), x4());
    check("max pool ceil", pool("MaxPool", vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2]), int("ceil_mode", 1)]), x4());
    for cip in [0, 1] {
        check(
            &format!("average pool count_include_pad={cip}"),
            pool("AveragePool", vec![ints("kernel_shape", &[3, 3]), ints("strides", &[2, 2]), ints("pads", &[1, 1, 1, 1]), int("count_include_pad", cip)]),
            x4(),
        );
    }
    let n = conv_then(
        vec![
            node("Conv", &["x", "W1"], &["c1"], vec![]),
            node("Concat", &["c0", "c1"], &["cat"], vec![int("axis", 1)]),
            node("Transpose", &["cat"], &["t"], vec![ints("perm", &[0, 2, 3, 1])]),
            node("Reshape", &["t", "shape"], &["r"], vec![]),
            node("Flatten", &["r"], &["f"], vec![int("axis", 1)]),
            node("Gemm", &["f", "W2"], &["logits"], vec![int("transB", 1)]),
            node("Softmax", &["logits"], &["y"], vec![int("axis", -1)]),
        ],
        vec![init("W1", &[2, 3, 1, 1], 40, 0.5, 0.0), i64s("shape", &[2, -1, 6]), init("W2", &[3, 180], 41, 0.2, 0.0)],
    );
    check("concat/transpose/reshape/flatten/softmax", n, x4());
}

/// Central differences of a loss in f64 against its gradient.
fn check_loss(what: &str, y: &[f32], f: impl Fn(&[f32]) -> (f64, Vec<f32>)) {
    let (_, g) = f(y);
    for j in 0..y.len() {
        let eps = 1e-3f32;
        let mut p = y.to_vec();
        p[j] += eps;
        let up = f(&p).0;
        p[j] -= 2.0 * eps;
        let down = f(&p).0;
        let fd = (up - down) / (2.0 * eps as f64);
        assert!((fd - g[j] as f64).abs() <= 1e-3 * fd.abs().max(1.0), "{what} [{j}]: gradient {} vs central difference {fd}", g[j]);
    }
}

#[test]
fn loss_gradients_match_finite_differences() {
    let y = SplitMix(50).f32s(3 * 4 * 2).iter().map(|v| v * 3.0).collect::<Vec<_>>();
    let t = SplitMix(51).f32s(24).iter().map(|v| v * 3.0).collect::<Vec<_>>();
    // [3, 4] classifier logits and [3, 4, 2] dense outputs (per-position labels).
    check_loss("cross-entropy", &y[..12], |v| loss::cross_entropy(v, &[3, 4], &[0, 3, 1]).unwrap());
    check_loss("cross-entropy per position", &y, |v| loss::cross_entropy(v, &[3, 4, 2], &[0, 3, 1, 1, 2, 0]).unwrap());
    for temp in [1.0, 4.0] {
        check_loss(&format!("distillation T={temp}"), &y, |v| loss::distillation(v, &[3, 4, 2], &t, temp).unwrap());
    }
    check_loss("mse", &y, |v| loss::mse(v, &t).unwrap());
    let w = loss::channel_weights(&t, 4, 2);
    check_loss("nsr", &y, |v| loss::nsr(v, &[3, 4, 2], &t, &w).unwrap());
    // NSR by hand: channel c's squared error over its six teacher values' variance, averaged
    // (ε is 10⁻³ of the mean variance).
    let mut by_hand = 0.0;
    for c in 0..4 {
        let idx: Vec<usize> = (0..3).flat_map(|b| (0..2).map(move |p| b * 8 + c * 2 + p)).collect();
        let mean = idx.iter().map(|&i| t[i] as f64).sum::<f64>() / 6.0;
        let var = idx.iter().map(|&i| (t[i] as f64 - mean).powi(2)).sum::<f64>() / 6.0;
        by_hand += idx.iter().map(|&i| ((y[i] - t[i]) as f64).powi(2)).sum::<f64>() / 6.0 / var / 4.0;
    }
    let (got, _) = loss::nsr(&y, &[3, 4, 2], &t, &w).unwrap();
    assert!((got - by_hand).abs() < 2e-3 * by_hand, "NSR {got} vs {by_hand} by hand");
    // A dead teacher channel weighs a thousand times the mean variance's inverse, not infinity.
    let mut dead = t.clone();
    (0..3).for_each(|b| (0..2).for_each(|p| dead[b * 8 + p] = 0.5));
    let wd = loss::channel_weights(&dead, 4, 2);
    assert!(wd[0].is_finite() && wd[0] > 100.0 * wd[1]);
    // Known values: uniform logits give ln(k); identical teacher and student give zero KL.
    let (ce, _) = loss::cross_entropy(&[0.0; 8], &[2, 4], &[1, 2]).unwrap();
    assert!((ce - 4f64.ln()).abs() < 1e-9);
    let (kd, g) = loss::distillation(&y, &[3, 4, 2], &y, 4.0).unwrap();
    assert!(kd.abs() < 1e-9 && g.iter().all(|v| v.abs() < 1e-7));
    // Bad labels are refused.
    assert!(loss::cross_entropy(&y[..12], &[3, 4], &[0, 4, 1]).unwrap_err().to_string().contains("outside the model's 4 classes"));
    assert!(loss::cross_entropy(&y[..12], &[3, 4], &[0, 1]).unwrap_err().to_string().contains("2 labels for 3 outputs"));
}

#[test]
fn every_bundled_model_op_has_a_gradient() {
    for (name, bytes) in [
        ("digits_mlp", &include_bytes!("../../assets/models/digits_mlp.onnx")[..]),
        ("digits_mobilenet", &include_bytes!("../../assets/models/digits_mobilenet.onnx")[..]),
    ] {
        let (g, _) = load_model(bytes, &Limits::default()).unwrap();
        let shape = if name == "digits_mlp" { vec![4, 64] } else { vec![4, 1, 8, 8] };
        check(name, Net::new(g, Limits::default()).unwrap(), input(&shape, 60).map_abs());
    }
}

trait Abs {
    fn map_abs(self) -> Tensor;
}
impl Abs for Tensor {
    /// Digits pixels are in [0, 1].
    fn map_abs(self) -> Tensor {
        let s = self.shape().to_vec();
        Tensor::f32(s, self.to_f32_vec().iter().map(|v| v.abs()).collect()).unwrap()
    }
}

/// The quantizer with its roundings frozen at the evaluation point (`round(v)` replaced by
/// `v + (round(v0) - v0)`), written from the formula: smooth, so central differences apply.
/// Symmetric: `p = [s]`, offset `o`; asymmetric: `p = [min, max]`.
fn surrogate(p: &[f64], o_sym: Option<f64>, n: f64, x: f64, frozen: &mut Option<(f64, f64)>) -> f64 {
    let (s, z) = match o_sym {
        Some(o) => (p[0], o),
        None => {
            let s = (p[1] - p[0]) / n;
            (s, p[0] / s)
        }
    };
    let dz0 = (z.round() - z) * o_sym.is_none() as u8 as f64;
    let t0 = x / s - (z + dz0);
    let (dz, dt) = *frozen.get_or_insert((dz0, t0.round() - t0));
    let z = z + dz;
    let q = (x / s - z + dt).clamp(0.0, n);
    (q + z) * s
}

#[test]
fn quantizer_gradients_match_the_straight_through_surrogate() {
    use qplay_core::quant::{Encoding, QuantScheme};
    use qplay_core::train::qat::ste_backward;
    let xs: Vec<f32> = SplitMix(70).f32s(64).iter().map(|v| v * 1.6 + 0.2).collect();
    let r: Vec<f32> = SplitMix(71).f32s(64);
    for (bw, sym) in [(4u8, true), (4, false), (8, false), (2, true), (3, false)] {
        let (mn, mx) = (-0.7f32, 0.9f32);
        let e = Encoding::from_min_max(mn, mx, bw, if sym { QuantScheme::Symmetric } else { QuantScheme::Asymmetric }).unwrap();
        let n = e.steps() as f64;
        // The continuous parameters the encoding stands for.
        let p: Vec<f64> = if sym { vec![e.scale] } else { vec![mn as f64, mx as f64] };
        let e = if sym { e } else { Encoding { scale: (p[1] - p[0]) / n, offset: (p[0] / ((p[1] - p[0]) / n)).round() as i64, ..e } };
        let o_sym = sym.then_some(e.offset as f64);
        let mut dy = r.clone();
        ste_backward(&e, (!sym).then_some(p[0]), &xs, &mut dy);
        let mut inside_and_out = [0, 0];
        for (i, &x) in xs.iter().enumerate() {
            let idx = e.quantize(x) as f64;
            if idx == 0.0 || idx == n {
                // On the clamp's corner the two one-sided slopes differ; only count the sides.
                inside_and_out[1] += (dy[i] == 0.0) as usize;
                continue;
            }
            // The forward value is the simulation's own.
            let mut fr = None;
            let y = surrogate(&p, o_sym, n, x as f64, &mut fr);
            assert!((y - e.qdq(x) as f64).abs() < 1e-5, "bw {bw} sym {sym}: surrogate {y} vs qdq {}", e.qdq(x));
            let h = 1e-4;
            let fx = (surrogate(&p, o_sym, n, x as f64 + h, &mut fr) - surrogate(&p, o_sym, n, x as f64 - h, &mut fr)) / (2.0 * h);
            assert!((fx * r[i] as f64 - dy[i] as f64).abs() < 1e-4, "bw {bw} sym {sym}: dx {} vs {}", dy[i], fx * r[i] as f64);
            inside_and_out[0] += 1;
        }
        assert!(inside_and_out[0] > 8 && inside_and_out[1] > 3, "bw {bw}: too few samples inside ({}) or outside ({}) the range", inside_and_out[0], inside_and_out[1]);
        // Range gradients: central differences of Σ r y over every sample off the corners.
        for k in 0..p.len() {
            let total = |pp: &[f64], frozen: &mut Vec<Option<(f64, f64)>>| -> f64 {
                xs.iter().zip(&r).zip(frozen.iter_mut()).filter(|((&x, _), _)| { let i = e.quantize(x) as f64; i != 0.0 && i != n }).map(|((&x, &ri), fr)| ri as f64 * surrogate(pp, o_sym, n, x as f64, fr)).sum()
            };
            let mut frozen = vec![None; xs.len()];
            total(&p, &mut frozen);
            let h = 1e-6;
            let (mut up, mut down) = (p.clone(), p.clone());
            up[k] += h;
            down[k] -= h;
            let fd = (total(&up, &mut frozen) - total(&down, &mut frozen)) / (2.0 * h);
            // The analytic gradient over the same samples.
            let sel: Vec<usize> = (0..xs.len()).filter(|&i| { let q = e.quantize(xs[i]) as f64; q != 0.0 && q != n }).collect();
            let (xsel, mut dsel): (Vec<f32>, Vec<f32>) = (sel.iter().map(|&i| xs[i]).collect(), sel.iter().map(|&i| r[i]).collect());
            let gs = ste_backward(&e, (!sym).then_some(p[0]), &xsel, &mut dsel);
            assert!((gs[k] - fd).abs() < 1e-3 * fd.abs().max(1.0), "bw {bw} sym {sym}: range parameter {k}: {} vs central difference {fd}", gs[k]);
        }
    }
}

mod common;

/// QAT of a digits model at W4A4 per channel from min-max: (PTQ accuracy, QAT accuracy) on the
/// test split, measured by the quantization simulation built from the learned encodings.
fn qat_digits(model: &[u8], flat: bool, epochs: usize) -> (f64, f64, f64) {
    use qplay_core::quant::{QuantSim, QuantSimConfig};
    use qplay_core::train::{qat::qat_net, train, Data, TrainConfig};
    let (g, _) = load_model(model, &Limits::default()).unwrap();
    let config = QuantSimConfig { weight_bits: 4, act_bits: 4, per_channel: true, ..Default::default() };
    let calib = common::calib_batches(flat);
    let mut net = qat_net(g.clone(), &config, &calib, None, true, false, Limits::default()).unwrap();
    let (tx, ty) = common::test_set(flat);
    let acc = |sim: &QuantSim| common::accuracy_pct(sim.executor().unwrap().run(vec![tx.clone()]).unwrap()[0].as_f32().unwrap(), &ty);
    let fp32 = common::accuracy_pct(qplay_core::Executor::new(g, Limits::default()).unwrap().run(vec![tx.clone()]).unwrap()[0].as_f32().unwrap(), &ty);
    let ptq = acc(&net.quant.as_ref().unwrap().to_sim(net.graph().clone(), config.clone()).unwrap());
    let train_x = common::digits(common::TRAIN_X, 1347, flat);
    let labels = qplay_core::npy::read_npy(include_bytes!("../../assets/data/digits_train_y.npy"), 1 << 20).unwrap().to_i64_vec();
    let shape = train_x.shape()[1..].to_vec();
    let data = Data { x: train_x.as_f32().unwrap(), sample_shape: &shape, labels: Some(&labels), teacher: None };
    let cfg = TrainConfig { epochs, batch: 32, lr: 3e-3, ..Default::default() };
    let report = train(&mut net, &data, &cfg, None, &mut |_| true).unwrap();
    let qat = acc(&net.quant.as_ref().unwrap().to_sim(net.graph().clone(), config).unwrap());
    assert_eq!(report.epochs.len(), epochs);
    assert!(report.epochs[epochs - 1].loss < report.epochs[0].loss, "the loss did not fall: {:?}", report.epochs);
    (fp32, ptq, qat)
}

#[test]
fn qat_recovers_w4a4_per_channel_on_the_digits_models() {
    for (name, model, flat) in [("mlp", common::MLP, true), ("mobilenet", common::MOBILENET, false)] {
        let (fp32, ptq, qat) = qat_digits(model, flat, 30);
        println!("{name}: FP32 {fp32:.2} %, W4A4 PTQ {ptq:.2} %, QAT {qat:.2} %");
        assert!(qat >= fp32 - 1.5, "{name}: QAT {qat:.2} % is more than 1.5 points below FP32 {fp32:.2} %");
        assert!(qat > ptq + 1.0, "{name}: QAT {qat:.2} % does not beat PTQ {ptq:.2} %");
    }
}

#[test]
fn training_is_deterministic_for_a_seed() {
    use qplay_core::train::{train, Data, Method, TrainConfig};
    let (g, _) = load_model(common::MLP, &Limits::default()).unwrap();
    let x = common::digits(common::TRAIN_X, 256, true);
    let labels = qplay_core::npy::read_npy(include_bytes!("../../assets/data/digits_train_y.npy"), 1 << 20).unwrap().to_i64_vec()[..256].to_vec();
    let run = |seed: u64, method: Method| {
        let mut net = Net::new(g.clone(), Limits::default()).unwrap();
        let data = Data { x: x.as_f32().unwrap(), sample_shape: &[64], labels: Some(&labels), teacher: None };
        let cfg = TrainConfig { epochs: 2, batch: 16, lr: 1e-2, seed, method, weight_decay: 1e-4, ..Default::default() };
        let r = train(&mut net, &data, &cfg, None, &mut |_| true).unwrap();
        (net.param_data(), r.epochs.iter().map(|e| e.loss).collect::<Vec<_>>())
    };
    for method in [Method::adam(), Method::sgd()] {
        let (a, la) = run(3, method);
        let (b, lb) = run(3, method);
        let (c, _) = run(4, method);
        assert_eq!(a, b, "{method:?}: the same seed gives the same weights");
        assert_eq!(la, lb);
        assert_ne!(a, c, "{method:?}: another seed shuffles otherwise");
        assert!(la[1] < la[0], "{method:?}: the loss falls: {la:?}");
    }
}

#[test]
fn qat_forward_computes_what_the_simulation_of_its_encodings_computes() {
    // The training forward pass must be the simulation the result is scored and exported with
    // (in qplay mode biases go on the accumulator's grid), before and after ranges are learned.
    // With BatchNorm kept, evaluation mode (running statistics) must compute what the folded
    // simulation does (AIMET mode: float biases on both sides).
    use qplay_core::quant::{Mode, QuantSimConfig};
    use qplay_core::train::{qat::qat_net, reestimate_bn, train, Data, TrainConfig};
    let (g, _) = load_model(common::MOBILENET, &Limits::default()).unwrap();
    let calib = common::calib_batches(false);
    let (tx, _) = common::test_set(false);
    let x = common::digits(common::TRAIN_X, 64, false);
    let labels = qplay_core::npy::read_npy(include_bytes!("../../assets/data/digits_train_y.npy"), 1 << 20).unwrap().to_i64_vec()[..64].to_vec();
    for (mode, keep_bn) in [(Mode::Qplay, false), (Mode::Aimet, false), (Mode::Aimet, true)] {
        let config = QuantSimConfig { mode, weight_bits: 4, act_bits: 4, per_channel: true, ..Default::default() };
        let mut net = qat_net(g.clone(), &config, &calib, None, true, keep_bn, Limits::default()).unwrap();
        let bns = net.graph().nodes.iter().filter(|n| n.op_type == "BatchNormalization").count();
        assert_eq!(bns, if keep_bn { 7 } else { 0 }, "{mode:?}, BN kept {keep_bn}");
        for trained in [false, true] {
            let data = Data { x: x.as_f32().unwrap(), sample_shape: &x.shape()[1..], labels: Some(&labels), teacher: None };
            if trained {
                train(&mut net, &data, &TrainConfig { epochs: 1, batch: 16, lr: 3e-3, ..Default::default() }, None, &mut |_| true).unwrap();
                if keep_bn {
                    assert_eq!(reestimate_bn(&mut net, &data, 16).unwrap(), 4);
                }
            }
            let (y, _) = net.forward(tx.clone(), Pass::Eval).unwrap();
            let sim = net.quant.as_ref().unwrap().to_sim(net.graph().clone(), config.clone()).unwrap();
            let ys = sim.float_executor().unwrap().run(vec![tx.clone()]).unwrap();
            let (a, b) = (y[0].as_f32().unwrap(), ys[0].as_f32().unwrap());
            let worst = a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{mode:?}, BN kept {keep_bn}, trained {trained}: the training forward differs from the simulation by up to {worst}");
        }
    }
}

#[test]
fn batchnorm_reestimation_averages_the_batch_statistics() {
    // A BatchNormalization right after the input: its re-estimated mean and variance must be the
    // plain average, over whole batches, of each batch's per-channel mean and unbiased variance
    // (as the running averages of training mode, PyTorch's convention).
    let mut n = net(
        vec![node("BatchNormalization", &["x", "g", "b", "m", "v"], &["y"], vec![float("epsilon", 1e-5)])],
        vec![init("g", &[2], 1, 1.0, 1.5), init("b", &[2], 2, 1.0, 0.0), init("m", &[2], 3, 1.0, 0.0), init("v", &[2], 4, 0.5, 1.0)],
    );
    let x = input(&[10, 2, 3, 3], 9);
    let d = x.as_f32().unwrap();
    let data = qplay_core::train::Data { x: d, sample_shape: &[2, 3, 3], labels: None, teacher: None };
    assert_eq!(qplay_core::train::reestimate_bn(&mut n, &data, 4).unwrap(), 2, "two whole batches of 4; the last 2 samples are left out");
    let (mut mean, mut var) = ([0.0f64; 2], [0.0f64; 2]);
    for b in 0..2 {
        for c in 0..2 {
            let v: Vec<f64> = (b * 4..b * 4 + 4).flat_map(|s| d[(s * 2 + c) * 9..(s * 2 + c + 1) * 9].iter().map(|&x| x as f64)).collect();
            let m = v.iter().sum::<f64>() / v.len() as f64;
            mean[c] += m / 2.0;
            var[c] += v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64 / 2.0;
        }
    }
    let get = |name: &str| {
        let g = n.graph();
        let id = g.values.iter().position(|v| v.name == name).unwrap();
        g.consts[id].as_ref().unwrap().to_f32_vec()
    };
    for c in 0..2 {
        assert!((get("m")[c] as f64 - mean[c]).abs() < 1e-5, "mean {c}: {:?} vs {mean:?}", get("m"));
        assert!((get("v")[c] as f64 - var[c]).abs() < 1e-5, "var {c}: {:?} vs {var:?}", get("v"));
    }
}

#[test]
fn a_model_ending_in_softmax_trains_as_its_logits_would() {
    // softmax(ln p) = p: cross-entropy and distillation of a model that outputs probabilities
    // must move its weights exactly as the same model without the Softmax, trained on logits.
    use qplay_core::train::{train, Data, Method, TrainConfig};
    let gemm = || node("Gemm", &["x", "w", "b"], &["z"], vec![int("transB", 1)]);
    let inits = || vec![init("w", &[3, 4], 5, 0.5, 0.0), init("b", &[3], 6, 0.1, 0.0)];
    let mut logits = net(vec![node("Identity", &["z"], &["y"], vec![]), gemm()].into_iter().rev().collect(), inits());
    let mut probs = net(vec![gemm(), node("Softmax", &["z"], &["y"], vec![int("axis", 1)])], inits());
    let x = input(&[8, 4], 7);
    let labels: Vec<i64> = (0..8).map(|i| i % 3).collect();
    let teacher_logits: Vec<f32> = SplitMix(8).f32s(24).iter().map(|v| v * 2.0).collect();
    let teacher_probs: Vec<f32> = teacher_logits
        .chunks(3)
        .flat_map(|r| {
            let m = r.iter().fold(f32::MIN, |a, &b| a.max(b));
            let e: Vec<f32> = r.iter().map(|v| (v - m).exp()).collect();
            let s: f32 = e.iter().sum();
            e.into_iter().map(move |v| v / s)
        })
        .collect();
    let cfg = TrainConfig { epochs: 3, batch: 8, lr: 0.1, method: Method::Sgd { momentum: 0.0 }, ..Default::default() };
    let start = logits.param_data();
    let d = |teacher| Data { x: x.as_f32().unwrap(), sample_shape: &[4], labels: Some(&labels), teacher };
    train(&mut logits, &d(Some(&teacher_logits)), &cfg, None, &mut |_| true).unwrap();
    train(&mut probs, &d(Some(&teacher_probs)), &cfg, None, &mut |_| true).unwrap();
    let (a, b) = (logits.param_data(), probs.param_data());
    assert!(a.iter().flatten().zip(start.iter().flatten()).any(|(u, v)| (u - v).abs() > 1e-3), "training moved the weights");
    for (pa, pb) in a.iter().zip(&b) {
        for (u, v) in pa.iter().zip(pb) {
            assert!((u - v).abs() < 1e-4, "logits model {pa:?} vs softmax model {pb:?}");
        }
    }
}
