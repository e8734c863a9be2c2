"""glass' global, fractional max and stochastic pooling against torch (nn.FractionalMaxPool2d, convolab.layers)
and the float64 loop references of tests/layers/test_pooling.py; finite differences for the glass-only ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.layers.test_pooling import distinct, fractional_loop, graham_samples, relu_input, stochastic_loop

from convolab import glass, layers
from convolab.glass.pool import FractionalMaxPool2d, GlobalAvgPool2d, GlobalMaxPool2d, StochasticPool2d

from ._helpers import compare_with_torch, finite_difference_errors, rel_err

TIGHT = 1e-10  # float64, issue 17
LOOSE = 1e-5   # float32


def _with_samples(layer, torch_layer, samples):
    layer.samples = samples
    torch_layer.samples = None if samples is None else torch.tensor(samples)
    return layer, torch_layer


# -- global pooling -------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 7), st.integers(1, 7), st.booleans(),
       st.sampled_from(["GlobalAvgPool2d", "GlobalMaxPool2d"]))
def test_global_pools_match_torch(n, c, h, w, flatten, name):
    x = distinct((n, c, h, w), h * w)
    errors = compare_with_torch(getattr(glass.pool, name)(flatten), getattr(layers, name)(flatten), x)
    assert max(errors.values()) <= TIGHT, errors


@pytest.mark.parametrize("cls", [GlobalAvgPool2d, GlobalMaxPool2d])
def test_global_pools_float32_and_shapes(cls):
    x = distinct((2, 3, 5, 4), 1)
    errors = compare_with_torch(cls(True), getattr(layers, cls.__name__)(True), x, np.float32)
    assert max(errors.values()) <= LOOSE, errors
    assert cls().forward(x).shape == (2, 3, 1, 1) and cls(flatten=True).forward(x).shape == (2, 3)


# -- fractional max pooling ----------------------------------------------------------------------------


@st.composite
def torch_fmp_configs(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    size = (draw(st.integers(k[0], 12)), draw(st.integers(k[1], 12)))
    out = (draw(st.integers(1, size[0] - k[0] + 1)), draw(st.integers(1, size[1] - k[1] + 1)))
    return k, out, (draw(st.integers(1, 3)), draw(st.integers(1, 3)), *size)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=30, deadline=None, derandomize=True)
@given(torch_fmp_configs())
def test_fixed_windows_match_torchs_fractional_max_pool(dtype, config):
    """kernel_size=k with torch's _random_samples u: glass equals nn.FractionalMaxPool2d, forward and backward."""
    k, out, shape = config
    samples = np.random.default_rng(sum(shape)).random((*shape[:2], 2)).astype(dtype)
    layer = FractionalMaxPool2d(output_size=out, kernel_size=k).to(dtype)
    layer.samples = samples
    ref = torch.nn.FractionalMaxPool2d(k, output_size=out, _random_samples=torch.tensor(samples))
    x = distinct(shape, 2).astype(dtype)
    dy = np.random.default_rng(3).standard_normal((*shape[:2], *out)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    y, dx = layer.forward(x), layer.backward(dy)
    assert y.dtype == dx.dtype == dtype
    # Exact in both dtypes: the starts are computed in the input's dtype, as torch's kernel does, and a
    # max and its gradient add nothing up when windows do not overlap (when they do, a few sums of dy).
    assert rel_err(y, yt.detach().numpy()) == 0, config
    assert rel_err(dx, xt.grad.numpy()) <= (TIGHT if dtype == np.float64 else LOOSE), config


@st.composite
def graham_configs(draw):
    size = (draw(st.integers(2, 13)), draw(st.integers(2, 13)))
    out = (draw(st.integers(1, size[0])), draw(st.integers(1, size[1])))
    sequence = draw(st.sampled_from(["pseudo_random", "random"]))
    return out, sequence, draw(st.booleans()), (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *size)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(graham_configs())
def test_graham_regions_match_the_loop_reference_and_the_torch_layer(config):
    """Random and pseudo-random sequences, disjoint and overlapping: glass = float64 loops = convolab.layers."""
    out, sequence, overlapping, shape = config
    kw = dict(output_size=out, sequence=sequence, overlapping=overlapping)
    x, samples = distinct(shape, 3), graham_samples(shape, out, sequence, 4)
    layer, ref = _with_samples(FractionalMaxPool2d(**kw), layers.FractionalMaxPool2d(**kw), samples)
    dy = np.random.default_rng(5).standard_normal((*shape[:2], *out))
    y_loop, dx_loop = fractional_loop(x, dy, samples, out, sequence=sequence, overlapping=overlapping)
    y = layer.forward(x)
    assert rel_err(y, y_loop) <= TIGHT and rel_err(layer.backward(dy), dx_loop) <= TIGHT, config
    errors = compare_with_torch(layer, ref, x)
    assert max(errors.values()) <= TIGHT, (config, errors)


@pytest.mark.parametrize("kw", [dict(output_ratio=0.7), dict(output_size=(5, 4), overlapping=True),
                                dict(output_ratio=(0.5, 0.75), sequence="random"), dict(output_size=4, kernel_size=2)])
def test_fractional_finite_differences_for_a_fixed_sequence(kw):
    layer = FractionalMaxPool2d(**kw).eval()  # eval: the seeded sequence, the same in every forward
    errors = finite_difference_errors(layer, distinct((2, 2, 7, 6), 6))
    assert max(errors.values()) < 1e-8, errors


def test_fractional_eval_equals_the_torch_layer_without_a_sample():
    """Both engines use fractional_eval_samples(seed): a converted model pools the same regions."""
    for kw in (dict(output_ratio=0.7, seed=3), dict(output_size=6, sequence="random", overlapping=True),
               dict(output_size=(6, 5), kernel_size=(2, 3))):
        layer, ref = FractionalMaxPool2d(**kw).eval(), layers.FractionalMaxPool2d(**kw).eval()
        errors = compare_with_torch(layer, ref, distinct((2, 3, 9, 8), 7))
        assert max(errors.values()) == 0, (kw, errors)


def test_fractional_float32():
    kw = dict(output_size=(5, 6), sequence="random", overlapping=True)
    x = distinct((2, 3, 8, 9), 8)
    layer, ref = _with_samples(FractionalMaxPool2d(**kw), layers.FractionalMaxPool2d(**kw),
                               graham_samples(x.shape, (5, 6), "random", 9))
    errors = compare_with_torch(layer, ref, x, np.float32)
    assert errors["out"] == 0 and errors["dx"] <= LOOSE, errors  # overlapping regions sum some dy


def test_fractional_training_draws_from_the_glass_generator():
    x = distinct((3, 4, 10, 10), 10)
    layer = FractionalMaxPool2d(output_size=7)
    glass.manual_seed(0)
    a = layer.forward(x)
    glass.manual_seed(0)
    np.testing.assert_array_equal(a, layer.forward(x))
    assert not np.array_equal(a, layer.forward(x))
    planes = layer.forward(np.broadcast_to(distinct((1, 1, 10, 10), 11), (3, 4, 10, 10))).reshape(12, -1)
    assert len({p.tobytes() for p in planes}) > 1  # one sequence per (n, c) plane


# -- stochastic pooling ---------------------------------------------------------------------------------


@st.composite
def stochastic_configs(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(k[0], 9)), draw(st.integers(k[1], 9)))
    return k, s, shape


@settings(max_examples=30, deadline=None, derandomize=True)
@given(stochastic_configs(), st.booleans())
def test_stochastic_matches_torch_and_the_loop_reference(config, training):
    """Training with one fixed uniform map (so one sampled index map) and evaluation: glass = loops = torch."""
    k, s, shape = config
    x = relu_input(shape, 12)
    ho, wo = (shape[2] - k[0]) // s[0] + 1, (shape[3] - k[1]) // s[1] + 1
    r = np.random.default_rng(13).random((*shape[:2], ho, wo)) if training else None
    layer, ref = _with_samples(StochasticPool2d(k, s).train(training), layers.StochasticPool2d(k, s).train(training), r)
    errors = compare_with_torch(layer, ref, x)
    assert max(errors.values()) <= TIGHT, (config, errors)
    dy = np.random.default_rng(14).standard_normal((*shape[:2], ho, wo))
    y_loop, dx_loop, index = stochastic_loop(x, dy, k, s, r)
    assert rel_err(layer.forward(x), y_loop) <= TIGHT and rel_err(layer.backward(dy), dx_loop) <= TIGHT
    if training:
        np.testing.assert_array_equal(layer.last_index, index)
        np.testing.assert_array_equal(layer.last_index, ref.last_index.numpy())


def test_stochastic_float32():
    x = relu_input((2, 3, 8, 8), 15).astype(np.float32)
    for training in (True, False):
        r = np.random.default_rng(16).random((2, 3, 4, 4)) if training else None
        layer, ref = _with_samples(StochasticPool2d(2).train(training), layers.StochasticPool2d(2).train(training), r)
        errors = compare_with_torch(layer, ref, x, np.float32)
        assert max(errors.values()) <= LOOSE, (training, errors)


@pytest.mark.parametrize("k, s", [(2, 2), (3, 2), ((2, 3), 1)])
def test_stochastic_eval_finite_differences(k, s):
    """The probability-weighted average sum a^2 / sum a (a glass-only op): values away from 0, where it is smooth."""
    rng = np.random.default_rng(17)
    x = rng.uniform(0.1, 1.0, (2, 2, 6, 7)) * rng.choice([-1, 1, 1], (2, 2, 6, 7))
    errors = finite_difference_errors(StochasticPool2d(k, s).eval(), x)
    assert max(errors.values()) < 1e-8, errors


def test_stochastic_training_gradient_goes_to_the_sampled_element():
    x = relu_input((2, 2, 6, 6), 18)
    layer = StochasticPool2d(2)
    glass.manual_seed(19)
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(y))
    assert dx.sum() == (y > 0).sum()  # one unit per window that is not all zero
    assert set(np.unique(dx)) <= {0.0, 1.0}
    # 2x2 windows at stride 2 do not overlap: the marked element of every window is the one y took
    picked = (x * dx).reshape(2, 2, 3, 2, 3, 2).sum(axis=(3, 5))
    np.testing.assert_array_equal(picked, y)


def test_stochastic_samples_with_probability_proportional_to_activation():
    """20 000 draws from the window [1, 2, 3, 4] (glass generator): frequencies within 5 sigma of a / 10."""
    x = np.broadcast_to(np.array([[1.0, 2.0], [3.0, 4.0]]), (20000, 1, 2, 2))
    glass.manual_seed(0)
    y = StochasticPool2d(2).forward(x).ravel()
    p = np.array([0.1, 0.2, 0.3, 0.4])
    counts = np.array([(y == v).sum() for v in (1.0, 2.0, 3.0, 4.0)])
    assert np.all(np.abs(counts - 20000 * p) <= 5 * np.sqrt(20000 * p * (1 - p))), counts


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match="exactly one of output_size and output_ratio"):
        FractionalMaxPool2d(output_size=3, output_ratio=0.5)
    with pytest.raises(ValueError, match=r"samples must have shape \(1, 1, 2\)"):
        layer = FractionalMaxPool2d(output_size=2)
        layer.samples = np.zeros((1, 1, 3))
        layer.forward(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"with 3x3 windows"):
        FractionalMaxPool2d(output_size=3, kernel_size=3).forward(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match="smaller than the"):
        StochasticPool2d(3).forward(np.zeros((1, 1, 2, 2)))


def test_from_torch_converts_the_poolings():
    """In evaluation the converted model computes what the torch model computes (fixed fractional sequence)."""
    torch.manual_seed(20)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(),
        layers.FractionalMaxPool2d(output_ratio=0.75, sequence="random", overlapping=True, seed=4),
        layers.StochasticPool2d(2), layers.FractionalMaxPool2d(output_size=2, kernel_size=2),
        layers.GlobalMaxPool2d(flatten=True),
    ).double().eval()
    converted = glass.from_torch(model)
    assert [type(m).__name__ for m in converted][2:] == ["FractionalMaxPool2d", "StochasticPool2d",
                                                         "FractionalMaxPool2d", "GlobalMaxPool2d"]
    x = np.random.default_rng(21).standard_normal((2, 2, 13, 12))
    errors = compare_with_torch(converted, model, x)
    assert max(errors.values()) <= TIGHT, errors
    avg = glass.from_torch(torch.nn.Sequential(layers.GlobalAvgPool2d()))
    assert isinstance(avg[0], GlobalAvgPool2d) and not avg[0].flatten
