"""Builds onnxruntime's INT8 QDQ models for the benchmark (quantize_static, MinMax, per-channel
int8 weights, uint8 activations, after quant_pre_process), with the AIMET calibration data.
Usage: python3 bench/make_ort_int8.py OUT_DIR"""
import os, sys
import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
cases = {
    "efficientnet_lite0": (np.load(f"{root}/tests/aimet/efficientnet_lite0/calib40.npy"), 1),
    "digits_mobilenet": (np.load(f"{root}/assets/data/digits_train_x.npy")[:256], 32),
}
for name, (cal, bs) in cases.items():
    dst = f"{out}/{name}.int8.onnx"
    if os.path.exists(dst):
        continue
    pre = f"{out}/{name}.pre.onnx"
    quant_pre_process(f"{root}/assets/models/{name}.onnx", pre)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": cal[i:i + bs]} for i in range(0, len(cal), bs)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(pre, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    print("wrote", dst)
