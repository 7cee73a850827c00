#!/usr/bin/env python3
"""Reference tensors for qplay's image preprocessing modes, computed with Pillow and numpy
(independently of qplay's code): for each case a settings file <case>.json, the photo it reads and
the expected float32 tensor <case>.npy.

    python3 tests/reference/preprocess/make.py      # needs: pip install pillow numpy

- filter "triangle": Pillow's BILINEAR resize of each channel as a float ("F") image;
- filter "nearest": Pillow's NEAREST on the same;
- filter "bilinear": OpenCV INTER_LINEAR's rule (half-pixel centres, clamped, two taps), in numpy;
- GRAY: Pillow's convert("L"); BGR and NHWC: numpy reordering;
- shorter_side: int() of the longer side, centre offsets rounded half to even, padding where the
  crop is larger; fit: round() of the scaled size, top-left or centred; pad_value in tensor units.
"""
import json, os
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..", "..")
IMAGES = os.path.join(ROOT, "assets", "images")


def bilinear_axis(a, n_out, axis):
    n_in = a.shape[axis]
    x = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(x).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = np.where(i0 == n_in - 1, 0.0, x - i0)
    shape = [1] * a.ndim
    shape[axis] = n_out
    f = f.reshape(shape)
    return np.take(a, i0, axis=axis) * (1 - f) + np.take(a, i1, axis=axis) * f


def resize(planes, size, flt):
    """planes: list of HxW float arrays; size: (w, h)."""
    if flt == "bilinear":
        return [bilinear_axis(bilinear_axis(p, size[0], 1), size[1], 0) for p in planes]
    res = {"triangle": Image.BILINEAR, "nearest": Image.NEAREST}[flt]
    return [np.asarray(Image.fromarray(p.astype(np.float32), mode="F").resize(size, res), np.float64) for p in planes]


def preprocess(img, s):
    layout, color = s.get("layout", "NCHW"), s.get("color", "RGB")
    if color == "GRAY":
        planes = [np.asarray(img.convert("L"), np.float64)]
    else:
        rgb = np.asarray(img.convert("RGB"), np.float64)
        order = [2, 1, 0] if color == "BGR" else [0, 1, 2]
        planes = [rgb[:, :, c] for c in order]
    th, tw = (s["shape"][2], s["shape"][3]) if layout == "NCHW" else (s["shape"][1], s["shape"][2])
    w, h = img.size
    r = s["resize"]
    flt = r.get("filter", "triangle")
    mode = r.get("mode", "shorter_side")
    if mode == "shorter_side":
        S = r["shorter_side"]
        nw, nh = (S, int(S * h / w)) if w <= h else (int(S * w / h), S)
        top, left = round((nh - th) / 2), round((nw - tw) / 2)   # Python rounds half to even
    elif mode == "stretch":
        nw, nh, top, left = tw, th, 0, 0
    else:
        k = min(th / h, tw / w)
        nh, nw = min(max(round(h * k), 1), th), min(max(round(w * k), 1), tw)
        top, left = (0, 0) if r.get("align", "top_left") == "top_left" else (-((th - nh) // 2), -((tw - nw) // 2))
    planes = resize(planes, (nw, nh), flt)
    scale = s.get("scale", 1 / 255)
    n = len(planes)
    mean = np.broadcast_to(np.asarray(s.get("mean", 0.0), np.float64), (n,))
    std = np.broadcast_to(np.asarray(s.get("std", 1.0), np.float64), (n,))
    out = np.full((n, th, tw), s.get("pad_value", 0.0), np.float64)
    for c, p in enumerate(planes):
        norm = (p * scale - mean[c]) / std[c]
        ys, xs = np.arange(th) + top, np.arange(tw) + left
        vy, vx = (ys >= 0) & (ys < nh), (xs >= 0) & (xs < nw)
        out[c][np.ix_(vy, vx)] = norm[np.ix_(ys[vy], xs[vx])]
    out = out.astype(np.float32)[None]
    return out if layout == "NCHW" else out.transpose(0, 2, 3, 1)


CASES = {
    "text_line_shorter_side_pad": ("chelsea.png", {"shape": [1, 3, 48, 192], "resize": {"shorter_side": 48}, "crop": {"size": [48, 192]},
                                                     "mean": 0.5, "std": 0.5, "pad_value": -1}),
    "stretch_bgr_nhwc_bilinear": ("coffee.png", {"shape": [1, 64, 80, 3], "layout": "NHWC", "color": "BGR", "resize": {"mode": "stretch", "filter": "bilinear"},
                                                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}),
    "fit_center_gray_nearest": ("camera.png", {"shape": [1, 1, 40, 100], "color": "GRAY", "resize": {"mode": "fit", "align": "center", "filter": "nearest"},
                                                "scale": 1.0, "mean": 127.5, "std": 127.5, "pad_value": -1}),
    "fit_top_left_triangle": ("chelsea.png", {"shape": [1, 3, 48, 192], "resize": {"mode": "fit"}, "mean": 0.5, "std": 0.5}),
    "stretch_up_triangle": ("tiny.png", {"shape": [1, 3, 40, 50], "resize": {"mode": "stretch"}}),
    "stretch_up_bilinear": ("tiny.png", {"shape": [1, 3, 40, 50], "resize": {"mode": "stretch", "filter": "bilinear"}}),
}


def main():
    Image.open(os.path.join(IMAGES, "chelsea.png")).convert("RGB").crop((200, 80, 223, 97)).save(os.path.join(HERE, "tiny.png"))
    for name, (photo, s) in CASES.items():
        path = os.path.join(HERE, photo) if photo == "tiny.png" else os.path.join(IMAGES, photo)
        s = dict(s, image=photo)
        with open(os.path.join(HERE, name + ".json"), "w") as f:
            json.dump(s, f, indent=1)
        np.save(os.path.join(HERE, name + ".npy"), preprocess(Image.open(path), s))
    print(f"{len(CASES)} cases in {HERE}")


if __name__ == "__main__":
    main()
