"""BatchNorm2d against torch (training and evaluation, running statistics) and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convolab import glass

from ._helpers import TOL, compare_with_torch, finite_difference_errors, rel_err


def _randomized(layer_t: torch.nn.BatchNorm2d, seed: int = 0) -> torch.nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    c = layer_t.num_features
    with torch.no_grad():
        if layer_t.affine:
            layer_t.weight.copy_(torch.rand(c, generator=g) + 0.5)
            layer_t.bias.copy_(torch.randn(c, generator=g))
        if layer_t.track_running_stats:
            layer_t.running_mean.copy_(torch.randn(c, generator=g))
            layer_t.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return layer_t


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kwargs", [{}, dict(momentum=None), dict(affine=False), dict(track_running_stats=False),
                                    dict(eps=1e-3, momentum=0.3)], ids=str)
# Not 2 values per channel: then xhat = +-1 up to eps and dx is ~eps/var, all cancellation noise in float32.
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (3, 5, 1, 1), (1, 2, 3, 3)])
def test_matches_torch(shape, kwargs, training, dtype):
    ref = _randomized(torch.nn.BatchNorm2d(shape[1], **kwargs)).train(training)
    layer = glass.BatchNorm2d(shape[1], **kwargs).train(training)
    x = np.random.default_rng(1).standard_normal(shape) * 3 + 1
    errors = compare_with_torch(layer, ref, x, dtype)  # includes running_mean / running_var after the update
    assert max(errors.values()) <= TOL[dtype], errors


def test_running_statistics_over_several_batches():
    ref, layer = torch.nn.BatchNorm2d(3, momentum=None).double(), glass.BatchNorm2d(3, momentum=None).to(np.float64)
    rng = np.random.default_rng(2)
    for _ in range(5):
        x = rng.standard_normal((4, 3, 2, 2)) * rng.uniform(0.5, 3)
        layer.forward(x)
        ref(torch.tensor(x))
    for name, value in ref.state_dict().items():
        assert rel_err(layer.state_dict()[name], value.numpy()) < 1e-12, name
    assert int(layer.buffers["num_batches_tracked"]) == 5


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_finite_differences(training, affine):
    layer = glass.BatchNorm2d(3, affine=affine).train(training)
    if affine:
        layer.params["weight"][:] = [0.5, 1.5, 2.0]
        layer.params["bias"][:] = [0.1, -0.2, 0.3]
    layer.buffers["running_mean"][:] = [0.2, -0.1, 0.0]
    layer.buffers["running_var"][:] = [0.5, 2.0, 1.0]
    x = np.random.default_rng(3).standard_normal((3, 3, 2, 3))
    errors = finite_difference_errors(layer, x)
    assert max(errors.values()) < 1e-6, errors


def test_errors():
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected input of shape \(N, 4, H, W\), got \(2, 3, 5, 5\)"):
        glass.BatchNorm2d(4).forward(np.zeros((2, 3, 5, 5)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        glass.BatchNorm2d(2).forward(np.zeros((1, 2, 1, 1)))
    glass.BatchNorm2d(2).eval().forward(np.zeros((1, 2, 1, 1)))  # fine with running statistics


def test_float16_input_normalised_in_float32():
    x = (np.random.default_rng(4).standard_normal((8, 2, 4, 4)) * 100 + 1000).astype(np.float16)
    out = glass.BatchNorm2d(2).forward(x)
    assert out.dtype == np.float16
    want = glass.BatchNorm2d(2).forward(x.astype(np.float32))
    assert rel_err(out, want) < 1e-3
