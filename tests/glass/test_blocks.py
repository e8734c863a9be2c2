"""Residual and dense blocks against convolab's torch blocks, and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convolab import glass
from convolab.models import densenet, resnet

from ._helpers import TOL, compare_with_torch, finite_difference_errors


def _torch_basic_block(kind: str) -> torch.nn.Module:
    if kind == "identity":
        return resnet.BasicBlock(4, 4)
    if kind == "option-a":
        return resnet.BasicBlock(4, 8, stride=2, downsample=resnet.ZeroPadShortcut(4, 8, 2))
    down = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1, stride=2, bias=False), torch.nn.BatchNorm2d(8))
    return resnet.BasicBlock(4, 8, stride=2, downsample=down)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", ["identity", "option-a", "projection"])
def test_basic_block_matches_torch(kind, training, dtype):
    torch.manual_seed(0)
    ref = _torch_basic_block(kind).train(training)
    block = glass.from_torch(ref)
    assert isinstance(block, glass.BasicBlock)
    x = np.random.default_rng(0).standard_normal((3, 4, 6, 5))
    errors = compare_with_torch(block, ref, x, dtype)
    assert max(errors.values()) <= TOL[dtype], errors


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [True, False])
def test_dense_block_matches_torch(training, dtype):
    torch.manual_seed(1)
    ref = densenet.DenseBlock(3, 5, growth_rate=4, bn_size=2).train(training)
    block = glass.from_torch(ref)
    assert isinstance(block, glass.DenseBlock)
    x = np.random.default_rng(1).standard_normal((2, 5, 4, 4))
    errors = compare_with_torch(block, ref, x, dtype)
    assert block.forward(x.astype(dtype)).shape == (2, 5 + 3 * 4, 4, 4)
    assert max(errors.values()) <= TOL[dtype], errors


@pytest.mark.parametrize("block", [
    lambda: glass.BasicBlock(2, 2),
    lambda: glass.BasicBlock(2, 3, stride=2, downsample=glass.ZeroPadShortcut(2, 3, 2)),
    lambda: glass.DenseBlock(2, 2, growth_rate=2, bn_size=1),
], ids=["basic", "basic-option-a", "dense"])
def test_finite_differences(block):
    glass.manual_seed(2)
    errors = finite_difference_errors(block(), np.random.default_rng(3).standard_normal((2, 2, 3, 3)))
    assert max(errors.values()) < 1e-6, errors


def test_zero_pad_shortcut():
    x = np.random.default_rng(4).standard_normal((1, 2, 4, 4))
    layer = glass.ZeroPadShortcut(2, 5, stride=2)
    out = layer.forward(x)
    assert out.shape == (1, 5, 2, 2) and not out[:, 2:].any()
    np.testing.assert_array_equal(out[:, :2], x[:, :, ::2, ::2])
    errors = finite_difference_errors(layer, x)
    assert max(errors.values()) < 1e-6


def test_mismatched_shortcut_is_reported():
    block = glass.BasicBlock(2, 4, stride=2)  # no downsample although the shape changes
    with pytest.raises(ValueError, match=r"BasicBlock: the branch gives \(1, 4, 2, 2\) but the shortcut "
                                         r"\(1, 2, 4, 4\)"):
        block.forward(np.zeros((1, 2, 4, 4)))
