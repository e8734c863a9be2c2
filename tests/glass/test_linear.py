"""Linear and Flatten against torch, and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convolab import glass

from ._helpers import TOL, compare_with_torch, finite_difference_errors


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape, out_features, bias", [((5, 7), 3, True), ((2, 3, 7), 4, False), ((1, 64), 10, True)])
def test_linear_matches_torch(shape, out_features, bias, dtype):
    torch.manual_seed(0)
    ref = torch.nn.Linear(shape[-1], out_features, bias=bias)
    errors = compare_with_torch(glass.Linear(shape[-1], out_features, bias=bias), ref,
                                np.random.default_rng(0).standard_normal(shape), dtype)
    assert max(errors.values()) <= TOL[dtype], errors


@pytest.mark.parametrize("start, end", [(1, -1), (0, -1), (1, 2), (2, 3)])
def test_flatten_matches_torch(start, end):
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).transpose(0, 3, 1, 2)  # non-contiguous input
    errors = compare_with_torch(glass.Flatten(start, end), torch.nn.Flatten(start, end), x)
    assert max(errors.values()) == 0.0


def test_finite_differences():
    glass.manual_seed(0)
    errors = finite_difference_errors(glass.Sequential(glass.Flatten(), glass.Linear(12, 5)),
                                      np.random.default_rng(2).standard_normal((3, 3, 2, 2)))
    assert max(errors.values()) < 1e-6, errors


def test_wrong_features_names_layer():
    model = glass.Sequential(glass.Flatten(), glass.Linear(10, 2))
    with pytest.raises(ValueError, match=r"Linear '1': expected input of shape \(\*, 10\), got \(4, 12\)"):
        model.forward(np.zeros((4, 3, 2, 2)))
