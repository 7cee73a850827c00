"""Runs a QDQ model exported by `qplay quantize --out` one layer at a time in onnxruntime (CPU), each
layer on qplay's own simulated inputs, and compares its output with qplay's simulated output.

usage: check_layers.py MODEL.onnx DUMP_DIR ENCODINGS.json
DUMP_DIR comes from `qplay eval --encodings ... --dump DUMP_DIR`: every quantized activation of
qplay's simulation. A layer is everything between quantized activations: the nodes from the
DequantizeLinear that yields one activation back to, and including, the DequantizeLinear nodes of
the activations it reads (weights and constants included), fed with qplay's activations as the
integers those read. Comparing layer by layer shows whether each exported
layer computes what qplay simulates, without the amplification of a deep network, where one
rounding flip early on moves later outputs by several steps.
Prints one JSON line: the number of layers checked, the largest difference in output steps with
the graph executed as written (literal) and with onnxruntime's fused integer kernels (optimized),
the layer where each occurs, and the share of output values off by more than half a step.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import ort_u8s8
from onnx import helper


def main():
    model_path, dump_dir, enc_path = sys.argv[1:4]
    model = onnx.load(model_path)
    g = model.graph
    index = json.load(open(os.path.join(dump_dir, "index.json")))
    step = {e["name"]: e["scale"][0] for e in json.load(open(enc_path))["activation_encodings"]}
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}

    def activation_of(dq_out):
        """The encoded activation a DequantizeLinear output stands for (None for weights)."""
        n = producer.get(dq_out)
        if n is None or n.op_type != "DequantizeLinear":
            return None
        q = producer.get(n.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            return None
        name = dq_out if dq_out in index else q.input[0].removesuffix("_prequant")
        return name if name in index else None

    def layer(out):
        """Nodes (in graph order) and activation inputs of the layer ending at `out`."""
        nodes, inputs, stack, seen = set(), {}, [out], set()
        while stack:
            t = stack.pop()
            n = producer.get(t)
            if n is None or id(n) in seen:
                continue
            seen.add(id(n))
            nodes.add(id(n))
            for i in n.input:
                if not i or i in inits:
                    continue
                a = activation_of(i)
                if a is not None and i != out:
                    # Start at the quantized integers: the layer's DequantizeLinear belongs to it
                    # (onnxruntime fuses it into its integer kernels).
                    dqn = producer[i]
                    nodes.add(id(dqn))
                    inputs[dqn.input[0]] = (a, dqn)
                elif i in producer:
                    stack.append(i)
                else:
                    return None, None
        return [n for n in g.node if id(n) in nodes], inputs

    dump = {k: np.load(os.path.join(dump_dir, f)) for k, f in index.items()}

    def quantized(a, dqn, b):
        """qplay's simulated activation `a` (sample b) as the integers its DequantizeLinear reads."""
        scale = onnx.numpy_helper.to_array(inits[dqn.input[1]]).astype(np.float32)
        zp = onnx.numpy_helper.to_array(inits[dqn.input[2]])
        q = np.round(dump[a][b : b + 1] / scale) + zp.astype(np.float64)
        info = np.iinfo(zp.dtype)
        return np.clip(q, info.min, info.max).astype(zp.dtype)

    batch = min(v.shape[0] for v in dump.values())
    worst = {"literal": (0.0, None), "optimized": (0.0, None)}
    off, total, checked = {"literal": 0, "optimized": 0}, 0, 0
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:
        out = dq.output[0]
        name = activation_of(out)
        if name is None or name not in step or name == g.input[0].name:
            continue
        nodes, inputs = layer(out)
        if not nodes or not inputs:
            continue
        used = {i for n in nodes for i in n.input}
        sub = helper.make_graph(
            nodes,
            "layer",
            [helper.make_tensor_value_info(i, inits[dqn.input[2]].data_type, None) for i, (_, dqn) in inputs.items()],
            [helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None)],
            [inits[i] for i in sorted(used) if i in inits],
        )
        m = helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
        checked += 1
        want = dump[name][:batch]
        total += want.size
        for label, level in [("literal", ort.GraphOptimizationLevel.ORT_DISABLE_ALL), ("optimized", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)]:
            so = ort.SessionOptions()
            so.graph_optimization_level = level
            so.intra_op_num_threads = 1
            so.log_severity_level = 3
            s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
            y = np.concatenate([s.run(None, {i: quantized(a, dqn, b) for i, (a, dqn) in inputs.items()})[0] for b in range(batch)])
            d = np.abs(y.reshape(want.shape) - want) / step[name]
            off[label] += int((d > 0.5).sum())
            if d.max() > worst[label][0] or worst[label][1] is None:
                worst[label] = (float(d.max()), name)
    print(json.dumps({
        "layers": checked,
        **{f"{k}_max_steps": worst[k][0] for k in worst},
        **{f"{k}_worst_layer": worst[k][1] for k in worst},
        **{f"{k}_off_share": off[k] / max(total, 1) for k in off},
        "fused_exact": ort_u8s8.exact(),
    }))


main()
