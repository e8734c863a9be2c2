"""The int8 network of a whole glass model: folding, bit-exact integer arithmetic, accuracy."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from convolab.glass.activation import GELU, ReLU
from convolab.glass.conv import Conv2d
from convolab.glass.dropout import Dropout
from convolab.glass.linear import Flatten, Linear
from convolab.glass.module import Sequential
from convolab.glass.norm import BatchNorm2d
from convolab.glass.pool import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from convolab.glass.quant_net import fold_network, quantize_network, run_float


def _net(seed: int = 0) -> Sequential:
    """conv-BN-ReLU, max pool (padding 1), conv (stride 2, groups 2) -> ReLU after an avg pool, global avg,
    linear-ReLU, dropout, linear: every node kind of the sequential graph."""
    rng = np.random.default_rng(seed)
    net = Sequential(OrderedDict(
        conv1=Conv2d(2, 8, 3, padding=1), bn1=BatchNorm2d(8), relu1=ReLU(), pool1=MaxPool2d(3, 2, padding=1),
        conv2=Conv2d(8, 8, 3, stride=1, padding=1, groups=2, bias=False), pool2=AvgPool2d(2), relu2=ReLU(),
        conv3=Conv2d(8, 12, 1), gap=GlobalAvgPool2d(flatten=True),
        fc1=Linear(12, 16), relu3=ReLU(), drop=Dropout(0.5), fc2=Linear(16, 5)))
    bn = net["bn1"]
    bn.params["weight"][:] = rng.uniform(0.5, 1.5, 8)
    bn.params["bias"][:] = rng.uniform(-0.3, 0.3, 8)
    bn.buffers["running_mean"][:] = rng.uniform(-0.2, 0.2, 8)
    bn.buffers["running_var"][:] = rng.uniform(0.5, 2.0, 8)
    return net.eval()


# -- an independent simulation of the integer arithmetic (float64 sums, Python-int requantization) -------

def _requant_reference(acc: np.ndarray, m0: int, shift: int) -> np.ndarray:
    """round(acc * 2^left * M0 / 2^31) (ties up), then / 2^right rounded half away from zero: Python ints."""
    left, right = max(shift, 0), max(-shift, 0)
    out = []
    for a in acc.reshape(-1).tolist():
        a = int(a) * 2 ** left * int(m0)
        h = (a + 2 ** 30) // 2 ** 31                       # nearest, ties toward +infinity
        mag = (abs(h) + (2 ** right // 2)) // 2 ** right if right else abs(h)
        out.append(mag if h >= 0 else -mag)
    return np.array(out, dtype=np.float64).reshape(acc.shape)


def _conv_reference(x: np.ndarray, w: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    """Direct convolution of integer-valued float64 arrays (exact: every sum is far below 2^53)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    y = np.zeros((n, o, ho, wo))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, i:i + stride * ho:stride, j:j + stride * wo:stride]
                y[:, oc] += np.einsum("nchw,c->nhw", patch, w[oc, :, i, j])
    return y


def _simulate(net, qx: np.ndarray) -> np.ndarray:
    """The Int8Network's integer forward re-done from its parameters with independent code."""
    a = qx.astype(np.float64)
    values = [a]
    for i, step in enumerate(net.steps):
        node, ql = step.node, step.qlayer
        a = values[node.inputs[0]]
        if node.kind in ("conv", "linear"):
            xz = a - ql.input_zero_point
            w = ql.weight_q.astype(np.float64)
            if node.kind == "conv":
                acc = _conv_reference(xz, w, node.layer.stride[0], node.layer._pad[0], node.layer.groups)
                acc += ql.bias_q.reshape(1, -1, 1, 1)
            else:
                acc = xz.reshape(len(xz), -1) @ w.T + ql.bias_q
            if i == len(net.steps) - 1:
                return acc
            axis = 1
            out = np.empty_like(acc)
            for o in range(acc.shape[axis]):
                sl = (slice(None), o)
                out[sl] = _requant_reference(acc[sl], ql.multiplier[o], ql.shift[o])
            a = np.clip(out + step.zero_point, step.lo, 255)
        elif node.kind == "maxpool":
            k, s, p = node.layer.kernel_size[0], node.layer.stride[0], node.layer.padding[0]
            xp = np.pad(a, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-1)
            ho, wo = node.shape[1:]
            a = np.max([xp[:, :, i:i + s * ho:s, j:j + s * wo:s] for i in range(k) for j in range(k)], axis=0)
        elif node.kind == "avgpool":
            k = node.attrs["kernel"]
            ho, wo = node.shape[1:]
            s = np.zeros(a.shape[:2] + (ho, wo))
            for u in range(ho):
                for v in range(wo):
                    s[:, :, u, v] = a[:, :, u * k[0]:(u + 1) * k[0], v * k[1]:(v + 1) * k[1]].sum(axis=(2, 3))
            a = np.floor(s / (k[0] * k[1]) + 0.5)               # the mean rounded half up
        elif node.kind == "relu":
            a = np.maximum(a, step.zero_point)
        elif node.kind == "zeropad":
            st = node.layer.stride
            sub = a[:, :, ::st, ::st]
            a = np.concatenate([sub, np.full((len(a), node.shape[0] - a.shape[1], *sub.shape[2:]),
                                             float(step.zero_point))], axis=1)
        elif node.kind == "add":
            (ma, sa), (mb, sb), (mo, so) = step.add
            za, zb = (net.zero_point(t) for t in node.inputs)
            b = values[node.inputs[1]]
            total = (_requant_reference((a - za) * 2 ** 20, ma, sa) + _requant_reference((b - zb) * 2 ** 20, mb, sb))
            a = np.clip(_requant_reference(total, mo, so) + step.zero_point, step.lo, 255)
        values.append(a)
    return a


def test_fold_keeps_the_float_function():
    net = _net()
    x = np.random.default_rng(1).standard_normal((6, 2, 9, 9))
    nodes = fold_network(net, (2, 9, 9))
    kinds = [(n.kind, n.relu) for n in nodes]
    # BN folded into conv1, relu1 fused into it; relu2 (after an avg pool) stays a node
    assert kinds == [("conv", True), ("maxpool", False), ("conv", False), ("avgpool", False), ("relu", False),
                     ("conv", False), ("avgpool", False), ("linear", True), ("linear", False)]
    np.testing.assert_allclose(run_float(nodes, x)[-1], net.to(np.float64).forward(x), atol=1e-12)


def test_relu_after_max_pool_moves_before_it():
    net = Sequential(OrderedDict(conv=Conv2d(1, 3, 3), pool=MaxPool2d(2), relu=ReLU(), flat=Flatten(),
                                 fc=Linear(3 * 3 * 3, 2))).eval()
    assert [(n.kind, n.relu) for n in fold_network(net, (1, 8, 8))] == [("conv", True), ("maxpool", False),
                                                                        ("linear", False)]


def test_integer_forward_is_bit_exact_against_an_independent_simulation():
    rng = np.random.default_rng(2)
    net = _net(3)
    cal = rng.standard_normal((64, 2, 9, 9))
    qnet = quantize_network(net, cal)
    x = rng.standard_normal((16, 2, 9, 9)) * 1.3          # some values beyond the calibration range: clamping
    qx = qnet.quantize_input(x)
    out = qnet.forward_int(qx)
    assert out.dtype == np.int32 and out.shape == (16, 5)
    np.testing.assert_array_equal(out.astype(np.float64), _simulate(qnet, qx))
    # the input parameters are the calibration range widened to 0, over 255 levels
    lo, hi = min(cal.min(), 0), max(cal.max(), 0)
    assert qnet.input_scale == pytest.approx((hi - lo) / 255, rel=1e-12)
    assert qnet.input_zero_point == round(-lo / qnet.input_scale)
    # every multiplier represents s_x s_w / s_y to the fixed point's precision
    for step in qnet.steps[:-1]:
        if step.qlayer is not None:
            ql = step.qlayer
            m = ql.input_scale * ql.weight_scale / ql.output_scale
            np.testing.assert_allclose(ql.multiplier * 2.0 ** (ql.shift - 31), m, rtol=2 ** -30)
    # and the float result it stands for is close to the float network
    ref = net.to(np.float64).forward(x)
    assert np.abs(qnet.dequantize_output(out) - ref).max() < 0.05 * np.abs(ref).max()


def test_unsupported_layer_is_named():
    net = Sequential(OrderedDict(conv=Conv2d(1, 2, 3), act=GELU(), flat=Flatten(), fc=Linear(2 * 6 * 6, 2)))
    with pytest.raises(ValueError, match=r"^act \(GELU\) is not supported by the int8 network; supported: Conv2d"):
        quantize_network(net.eval(), np.zeros((2, 1, 8, 8)))


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_residual_network_is_bit_exact_too(shortcut):
    import torch

    from convolab.glass.interop import from_torch
    from convolab.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3, in_chans=1, input_size=(8, 8), shortcut=shortcut).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
    glass = from_torch(model).eval()
    kinds = [n.kind for n in fold_network(glass, (1, 8, 8))]
    assert kinds.count("add") == 9 and kinds.count("zeropad") == (2 if shortcut == "A" else 0)
    rng = np.random.default_rng(4)
    qnet = quantize_network(glass, rng.standard_normal((32, 1, 8, 8)))
    qx = qnet.quantize_input(rng.standard_normal((6, 1, 8, 8)))
    np.testing.assert_array_equal(qnet.forward_int(qx).astype(np.float64), _simulate(qnet, qx))


def test_int8_accuracy_on_digits_within_two_points(digits_run):
    import convolab
    from convolab.data import load_dataset
    from convolab.glass.interop import from_torch

    run = convolab.load_run(digits_run.run_dir)
    data = load_dataset("digits")

    def norm(images):
        m = np.asarray(run.mean).reshape(1, -1, 1, 1)
        s = np.asarray(run.std).reshape(1, -1, 1, 1)
        return (images.numpy().astype(np.float64) / 255 - m) / s

    glass = from_torch(run.model).eval()
    qnet = quantize_network(glass, norm(data.train.images[:500]))
    x, y = norm(data.test.images), data.test.labels.numpy()
    float_acc = float((glass.to(np.float64).forward(x).argmax(1) == y).mean())
    int8_acc = float((qnet.forward(x).argmax(1) == y).mean())
    assert float_acc > 0.85                          # a trained model, or the comparison says nothing
    assert abs(int8_acc - float_acc) <= 0.02, (float_acc, int8_acc)
