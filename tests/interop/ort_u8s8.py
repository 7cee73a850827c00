"""Whether onnxruntime's fused integer kernels sum uint8 x int8 products exactly on this CPU.

On x86-64 CPUs with AVX2 but without VNNI, onnxruntime's U8S8 GEMM multiplies with vpmaddubsw,
which adds each pair of products into a saturating 16-bit sum: 255 * 127 + 255 * 127 = 64770
becomes 32767. (onnxruntime's documentation notes this and suggests 7-bit weights there.) The
QDQ graphs qplay exports are then exact only as written (in float) and approximate once fused.
`exact()` runs one fused 1x1 convolution whose pair of products overflows 16 bits.
"""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def exact() -> bool:
    init = [
        numpy_helper.from_array(np.array(1.0, np.float32), "s1"),
        numpy_helper.from_array(np.array(0, np.uint8), "zx"),
        numpy_helper.from_array(np.full((1, 2, 1, 1), 127, np.int8), "wq"),
        numpy_helper.from_array(np.array(0, np.int8), "zw"),
        numpy_helper.from_array(np.array(256.0, np.float32), "sy"),
        numpy_helper.from_array(np.array(0, np.uint8), "zy"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s1", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s1", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "s1", "zw"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd"], ["c"]),
        helper.make_node("QuantizeLinear", ["c", "sy", "zy"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"]),
    ]
    g = helper.make_graph(nodes, "u8s8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 1, 1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])], init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    y = s.run(None, {"x": np.full((1, 2, 1, 1), 255.0, np.float32)})[0]
    # Exactly: round(64770 / 256) * 256 = 64768; a saturated pair sum gives 32768.
    return abs(float(y.ravel()[0]) - 64768.0) < 1.0


if __name__ == "__main__":
    print(exact())
