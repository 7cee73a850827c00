"""Checks a model written by `qplay compress --out` in onnxruntime (CPU) against qplay's outputs,
and counts its MACs independently of qplay.

usage: check_compressed.py ORIGINAL.onnx COMPRESSED.onnx X.npy QPLAY_OUT.npy
X holds N inputs along axis 0 (run one at a time when the model's batch is fixed at 1);
QPLAY_OUT is `qplay eval COMPRESSED.onnx --data X.npy --output` on the same inputs.
MACs are counted from onnx's own shape inference: Conv Cout*Cin/g*kh*kw*Ho*Wo, ConvTranspose
Cin*Cout/g*kh*kw*Hi*Wi, Gemm M*N*K, MatMul prod(output)*K, the rest free.
Prints one JSON line: {"max_rel_diff", "macs_original", "macs_compressed", "macs_ratio", "nodes"}.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def macs(path):
    m = onnx.shape_inference.infer_shapes(onnx.load(path))
    g = m.graph
    shape = {}
    for v in list(g.input) + list(g.output) + list(g.value_info):
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in v.type.tensor_type.shape.dim]
        shape[v.name] = dims
    for i in g.initializer:
        shape[i.name] = list(i.dims)
    total = 0
    for n in g.node:
        if n.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        x, w, y = shape[n.input[0]], shape[n.input[1]], shape[n.output[0]]
        if n.op_type == "Conv":
            total += int(np.prod(w)) * y[0] * int(np.prod(y[2:]))
        elif n.op_type == "ConvTranspose":
            total += int(np.prod(w)) * x[0] * int(np.prod(x[2:]))
        elif n.op_type == "Gemm":
            trans_a = any(a.name == "transA" and a.i for a in n.attribute)
            total += int(np.prod(y)) * (x[0] if trans_a else x[1])
        else:
            total += int(np.prod(y)) * x[-1]
    return total, len(g.node)


def main():
    original, compressed, x_path, ours_path = sys.argv[1:5]
    onnx.checker.check_model(onnx.load(compressed), full_check=True)
    s = ort.InferenceSession(compressed, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    x = np.load(x_path).astype(np.float32)
    fixed = isinstance(inp.shape[0], int) and inp.shape[0] == 1
    outs = [s.run(None, {inp.name: x[i : i + 1]})[0] for i in range(len(x))] if fixed else [s.run(None, {inp.name: x})[0]]
    theirs = np.concatenate(outs).reshape(-1)
    ours = np.load(ours_path).astype(np.float32).reshape(-1)
    rel = float(np.abs(theirs - ours).max() / max(np.abs(theirs).max(), 1e-30))
    m0, _ = macs(original)
    m1, nodes = macs(compressed)
    print(json.dumps({"max_rel_diff": rel, "macs_original": m0, "macs_compressed": m1, "macs_ratio": m1 / m0, "nodes": nodes}))


if __name__ == "__main__":
    main()
