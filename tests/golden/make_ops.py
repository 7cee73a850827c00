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
        model.ir_version = 8
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
    names = sorted(os.listdir(OUT))
    with open(os.path.join(OUT, "CASES.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    print(f"{len(names)} cases in {OUT}")


if __name__ == "__main__":
    main()
