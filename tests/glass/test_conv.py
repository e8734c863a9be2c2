"""Conv2d against torch.nn.Conv2d over random configurations, finite differences, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convolab import glass

from ._helpers import TOL, compare_with_torch, finite_difference_errors


@st.composite
def conv_configs(draw):
    """Batch, channels, size, kernel, stride, padding, dilation, groups and bias, with a non-empty output."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cfg = dict(in_channels=groups * draw(st.integers(1, 3)), out_channels=groups * draw(st.integers(1, 3)),
               kernel_size=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
               stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
               padding=(draw(st.integers(0, 2)), draw(st.integers(0, 2))),
               dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
               groups=groups, bias=draw(st.booleans()))
    size = []
    for k, p, d in zip(cfg["kernel_size"], cfg["padding"], cfg["dilation"]):
        least = max(1, d * (k - 1) + 1 - 2 * p)
        size.append(draw(st.integers(least, least + 8)))
    return cfg, (draw(st.integers(1, 3)), cfg["in_channels"], *size)


def _pair(cfg, shape, seed):
    torch.manual_seed(seed)
    x = np.random.default_rng(seed).standard_normal(shape)
    return glass.Conv2d(**cfg), torch.nn.Conv2d(**cfg), x


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=25, deadline=None, derandomize=True)
@given(conv_configs())
def test_matches_torch(dtype, config):
    cfg, shape = config
    layer, ref, x = _pair(cfg, shape, seed=len(str(cfg)))
    errors = compare_with_torch(layer, ref, x, dtype)
    assert max(errors.values()) <= TOL[dtype], (cfg, shape, errors)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_padding_same_matches_torch():
    for k, d in [(3, 1), (4, 1), (2, 3)]:
        cfg = dict(in_channels=2, out_channels=3, kernel_size=k, padding="same", dilation=d)
        layer, ref, x = _pair(cfg, (2, 2, 7, 6), seed=k)
        errors = compare_with_torch(layer, ref, x)
        assert max(errors.values()) <= TOL[np.float64], (k, d, errors)
        assert layer.forward(x).shape[2:] == (7, 6)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(conv_configs())
def test_finite_differences(config):
    cfg, shape = config
    glass.manual_seed(1)
    layer = glass.Conv2d(**cfg)
    x = np.random.default_rng(2).standard_normal((1, *shape[1:]))
    errors = finite_difference_errors(layer, x)
    assert max(errors.values()) < 1e-6, (cfg, errors)


def test_parameters_have_torch_names_shapes_and_init():
    glass.manual_seed(0)
    layer = glass.Conv2d(6, 4, (3, 5), groups=2)
    ref = torch.nn.Conv2d(6, 4, (3, 5), groups=2)
    assert {k: v.shape for k, v in layer.params.items()} == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert layer.params.keys() == layer.grads.keys()
    bound = 1 / np.sqrt(3 * 3 * 5)  # torch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    w = layer.params["weight"]
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert "bias" not in glass.Conv2d(1, 1, 1, bias=False).params


def test_output_is_channels_last_in_memory():
    layer = glass.Conv2d(3, 8, 3, padding=1)
    out = layer.forward(np.zeros((2, 3, 5, 5), np.float32))
    assert out.shape == (2, 8, 5, 5)
    assert out.transpose(0, 2, 3, 1).flags.c_contiguous


def test_wrong_channels_names_layer_and_shapes():
    model = glass.Sequential(glass.Conv2d(1, 4, 3), glass.ReLU(), glass.Conv2d(5, 2, 3))
    with pytest.raises(ValueError, match=r"Conv2d '2': expected input of shape \(N, 5, H, W\), got \(1, 4, 6, 6\)"):
        model.forward(np.zeros((1, 1, 8, 8), np.float32))


def test_input_smaller_than_kernel():
    with pytest.raises(ValueError, match=r"smaller than the kernel's reach 5x5"):
        glass.Conv2d(1, 1, 3, dilation=2).forward(np.zeros((1, 1, 4, 4)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(in_channels=3, out_channels=4, kernel_size=3, groups=2), "divisible by groups"),
    (dict(in_channels=1, out_channels=1, kernel_size=3, stride=2, padding="same"), "stride 1"),
    (dict(in_channels=1, out_channels=1, kernel_size=3, padding_mode="reflect"), "padding_mode"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        glass.Conv2d(**kwargs)


def test_integer_input_is_refused():
    with pytest.raises(ValueError, match="float16, float32 or float64 input, got uint8"):
        glass.Conv2d(1, 1, 1).forward(np.zeros((1, 1, 2, 2), np.uint8))
