//! Malformed and hostile models: every case must end in a typed error (never a panic, hang or
//! oversized allocation). Runs natively and in wasm32.

use prost::Message;
use qplay_core::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, SparseTensorProto, StringStringEntryProto, TensorProto, ValueInfoProto,
};
use qplay_core::{load_model, Error, Executor, Limits, Tensor};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

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

fn load(m: &ModelProto) -> Result<(), Error> {
    load_model(&m.encode_to_vec(), &Limits::default()).map(|_| ())
}

fn relu_model() -> ModelProto {
    model(vec![node("Relu", "r", &["x"], &["y"])], vec![], 13)
}

#[test]
fn a_valid_tiny_model_loads_and_runs() {
    let (g, _) = load_model(&relu_model().encode_to_vec(), &Limits::default()).unwrap();
    let mut ex = Executor::new(g, Limits::default()).unwrap();
    let y = ex.run(vec![Tensor::f32(vec![3], vec![-1.0, 0.0, 2.0]).unwrap()]).unwrap();
    assert_eq!(y[0].as_f32().unwrap(), &[0.0, 0.0, 2.0]);
}

#[test]
fn empty_file() {
    assert_eq!(load_model(&[], &Limits::default()).unwrap_err(), Error::EmptyFile);
}

#[test]
fn random_bytes() {
    let mut s = 0x1234_5678u32;
    for len in [1usize, 7, 100, 4096] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 24) as u8
            })
            .collect();
        assert!(load_model(&bytes, &Limits::default()).is_err(), "{len} random bytes");
    }
}

#[test]
fn png_renamed_onnx() {
    let e = load_model(PNG, &Limits::default()).unwrap_err();
    assert!(matches!(e, Error::Decode(_) | Error::NoOpset | Error::NoGraph), "{e}");
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
        assert!(matches!(load_model(&model[..model.len() - 3], &Limits::default()), Err(_)));
    }
}

#[test]
fn file_over_the_size_limit() {
    let limits = Limits { max_file_bytes: 1000, ..Limits::default() };
    assert_eq!(load_model(DIGITS, &limits).unwrap_err(), Error::FileTooLarge { size: DIGITS.len(), limit: 1000 });
}

#[test]
fn unknown_op_names_op_and_node() {
    let m = model(vec![node("FancyOp", "mynode", &["x"], &["y"])], vec![], 13);
    assert_eq!(load(&m).unwrap_err(), Error::UnsupportedOp { node: "mynode".into(), op: "FancyOp".into() });
    let mut m = relu_model();
    m.graph.as_mut().unwrap().node[0].domain = Some("com.microsoft".into());
    assert!(load(&m).unwrap_err().to_string().contains("com.microsoft:Relu"));
}

#[test]
fn raw_data_length_mismatch() {
    let mut w = f32_init("W", &[2, 3], 0);
    w.float_data.clear();
    w.raw_data = Some(vec![0u8; 20]);
    let m = model(vec![node("Add", "a", &["x", "W"], &["y"])], vec![w], 13);
    let e = load(&m).unwrap_err();
    assert!(matches!(&e, Error::Tensor { tensor, .. } if tensor == "W"), "{e}");
    assert!(e.to_string().contains("raw_data has 20 bytes"), "{e}");
}

#[test]
fn typed_data_length_mismatch() {
    let m = model(vec![node("Add", "a", &["x", "W"], &["y"])], vec![f32_init("W", &[4, 4], 3)], 13);
    assert!(matches!(load(&m).unwrap_err(), Error::Tensor { tensor, .. } if tensor == "W"));
}

#[test]
fn huge_dims_are_refused_before_allocating() {
    for dims in [vec![1i64 << 40, 1 << 40], vec![i64::MAX, 2], vec![1 << 20, 1 << 20], vec![-3, 2]] {
        let m = model(vec![node("Add", "a", &["x", "W"], &["y"])], vec![f32_init("W", &dims, 1)], 13);
        assert!(matches!(load(&m).unwrap_err(), Error::Tensor { .. } | Error::Limit(_)), "{dims:?}");
    }
}

#[test]
fn total_initializer_bytes_limit() {
    let inits = (0..4).map(|i| f32_init(&format!("W{i}"), &[256], 256)).collect();
    let m = model(vec![node("Relu", "r", &["x"], &["y"])], inits, 13);
    let limits = Limits { max_total_bytes: 3000, ..Limits::default() };
    assert!(matches!(load_model(&m.encode_to_vec(), &limits).unwrap_err(), Error::Limit(_)));
}

#[test]
fn cycle_is_detected() {
    let m = model(vec![node("Add", "a", &["x", "t2"], &["t1"]), node("Relu", "b", &["t1"], &["t2"]), node("Relu", "c", &["t2"], &["y"])], vec![], 13);
    let e = load(&m).unwrap_err();
    assert!(matches!(&e, Error::Graph(m) if m.contains("cycle")), "{e}");
}

#[test]
fn undefined_input() {
    let m = model(vec![node("Add", "adder", &["x", "ghost"], &["y"])], vec![], 13);
    let e = load(&m).unwrap_err();
    assert!(matches!(&e, Error::Node { node, .. } if node == "adder"), "{e}");
    assert!(e.to_string().contains("'ghost'"));
}

#[test]
fn duplicate_output() {
    let m = model(vec![node("Relu", "r1", &["x"], &["y"]), node("Relu", "r2", &["x"], &["y"])], vec![], 13);
    assert!(matches!(load(&m).unwrap_err(), Error::Node { node, .. } if node == "r2"));
}

#[test]
fn external_data_is_refused() {
    let mut w = f32_init("W", &[2], 0);
    w.data_location = Some(DataLocation::External as i32);
    w.external_data = vec![StringStringEntryProto { key: Some("location".into()), value: Some("/etc/passwd".into()) }];
    let m = model(vec![node("Add", "a", &["x", "W"], &["y"])], vec![w], 13);
    let e = load(&m).unwrap_err();
    assert!(e.to_string().contains("external data"), "{e}");
}

#[test]
fn sparse_initializer_is_refused() {
    let mut m = relu_model();
    m.graph.as_mut().unwrap().sparse_initializer = vec![SparseTensorProto { values: Some(f32_init("S", &[1], 1)), ..Default::default() }];
    assert!(load(&m).unwrap_err().to_string().contains("sparse"));
}

#[test]
fn unsupported_dtype() {
    let w = TensorProto { name: Some("H".into()), dims: vec![2], data_type: Some(10), raw_data: Some(vec![0; 4]), ..Default::default() };
    let m = model(vec![node("Add", "a", &["x", "H"], &["y"])], vec![w], 13);
    assert!(load(&m).unwrap_err().to_string().contains("FLOAT16"));
}

#[test]
fn opsets_out_of_range() {
    for v in [7, 10, 22, 99] {
        assert_eq!(load(&model(vec![node("Relu", "r", &["x"], &["y"])], vec![], v)).unwrap_err(), Error::UnsupportedOpset { version: v });
    }
    let mut m = relu_model();
    m.opset_import.clear();
    assert_eq!(load(&m).unwrap_err(), Error::NoOpset);
}

#[test]
fn empty_graph_and_no_graph() {
    assert!(matches!(load(&model(vec![], vec![], 13)).unwrap_err(), Error::Graph(_)));
    let mut m = relu_model();
    m.graph = None;
    assert_eq!(load(&m).unwrap_err(), Error::NoGraph);
}

#[test]
fn wrong_attribute_type() {
    let mut n = node("Conv", "conv", &["x", "W"], &["y"]);
    n.attribute.push(AttributeProto { name: Some("group".into()), r#type: Some(AttributeType::Float as i32), f: Some(2.0), ..Default::default() });
    let m = model(vec![n], vec![f32_init("W", &[1, 1, 1, 1], 1)], 13);
    let e = load(&m).unwrap_err();
    assert!(matches!(&e, Error::Node { node, .. } if node == "conv"), "{e}");
    assert!(e.to_string().contains("'group'"));
}

#[test]
fn graph_output_not_produced() {
    let mut m = relu_model();
    m.graph.as_mut().unwrap().output = vec![vi("nowhere")];
    assert!(load(&m).unwrap_err().to_string().contains("'nowhere'"));
}

#[test]
fn runtime_shape_errors_name_the_node() {
    let w = f32_init("W", &[4, 3, 3, 3], 108);
    let m = model(vec![node("Conv", "c1", &["x", "W"], &["y"])], vec![w], 13);
    let (g, _) = load_model(&m.encode_to_vec(), &Limits::default()).unwrap();
    let mut ex = Executor::new(g, Limits::default()).unwrap();
    // 2 channels instead of 3
    let e = ex.run(vec![Tensor::f32(vec![1, 2, 5, 5], vec![0.0; 50]).unwrap()]).unwrap_err();
    assert!(matches!(&e, Error::Node { node, op, .. } if node == "c1" && op == "Conv"), "{e}");
    // declared input shapes are checked
    let (g, _) = load_model(DIGITS, &Limits::default()).unwrap();
    let mut ex = Executor::new(g, Limits::default()).unwrap();
    let e = ex.run(vec![Tensor::f32(vec![1, 1, 9, 8], vec![0.0; 72]).unwrap()]).unwrap_err();
    assert!(matches!(e, Error::Input { .. }), "{e}");
}

#[test]
fn outputs_over_the_element_limit_are_refused() {
    let c = TensorProto { name: Some("s".into()), dims: vec![3], data_type: Some(7), int64_data: vec![1 << 20, 1 << 20, 1 << 20], ..Default::default() };
    let m = model(vec![node("ConstantOfShape", "big", &["s"], &["t"]), node("Add", "a", &["x", "t"], &["y"])], vec![c], 13);
    // Folding the constant sub-graph happens when the executor is built: it must refuse, not allocate.
    let (g, _) = load_model(&m.encode_to_vec(), &Limits::default()).unwrap();
    let e = Executor::new(g, Limits::default()).unwrap_err();
    assert!(matches!(&e, Error::Node { node, .. } if node == "big"), "{e}");
}

#[test]
fn deeply_nested_protobuf_is_refused() {
    // A graph attribute nested far beyond prost's recursion limit.
    let mut attr = AttributeProto { name: Some("g".into()), ..Default::default() };
    for _ in 0..200 {
        let inner = NodeProto { op_type: Some("If".into()), attribute: vec![attr], ..Default::default() };
        attr = AttributeProto { name: Some("g".into()), g: Some(GraphProto { node: vec![inner], ..Default::default() }), ..Default::default() };
    }
    let mut m = relu_model();
    m.graph.as_mut().unwrap().node[0].attribute.push(attr);
    assert!(matches!(load(&m).unwrap_err(), Error::Decode(_)));
}

#[test]
fn node_count_and_rank_limits() {
    let nodes: Vec<NodeProto> = (0..50).map(|i| node("Relu", &format!("r{i}"), &[if i == 0 { "x" } else { "t" }], &[if i == 49 { "y" } else { "t" }])).collect();
    let m = model(nodes, vec![], 13);
    let limits = Limits { max_nodes: 10, ..Limits::default() };
    assert!(matches!(load_model(&m.encode_to_vec(), &limits).unwrap_err(), Error::Limit(_)));
    let w = f32_init("W", &[1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 1);
    let m = model(vec![node("Add", "a", &["x", "W"], &["y"])], vec![w], 13);
    assert!(load(&m).unwrap_err().to_string().contains("rank 10"));
}

#[test]
fn runtime_errors_name_the_node() {
    let run = |nodes: Vec<NodeProto>, inits: Vec<TensorProto>, x: Tensor| -> Error {
        let m = model(nodes, inits, 13);
        let (g, _) = load_model(&m.encode_to_vec(), &Limits::default()).unwrap();
        Executor::new(g, Limits::default()).unwrap().run(vec![x]).unwrap_err()
    };
    let x = || Tensor::f32(vec![1, 2, 3, 3], vec![0.0; 18]).unwrap();
    let i64s = |name: &str, v: Vec<i64>| TensorProto { name: Some(name.into()), dims: vec![v.len() as i64], data_type: Some(7), int64_data: v, ..Default::default() };
    // kernel larger than the input
    let e = run(vec![node("Conv", "big_kernel", &["x", "W"], &["y"])], vec![f32_init("W", &[1, 2, 5, 5], 50)], x());
    assert!(matches!(&e, Error::Node { node, .. } if node == "big_kernel"), "{e}");
    // impossible reshape
    let e = run(vec![node("Reshape", "rs", &["x", "s"], &["y"])], vec![i64s("s", vec![4, -1, 5])], x());
    assert!(matches!(&e, Error::Node { node, .. } if node == "rs"), "{e}");
    // gather index out of range
    let e = run(vec![node("Gather", "ga", &["x", "i"], &["y"])], vec![i64s("i", vec![7])], x());
    assert!(e.to_string().contains("out of range"), "{e}");
    // shapes that do not broadcast
    let e = run(vec![node("Add", "ad", &["x", "W"], &["y"])], vec![f32_init("W", &[5], 5)], x());
    assert!(e.to_string().contains("broadcast"), "{e}");
}
