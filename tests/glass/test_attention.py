"""Squeeze-excitation, CBAM (and its two parts) and the non-local block: glass against convolab.layers' torch
modules over 30 random configurations each, finite differences, from_torch / to_torch, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convolab import glass, layers

from ._helpers import TOL, compare_with_torch, finite_difference_errors, rel_err

SEEDS = range(30)
F64 = 1e-10  # issue 17: glass equals torch to 1e-10 relative in float64


def _randomize(module: torch.nn.Module, rng: np.random.Generator, scale: float = 0.5) -> torch.nn.Module:
    """Every parameter drawn N(0, scale^2) (the non-local block's zero-initialised w_z included)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)) * scale))
    return module


def _map(rng: np.random.Generator, c: int, min_side: int = 1) -> np.ndarray:
    n, h, w = int(rng.integers(1, 4)), int(rng.integers(min_side, 7)), int(rng.integers(min_side, 7))
    return rng.standard_normal((n, c, h, w)) * rng.choice([0.5, 1.0, 3.0])


def _check(layer: glass.Module, ref: torch.nn.Module, x: np.ndarray, what) -> dict[str, float]:
    errors = compare_with_torch(layer, ref, x)
    assert max(errors.values()) <= F64, (what, x.shape, errors)
    return errors


@pytest.mark.parametrize("seed", SEEDS)
def test_squeeze_excite_matches_torch(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(1, 17))
    s = int(rng.integers(1, c + 1))
    _check(glass.SqueezeExcite(c, s), _randomize(layers.SqueezeExcite(c, s), rng), _map(rng, c), (c, s))


@pytest.mark.parametrize("seed", SEEDS)
def test_channel_attention_matches_torch(seed):
    rng = np.random.default_rng(seed)
    c, r = int(rng.integers(1, 17)), int(rng.integers(1, 9))
    _check(glass.ChannelAttention(c, r), _randomize(layers.ChannelAttention(c, r), rng), _map(rng, c), (c, r))


@pytest.mark.parametrize("seed", SEEDS)
def test_spatial_attention_matches_torch(seed):
    rng = np.random.default_rng(seed)
    c, k = int(rng.integers(1, 9)), int(rng.choice([1, 3, 5, 7]))
    _check(glass.SpatialAttention(k), _randomize(layers.SpatialAttention(k), rng), _map(rng, c), (c, k))


@pytest.mark.parametrize("seed", SEEDS)
def test_cbam_matches_torch(seed):
    rng = np.random.default_rng(seed)
    c, r, k = int(rng.integers(1, 17)), int(rng.integers(1, 9)), int(rng.choice([3, 5, 7]))
    errors = _check(glass.CBAM(c, r, k), _randomize(layers.CBAM(c, r, k), rng), _map(rng, c), (c, r, k))
    assert {"channel.fc1.weight", "channel.fc2.bias", "spatial.conv.weight"} <= set(errors)


@pytest.mark.parametrize("seed", SEEDS)
def test_non_local_block_matches_torch(seed):
    rng = np.random.default_rng(seed)
    c, ci, sub = int(rng.integers(1, 9)), int(rng.integers(1, 7)), bool(seed % 2)
    layer, ref = glass.NonLocalBlock(c, ci, sub), _randomize(layers.NonLocalBlock(c, ci, sub), rng)
    x = _map(rng, c, min_side=2 if sub else 1)
    errors = compare_with_torch(layer, ref, x)
    # phi's bias shifts each row of scores by a constant, which the softmax removes: its true gradient is 0,
    # and both engines give rounding noise there. Compared absolutely, against the size of phi's weight gradient.
    del errors["phi.bias"]
    assert max(errors.values()) <= F64, ((c, ci, sub), x.shape, errors)
    scale = np.abs(layer.phi.grads["weight"]).max()
    assert np.abs(layer.phi.grads["bias"]).max() <= 1e-12 * scale
    assert ref.phi.bias.grad.abs().max().item() <= 1e-12 * scale


@pytest.mark.parametrize("make, make_ref", [
    (lambda: glass.SqueezeExcite(6, 2), lambda: layers.SqueezeExcite(6, 2)),
    (lambda: glass.CBAM(6, 2), lambda: layers.CBAM(6, 2)),
    (lambda: glass.NonLocalBlock(6, sub_sample=True), lambda: layers.NonLocalBlock(6, sub_sample=True)),
], ids=["se", "cbam", "non_local"])
def test_float32_within_tolerance(make, make_ref):
    rng = np.random.default_rng(5)
    errors = compare_with_torch(make(), _randomize(make_ref(), rng), rng.standard_normal((2, 6, 6, 7)), np.float32)
    errors.pop("phi.bias", None)
    assert max(errors.values()) <= TOL[np.float32], errors


@pytest.mark.parametrize("layer, shape", [
    (glass.SqueezeExcite(4, 2), (2, 4, 3, 3)),
    (glass.ChannelAttention(4, 2), (2, 4, 3, 2)),
    (glass.SpatialAttention(3), (2, 3, 3, 4)),
    (glass.CBAM(4, 2, 3), (2, 4, 3, 3)),
    (glass.NonLocalBlock(3, 2), (2, 3, 2, 3)),
    (glass.NonLocalBlock(3, 2, sub_sample=True), (1, 3, 4, 4)),
], ids=["se", "channel", "spatial", "cbam", "non_local", "non_local_sub"])
def test_finite_differences(layer, shape):
    """Independent of torch: analytic gradients of L = sum(y * R) against central differences."""
    rng = np.random.default_rng(6)
    for _, p, _ in layer.named_parameters():
        p[...] = rng.standard_normal(p.shape) * 0.5
    errors = finite_difference_errors(layer, rng.standard_normal(shape))
    errors.pop("phi.bias", None)
    assert max(errors.values()) < 1e-7, errors


def test_non_local_starts_as_identity_and_shapes_hold():
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 3))
    assert np.array_equal(glass.NonLocalBlock(4).forward(x), x)          # zero_init: w_z = 0
    assert not np.array_equal(glass.NonLocalBlock(4, zero_init=False).forward(x), x)
    block = glass.NonLocalBlock(4, sub_sample=True)
    assert block.forward(x).shape == x.shape and block.inter_channels == 2


def test_from_torch_and_back():
    rng = np.random.default_rng(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        layers.SqueezeExcite(8, 3, act_layer=torch.nn.SiLU),
        layers.CBAM(8, reduction=4, kernel_size=5),
        layers.NonLocalBlock(8, 3, sub_sample=True),
        torch.nn.Sequential(layers.ChannelAttention(8, 2), layers.SpatialAttention(3)),
    ).double()
    _randomize(model, rng)
    ours = glass.from_torch(model)
    assert isinstance(ours[1].activation, glass.SiLU)                     # the torch block's own activation
    assert (ours[2].channel.reduction, ours[2].spatial.kernel_size) == (4, 5)
    assert (ours[3].inter_channels, ours[3].sub_sample) == (3, True)
    x = rng.standard_normal((2, 3, 6, 6))
    assert rel_err(ours.forward(x), model(torch.tensor(x)).detach().numpy()) < 1e-13
    back = glass.to_torch(ours, into=_randomize(
        torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), layers.SqueezeExcite(8, 3, act_layer=torch.nn.SiLU),
                            layers.CBAM(8, 4, 5), layers.NonLocalBlock(8, 3, True),
                            torch.nn.Sequential(layers.ChannelAttention(8, 2), layers.SpatialAttention(3))).double(),
        np.random.default_rng(9)))
    for (k, v), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_se_with_an_unsupported_gate_names_it():
    se = layers.SqueezeExcite(8, 2, gate_layer=torch.nn.Hardsigmoid)
    with pytest.raises(ValueError, match="Hardsigmoid at 'scale_activation'"):
        glass.check_convertible(se)


def test_bad_arguments_and_inputs_raise_one_line():
    for make in (glass.SpatialAttention, layers.SpatialAttention):
        with pytest.raises(ValueError, match="kernel_size must be odd"):
            make(4)
    for make in (glass.ChannelAttention, layers.ChannelAttention):
        with pytest.raises(ValueError, match="reduction must be an integer >= 1"):
            make(8, 0)
    for make in (glass.NonLocalBlock, layers.NonLocalBlock):
        with pytest.raises(ValueError, match="inter_channels must be an integer >= 1"):
            make(8, 0)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 8, H, W\)"):
        glass.CBAM(8).forward(np.zeros((1, 4, 3, 3)))
    for block, to_input in ((glass.NonLocalBlock(4, sub_sample=True), np.asarray),
                            (layers.NonLocalBlock(4, sub_sample=True), torch.as_tensor)):
        with pytest.raises(ValueError, match="sub_sample needs maps of at least 2x2"):
            block(to_input(np.zeros((1, 4, 1, 5))))


def test_a_small_network_of_the_new_blocks_trains():
    """The blocks compose with the glass training step: a float32 net with every new layer fits 16 images."""
    from convolab.glass.train import train_step

    glass.manual_seed(0)
    model = glass.Sequential(glass.Conv2d(1, 8, 3, padding=1), glass.GroupNorm(2, 8), glass.Swish(1.0, trainable=True),
                             glass.SqueezeExcite(8, 4), glass.CBAM(8, 2, 3), glass.NonLocalBlock(8, zero_init=False),
                             glass.LocalResponseNorm(3), glass.GELU(), glass.LayerNorm((8, 6, 6)),
                             glass.AdaptiveAvgPool2d(1), glass.Flatten(), glass.Linear(8, 3))
    crit, opt = glass.CrossEntropyLoss(), glass.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 1, 6, 6)).astype(np.float32), np.arange(16) % 3
    losses = [train_step(model, crit, opt, x, y).loss for _ in range(80)]
    assert losses[-1] < losses[0] / 4, losses[::10]
