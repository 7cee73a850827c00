"""Evaluates the models written by `qplay search --out DIR` in onnxruntime (CPU), independently
of qplay: top-1 accuracy on the digits test split and MACs from onnx's shape inference.

usage: check_search.py DIR X_TEST.npy Y_TEST.npy
Prints one JSON line: {"<file>.onnx": {"accuracy": %, "correct": n, "macs": n}, ...} for
reference.onnx, every pareto.json model and every baseline.
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort

from check_compressed import macs

d, x, y = sys.argv[1], np.load(sys.argv[2]).astype(np.float32), np.load(sys.argv[3])
files = ["reference.onnx"] + [p["onnx"] for p in json.load(open(os.path.join(d, "pareto.json")))]
files += [b["onnx"] for b in json.load(open(os.path.join(d, "baselines.json")))]
out = {}
for f in files:
    path = os.path.join(d, f)
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = s.run(None, {s.get_inputs()[0].name: x})[0]
    correct = int((logits.argmax(1) == y).sum())
    out[f] = {"accuracy": 100.0 * correct / len(y), "correct": correct, "macs": macs(path)[0]}
print(json.dumps(out))
