"""Convolution variants in glass against torch: padding modes with dilation and groups (PaddedConv2d against
nn.Conv2d), TrueConv2d, SeparableConv2d and SpatiallySeparableConv2d against convolab.layers, finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convolab import glass, layers
from convolab.glass.conv_variants import (
    PaddedConv2d,
    SeparableConv2d,
    SpatiallySeparableConv2d,
    TrueConv2d,
    pad_indices,
)

from ._helpers import compare_with_torch, finite_difference_errors

TIGHT = 1e-10  # float64, issue 17
LOOSE = 1e-4   # float32


@st.composite
def conv_configs(draw, modes=("zeros", "reflect", "replicate", "circular")):
    """Conv2d arguments with a padding mode, dilation and groups, and an input the padding mode accepts."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cfg = dict(in_channels=groups * draw(st.integers(1, 3)), out_channels=groups * draw(st.integers(1, 3)),
               kernel_size=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
               stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
               dilation=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
               groups=groups, bias=draw(st.booleans()), padding_mode=draw(st.sampled_from(modes)))
    if draw(st.integers(0, 5)) == 0:
        cfg["stride"], cfg["padding"] = 1, "same"
        pads = [d * (k - 1) - d * (k - 1) // 2 for k, d in zip(cfg["kernel_size"], cfg["dilation"])]
    else:
        cfg["padding"] = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
        pads = list(cfg["padding"])
    size = []
    for k, p, d in zip(cfg["kernel_size"], pads, cfg["dilation"]):
        least = max(1, d * (k - 1) + 1 - 2 * p, p + 1)  # reflect needs padding < size
        size.append(draw(st.integers(least, least + 7)))
    return cfg, (draw(st.integers(1, 3)), cfg["in_channels"], *size)


def _input(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@settings(max_examples=40, deadline=None, derandomize=True)
@given(conv_configs())
def test_padded_conv_matches_torch_float64(config):
    """Forward, dx, dW and db of every padding mode with dilation and groups, against nn.Conv2d (<= 1e-10)."""
    cfg, shape = config
    torch.manual_seed(0)
    errors = compare_with_torch(PaddedConv2d(**cfg), torch.nn.Conv2d(**cfg), _input(shape, 1))
    assert max(errors.values()) <= TIGHT, (cfg, shape, errors)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padded_conv_matches_torch_float32(mode):
    cfg = dict(in_channels=4, out_channels=6, kernel_size=3, padding=2, dilation=2, groups=2, padding_mode=mode)
    torch.manual_seed(1)
    errors = compare_with_torch(PaddedConv2d(**cfg), torch.nn.Conv2d(**cfg), _input((2, 4, 9, 8), 2), np.float32)
    assert max(errors.values()) <= LOOSE, errors


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("size, before, after", [(4, 3, 1), (5, 2, 2), (1, 0, 3), (3, 3, 0)])
def test_pad_indices_are_torchs_pad(mode, size, before, after):
    if (mode == "reflect" and max(before, after) >= size) or (mode == "circular" and max(before, after) > size):
        with pytest.raises(ValueError, match=mode):
            pad_indices(size, before, after, mode)
        return
    x = torch.arange(float(size)).reshape(1, 1, size)
    want = torch.nn.functional.pad(x, (before, after), mode=mode).reshape(-1).long().numpy()
    np.testing.assert_array_equal(pad_indices(size, before, after, mode), want)


def test_pad_indices_by_hand():
    np.testing.assert_array_equal(pad_indices(4, 2, 2, "reflect"), [2, 1, 0, 1, 2, 3, 2, 1])
    np.testing.assert_array_equal(pad_indices(4, 2, 2, "replicate"), [0, 0, 0, 1, 2, 3, 3, 3])
    np.testing.assert_array_equal(pad_indices(4, 2, 2, "circular"), [2, 3, 0, 1, 2, 3, 0, 1])


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padded_conv_finite_differences(mode):
    glass.manual_seed(3)
    layer = PaddedConv2d(2, 3, (3, 2), stride=(1, 2), padding=(2, 1), dilation=(1, 2), padding_mode=mode)
    errors = finite_difference_errors(layer, _input((1, 2, 5, 6), 4))
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@settings(max_examples=30, deadline=None, derandomize=True)
@given(conv_configs())
def test_true_conv_matches_torch_layer(config):
    cfg, shape = config
    torch.manual_seed(5)
    errors = compare_with_torch(TrueConv2d(**cfg), layers.TrueConv2d(**cfg), _input(shape, 6))
    assert max(errors.values()) <= TIGHT, (cfg, shape, errors)


def test_true_conv_is_conv_with_the_flipped_kernel():
    glass.manual_seed(7)
    true = TrueConv2d(3, 4, (3, 2), stride=2, padding=1, padding_mode="reflect").to(np.float64)
    cc = PaddedConv2d(3, 4, (3, 2), stride=2, padding=1, padding_mode="reflect").to(np.float64)
    cc.load_state_dict({"weight": true.params["weight"][:, :, ::-1, ::-1], "bias": true.params["bias"]})
    x = _input((2, 3, 7, 6), 8)
    dy = _input(true.output_size(7, 6), 9) * np.ones((2, 4, 1, 1))
    np.testing.assert_array_equal(true.forward(x), cc.forward(x))
    np.testing.assert_array_equal(true.backward(dy), cc.backward(dy))
    np.testing.assert_array_equal(true.grads["weight"], cc.grads["weight"][:, :, ::-1, ::-1])
    np.testing.assert_array_equal(true.grads["bias"], cc.grads["bias"])


def test_true_conv_of_an_impulse_is_the_kernel():
    """Convolving a unit impulse reproduces the kernel as written; cross-correlation gives it flipped."""
    kernel = np.arange(1.0, 7.0).reshape(1, 1, 2, 3)
    x = np.zeros((1, 1, 3, 5))
    x[0, 0, 1, 2] = 1.0
    true, cc = TrueConv2d(1, 1, (2, 3), bias=False), glass.Conv2d(1, 1, (2, 3), bias=False)
    for layer in (true, cc):
        layer.to(np.float64).load_state_dict({"weight": kernel})
    np.testing.assert_array_equal(true.forward(x)[0, 0, :2, :3], kernel[0, 0])
    np.testing.assert_array_equal(cc.forward(x)[0, 0, :2, :3], kernel[0, 0, ::-1, ::-1])


def test_true_conv_finite_differences():
    glass.manual_seed(10)
    errors = finite_difference_errors(TrueConv2d(2, 2, 3, padding=1, groups=2, padding_mode="circular"),
                                      _input((1, 2, 4, 5), 11))
    assert max(errors.values()) < 1e-7, errors


@st.composite
def separable_configs(draw):
    cin = draw(st.integers(1, 4))
    cfg = dict(in_channels=cin, out_channels=draw(st.integers(1, 5)), kernel_size=draw(st.integers(1, 4)),
               stride=draw(st.integers(1, 3)), padding=draw(st.integers(0, 2)), dilation=draw(st.integers(1, 2)),
               bias=draw(st.booleans()), padding_mode=draw(st.sampled_from(["zeros", "reflect", "replicate",
                                                                            "circular"])))
    k, p, d = cfg["kernel_size"], cfg["padding"], cfg["dilation"]
    least = max(1, d * (k - 1) + 1 - 2 * p, p + 1)
    shape = (draw(st.integers(1, 3)), cin, draw(st.integers(least, least + 6)), draw(st.integers(least, least + 6)))
    return cfg, shape


@settings(max_examples=30, deadline=None, derandomize=True)
@given(separable_configs(), st.integers(1, 3))
def test_separable_matches_torch_layer(config, depth_multiplier):
    cfg, shape = config
    torch.manual_seed(12)
    errors = compare_with_torch(SeparableConv2d(**cfg, depth_multiplier=depth_multiplier),
                                layers.SeparableConv2d(**cfg, depth_multiplier=depth_multiplier), _input(shape, 13))
    assert max(errors.values()) <= TIGHT, (cfg, shape, errors)
    assert {"depthwise.weight", "pointwise.weight"} <= set(errors)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(separable_configs(), st.one_of(st.none(), st.integers(1, 4)))
def test_spatially_separable_matches_torch_layer(config, mid_channels):
    cfg, shape = config
    torch.manual_seed(14)
    errors = compare_with_torch(SpatiallySeparableConv2d(**cfg, mid_channels=mid_channels),
                                layers.SpatiallySeparableConv2d(**cfg, mid_channels=mid_channels), _input(shape, 15))
    assert max(errors.values()) <= TIGHT, (cfg, shape, errors)
    assert {"vertical.weight", "horizontal.weight"} <= set(errors)


@pytest.mark.parametrize("cls", [SeparableConv2d, SpatiallySeparableConv2d])
def test_composites_float32_and_finite_differences(cls):
    torch_cls = getattr(layers, cls.__name__)
    cfg = dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1, padding_mode="reflect")
    torch.manual_seed(16)
    errors = compare_with_torch(cls(**cfg), torch_cls(**cfg), _input((2, 3, 8, 7), 17), np.float32)
    assert max(errors.values()) <= LOOSE, errors
    glass.manual_seed(18)
    errors = finite_difference_errors(cls(**cfg), _input((1, 3, 5, 4), 19))
    assert max(errors.values()) < 1e-7, errors


def test_composites_skip_the_input_gradient_like_the_first_layer():
    layer = SeparableConv2d(2, 3, 3)
    layer.input_grad = False
    y = layer.forward(np.ones((1, 2, 5, 5), np.float32))
    assert layer.backward(np.ones_like(y)) is None
    assert np.abs(layer.depthwise.grads["weight"]).sum() > 0


def test_spatially_separable_with_one_channel_is_a_rank_one_kernel():
    """Sobel's x kernel [1 2 1]^T [-1 0 1] as a vertical then horizontal pass equals the full 3x3 kernel."""
    v, h = np.array([1.0, 2.0, 1.0]), np.array([-1.0, 0.0, 1.0])
    layer = SpatiallySeparableConv2d(1, 1, 3, padding=1, bias=False).to(np.float64)
    layer.load_state_dict({"vertical.weight": v.reshape(1, 1, 3, 1), "horizontal.weight": h.reshape(1, 1, 1, 3)})
    full = glass.Conv2d(1, 1, 3, padding=1, bias=False).to(np.float64)
    full.load_state_dict({"weight": np.outer(v, h).reshape(1, 1, 3, 3)})
    x = _input((2, 1, 6, 7), 20)
    np.testing.assert_allclose(layer.forward(x), full.forward(x), rtol=0, atol=1e-13)
    assert layer.num_parameters() == 6 and full.num_parameters() == 9


@pytest.mark.parametrize("kwargs, message", [
    (dict(in_channels=1, out_channels=1, kernel_size=3, padding_mode="mirror"), "padding_mode must be one of"),
    (dict(in_channels=2, out_channels=3, kernel_size=3, groups=2), "divisible by groups"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PaddedConv2d(**kwargs)
    with pytest.raises(ValueError, match="depth_multiplier"):
        SeparableConv2d(2, 2, 3, depth_multiplier=0)


def test_reflect_padding_larger_than_the_input_is_one_clear_line():
    layer = PaddedConv2d(1, 1, 3, padding=3, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"^PaddedConv2d: input of shape \(1, 1, 3, 8\): padding_mode='reflect' "
                                         r"needs padding < input size; got padding 3 for a size of 3$"):
        layer.forward(np.zeros((1, 1, 3, 8)))


def test_from_torch_converts_the_conv_variants_and_padding_modes():
    torch.manual_seed(21)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), torch.nn.ReLU(),
        layers.TrueConv2d(4, 4, 3, padding=2, dilation=2, groups=2, padding_mode="circular"),
        layers.SeparableConv2d(4, 6, 3, stride=2, padding="valid", padding_mode="replicate", depth_multiplier=2),
        layers.SpatiallySeparableConv2d(6, 5, (3, 2), stride=(1, 2), padding=(1, 0), mid_channels=3),
    ).double()
    converted = glass.from_torch(model)
    assert isinstance(converted[0], PaddedConv2d) and isinstance(converted[2], TrueConv2d)
    assert isinstance(converted[3], SeparableConv2d) and isinstance(converted[4], SpatiallySeparableConv2d)
    assert type(glass.from_torch(torch.nn.Conv2d(1, 1, 3))) is glass.Conv2d  # zeros: the plain layer
    errors = compare_with_torch(converted, model, _input((2, 3, 12, 11), 22))
    assert max(errors.values()) <= TIGHT, errors
