"""Losses against torch.nn.functional, and finite differences of their gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convolab import glass

from ._helpers import TOL, TORCH_DTYPE, numeric_grad, rel_err


def _torch_loss(logits, target, **kwargs):
    z = torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(z, torch.tensor(target), **kwargs)
    loss.backward()
    return loss.item(), z.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.6])
@pytest.mark.parametrize("probabilities", [False, True])
def test_cross_entropy_matches_torch(probabilities, label_smoothing, reduction, dtype):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((16, 7)) * 5).astype(dtype)
    target = rng.dirichlet(np.ones(7), 16).astype(dtype) if probabilities else rng.integers(0, 7, 16)
    want_loss, want_grad = _torch_loss(logits, target, reduction=reduction, label_smoothing=label_smoothing)
    crit = glass.CrossEntropyLoss(reduction=reduction, label_smoothing=label_smoothing)
    loss = crit.forward(logits, target)
    grad = crit.backward()
    assert grad.dtype == dtype
    assert abs(loss - want_loss) <= TOL[dtype] * abs(want_loss)
    assert rel_err(grad, want_grad) <= TOL[dtype]


def test_cross_entropy_backward_scales_by_grad():
    crit = glass.CrossEntropyLoss()
    crit.forward(np.array([[1.0, 2.0, 0.5]]), np.array([1]))
    np.testing.assert_allclose(crit.backward(1024.0), 1024.0 * crit.backward())


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_finite_differences(label_smoothing):
    rng = np.random.default_rng(1)
    logits, target = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    crit = glass.CrossEntropyLoss(label_smoothing=label_smoothing)
    crit.forward(logits, target)
    assert rel_err(crit.backward(), numeric_grad(lambda: crit.forward(logits, target), logits)) < 1e-7


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_matches_torch_and_finite_differences(reduction, dtype):
    rng = np.random.default_rng(2)
    x, t = rng.standard_normal((3, 4, 5)).astype(dtype), rng.standard_normal((3, 4, 5)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    want = F.mse_loss(xt, torch.tensor(t, dtype=TORCH_DTYPE[dtype]), reduction=reduction)
    want.backward()
    crit = glass.MSELoss(reduction)
    assert abs(crit.forward(x, t) - want.item()) <= TOL[dtype] * want.item()
    assert rel_err(crit.backward(), xt.grad.numpy()) <= TOL[dtype]
    x64 = x.astype(np.float64)
    crit.forward(x64, t)
    assert rel_err(crit.backward(), numeric_grad(lambda: crit.forward(x64, t), x64)) < 1e-7


def test_bad_targets():
    crit = glass.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 3\)"):
        crit.forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"expected class indices of shape \(2,\), got \(3,\)"):
        crit.forward(np.zeros((2, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"expected logits of shape \(N, C\)"):
        crit.forward(np.zeros((2, 3, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match="same shape"):
        glass.MSELoss().forward(np.zeros(3), np.zeros(4))
    with pytest.raises(RuntimeError, match="before forward"):
        glass.CrossEntropyLoss().backward()
