"""LayerNorm, GroupNorm (and GroupNorm1), LocalResponseNorm: glass against torch over 30 random configurations
each, LRN against its written-out formula (alpha divided by size), finite differences, from_torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convolab import glass
from convolab.layers import GroupNorm1

from ._helpers import TOL, compare_with_torch, finite_difference_errors, rel_err

SEEDS = range(30)
F64 = 1e-10  # issue 17: glass equals torch to 1e-10 relative in float64


def _randomize(module: torch.nn.Module, rng: np.random.Generator) -> torch.nn.Module:
    """Weights near 1 and biases around 0, so the affine part is not the identity."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            v = rng.standard_normal(tuple(p.shape))
            p.copy_(torch.from_numpy(1 + 0.5 * v if name.endswith("weight") else v))
    return module


def _input(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape) * rng.choice([0.01, 1.0, 5.0]) + rng.choice([0.0, 3.0])


@pytest.mark.parametrize("seed", SEEDS)
def test_layer_norm_matches_torch(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in rng.integers(1, 6, size=rng.integers(2, 5)))
    k = int(rng.integers(1, len(shape) + 1))                  # normalise over the last k dims (all of them too)
    normalized = shape[len(shape) - k:]
    if np.prod(normalized) == 1:                               # one value: xhat is 0, nothing to compare
        normalized, shape = (3,) + normalized[1:], shape[:len(shape) - k] + (3,) + normalized[1:]
    kwargs = dict(eps=float(rng.choice([1e-5, 1e-3, 0.1])), elementwise_affine=bool(rng.integers(0, 4) > 0),
                  bias=bool(rng.integers(0, 3) > 0))
    ref = _randomize(torch.nn.LayerNorm(normalized, **kwargs), rng)
    errors = compare_with_torch(glass.LayerNorm(normalized, **kwargs), ref, _input(rng, shape))
    assert max(errors.values()) <= F64, (shape, normalized, kwargs, errors)


@pytest.mark.parametrize("seed", SEEDS)
def test_group_norm_matches_torch(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 13))
    groups = int(rng.choice([g for g in range(1, c + 1) if c % g == 0]))
    shape = (int(rng.integers(1, 4)), c) + tuple(int(d) for d in rng.integers(1, 6, size=rng.integers(1, 4)))
    if c // groups * int(np.prod(shape[2:])) == 1:             # one value per group: nothing to normalise
        shape = shape[:2] + (3,) + shape[3:]
    kwargs = dict(eps=float(rng.choice([1e-5, 1e-3, 0.1])), affine=bool(rng.integers(0, 4) > 0))
    ref = _randomize(torch.nn.GroupNorm(groups, c, **kwargs), rng).train(bool(seed % 2))  # no mode difference
    layer = glass.GroupNorm(groups, c, **kwargs).train(bool(seed % 2))
    errors = compare_with_torch(layer, ref, _input(rng, shape))
    assert max(errors.values()) <= F64, (shape, groups, kwargs, errors)


@pytest.mark.parametrize("seed", SEEDS)
def test_group_norm1_matches_torch(seed):
    rng = np.random.default_rng(seed)
    c, h, w = (int(d) for d in rng.integers(1, 7, size=3))
    shape = (int(rng.integers(1, 4)), c, h, w + 1)
    ref = _randomize(GroupNorm1(c, eps=1e-3), rng)
    errors = compare_with_torch(glass.GroupNorm1(c, eps=1e-3), ref, _input(rng, shape))
    assert max(errors.values()) <= F64, (shape, errors)


@pytest.mark.parametrize("seed", SEEDS)
def test_local_response_norm_matches_torch(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 11))
    shape = (int(rng.integers(1, 4)), c) + tuple(int(d) for d in rng.integers(1, 6, size=rng.integers(1, 4)))
    size = int(rng.integers(1, 10))                            # also wider than the channels
    args = (size, float(rng.uniform(1e-4, 2.0)), float(rng.uniform(0.1, 2.0)), float(rng.uniform(0.5, 3.0)))
    errors = compare_with_torch(glass.LocalResponseNorm(*args), torch.nn.LocalResponseNorm(*args),
                                _input(rng, shape))
    assert max(errors.values()) <= F64, (shape, args, errors)


def _lrn_by_hand(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """The formula with explicit loops: b_c = a_c / (k + alpha/size * sum_{j=c-size//2}^{c+(size-1)//2} a_j^2)^beta."""
    out = np.empty_like(x)
    c = x.shape[1]
    for ch in range(c):
        lo, hi = max(0, ch - size // 2), min(c - 1, ch + (size - 1) // 2)
        s = (x[:, lo:hi + 1] ** 2).sum(axis=1)
        out[:, ch] = x[:, ch] / (k + alpha / size * s) ** beta
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_local_response_norm_divides_alpha_by_size(size):
    """torch's formula (and so glass's) uses alpha / size, the AlexNet paper's text uses alpha."""
    x = np.random.default_rng(size).standard_normal((2, 6, 3, 3)) * 3
    args = (size, 0.5, 0.75, 1.0)
    want = _lrn_by_hand(x, *args)
    assert rel_err(torch.nn.LocalResponseNorm(*args)(torch.tensor(x)).numpy(), want) < 1e-14
    assert rel_err(glass.LocalResponseNorm(*args).forward(x), want) < 1e-14
    if size > 1:  # the paper's reading (no division) differs
        paper = _lrn_by_hand(x, size, 0.5 * size, 0.75, 1.0)
        assert rel_err(glass.LocalResponseNorm(*args).forward(x), paper) > 1e-3


def test_group_norm1_is_layer_norm_over_chw_with_per_channel_affine():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((3, 4, 5, 6)))
    gn = _randomize(GroupNorm1(4), rng).double()
    ln = torch.nn.LayerNorm((4, 5, 6)).double()
    with torch.no_grad():
        ln.weight.copy_(gn.weight[:, None, None].expand(4, 5, 6))
        ln.bias.copy_(gn.bias[:, None, None].expand(4, 5, 6))
    assert rel_err(gn(x).detach().numpy(), ln(x).detach().numpy()) < 1e-14


@pytest.mark.parametrize("make, make_ref", [
    (lambda: glass.LayerNorm((4, 5, 5)), lambda: torch.nn.LayerNorm((4, 5, 5))),
    (lambda: glass.GroupNorm(2, 4), lambda: torch.nn.GroupNorm(2, 4)),
    (lambda: glass.LocalResponseNorm(3, 0.1, 0.75, 2.0), lambda: torch.nn.LocalResponseNorm(3, 0.1, 0.75, 2.0)),
], ids=["layer", "group", "lrn"])
def test_float32_and_float16(make, make_ref):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5, 5)) * 2 + 1
    errors = compare_with_torch(make(), _randomize(make_ref(), rng), x, np.float32)
    assert max(errors.values()) <= TOL[np.float32], errors
    layer = make()
    out = layer.forward(x.astype(np.float16))                 # statistics in float32, result rounded
    assert out.dtype == np.float16 and layer.backward(np.ones_like(out)).dtype == np.float16
    assert rel_err(out, make_ref().double()(torch.tensor(x)).detach().numpy()) < 5e-3


@pytest.mark.parametrize("layer, shape", [
    (glass.LayerNorm((3, 4)), (2, 3, 3, 4)),
    (glass.LayerNorm(4, bias=False), (3, 4)),
    (glass.GroupNorm(3, 6), (2, 6, 2, 3)),
    (glass.GroupNorm1(2), (2, 2, 3)),
    (glass.LocalResponseNorm(4, 0.7, 1.3, 0.8), (2, 5, 2, 2)),
], ids=["layer", "layer_nobias", "group", "group1", "lrn"])
def test_finite_differences(layer, shape):
    rng = np.random.default_rng(4)
    for _, p, _ in layer.named_parameters():
        p[...] = rng.standard_normal(p.shape)
    errors = finite_difference_errors(layer, rng.standard_normal(shape) + 0.5)
    assert max(errors.values()) < 1e-7, errors


def test_from_torch_converts_them():
    rng = np.random.default_rng(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.LayerNorm((6, 4, 4), bias=False),
                                torch.nn.GroupNorm(3, 6, eps=1e-3), GroupNorm1(6, affine=False),
                                torch.nn.LocalResponseNorm(5, 1e-3, 0.6, 1.5), torch.nn.LayerNorm(4)).double()
    for m in model[1:]:
        _randomize(m, rng)
    ours = glass.from_torch(model)
    assert [type(m).__name__ for m in ours] == ["Conv2d", "LayerNorm", "GroupNorm", "GroupNorm1",
                                                "LocalResponseNorm", "LayerNorm"]
    assert "bias" not in ours[1].params and not ours[3].affine and ours[2].eps == 1e-3
    assert (ours[4].size, ours[4].alpha, ours[4].beta, ours[4].k) == (5, 1e-3, 0.6, 1.5)
    x = rng.standard_normal((2, 3, 6, 6))
    assert rel_err(ours.forward(x), model(torch.tensor(x)).detach().numpy()) < 1e-13


def test_bad_arguments_and_inputs_raise_one_line():
    with pytest.raises(ValueError, match="divisible by num_groups"):
        glass.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="normalized_shape must be sizes >= 1"):
        glass.LayerNorm((3, 0))
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        glass.LocalResponseNorm(0)
    with pytest.raises(ValueError, match="num_channels must be >= 1"):
        GroupNorm1(0)
    with pytest.raises(ValueError, match=r"expected input of shape \(\*, 4, 5\)"):
        glass.LayerNorm((4, 5)).forward(np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 6, \*\)"):
        glass.GroupNorm(2, 6).forward(np.zeros((2, 4, 3, 3)))
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        glass.LocalResponseNorm(3).forward(np.zeros((2, 4)))
