"""Activations and (log-)softmax against torch, and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convolab import glass

from ._helpers import TOL, compare_with_torch, finite_difference_errors

PAIRS = [
    (lambda: glass.ReLU(), lambda: torch.nn.ReLU()),
    (lambda: glass.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
    (lambda: glass.ELU(0.7), lambda: torch.nn.ELU(0.7)),
    (lambda: glass.Sigmoid(), lambda: torch.nn.Sigmoid()),
    (lambda: glass.Tanh(), lambda: torch.nn.Tanh()),
    (lambda: glass.SiLU(), lambda: torch.nn.SiLU()),
    (lambda: glass.Softmax(dim=1), lambda: torch.nn.Softmax(dim=1)),
    (lambda: glass.LogSoftmax(dim=1), lambda: torch.nn.LogSoftmax(dim=1)),
    (lambda: glass.Softmax(dim=-1), lambda: torch.nn.Softmax(dim=-1)),
]
IDS = ["relu", "leaky_relu", "elu", "sigmoid", "tanh", "silu", "softmax1", "log_softmax1", "softmax-1"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make, make_ref", PAIRS, ids=IDS)
def test_matches_torch(make, make_ref, dtype):
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 6)) * 4  # well into both tails of sigmoid/tanh
    errors = compare_with_torch(make(), make_ref(), x, dtype)
    assert max(errors.values()) <= TOL[dtype], errors


@pytest.mark.parametrize("make", [p[0] for p in PAIRS], ids=IDS)
def test_finite_differences(make):
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kinks of ReLU and its relatives
    errors = finite_difference_errors(make(), x)
    assert max(errors.values()) < 1e-6, errors


def test_no_overflow_for_large_inputs():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    for layer in (glass.Sigmoid(), glass.SiLU(), glass.ELU(), glass.Softmax(), glass.LogSoftmax()):
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            out = layer.forward(x)
            layer.backward(np.ones_like(out))
        assert np.isfinite(out).all(), layer


def test_keeps_memory_order_and_dtype():
    x = np.zeros((2, 5, 5, 3), np.float16).transpose(0, 3, 1, 2)  # channels-last memory
    out = glass.ReLU().forward(x)
    assert out.dtype == np.float16 and out.transpose(0, 2, 3, 1).flags.c_contiguous
