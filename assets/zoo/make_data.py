#!/usr/bin/env python3
"""The model zoo's data, made from the bundled data (licences in assets/PROVENANCE.md).

For the digits models (the split in assets/data), as files `qplay quantize/eval` read directly:
- digits_calib.npy: the first 256 training digits, [256, 1, 8, 8] (the page calibrates on these);
- digits_calib_flat.npy and digits_test_flat.npy: the same calibration digits and the test digits
  as [N, 64], for the MLP.

For EfficientNet-Lite0, from the bundled photos (assets/images) with Pillow:

- photos/: each photo scaled so its shorter side is 256 pixels, centre-cropped to 256x256, RGB,
  saved as PNG (the calibration set);
- mirrored/: the same, flipped left-right (the evaluation set).

For the text detector (assets/models/text_detector.onnx, a copy of tests/ocr/det.onnx: PaddleOCR's
PP-OCRv4 DBNet from the PyPI wheel rapidocr-onnxruntime 1.4.4, Apache-2.0, see tests/ocr/README.md):
- pages_calib/: the first 4 text pages of tests/ocr/pages_calib (calibration);
- pages_test/: the 16 text pages of tests/ocr/pages_test (evaluation).
Those pages are drawn by tests/ocr/make_ocr.py with Pillow's bundled font.

PNG because the page decodes with the browser and the CLI with the Rust image crate: two JPEG
decoders may differ by one level in some pixels, lossless PNG decodes identically in both, so the
zoo's figures in the page equal `qplay eval`'s.

    .venv/bin/python assets/zoo/make_data.py
"""
import os
import shutil
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "images")
SIDE = 256

for sub in ("photos", "mirrored"):
    os.makedirs(os.path.join(HERE, sub), exist_ok=True)
for name in sorted(os.listdir(SRC)):
    img = Image.open(os.path.join(SRC, name)).convert("RGB")
    w, h = img.size
    s = SIDE / min(w, h)
    img = img.resize((max(SIDE, round(w * s)), max(SIDE, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - SIDE) // 2, (h - SIDE) // 2
    img = img.crop((left, top, left + SIDE, top + SIDE))
    stem = os.path.splitext(name)[0]
    img.save(os.path.join(HERE, "photos", stem + ".png"), optimize=True)
    img.transpose(Image.FLIP_LEFT_RIGHT).save(os.path.join(HERE, "mirrored", stem + ".png"), optimize=True)

data = os.path.join(HERE, "..", "data")
calib = np.load(os.path.join(data, "digits_train_x.npy"))[:256].astype(np.float32)
np.save(os.path.join(HERE, "digits_calib.npy"), calib.reshape(256, 1, 8, 8))
np.save(os.path.join(HERE, "digits_calib_flat.npy"), calib.reshape(256, 64))
test = np.load(os.path.join(data, "digits_test_x.npy")).astype(np.float32)
np.save(os.path.join(HERE, "digits_test_flat.npy"), test.reshape(len(test), 64))

ocr = os.path.join(HERE, "..", "..", "tests", "ocr")
for sub, names in (("pages_calib", sorted(os.listdir(os.path.join(ocr, "pages_calib")))[:4]), ("pages_test", sorted(os.listdir(os.path.join(ocr, "pages_test"))))):
    os.makedirs(os.path.join(HERE, sub), exist_ok=True)
    for name in names:
        shutil.copyfile(os.path.join(ocr, sub, name), os.path.join(HERE, sub, name))
shutil.copyfile(os.path.join(ocr, "det.onnx"), os.path.join(HERE, "..", "models", "text_detector.onnx"))
shutil.copyfile(os.path.join(ocr, "det.json"), os.path.join(HERE, "..", "models", "text_detector.json"))
