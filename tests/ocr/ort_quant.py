#!/usr/bin/env python3
"""onnxruntime's own static quantization of an OCR model (tests/ocr), as the yardstick for
qplay's: quantize_static (QDQ, MinMax, uint8 activations, int8 weights) calibrated on the
calibration photos, scored on the test photos against the FP32 model. Prints one JSON object.

    python3 tests/ocr/ort_quant.py cls|det [--per-channel] [--out-dir DIR]

cls: accuracy (labels in the file names) and pooled logits SQNR; det: pooled SQNR of the
probability map and the IoU of the maps thresholded at 0.3 (DBNet's threshold), against FP32.
"""
import json, os, sys, tempfile
import numpy as np
from PIL import Image
import onnxruntime as ort
from onnxruntime.quantization import quantize_static, CalibrationDataReader, QuantFormat, QuantType

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_ocr import prep, HERE  # noqa: E402


def tensors(name, folder):
    s = json.load(open(os.path.join(HERE, name + ".json")))
    files = sorted(os.listdir(os.path.join(HERE, folder)))
    xs = [prep(Image.open(os.path.join(HERE, folder, f)), s["shape"][2], s["shape"][3], name == "cls", np.array(s["mean"]), np.array(s["std"])) for f in files]
    return files, xs


class Reader(CalibrationDataReader):
    def __init__(self, xs):
        self.it = iter([{"x": x} for x in xs])

    def get_next(self):
        return next(self.it, None)


def run(model, xs):
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {"x": x})[0] for x in xs])


def main():
    name = sys.argv[1]
    per_channel = "--per-channel" in sys.argv
    lines = name == "cls"
    _, calib = tensors(name, "lines_calib" if lines else "pages_calib")
    files, test = tensors(name, "lines_test" if lines else "pages_test")
    fp32 = os.path.join(HERE, name + ".onnx")
    out = {"model": name, "per_channel": per_channel}
    with tempfile.TemporaryDirectory() as d:
        q = os.path.join(d, "q.onnx")
        try:
            quantize_static(fp32, q, Reader(calib), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            y = run(q, test)
        except Exception as e:  # onnxruntime's per-channel mode needs opset 13
            out["error"] = str(e).splitlines()[0][:300]
            print(json.dumps(out))
            return
    r = run(fp32, test)
    out["sqnr_db"] = float(10 * np.log10((r.astype(np.float64) ** 2).sum() / ((r - y).astype(np.float64) ** 2).sum()))
    if lines:
        labels = np.array([1 if f.startswith("180_") else 0 for f in files])
        out["accuracy"] = float((y.argmax(1) == labels).mean())
        out["fp32_accuracy"] = float((r.argmax(1) == labels).mean())
    else:
        a, b = r > 0.3, y > 0.3
        out["iou"] = float((a & b).sum() / max((a | b).sum(), 1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
