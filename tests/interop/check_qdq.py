"""Runs a QDQ model exported by `qplay quantize --out` in onnxruntime (CPU) and compares its
outputs with qplay's simulated outputs (from `qplay run --encodings`).

usage: check_qdq.py MODEL.onnx INPUT.npy SIMULATED.npy ENCODINGS.json
Prints one JSON line: the largest difference in output quantization steps with onnxruntime's
graph optimizations disabled (the QDQ graph executed as written, in float) and enabled (its
default session: onnxruntime fuses QDQ patterns into its integer kernels), the top-1 agreement and the
SQNR of onnxruntime's outputs against qplay's for each; and, as the yardstick, the SQNR between
onnxruntime's outputs on the inputs and on the inputs perturbed by ~1e-6 relative noise, and how
far onnxruntime's two paths (literal and optimized) are from each other in output steps; and
"fused_exact": whether onnxruntime's fused kernels sum exactly on this CPU (see ort_u8s8.py).
The model must pass onnx's checker.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import ort_u8s8


def sqnr(ref, y):
    ref, y = ref.astype(np.float64), y.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((y - ref) ** 2), 1e-30)))


def main():
    model, x_path, sim_path, enc_path = sys.argv[1:5]
    onnx.checker.check_model(onnx.load(model), full_check=True)
    x, sim = np.load(x_path), np.load(sim_path)
    enc = json.load(open(enc_path))
    out = {"onnxruntime": ort.__version__}
    ys = {}
    for label, level in [("literal", ort.GraphOptimizationLevel.ORT_DISABLE_ALL), ("optimized", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)]:
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        so.intra_op_num_threads = 1
        s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        name = s.get_outputs()[0].name
        steps = [e["scale"][0] for e in enc["activation_encodings"] if e["name"] == name]
        # An output written by a layout op (Identity, Reshape) carries its input's grid: without an
        # encoding of its own, steps are measured on the 8-bit grid of the output's range.
        step = steps[0] if steps else float(sim.max() - sim.min()) / 255 or 1.0
        def run(x):
            return np.concatenate([s.run(None, {s.get_inputs()[0].name: x[i : i + 1]})[0] for i in range(len(x))]).reshape(sim.shape)

        y = ys[label] = run(x)
        out[label] = {
            "max_steps": float(np.abs(y - sim).max() / step),
            "top1_agreement": float((y.reshape(len(x), -1).argmax(1) == sim.reshape(len(x), -1).argmax(1)).mean()),
            "sqnr_db": sqnr(sim, y),
        }
        if label == "literal":
            # How far onnxruntime moves from itself when the input moves by ~1e-6 relative: deep
            # quantized models amplify any rounding flip, whoever computes them.
            noise = np.random.default_rng(0).standard_normal(x.shape)
            out[label]["self_sqnr_db"] = sqnr(y, run((x * (1 + 1e-6 * noise)).astype(np.float32)))
    out["optimized_vs_literal_max_steps"] = float(np.abs(ys["optimized"] - ys["literal"]).max() / step)
    out["fused_exact"] = ort_u8s8.exact()
    print(json.dumps(out))


main()
