"""The loop reference against the vectorised layers (and, for the reference itself, against torch)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convolab import glass
from convolab.glass import naive

from ._helpers import rel_err
from .test_conv import conv_configs


@settings(max_examples=25, deadline=None, derandomize=True)
@given(conv_configs())
def test_conv_loops_equal_the_vectorised_layer(config):
    cfg, shape = config
    glass.manual_seed(0)
    layer = glass.Conv2d(**cfg).to(np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    w, b = layer.params["weight"], layer.params.get("bias")
    args = dict(stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])
    out = naive.conv2d(x, w, b, **args)
    assert rel_err(layer.forward(x), out) < 1e-12
    dout = rng.standard_normal(out.shape)
    dx, dw, db = naive.conv2d_backward(dout, x, w, **args)
    assert rel_err(layer.backward(dout), dx) < 1e-12
    assert rel_err(layer.grads["weight"], dw) < 1e-12
    if b is not None:
        assert rel_err(layer.grads["bias"], db) < 1e-12


def test_conv_loops_equal_torch():
    # The reference is checked on its own too, so the two implementations are not just equally wrong.
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 2)), rng.standard_normal(6)
    want = F.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=(2, 1), padding=(1, 2), dilation=(1, 2),
                    groups=2)
    got = naive.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    assert rel_err(got, want.numpy()) < 1e-12


@st.composite
def pool_geometries(draw):
    k = draw(st.integers(1, 3))
    s, p = draw(st.integers(1, 3)), draw(st.integers(0, k // 2))
    size = draw(st.integers(k, 8))
    return k, s, p, (draw(st.integers(1, 2)), draw(st.integers(1, 3)), size, draw(st.integers(k, 8)))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(pool_geometries(), st.booleans())
def test_pool_loops_equal_the_vectorised_layers(geometry, count_include_pad):
    k, s, p, shape = geometry
    rng = np.random.default_rng(3)
    x = rng.permutation(np.prod(shape)).reshape(shape) / np.prod(shape)        # no ties
    layer = glass.MaxPool2d(k, s, p)
    out = layer.forward(x)
    np.testing.assert_array_equal(out, naive.max_pool2d(x, k, s, p))
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(layer.backward(dout), naive.max_pool2d_backward(dout, x, k, s, p), rtol=1e-12,
                               atol=1e-15)
    layer = glass.AvgPool2d(k, s, p, count_include_pad=count_include_pad)
    out = layer.forward(x)
    np.testing.assert_allclose(out, naive.avg_pool2d(x, k, s, p, count_include_pad), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(layer.backward(dout), naive.avg_pool2d_backward(dout, x, k, s, p, count_include_pad),
                               rtol=1e-12, atol=1e-15)
