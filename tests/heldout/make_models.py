"""Builds the held-out compression models: architectures the compression code was not written
against, with seeded random weights whose BatchNorm statistics are set from data, so every layer
sees activations of unit scale.

- resnet_mini.onnx: a small ResNet (basic blocks, residual Adds, 1x1 projection shortcuts at
  the stride-2 blocks), BatchNorm kept as nodes, ReLU, global pool, Flatten, Gemm.
- mbv2_mini.onnx: a small MobileNetV2 (inverted residual blocks: 1x1 expand, 3x3 depthwise,
  linear 1x1 project, residual Adds), ReLU6 as Clip with min/max inputs, BatchNorm folded into
  the convs as torch's ONNX export does, global pool, Reshape, Gemm.
- digits_resnet.onnx: an untrained digits CNN ([N, 1, 8, 8] in, 10 classes) with residual
  blocks (BatchNorm nodes, ReLU and HardSwish, a stride-2 projection shortcut): training tests
  train it from scratch, then quantize it by QAT.
- calib.npy: 32 crops of 32x32 from the bundled photos (assets/images, licences in
  assets/PROVENANCE.md): the calibration and evaluation set.

Run: python tests/heldout/make_models.py (needs numpy, onnx, onnxruntime, pillow).
"""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
rng = np.random.default_rng(0)


def crops(n, size=32):
    photos = sorted(os.listdir(os.path.join(ROOT, "assets/images")))
    out = []
    for i in range(n):
        img = Image.open(os.path.join(ROOT, "assets/images", photos[i % len(photos)])).convert("RGB")
        img = img.resize((128, 128))
        a = np.asarray(img, dtype=np.float32) / 255.0
        y, x = rng.integers(0, 128 - size, 2)
        c = a[y:y + size, x:x + size].transpose(2, 0, 1)
        out.append((c - 0.45) / 0.25)
    return np.stack(out).astype(np.float32)


class Net:
    def __init__(self, name, input_shape=(3, 32, 32), opset=13):
        self.name = name
        self.opset = opset
        self.input_shape = list(input_shape)
        self.nodes, self.inits, self.bns = [], [], []
        self.k = 0

    def fresh(self, what):
        self.k += 1
        return f"{what}_{self.k}"

    def const(self, what, a):
        n = self.fresh(what)
        self.inits.append(numpy_helper.from_array(np.asarray(a, dtype=np.float32), n))
        return n

    def conv(self, x, cin, cout, k, stride=1, group=1, name=None):
        name = name or self.fresh("conv")
        w = rng.normal(0, np.sqrt(2.0 / (cin // group * k * k)), (cout, cin // group, k, k))
        wn = self.const(name + "_w", w)
        y = name + "_out"
        p = k // 2
        self.nodes.append(helper.make_node("Conv", [x, wn], [y], name=name, kernel_shape=[k, k], strides=[stride, stride], pads=[p, p, p, p], group=group))
        return y

    def bn(self, x, c):
        name = self.fresh("bn")
        scale = self.const(name + "_scale", rng.uniform(0.5, 1.5, c))
        bias = self.const(name + "_bias", rng.normal(0, 0.2, c))
        mean = self.const(name + "_mean", np.zeros(c))
        var = self.const(name + "_var", np.ones(c))
        y = name + "_out"
        self.nodes.append(helper.make_node("BatchNormalization", [x, scale, bias, mean, var], [y], name=name, epsilon=1e-5))
        self.bns.append((x, mean, var))
        return y

    def op(self, kind, inputs, **attrs):
        y = self.fresh(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [y], name=y, **attrs))
        return y

    def relu6(self, x):
        lo = self.const("zero", 0.0)
        hi = self.const("six", 6.0)
        return self.op("Clip", [x, lo, hi])

    def head(self, x, c, classes, flatten):
        x = self.op("GlobalAveragePool", [x])
        if flatten:
            x = self.op("Flatten", [x], axis=1)
        else:
            shape = numpy_helper.from_array(np.array([-1, c], dtype=np.int64), self.fresh("shape"))
            self.inits.append(shape)
            x = self.op("Reshape", [x, shape.name])
        w = self.const("fc_w", rng.normal(0, np.sqrt(1.0 / c), (classes, c)))
        b = self.const("fc_b", rng.normal(0, 0.1, classes))
        self.nodes.append(helper.make_node("Gemm", [x, w, b], ["logits"], name="fc", transB=1))

    def model(self):
        g = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None] + self.input_shape)],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])],
            self.inits,
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="qplay tests/heldout")
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def calibrate_bn(net, data):
    """Sets each BatchNorm's mean and variance, in graph order, to its input's statistics."""
    inits = {i.name: i for i in net.inits}
    for x, mean, var in net.bns:
        m = net.model()
        m.graph.output.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, None))
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        a = s.run([x], {"input": data})[0]
        inits[mean].CopyFrom(numpy_helper.from_array(a.mean(axis=(0, 2, 3)).astype(np.float32), mean))
        inits[var].CopyFrom(numpy_helper.from_array(a.var(axis=(0, 2, 3)).astype(np.float32), var))


def fold_bn(net):
    """Folds every BatchNorm into the Conv before it (the Conv gains a bias)."""
    inits = {i.name: i for i in net.inits}
    arr = {n: numpy_helper.to_array(i) for n, i in inits.items()}
    producer = {n.output[0]: n for n in net.nodes}
    keep = []
    for n in net.nodes:
        if n.op_type != "BatchNormalization":
            keep.append(n)
            continue
        conv = producer[n.input[0]]
        scale, bias, mean, var = (arr[i] for i in n.input[1:])
        f = scale / np.sqrt(var + 1e-5)
        w = arr[conv.input[1]] * f[:, None, None, None]
        b = bias - mean * f
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array(w.astype(np.float32), conv.input[1]))
        bn_name = conv.name + "_b"
        net.inits.append(numpy_helper.from_array(b.astype(np.float32), bn_name))
        conv.input.append(bn_name)
        conv.output[0] = n.output[0]
    net.nodes = keep
    used = {i for n in net.nodes for i in n.input}
    net.inits = [i for i in net.inits if i.name in used]
    net.bns = []


def resnet(data):
    net = Net("resnet_mini")
    x = net.op("Relu", [net.bn(net.conv("input", 3, 16, 3, name="stem"), 16)])
    c = 16
    for stage, (cout, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
        for block in range(2):
            s = stride if block == 0 else 1
            pre = f"s{stage}b{block}"
            y = net.op("Relu", [net.bn(net.conv(x, c, cout, 3, s, name=pre + "_conv1"), cout)])
            y = net.bn(net.conv(y, cout, cout, 3, 1, name=pre + "_conv2"), cout)
            short = x if (s == 1 and c == cout) else net.bn(net.conv(x, c, cout, 1, s, name=pre + "_proj"), cout)
            x = net.op("Relu", [net.op("Add", [y, short])])
            c = cout
    net.head(x, c, 10, flatten=True)
    calibrate_bn(net, data)
    return net.model()


def mbv2(data):
    net = Net("mbv2_mini")
    x = net.relu6(net.bn(net.conv("input", 3, 16, 3, 2, name="stem"), 16))
    c = 16
    for i, (t, cout, stride) in enumerate([(1, 16, 1), (4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1), (4, 32, 1)]):
        pre = f"ir{i}"
        h = c * t
        y = x
        if t != 1:
            y = net.relu6(net.bn(net.conv(y, c, h, 1, name=pre + "_expand"), h))
        y = net.relu6(net.bn(net.conv(y, h, h, 3, stride, group=h, name=pre + "_dw"), h))
        y = net.bn(net.conv(y, h, cout, 1, name=pre + "_project"), cout)
        x = net.op("Add", [x, y]) if stride == 1 and c == cout else y
        c = cout
    x = net.relu6(net.bn(net.conv(x, c, 128, 1, name="last"), 128))
    net.head(x, 128, 10, flatten=False)
    calibrate_bn(net, data)
    fold_bn(net)
    return net.model()


def digits_resnet(_):
    net = Net("digits_resnet", (1, 8, 8), opset=14)
    data = np.load(os.path.join(ROOT, "assets/data/digits_train_x.npy"))[:256]
    x = net.op("HardSwish", [net.bn(net.conv("input", 1, 16, 3, name="stem"), 16)])
    c = 16
    for stage, (cout, stride) in enumerate([(16, 1), (32, 2)]):
        pre = f"s{stage}"
        y = net.op("Relu", [net.bn(net.conv(x, c, cout, 3, stride, name=pre + "_conv1"), cout)])
        y = net.bn(net.conv(y, cout, cout, 3, 1, name=pre + "_conv2"), cout)
        short = x if (stride == 1 and c == cout) else net.bn(net.conv(x, c, cout, 1, stride, name=pre + "_proj"), cout)
        x = net.op("Relu", [net.op("Add", [y, short])])
        c = cout
    net.head(x, c, 10, flatten=True)
    calibrate_bn(net, data)
    return net.model()


def main():
    data = crops(32)
    np.save(os.path.join(HERE, "calib.npy"), data)
    for f, build in [("resnet_mini.onnx", resnet), ("mbv2_mini.onnx", mbv2), ("digits_resnet.onnx", digits_resnet)]:
        m = build(data)
        onnx.save(m, os.path.join(HERE, f))
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        x = data if f != "digits_resnet.onnx" else np.load(os.path.join(ROOT, "assets/data/digits_test_x.npy"))
        y = s.run(None, {"input": x})[0]
        print(f, "nodes", len(m.graph.node), "logits std", float(y.std()), "top-1 classes used", len(set(y.argmax(1))))


if __name__ == "__main__":
    main()
