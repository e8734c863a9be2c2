"""Pooling layers against torch over random configurations, and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from convolab import glass

from ._helpers import TOL, compare_with_torch, finite_difference_errors


@st.composite
def pool_configs(draw, dilation: bool):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    cfg = dict(kernel_size=k, stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
               padding=(draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2))),
               ceil_mode=draw(st.booleans()))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    if dilation:
        cfg["dilation"] = d
    size = [draw(st.integers(max(1, dd * (kk - 1) + 1 - 2 * p), 9)) for kk, p, dd in zip(k, cfg["padding"], d)]
    return cfg, (draw(st.integers(1, 3)), draw(st.integers(1, 4)), *size)


def _input(shape, seed):
    # Distinct values: a tie in a max-pool window makes "the" maximum a matter of convention.
    rng = np.random.default_rng(seed)
    return rng.permutation(np.prod(shape)).reshape(shape) / np.prod(shape) - 0.5


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=30, deadline=None, derandomize=True)
@given(pool_configs(dilation=True))
def test_max_pool_matches_torch(dtype, config):
    cfg, shape = config
    # With dilation a window can fall wholly into the padding; torch's CPU kernel then indexes out of
    # bounds (heap corruption with torch 2.14), so those configurations are checked without torch below.
    assume(np.isfinite(glass.MaxPool2d(**cfg).forward(np.zeros(shape))).all())
    errors = compare_with_torch(glass.MaxPool2d(**cfg), torch.nn.MaxPool2d(**cfg), _input(shape, 0), dtype)
    assert max(errors.values()) <= TOL[dtype], (cfg, shape, errors)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=30, deadline=None, derandomize=True)
@given(pool_configs(dilation=False), st.booleans(), st.sampled_from([None, 3]))
def test_avg_pool_matches_torch(dtype, config, count_include_pad, divisor_override):
    cfg, shape = config
    cfg = dict(cfg, count_include_pad=count_include_pad, divisor_override=divisor_override)
    errors = compare_with_torch(glass.AvgPool2d(**cfg), torch.nn.AvgPool2d(**cfg), _input(shape, 1), dtype)
    assert max(errors.values()) <= TOL[dtype], (cfg, shape, errors)


@pytest.mark.parametrize("output_size, size", [(1, (5, 7)), ((2, 3), (5, 7)), ((3, None), (7, 4)), (4, (4, 4))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adaptive_avg_pool_matches_torch(output_size, size, dtype):
    x = _input((2, 3, *size), 2)
    errors = compare_with_torch(glass.AdaptiveAvgPool2d(output_size), torch.nn.AdaptiveAvgPool2d(output_size), x,
                                dtype)
    assert max(errors.values()) <= TOL[dtype], errors


def test_max_pool_gradient_goes_to_the_first_maximum_on_ties():
    x = np.ones((1, 1, 2, 2))
    layer = glass.MaxPool2d(2)
    layer.forward(x)
    dx = layer.backward(np.ones((1, 1, 1, 1)))
    xt = torch.ones(1, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, 2).sum().backward()
    np.testing.assert_array_equal(dx, xt.grad.numpy())
    assert dx[0, 0, 0, 0] == 1 and dx.sum() == 1


def test_max_pool_window_wholly_in_padding_gives_minus_inf_and_no_gradient():
    layer = glass.MaxPool2d((2, 1), padding=(1, 0), dilation=(2, 1))  # rows -1 and 1 of a 1-row image
    x = np.ones((1, 1, 1, 3))
    out = layer.forward(x)
    assert out.shape == (1, 1, 1, 3) and np.isneginf(out).all()
    np.testing.assert_array_equal(layer.backward(np.ones(out.shape)), np.zeros_like(x))


def test_max_pool_propagates_nan():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    out = glass.MaxPool2d(2).forward(x)
    assert np.isnan(out[0, 0, 0, 0]) and not np.isnan(out[0, 0, 1, 1])


@pytest.mark.parametrize("layer", [
    glass.MaxPool2d(3, stride=2, padding=1), glass.MaxPool2d(2, dilation=2, ceil_mode=True),
    glass.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), glass.AvgPool2d(2, ceil_mode=True),
    glass.AdaptiveAvgPool2d(1), glass.AdaptiveAvgPool2d((2, 3)),
], ids=repr)
def test_finite_differences(layer):
    errors = finite_difference_errors(layer, _input((2, 2, 5, 7), 3))
    assert max(errors.values()) < 1e-6, errors


def test_shape_errors_name_the_layer():
    model = glass.Sequential(glass.Flatten(), glass.MaxPool2d(2))
    with pytest.raises(ValueError, match=r"MaxPool2d '1': expected input of shape \(N, C, H, W\), got \(2, 48\)"):
        model.forward(np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="smaller than the"):
        glass.AvgPool2d(3).forward(np.zeros((1, 1, 2, 5)))
    with pytest.raises(ValueError, match="half the kernel size"):
        glass.MaxPool2d(2, padding=2)
