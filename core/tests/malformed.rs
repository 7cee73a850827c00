//! Malformed and hostile models: every case must end in a typed error naming where it went wrong,
//! in under a second and under 256 MB, never a panic, hang or oversized allocation. The cases are one
//! table, run natively and in wasm32 with the time and peak allocation of each printed.

use prost::Message;
use qplay_core::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, SparseTensorProto, StringStringEntryProto, TensorProto, ValueInfoProto,
};
use qplay_core::{load_model, Error, Executor, Limits, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// Counts this thread's live heap bytes and their peak (tests run on several threads natively).
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn track(grow: usize, shrink: usize) {
    let _ = LIVE.try_with(|l| {
        let v = (l.get() + grow).saturating_sub(shrink);
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size(), 0);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            track(layout.size(), 0);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        track(0, layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size, layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A line of the printed table (wasm32 has no stdout: the console, shown with `-- --nocapture`).
macro_rules! say {
    ($($arg:tt)*) => {{
        #[cfg(target_arch = "wasm32")]
        wasm_bindgen_test::console_log!($($arg)*);
        #[cfg(not(target_arch = "wasm32"))]
        println!($($arg)*);
    }};
}

/// Milliseconds from an arbitrary origin.
fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    return js_sys::Date::now();
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        static T0: OnceLock<std::time::Instant> = OnceLock::new();
        T0.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1e3
    }
}

const LITE0: &[u8] = include_bytes!("../../assets/models/efficientnet_lite0.onnx");
const DIGITS: &[u8] = include_bytes!("../../assets/models/digits_mobilenet.onnx");
const PNG: &[u8] = include_bytes!("../../assets/images/camera.png");

fn node(op: &str, name: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn vi(name: &str) -> ValueInfoProto {
    ValueInfoProto { name: Some(name.into()), ..Default::default() }
}

fn f32_init(name: &str, dims: &[i64], n: usize) -> TensorProto {
    TensorProto { name: Some(name.into()), dims: dims.to_vec(), data_type: Some(1), float_data: vec![0.5; n], ..Default::default() }
}

fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, opset: i64) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: nodes,
            initializer: inits,
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One hostile input: bytes (with limits) that must fail, when loaded, planned, or run on `input`.
struct Case {
    name: String,
    bytes: Vec<u8>,
    limits: Limits,
    input: Option<Tensor>,
    /// What the error must say or be.
    expect: Box<dyn Fn(&Error) -> bool>,
}

fn case(name: &str, bytes: Vec<u8>, expect: impl Fn(&Error) -> bool + 'static) -> Case {
    Case { name: name.into(), bytes, limits: Limits::default(), input: None, expect: Box::new(expect) }
}

fn says(text: &'static str) -> impl Fn(&Error) -> bool {
    move |e: &Error| e.to_string().contains(text)
}

fn at_node(name: &'static str) -> impl Fn(&Error) -> bool {
    move |e: &Error| matches!(e, Error::Node { node, .. } | Error::UnsupportedOp { node, .. } if node == name)
}

fn at_tensor(name: &'static str) -> impl Fn(&Error) -> bool {
    move |e: &Error| matches!(e, Error::Tensor { tensor, .. } if tensor == name)
}

fn xorshift_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 24) as u8
        })
        .collect()
}

fn relu_model() -> ModelProto {
    model(vec![node("Relu", "r", &["x"], &["y"])], vec![], 13)
}

fn i64s(name: &str, v: Vec<i64>) -> TensorProto {
    TensorProto { name: Some(name.into()), dims: vec![v.len() as i64], data_type: Some(7), int64_data: v, ..Default::default() }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Int as i32), i: Some(v), ..Default::default() }
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Ints as i32), ints: v.to_vec(), ..Default::default() }
}

fn with_attrs(mut n: NodeProto, attrs: Vec<AttributeProto>) -> NodeProto {
    n.attribute = attrs;
    n
}

/// A model failing when run on `x`.
fn at_run(name: &str, nodes: Vec<NodeProto>, inits: Vec<TensorProto>, x: Tensor, expect: impl Fn(&Error) -> bool + 'static) -> Case {
    Case { input: Some(x), ..case(name, model(nodes, inits, 13).encode_to_vec(), expect) }
}

fn x4() -> Tensor {
    Tensor::f32(vec![1, 2, 3, 3], vec![0.0; 18]).unwrap()
}

fn cases() -> Vec<Case> {
    let enc = |m: ModelProto| m.encode_to_vec();
    let add_w = |w: TensorProto| enc(model(vec![node("Add", "a", &["x", "W"], &["y"])], vec![w], 13));
    let limit_bytes = |n| Limits { max_total_bytes: n, ..Limits::default() };
    let mut v = vec![
        case("empty file", vec![], |e| *e == Error::EmptyFile),
        case("a PNG renamed .onnx", PNG.to_vec(), |e| *e == Error::WrongFormat("a PNG image")),
        case("wrong magic: a gzip header", [&[0x1f, 0x8b, 0x08, 0x00][..], &DIGITS[..200]].concat(), says("gzip")),
        case("a PyTorch checkpoint (zip)", [&b"PK\x03\x04"[..], &[0u8; 60][..]].concat(), says("PyTorch")),
        case("EfficientNet-Lite0 missing its last 3 bytes", LITE0[..LITE0.len() - 3].to_vec(), |e| matches!(e, Error::Decode(m) if m.contains("at byte") && m.contains("buffer underflow"))),
        case("digits MobileNet cut in half", DIGITS[..DIGITS.len() / 2].to_vec(), |e| matches!(e, Error::Decode(m) if m.contains("at byte") && m.contains("ModelProto.graph"))),
        Case { limits: Limits { max_file_bytes: 1000, ..Limits::default() }, ..case("file over the size limit", DIGITS.to_vec(), |e| *e == Error::FileTooLarge { size: DIGITS.len(), limit: 1000 }) },
        case("unknown op", enc(model(vec![node("FancyOp", "mynode", &["x"], &["y"])], vec![], 13)), |e| *e == Error::UnsupportedOp { node: "mynode".into(), op: "FancyOp".into() }),
        case("op of another domain", {
            let mut m = relu_model();
            m.graph.as_mut().unwrap().node[0].domain = Some("com.microsoft".into());
            enc(m)
        }, says("com.microsoft:Relu")),
        case("raw_data length mismatch", add_w(TensorProto { raw_data: Some(vec![0u8; 20]), ..f32_init("W", &[2, 3], 0) }), |e| at_tensor("W")(e) && e.to_string().contains("raw_data has 20 bytes")),
        case("float_data length mismatch", add_w(f32_init("W", &[4, 4], 3)), at_tensor("W")),
        case("external data", add_w(TensorProto {
            data_location: Some(DataLocation::External as i32),
            external_data: vec![StringStringEntryProto { key: Some("location".into()), value: Some("/etc/passwd".into()) }],
            ..f32_init("W", &[2], 0)
        }), |e| at_tensor("W")(e) && e.to_string().contains("external data")),
        case("sparse initializer", {
            let mut m = relu_model();
            m.graph.as_mut().unwrap().sparse_initializer = vec![SparseTensorProto { values: Some(f32_init("S", &[1], 1)), ..Default::default() }];
            enc(m)
        }, says("sparse")),
        case("unsupported dtype (float16)", add_w(TensorProto { name: Some("H".into()), dims: vec![2], data_type: Some(10), raw_data: Some(vec![0; 4]), ..Default::default() }), says("FLOAT16")),
        Case {
            limits: limit_bytes(3000),
            ..case("initializer bytes over the limit", {
                let inits = (0..4).map(|i| f32_init(&format!("W{i}"), &[256], 256)).collect();
                enc(model(vec![node("Relu", "r", &["x"], &["y"])], inits, 13))
            }, |e| matches!(e, Error::Limit(_)))
        },
        case("cycle", enc(model(vec![node("Add", "a", &["x", "t2"], &["t1"]), node("Relu", "b", &["t1"], &["t2"]), node("Relu", "c", &["t2"], &["y"])], vec![], 13)), says("cycle")),
        case("undefined input", enc(model(vec![node("Add", "adder", &["x", "ghost"], &["y"])], vec![], 13)), |e| at_node("adder")(e) && e.to_string().contains("'ghost'")),
        case("two producers of one value", enc(model(vec![node("Relu", "r1", &["x"], &["y"]), node("Relu", "r2", &["x"], &["y"])], vec![], 13)), at_node("r2")),
        case("no opset import", {
            let mut m = relu_model();
            m.opset_import.clear();
            enc(m)
        }, |e| *e == Error::NoOpset),
        case("empty graph", enc(model(vec![], vec![], 13)), |e| matches!(e, Error::Graph(_))),
        case("no graph", {
            let mut m = relu_model();
            m.graph = None;
            enc(m)
        }, |e| *e == Error::NoGraph),
        case("wrong attribute type (group as float)", {
            let n = with_attrs(node("Conv", "conv", &["x", "W"], &["y"]), vec![AttributeProto { name: Some("group".into()), r#type: Some(AttributeType::Float as i32), f: Some(2.0), ..Default::default() }]);
            enc(model(vec![n], vec![f32_init("W", &[1, 1, 1, 1], 1)], 13))
        }, |e| at_node("conv")(e) && e.to_string().contains("'group'")),
        case("graph output never produced", {
            let mut m = relu_model();
            m.graph.as_mut().unwrap().output = vec![vi("nowhere")];
            enc(m)
        }, says("'nowhere'")),
        case("protobuf nested beyond the recursion limit", {
            let mut attr = AttributeProto { name: Some("g".into()), ..Default::default() };
            for _ in 0..200 {
                let inner = NodeProto { op_type: Some("If".into()), attribute: vec![attr], ..Default::default() };
                attr = AttributeProto { name: Some("g".into()), g: Some(GraphProto { node: vec![inner], ..Default::default() }), ..Default::default() };
            }
            let mut m = relu_model();
            m.graph.as_mut().unwrap().node[0].attribute.push(attr);
            enc(m)
        }, |e| matches!(e, Error::Decode(_))),
        Case {
            limits: Limits { max_nodes: 10, ..Limits::default() },
            ..case("more nodes than the limit", {
                let nodes = (0..50).map(|i| node("Relu", &format!("r{i}"), &[if i == 0 { "x" } else { "t" }], &[if i == 49 { "y" } else { "t" }])).collect();
                enc(model(nodes, vec![], 13))
            }, |e| matches!(e, Error::Limit(_)))
        },
        case("a chain deeper than the depth limit", {
            let n = 10_050;
            let name = |i: usize| if i == 0 { "x".to_string() } else if i == n { "y".to_string() } else { format!("t{i}") };
            let nodes = (0..n).map(|i| node("Relu", &format!("r{i}"), &[&name(i)], &[&name(i + 1)])).collect();
            enc(model(nodes, vec![], 13))
        }, says("depth")),
        case("rank 10 tensor", add_w(f32_init("W", &[1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 1)), says("rank 10")),
        case("constant sub-graph folding to 2^60 elements", enc(model(
            vec![node("ConstantOfShape", "big", &["s"], &["t"]), node("Add", "a", &["x", "t"], &["y"])],
            vec![i64s("s", vec![1 << 20, 1 << 20, 1 << 20])],
            13,
        )), at_node("big")),
        at_run("Conv with dilations of 2^40", vec![with_attrs(node("Conv", "dil", &["x", "W"], &["y"]), vec![ints_attr("dilations", &[1 << 40, 1 << 40])])], vec![f32_init("W", &[1, 2, 2, 2], 8)], x4(), at_node("dil")),
        at_run("MaxPool with pads of 2^62", vec![with_attrs(node("MaxPool", "mpp", &["x"], &["y"]), vec![ints_attr("kernel_shape", &[1, 1]), ints_attr("pads", &[1 << 62, 1 << 62, 1 << 62, 1 << 62])])], vec![], x4(), at_node("mpp")),
        at_run("channel mismatch at run time", vec![node("Conv", "c1", &["x", "W"], &["y"])], vec![f32_init("W", &[4, 3, 3, 3], 108)], Tensor::f32(vec![1, 2, 5, 5], vec![0.0; 50]).unwrap(), |e| matches!(e, Error::Node { node, op, .. } if node == "c1" && op == "Conv")),
        Case { input: Some(Tensor::f32(vec![1, 1, 9, 8], vec![0.0; 72]).unwrap()), ..case("input shape unlike the declared one", DIGITS.to_vec(), |e| matches!(e, Error::Input { .. })) },
        at_run("kernel larger than the input", vec![node("Conv", "big_kernel", &["x", "W"], &["y"])], vec![f32_init("W", &[1, 2, 5, 5], 50)], x4(), at_node("big_kernel")),
        at_run("impossible reshape", vec![node("Reshape", "rs", &["x", "s"], &["y"])], vec![i64s("s", vec![4, -1, 5])], x4(), at_node("rs")),
        at_run("gather index out of range", vec![node("Gather", "ga", &["x", "i"], &["y"])], vec![i64s("i", vec![7])], x4(), |e| at_node("ga")(e) && e.to_string().contains("out of range")),
        at_run("shapes that do not broadcast", vec![node("Add", "ad", &["x", "W"], &["y"])], vec![f32_init("W", &[5], 5)], x4(), |e| at_node("ad")(e) && e.to_string().contains("broadcast")),
        at_run("Conv with stride 0", vec![with_attrs(node("Conv", "s0", &["x", "W"], &["y"]), vec![ints_attr("strides", &[0, 0])])], vec![f32_init("W", &[1, 2, 1, 1], 2)], x4(), at_node("s0")),
        at_run("Conv with group 0", vec![with_attrs(node("Conv", "g0", &["x", "W"], &["y"]), vec![int_attr("group", 0)])], vec![f32_init("W", &[1, 2, 1, 1], 2)], x4(), at_node("g0")),
        at_run("Conv with negative pads", vec![with_attrs(node("Conv", "np", &["x", "W"], &["y"]), vec![ints_attr("pads", &[-5, -5, -5, -5])])], vec![f32_init("W", &[1, 2, 1, 1], 2)], x4(), at_node("np")),
        at_run("Pad to 2^40 elements", vec![node("Pad", "pad", &["x", "p"], &["y"])], vec![i64s("p", vec![0, 0, 1 << 19, 1 << 19, 0, 0, 1 << 19, 1 << 19])], x4(), at_node("pad")),
        at_run("MaxPool with a zero kernel", vec![with_attrs(node("MaxPool", "mp", &["x"], &["y"]), vec![ints_attr("kernel_shape", &[0, 0])])], vec![], x4(), at_node("mp")),
        at_run("Concat axis out of range", vec![with_attrs(node("Concat", "cat", &["x", "x"], &["y"]), vec![int_attr("axis", 9)])], vec![], x4(), at_node("cat")),
        at_run("Transpose with a bad permutation", vec![with_attrs(node("Transpose", "tr", &["x"], &["y"]), vec![ints_attr("perm", &[0, 0, 1, 2])])], vec![], x4(), at_node("tr")),
        at_run("Gemm with mismatched inner dimensions", vec![node("Gemm", "gm", &["x", "W"], &["y"])], vec![f32_init("W", &[5, 2], 10)], Tensor::f32(vec![2, 3], vec![0.0; 6]).unwrap(), at_node("gm")),
        at_run("Slice with step 0", vec![node("Slice", "sl", &["x", "st", "en", "ax", "stp"], &["y"])], vec![i64s("st", vec![0]), i64s("en", vec![2]), i64s("ax", vec![1]), i64s("stp", vec![0])], x4(), at_node("sl")),
    ];
    for dims in [vec![1i64 << 40, 1 << 40], vec![i64::MAX, 2], vec![1 << 20, 1 << 20], vec![-3, 2]] {
        v.push(case(&format!("initializer dims {dims:?}"), add_w(f32_init("W", &dims, 1)), |e| matches!(e, Error::Tensor { .. } | Error::Limit(_))));
    }
    for opset in [1, 6, 22, 99] {
        v.push(case(&format!("opset {opset}"), enc(model(vec![node("Relu", "r", &["x"], &["y"])], vec![], opset)), move |e| *e == Error::UnsupportedOpset { version: opset }));
    }
    for (len, seed) in [(1usize, 0x9E37_79B9u32), (7, 0x85EB_CA6B), (100, 0xC2B2_AE35), (4096, 0x27D4_EB2F), (100_000, 0x1656_67B1)] {
        v.push(case(&format!("{len} random bytes"), xorshift_bytes(len, seed), |e| matches!(e, Error::Decode(_) | Error::NoGraph | Error::NoOpset)));
    }
    v
}

/// Loads, plans and (with an input) runs the case's model.
fn attempt(c: &Case) -> Result<(), Error> {
    let (g, _) = load_model(&c.bytes, &c.limits)?;
    let mut ex = Executor::new(g, c.limits.clone())?;
    if let Some(x) = &c.input {
        ex.run(vec![x.clone()])?;
    }
    Ok(())
}

#[test]
fn every_malformed_case_is_a_typed_error_in_under_a_second_and_256_mb() {
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut bad = Vec::new();
    let (mut worst_ms, mut worst_mb) = (0.0f64, 0.0f64);
    for c in &cases {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let t0 = now_ms();
        let r = attempt(c);
        let ms = now_ms() - t0;
        let mb = (PEAK.with(Cell::get) - base) as f64 / (1 << 20) as f64;
        worst_ms = worst_ms.max(ms);
        worst_mb = worst_mb.max(mb);
        let line = match &r {
            Ok(()) => "(no error)".to_string(),
            Err(e) => e.to_string(),
        };
        say!("{:<46} {ms:>7.1} ms {mb:>7.2} MB  {line}", c.name);
        assert!(!line.contains('\n'), "{}: a multi-line message", c.name);
        match r {
            Err(e) if (c.expect)(&e) && ms < 1000.0 && mb < 256.0 => {}
            _ => bad.push(format!("{}: {line} ({ms:.0} ms, {mb:.1} MB)", c.name)),
        }
    }
    say!("{} malformed cases, slowest {worst_ms:.1} ms, largest peak allocation {worst_mb:.2} MB", cases.len());
    assert!(bad.is_empty(), "cases without the expected typed error:\n{}", bad.join("\n"));
}

#[test]
fn a_valid_tiny_model_loads_and_runs() {
    let (g, _) = load_model(&relu_model().encode_to_vec(), &Limits::default()).unwrap();
    let mut ex = Executor::new(g, Limits::default()).unwrap();
    let y = ex.run(vec![Tensor::f32(vec![3], vec![-1.0, 0.0, 2.0]).unwrap()]).unwrap();
    assert_eq!(y[0].as_f32().unwrap(), &[0.0, 0.0, 2.0]);
}

#[test]
fn truncated_models_never_panic() {
    for model in [DIGITS, LITE0] {
        let step = (model.len() / 97).max(1);
        let mut cut = 1;
        while cut < model.len() {
            // Either a decode error, or a prefix that happens to decode must still fail validation
            // or load cleanly; what matters is a typed result.
            let _ = load_model(&model[..cut], &Limits::default());
            cut += step;
        }
    }
}

/// Writes the small cases to fuzz/seeds/, the fuzzers' hand-made seeds:
/// `cargo test -p qplay-core --test malformed -- --ignored write_fuzz_seeds`.
#[cfg(not(target_arch = "wasm32"))]
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    std::fs::create_dir_all(&dir).unwrap();
    for c in cases().iter().filter(|c| !c.bytes.is_empty() && c.bytes.len() <= 64 << 10 && c.bytes != DIGITS) {
        let name: String = c.name.chars().map(|ch| if ch.is_ascii_alphanumeric() { ch.to_ascii_lowercase() } else { '_' }).collect();
        std::fs::write(dir.join(format!("{name}.onnx")), &c.bytes).unwrap();
    }
    std::fs::write(dir.join("valid_relu.onnx"), relu_model().encode_to_vec()).unwrap();
}
