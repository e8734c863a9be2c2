"""Dropout and Dropout2d: the mask's statistics, its reuse in backward, evaluation mode, finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from convolab import glass

from ._helpers import finite_difference_errors


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_drops_a_fraction_p_and_scales_the_rest(p):
    glass.manual_seed(0)
    x = np.ones((200, 500))
    out = glass.Dropout(p).forward(x)
    kept = out != 0
    assert abs(1 - kept.mean() - p) < 0.01                  # 100,000 draws: 4 standard deviations < 0.01
    np.testing.assert_allclose(out[kept], 1 / (1 - p))
    assert abs(out.mean() - 1) < 0.03                      # inverted dropout keeps the expectation


def test_backward_uses_the_forward_mask():
    glass.manual_seed(1)
    layer = glass.Dropout(0.5)
    x = np.random.default_rng(0).standard_normal((4, 6))
    out = layer.forward(x)
    dx = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx != 0, out != 0)
    np.testing.assert_allclose(dx[dx != 0], 2.0)


def test_dropout2d_drops_whole_channels():
    glass.manual_seed(2)
    out = glass.Dropout2d(0.5).forward(np.ones((8, 16, 3, 3)))
    per_channel = out.reshape(8, 16, 9)
    assert np.all((per_channel == 0).all(axis=2) | (per_channel == 2).all(axis=2))
    assert 0.3 < (per_channel[:, :, 0] == 0).mean() < 0.7


@pytest.mark.parametrize("layer", [glass.Dropout(0.4), glass.Dropout2d(0.4)], ids=repr)
def test_evaluation_mode_is_the_identity(layer):
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 4))
    layer.eval()
    np.testing.assert_array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)


@pytest.mark.parametrize("layer", [glass.Dropout(0.3), glass.Dropout2d(0.3)], ids=repr)
def test_finite_differences_with_a_fixed_mask(layer):
    errors = finite_difference_errors(layer, np.random.default_rng(4).standard_normal((2, 3, 2, 2)), reseed=5)
    assert max(errors.values()) < 1e-6, errors


def test_extreme_probabilities():
    x = np.ones((3, 3))
    np.testing.assert_array_equal(glass.Dropout(0.0).forward(x), x)
    np.testing.assert_array_equal(glass.Dropout(1.0).forward(x), 0 * x)
    with pytest.raises(ValueError, match="p must be in"):
        glass.Dropout(1.5)
