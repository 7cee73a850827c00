#!/usr/bin/env python3
"""Builds the single-op golden cases in tests/golden/ops/: for each case a tiny ONNX model
(onnx.helper), a seeded random input and onnxruntime's output (CPU, no graph optimisation).

    python3 tests/golden/make_ops.py          # needs: pip install onnx onnxruntime numpy

The Rust tests (core/tests/golden.rs) run every case and compare with onnxruntime's output.
"""
import os, shutil
import numpy as np
import onnx
from onnx import helper as h, TensorProto as TP, numpy_helper as nh
import onnxruntime as ort

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops")
rng = np.random.default_rng(0)


def init(name, arr):
    return nh.from_array(np.asarray(arr), name)


def case(name, nodes, x_shape, inits=(), opset=13, y_name="y"):
    x = rng.standard_normal(x_shape).astype(np.float32)

    def build(y_shape):
        graph = h.make_graph(
            nodes, name,
            [h.make_tensor_value_info("x", TP.FLOAT, list(x_shape))],
            [h.make_tensor_value_info(y_name, TP.FLOAT, y_shape)],
            initializer=list(inits))
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], producer_name="qplay-golden")
        model.ir_version = 9 if opset >= 19 else 8
        return model

    def run(model):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x})[0].astype(np.float32)

    # First run with an undeclared output shape, then declare it and validate the final model.
    y = run(build(None))
    model = build(list(y.shape))
    onnx.checker.check_model(model, full_check=True)
    assert np.array_equal(run(model), y)
    d = os.path.join(OUT, name)
    os.makedirs(d)
    onnx.save(model, os.path.join(d, "model.onnx"))
    np.save(os.path.join(d, "input.npy"), x)
    np.save(os.path.join(d, "output.npy"), y)


def w(*shape):
    return rng.standard_normal(shape).astype(np.float32) * 0.5


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    N = h.make_node
    case("conv_group_strides_pads", [N("Conv", ["x", "w", "b"], ["y"], group=2, strides=[2, 1], pads=[1, 0, 2, 1])],
         (2, 4, 9, 8), [init("w", w(6, 2, 3, 2)), init("b", w(6))])
    case("conv_dilation_pads", [N("Conv", ["x", "w"], ["y"], dilations=[2, 3], pads=[2, 1, 0, 3], kernel_shape=[3, 3])],
         (1, 3, 10, 11), [init("w", w(5, 3, 3, 3))])
    case("conv_same_upper_s2", [N("Conv", ["x", "w"], ["y"], strides=[2, 2], auto_pad="SAME_UPPER")],
         (1, 3, 10, 11), [init("w", w(4, 3, 4, 3))])
    case("conv_depthwise_same_lower_s2", [N("Conv", ["x", "w", "b"], ["y"], group=6, strides=[2, 2], auto_pad="SAME_LOWER")],
         (1, 6, 9, 10), [init("w", w(6, 1, 3, 3)), init("b", w(6))])
    case("conv_depthwise_5x5_pads", [N("Conv", ["x", "w"], ["y"], group=4, pads=[2, 2, 2, 2])],
         (1, 4, 7, 7), [init("w", w(4, 1, 5, 5))])
    case("conv_pointwise", [N("Conv", ["x", "w", "b"], ["y"])], (1, 13, 6, 5), [init("w", w(9, 13, 1, 1)), init("b", w(9))])
    case("conv_valid_stride3", [N("Conv", ["x", "w"], ["y"], strides=[3, 3], auto_pad="VALID")], (1, 2, 11, 10), [init("w", w(3, 2, 4, 2))])
    var = np.abs(w(5)) + 0.1
    case("batchnorm", [N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)], (2, 5, 3, 4),
         [init("s", w(5)), init("b", w(5)), init("m", w(5)), init("v", var)])
    case("clip_min_max_inputs", [N("Clip", ["x", "lo", "hi"], ["y"])], (2, 3, 4), [init("lo", np.float32(-0.5)), init("hi", np.float32(0.7))])
    case("clip_min_only", [N("Clip", ["x", "lo"], ["y"])], (2, 7), [init("lo", np.float32(0.1))])
    case("relu", [N("Relu", ["x"], ["y"])], (3, 5))
    case("leakyrelu", [N("LeakyRelu", ["x"], ["y"], alpha=0.2)], (3, 5))
    case("sigmoid", [N("Sigmoid", ["x"], ["y"])], (3, 5))
    case("hardsigmoid", [N("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4)], (3, 5))
    case("hardswish", [N("HardSwish", ["x"], ["y"])], (3, 5), opset=14)
    case("tanh", [N("Tanh", ["x"], ["y"])], (3, 5))
    case("add_broadcast_channel", [N("Add", ["x", "c"], ["y"])], (2, 3, 4, 5), [init("c", w(3, 1, 1))])
    case("sub_broadcast_row", [N("Sub", ["c", "x"], ["y"])], (2, 3, 4), [init("c", w(4))])
    case("mul_scalar", [N("Mul", ["x", "c"], ["y"])], (2, 3), [init("c", np.float32(1.5))])
    case("div_broadcast_both", [N("Div", ["x", "c"], ["y"])], (3, 1, 4), [init("c", np.abs(w(2, 1)) + 0.5)])
    case("global_average_pool", [N("GlobalAveragePool", ["x"], ["y"])], (2, 3, 5, 6))
    case("average_pool_pads_include", [N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)], (1, 2, 7, 8))
    case("average_pool_ceil_exclude", [N("AveragePool", ["x"], ["y"], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 0], ceil_mode=1)], (1, 2, 8, 7))
    case("max_pool_pads_ceil", [N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)], (1, 3, 8, 9))
    case("max_pool_dilated", [N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2], strides=[1, 2])], (1, 2, 6, 7))
    case("max_pool_same_upper", [N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")], (1, 2, 7, 8))
    case("gemm_transA_alpha_beta", [N("Gemm", ["x", "b", "c"], ["y"], transA=1, alpha=0.7, beta=1.3)], (6, 4), [init("b", w(6, 5)), init("c", w(5))])
    case("gemm_transB", [N("Gemm", ["x", "b", "c"], ["y"], transB=1)], (3, 7), [init("b", w(10, 7)), init("c", w(3, 10))])
    case("matmul_batched", [N("MatMul", ["x", "b"], ["y"])], (2, 3, 5), [init("b", w(5, 4))])
    case("flatten_axis2", [N("Flatten", ["x"], ["y"], axis=2)], (2, 3, 4, 5))
    case("reshape_zero_minus1", [N("Reshape", ["x", "s"], ["y"])], (2, 3, 4, 5), [init("s", np.array([0, -1, 5], np.int64))])
    case("transpose_perm", [N("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])], (2, 3, 4, 5))
    case("concat_axis1", [N("Concat", ["x", "c"], ["y"], axis=1)], (2, 3, 4), [init("c", w(2, 2, 4))])
    case("squeeze_unsqueeze", [N("Squeeze", ["x", "a"], ["t"]), N("Unsqueeze", ["t", "b"], ["y"])], (2, 1, 3, 1),
         [init("a", np.array([1, 3], np.int64)), init("b", np.array([0, -1], np.int64))])
    case("softmax_axis1", [N("Softmax", ["x"], ["y"], axis=1)], (2, 4, 3))
    case("softmax_legacy_opset11", [N("Softmax", ["x"], ["y"])], (2, 3, 4), opset=11)
    case("pad_constant_value", [N("Pad", ["x", "p", "v"], ["y"])], (1, 2, 3, 4),
         [init("p", np.array([0, 0, 1, 2, 0, 1, 0, 1], np.int64)), init("v", np.float32(0.25))])
    case("pad_reflect", [N("Pad", ["x", "p"], ["y"], mode="reflect")], (1, 2, 4, 5), [init("p", np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64))])
    case("pad_edge", [N("Pad", ["x", "p"], ["y"], mode="edge")], (1, 1, 3, 3), [init("p", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))])
    case("reduce_mean_axes_keepdims0", [N("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)], (2, 3, 4, 5))
    case("reduce_mean_opset18_input_axes", [N("ReduceMean", ["x", "a"], ["y"])], (2, 3, 4), [init("a", np.array([-1], np.int64))], opset=18)
    case("shape_subgraph_reshape", [
        N("Shape", ["x"], ["s"]), N("Gather", ["s", "i0"], ["n"], axis=0), N("Unsqueeze", ["n", "ax"], ["n1"]),
        N("Concat", ["n1", "m1"], ["shape"], axis=0), N("Reshape", ["x", "shape"], ["y"])], (3, 2, 4),
        [init("i0", np.array(0, np.int64)), init("ax", np.array([0], np.int64)), init("m1", np.array([-1], np.int64))])
    case("dropout_identity", [N("Dropout", ["x"], ["t"]), N("Identity", ["t"], ["y"])], (2, 5))
    case("constant_node_mul", [N("Constant", [], ["k"], value=nh.from_array(w(1, 5), "k")), N("Mul", ["x", "k"], ["y"])], (3, 5))
    # Ops real exporters emit (paddle2onnx, tf2onnx, torch.onnx): Resize in every opset and
    # coordinate mode, Upsample, ConvTranspose, Split, reductions, normalisation layers.
    f32 = lambda *v: np.array(v, np.float32)
    i64 = lambda *v: np.array(v, np.int64)
    R = lambda name, x_shape, mode, inputs, inits, opset=13, **kw: case(name, [N("Resize", inputs, ["y"], mode=mode, **kw)], x_shape, inits, opset=opset)
    R("resize_nearest_asymmetric_floor_up", (1, 2, 3, 4), "nearest", ["x", "", "sc"], [init("sc", f32(1, 1, 2, 3))],
      coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    R("resize_nearest_half_pixel_down", (1, 2, 8, 10), "nearest", ["x", "", "sc"], [init("sc", f32(1, 1, 0.5, 0.6))])
    R("resize_nearest_prefer_ceil_sizes", (1, 2, 4, 5), "nearest", ["x", "", "", "sz"], [init("sz", i64(1, 2, 7, 13))],
      nearest_mode="round_prefer_ceil")
    R("resize_nearest_tf_half_pixel_ceil", (1, 1, 4, 4), "nearest", ["x", "", "sc"], [init("sc", f32(1, 1, 1.5, 2.5))],
      coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode="ceil")
    R("resize_nearest_align_corners_sizes", (1, 2, 5, 3), "nearest", ["x", "", "", "sz"], [init("sz", i64(1, 2, 8, 7))],
      coordinate_transformation_mode="align_corners")
    R("resize_linear_half_pixel_up", (1, 3, 4, 5), "linear", ["x", "", "sc"], [init("sc", f32(1, 1, 2, 2))])
    R("resize_linear_half_pixel_down", (1, 2, 8, 8), "linear", ["x", "", "sc"], [init("sc", f32(1, 1, 0.5, 0.75))])
    R("resize_linear_align_corners_sizes", (1, 3, 4, 5), "linear", ["x", "", "", "sz"], [init("sz", i64(1, 3, 9, 7))],
      coordinate_transformation_mode="align_corners")
    R("resize_linear_asymmetric", (2, 2, 3, 4), "linear", ["x", "", "sc"], [init("sc", f32(1, 1, 1.7, 2.3))],
      coordinate_transformation_mode="asymmetric")
    R("resize_linear_pytorch_half_pixel_to_1", (1, 2, 4, 5), "linear", ["x", "", "", "sz"], [init("sz", i64(1, 2, 1, 6))],
      coordinate_transformation_mode="pytorch_half_pixel")
    R("resize_linear_half_pixel_symmetric_opset19", (1, 2, 5, 4), "linear", ["x", "", "sc"], [init("sc", f32(1, 1, 1.6, 0.7))],
      opset=19, coordinate_transformation_mode="half_pixel_symmetric")
    R("resize_opset11_roi_scales", (1, 2, 3, 5), "linear", ["x", "roi", "sc"], [init("roi", np.zeros(0, np.float32)), init("sc", f32(1, 1, 2, 1.5))],
      opset=11, coordinate_transformation_mode="pytorch_half_pixel")
    R("resize_opset10_nearest_up", (1, 2, 3, 4), "nearest", ["x", "sc"], [init("sc", f32(1, 1, 2, 2.5))], opset=10)
    R("resize_opset10_nearest_down", (1, 2, 8, 9), "nearest", ["x", "sc"], [init("sc", f32(1, 1, 0.5, 0.4))], opset=10)
    R("resize_opset10_linear", (1, 2, 3, 4), "linear", ["x", "sc"], [init("sc", f32(1, 1, 2, 3))], opset=10)
    case("upsample_opset9_nearest", [N("Upsample", ["x", "sc"], ["y"])], (1, 2, 3, 3), [init("sc", f32(1, 1, 2, 2))], opset=9)
    case("upsample_opset7_linear", [N("Upsample", ["x"], ["y"], mode="linear", scales=[1.0, 1.0, 2.0, 3.0])], (1, 2, 3, 3), opset=7)

    case("conv_transpose_basic", [N("ConvTranspose", ["x", "w", "b"], ["y"])], (1, 3, 5, 4), [init("w", w(3, 2, 3, 3)), init("b", w(2))])
    case("conv_transpose_strides_pads_outpad", [N("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 0, 1, 1], output_padding=[1, 0])],
         (2, 4, 3, 4), [init("w", w(4, 3, 3, 2))])
    case("conv_transpose_group_dilation", [N("ConvTranspose", ["x", "w", "b"], ["y"], group=2, dilations=[2, 1], strides=[1, 2])],
         (1, 4, 4, 3), [init("w", w(4, 3, 2, 3)), init("b", w(6))])
    case("conv_transpose_depthwise_upsample", [N("ConvTranspose", ["x", "w"], ["y"], group=4, strides=[2, 2], pads=[1, 1, 1, 1])],
         (1, 4, 5, 6), [init("w", w(4, 1, 4, 4))])
    case("conv_transpose_output_shape", [N("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], output_shape=[10, 9])],
         (1, 2, 5, 4), [init("w", w(2, 2, 3, 3))])
    case("conv_transpose_same_upper", [N("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], auto_pad="SAME_UPPER")],
         (1, 2, 3, 4), [init("w", w(2, 3, 3, 3))])

    case("split_opset13_sizes", [N("Split", ["x", "s"], ["a", "b", "c"], axis=1), N("Concat", ["c", "a", "b"], ["y"], axis=1)],
         (2, 6, 3), [init("s", i64(2, 3, 1))])
    case("split_opset11_equal", [N("Split", ["x"], ["a", "b"], axis=-1), N("Concat", ["b", "a"], ["y"], axis=-1)], (2, 3, 8), opset=11)
    case("split_opset11_attr", [N("Split", ["x"], ["a", "b"], axis=0, split=[1, 2]), N("Sub", ["b", "a"], ["y"])], (3, 4), opset=11)
    case("split_opset18_num_outputs", [N("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3), N("Concat", ["c", "b", "a"], ["y"], axis=1)],
         (2, 7), opset=18)
    case("reduce_sum_opset13_input_axes", [N("ReduceSum", ["x", "a"], ["y"])], (2, 3, 4), [init("a", i64(1))])
    case("reduce_sum_opset11_attr", [N("ReduceSum", ["x"], ["y"], axes=[0, 2], keepdims=0)], (2, 3, 4), opset=11)
    case("reduce_max_keepdims0", [N("ReduceMax", ["x"], ["y"], axes=[-1], keepdims=0)], (2, 3, 5))
    case("reduce_min_all", [N("ReduceMin", ["x"], ["y"])], (2, 3, 5))
    case("instance_norm", [N("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)], (2, 3, 4, 5), [init("s", w(3)), init("b", w(3))])
    case("layer_norm_last_axis", [N("LayerNormalization", ["x", "s", "b"], ["y"])], (2, 3, 8), [init("s", w(8)), init("b", w(8))], opset=17)
    case("layer_norm_axis1_no_bias", [N("LayerNormalization", ["x", "s"], ["y"], axis=1, epsilon=1e-3)], (2, 3, 4), [init("s", w(3, 4))], opset=17)
    # LayerNorm as tf2onnx and older torch exports spell it out.
    case("layer_norm_decomposed", [
        N("ReduceMean", ["x"], ["m"], axes=[-1]), N("Sub", ["x", "m"], ["d"]), N("Pow", ["d", "two"], ["d2"]),
        N("ReduceMean", ["d2"], ["v"], axes=[-1]), N("Add", ["v", "eps"], ["ve"]), N("Sqrt", ["ve"], ["sd"]),
        N("Div", ["d", "sd"], ["n"]), N("Mul", ["n", "s"], ["ns"]), N("Add", ["ns", "b"], ["y"])], (2, 5, 6),
        [init("two", np.float32(2)), init("eps", np.float32(1e-5)), init("s", w(6)), init("b", w(6))])
    case("gelu_erf_decomposed", [
        N("Div", ["x", "r2"], ["t"]), N("Erf", ["t"], ["e"]), N("Add", ["e", "one"], ["e1"]), N("Mul", ["x", "e1"], ["p"]),
        N("Mul", ["p", "half"], ["y"])], (3, 7), [init("r2", np.float32(np.sqrt(2))), init("one", np.float32(1)), init("half", np.float32(0.5))])
    case("gelu_opset20", [N("Gelu", ["x"], ["y"])], (3, 7), opset=20)
    case("matmul_two_activations", [N("Split", ["x"], ["a", "b"], axis=1), N("Transpose", ["b"], ["bt"], perm=[0, 2, 1]),
                                    N("MatMul", ["a", "bt"], ["y"])], (2, 4, 6))
    case("slice_negative_steps", [N("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], (3, 6, 5),
         [init("st", i64(-1, 1)), init("en", i64(-7, 5)), init("ax", i64(1, 2)), init("sp", i64(-2, 2))])
    names = sorted(os.listdir(OUT))
    with open(os.path.join(OUT, "CASES.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    print(f"{len(names)} cases in {OUT}")


if __name__ == "__main__":
    main()
