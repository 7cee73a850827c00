//! Golden tests: qplay's FP32 executor against onnxruntime's outputs (checked-in references),
//! for the sample models and for single-op cases (tests/golden/make_ops.py). Runs natively and
//! compiled to wasm32 under wasm-bindgen-test (Node).

use qplay_core::npy::read_npy;
use qplay_core::{load_model, Executor, Limits, Tensor};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

macro_rules! asset {
    ($p:expr) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../", $p)) as &[u8]
    };
}

fn npy(bytes: &[u8]) -> Tensor {
    read_npy(bytes, 1 << 26).expect("reference npy")
}

fn run_model(model: &[u8], input: Tensor) -> Tensor {
    let (g, _) = load_model(model, &Limits::default()).expect("load");
    let mut ex = Executor::new(g, Limits::default()).expect("plan");
    ex.run(vec![input]).expect("run").remove(0)
}

/// max |y - r| <= tol_rel * max |r| (+ a tiny absolute floor for all-zero references).
fn assert_close(what: &str, y: &Tensor, r: &Tensor, tol_rel: f32) {
    if let Some(m) = difference(what, y, r, tol_rel) {
        panic!("{m}");
    }
}

/// What is wrong with `y` against the reference `r`, if anything.
fn difference(what: &str, y: &Tensor, r: &Tensor, tol_rel: f32) -> Option<String> {
    if y.shape() != r.shape() {
        return Some(format!("{what}: shape {:?}, onnxruntime's {:?}", y.shape(), r.shape()));
    }
    let (yd, rd) = (y.to_f32_vec(), r.to_f32_vec());
    let scale = rd.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = yd.iter().zip(&rd).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    (!(diff <= tol_rel * scale + 1e-6)).then(|| format!("{what}: max |diff| {diff} > {tol_rel} * {scale}"))
}

fn argmax_rows(t: &Tensor) -> Vec<usize> {
    let d = t.to_f32_vec();
    let k = *t.shape().last().unwrap();
    d.chunks(k).map(|r| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0).collect()
}

macro_rules! lite0_case {
    ($name:ident, $stem:literal) => {
        #[test]
        fn $name() {
            let x = npy(asset!(concat!("tests/reference/efficientnet_lite0/", $stem, ".input.npy")));
            let r = npy(asset!(concat!("tests/reference/efficientnet_lite0/", $stem, ".logits.npy")));
            let y = run_model(asset!("assets/models/efficientnet_lite0.onnx"), x);
            assert_close($stem, &y, &r, 1e-4);
            assert_eq!(argmax_rows(&y), argmax_rows(&r), "{}: top-1", $stem);
        }
    };
}

lite0_case!(lite0_astronaut, "astronaut");
lite0_case!(lite0_camera, "camera");
lite0_case!(lite0_chelsea, "chelsea");
lite0_case!(lite0_china, "china");
lite0_case!(lite0_coffee, "coffee");
lite0_case!(lite0_flower, "flower");
lite0_case!(lite0_hubble, "hubble_deep_field");
lite0_case!(lite0_ihc, "ihc");
lite0_case!(lite0_retina, "retina");
lite0_case!(lite0_rocket, "rocket");

#[test]
fn digits_mobilenet_batch32() {
    let x = npy(asset!("tests/reference/digits_mobilenet.input_first32.npy"));
    let r = npy(asset!("tests/reference/digits_mobilenet.logits_first32.npy"));
    let y = run_model(asset!("assets/models/digits_mobilenet.onnx"), x);
    assert_close("digits_mobilenet", &y, &r, 1e-4);
    assert_eq!(argmax_rows(&y), argmax_rows(&r));
}

#[test]
fn digits_mlp_batch32() {
    let x = npy(asset!("tests/reference/digits_mlp.input_first32.npy"));
    let r = npy(asset!("tests/reference/digits_mlp.logits_first32.npy"));
    let y = run_model(asset!("assets/models/digits_mlp.onnx"), x);
    assert_close("digits_mlp", &y, &r, 1e-4);
    assert_eq!(argmax_rows(&y), argmax_rows(&r));
}

macro_rules! op_cases {
    ($($name:ident),* $(,)?) => {
        const OP_CASES: &[(&str, &[u8], &[u8], &[u8])] = &[$((
            stringify!($name),
            asset!(concat!("tests/golden/ops/", stringify!($name), "/model.onnx")),
            asset!(concat!("tests/golden/ops/", stringify!($name), "/input.npy")),
            asset!(concat!("tests/golden/ops/", stringify!($name), "/output.npy")),
        )),*];
    };
}

op_cases!(
    add_broadcast_channel,
    average_pool_ceil_exclude,
    average_pool_pads_include,
    batchnorm,
    clip_min_max_inputs,
    clip_min_only,
    concat_axis1,
    constant_node_mul,
    conv_depthwise_5x5_pads,
    conv_depthwise_same_lower_s2,
    conv_dilation_pads,
    conv_group_strides_pads,
    conv_pointwise,
    conv_same_upper_s2,
    conv_transpose_basic,
    conv_transpose_depthwise_upsample,
    conv_transpose_group_dilation,
    conv_transpose_output_shape,
    conv_transpose_same_upper,
    conv_transpose_strides_pads_outpad,
    conv_valid_stride3,
    div_broadcast_both,
    dropout_identity,
    flatten_axis2,
    gelu_erf_decomposed,
    gelu_opset20,
    gemm_transA_alpha_beta,
    gemm_transB,
    global_average_pool,
    hardsigmoid,
    hardswish,
    instance_norm,
    layer_norm_axis1_no_bias,
    layer_norm_decomposed,
    layer_norm_last_axis,
    leakyrelu,
    matmul_batched,
    matmul_two_activations,
    max_pool_dilated,
    max_pool_pads_ceil,
    max_pool_same_upper,
    mul_scalar,
    pad_constant_value,
    pad_edge,
    pad_reflect,
    reduce_max_keepdims0,
    reduce_mean_axes_keepdims0,
    reduce_mean_opset18_input_axes,
    reduce_min_all,
    reduce_sum_opset11_attr,
    reduce_sum_opset13_input_axes,
    relu,
    reshape_zero_minus1,
    resize_linear_align_corners_sizes,
    resize_linear_asymmetric,
    resize_linear_half_pixel_down,
    resize_linear_half_pixel_symmetric_opset19,
    resize_linear_half_pixel_up,
    resize_linear_pytorch_half_pixel_to_1,
    resize_nearest_align_corners_sizes,
    resize_nearest_asymmetric_floor_up,
    resize_nearest_half_pixel_down,
    resize_nearest_prefer_ceil_sizes,
    resize_nearest_tf_half_pixel_ceil,
    resize_opset10_linear,
    resize_opset10_nearest_down,
    resize_opset10_nearest_up,
    resize_opset11_roi_scales,
    shape_subgraph_reshape,
    sigmoid,
    slice_negative_steps,
    softmax_axis1,
    softmax_legacy_opset11,
    split_opset11_attr,
    split_opset11_equal,
    split_opset13_sizes,
    split_opset18_num_outputs,
    squeeze_unsqueeze,
    sub_broadcast_row,
    tanh,
    transpose_perm,
    upsample_opset7_linear,
    upsample_opset9_nearest,
);

/// Every case is run and every failure reported (not only the first).
#[test]
fn single_op_cases_match_onnxruntime() {
    let mut failures = Vec::new();
    for (name, model, input, output) in OP_CASES {
        let run = load_model(model, &Limits::default()).and_then(|(g, _)| Executor::new(g, Limits::default())?.run(vec![npy(input)]));
        match run {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok(y) => failures.extend(difference(name, &y[0], &npy(output), 1e-5)),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ from onnxruntime:\n{}", failures.len(), OP_CASES.len(), failures.join("\n"));
}

/// Every generated case directory is listed above (a new case cannot be skipped silently).
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn op_case_list_is_complete() {
    let listed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden/ops/CASES.txt")).unwrap();
    let names: Vec<&str> = OP_CASES.iter().map(|c| c.0).collect();
    assert_eq!(listed.lines().collect::<Vec<_>>(), names);
    assert!(names.len() >= 12);
}
