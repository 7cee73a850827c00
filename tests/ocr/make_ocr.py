#!/usr/bin/env python3
"""Test material for two OCR models from a public package, exported by paddle2onnx (opset 11
and 12), that qplay was not written against:

- cls.onnx: PaddleOCR's text-direction classifier (MobileNetV3-style, 2 classes "0" / "180",
  input [?, 3, ?, ?]);
- det.onnx: PaddleOCR's PP-OCRv4 text detector (DBNet: Resize and ConvTranspose, a probability
  map as output).

Both come unmodified from the PyPI package rapidocr-onnxruntime 1.4.4 (Apache-2.0; the models are
PaddleOCR's, Apache-2.0). This script copies them from the wheel and draws the photos the tests
use: text lines (upright and turned 180 degrees, labelled in their file names) and text pages,
with Pillow's bundled font. It also writes onnxruntime's FP32 outputs on a few preprocessed
inputs (preprocessed here with numpy, independently of qplay).

    pip download --no-deps rapidocr-onnxruntime==1.4.4 -d /tmp/w && python3 tests/ocr/make_ocr.py /tmp/w/rapidocr_onnxruntime-1.4.4-py3-none-any.whl
"""
import json, os, shutil, sys, zipfile
import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference", "preprocess"))
from make import bilinear_axis  # noqa: E402  (OpenCV's INTER_LINEAR rule, one axis)
rng = np.random.default_rng(7)
WORDS = ("qplay quantize model phone edge tensor float int8 scale offset range depthwise residual "
         "pixel batch layer convolution network signal noise ratio browser worker kernel weight "
         "Berlin Paris 2026 OCR 42 text line page").split()


def sentence(n):
    return " ".join(rng.choice(WORDS, n))


def colours():
    bg = tuple(int(v) for v in rng.integers(170, 256, 3))
    fg = tuple(int(v) for v in rng.integers(0, 90, 3))
    return bg, fg


def text_line(i):
    size = int(rng.integers(18, 30))
    font = ImageFont.load_default(size=size)
    words = sentence(int(rng.integers(1, 4)))
    bg, fg = colours()
    w = int(font.getlength(words)) + int(rng.integers(6, 20))
    img = Image.new("RGB", (w, size + int(rng.integers(8, 16))), bg)
    ImageDraw.Draw(img).text((int(rng.integers(2, 6)), 3), words, font=font, fill=fg)
    return img


def page():
    bg, fg = colours()
    img = Image.new("RGB", (256, 256), bg)
    d = ImageDraw.Draw(img)
    y = int(rng.integers(4, 20))
    while y < 220:
        size = int(rng.integers(16, 30))
        d.text((int(rng.integers(4, 40)), y), sentence(int(rng.integers(1, 4))), font=ImageFont.load_default(size=size), fill=fg)
        y += size + int(rng.integers(8, 30))
    return img


def prep(img, h, w, fit, mean, std):
    """BGR, OpenCV-style bilinear resize (stretch, or fit at the top left padded with 0)."""
    a = np.asarray(img.convert("RGB"), np.float64)[:, :, ::-1]
    if fit:
        k = min(h / a.shape[0], w / a.shape[1])
        nh, nw = min(max(round(a.shape[0] * k), 1), h), min(max(round(a.shape[1] * k), 1), w)
    else:
        nh, nw = h, w
    r = bilinear_axis(bilinear_axis(a, nw, 1), nh, 0)
    out = np.zeros((3, h, w))
    out[:, :nh, :nw] = ((r / 255.0 - mean) / std).transpose(2, 0, 1)
    return out.astype(np.float32)[None]


def main():
    import onnxruntime as ort
    with zipfile.ZipFile(sys.argv[1]) as z:
        for src, dst in [("ch_ppocr_mobile_v2.0_cls_infer.onnx", "cls.onnx"), ("ch_PP-OCRv4_det_infer.onnx", "det.onnx")]:
            with z.open("rapidocr_onnxruntime/models/" + src) as f, open(os.path.join(HERE, dst), "wb") as o:
                shutil.copyfileobj(f, o)
    for d in ["lines_calib", "lines_test", "pages_calib", "pages_test"]:
        shutil.rmtree(os.path.join(HERE, d), ignore_errors=True)
        os.makedirs(os.path.join(HERE, d))
    for split, n in [("calib", 32), ("test", 64)]:
        for i in range(n):
            img = text_line(i)
            turned = i % 2 == 1
            if turned:
                img = img.rotate(180)
            img.save(os.path.join(HERE, f"lines_{split}", f"{'180' if turned else '0'}_{i:03}.png"))
    for split, n in [("calib", 16), ("test", 16)]:
        for i in range(n):
            page().save(os.path.join(HERE, f"pages_{split}", f"{i:03}.png"))
    with open(os.path.join(HERE, "cls_labels.txt"), "w") as f:
        f.write("0\n180\n")
    cls = {"shape": [1, 3, 48, 192], "color": "BGR", "resize": {"mode": "fit", "filter": "bilinear"}, "mean": 0.5, "std": 0.5, "labels": "cls_labels.txt"}
    det = {"shape": [1, 3, 256, 256], "color": "BGR", "resize": {"mode": "stretch", "filter": "bilinear"}, "mean": [0.406, 0.456, 0.485], "std": [0.225, 0.224, 0.229], "threshold": 0.3}
    for name, s in [("cls", cls), ("det", det)]:
        with open(os.path.join(HERE, name + ".json"), "w") as f:
            json.dump(s, f, indent=1)
    # onnxruntime's FP32 outputs on the first test photos, from numpy's preprocessing.
    ref = {}
    for name, folder, s, fit in [("cls", "lines_test", cls, True), ("det", "pages_test", det, False)]:
        files = sorted(os.listdir(os.path.join(HERE, folder)))[:2]
        x = np.concatenate([prep(Image.open(os.path.join(HERE, folder, f)), s["shape"][2], s["shape"][3], fit, np.array(s["mean"]), np.array(s["std"])) for f in files])
        sess = ort.InferenceSession(os.path.join(HERE, name + ".onnx"), providers=["CPUExecutionProvider"])
        np.save(os.path.join(HERE, f"{name}.input2.npy"), x)
        np.save(os.path.join(HERE, f"{name}.output2.npy"), sess.run(None, {"x": x})[0])
        ref[name] = files
    ref["cls_fp32_correct"] = cls_fp32_correct(cls)
    with open(os.path.join(HERE, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)


def cls_fp32_correct(cls):
    """How many of the test lines onnxruntime's FP32 classifier turns the right way (the labels
    are in the file names)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(os.path.join(HERE, "cls.onnx"), providers=["CPUExecutionProvider"])
    files = sorted(os.listdir(os.path.join(HERE, "lines_test")))
    right = 0
    for f in files:
        x = prep(Image.open(os.path.join(HERE, "lines_test", f)), 48, 192, True, np.array(cls["mean"]), np.array(cls["std"]))
        right += int(sess.run(None, {"x": x})[0].argmax() == (1 if f.startswith("180_") else 0))
    return right


if __name__ == "__main__":
    main()
