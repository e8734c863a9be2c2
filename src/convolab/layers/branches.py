"""Blocks with parallel paths, as the network-spec grammar (``convolab.models.spec``) writes them:
``res(...)`` (a residual sum), ``cat(... | ...)`` (branches concatenated along the channels, Inception's
pattern) and ``dense(...)`` (the input concatenated with what its body makes of it, DenseNet's).

Each path is a ``nn.Sequential`` of fresh layers (a layer is never used twice in one pass, so the NumPy
engine's twins in ``convolab.glass.branches`` can remember their inputs for the backward pass).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Residual", "Concat", "DenseConcat"]


class Residual(nn.Module):
    """``y = body(x) + shortcut(x)``: He et al.'s residual connection. ``shortcut`` is the identity when the body
    keeps the shape, else a projection (a 1x1 convolution with the body's stride, as ResNet's option B)."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Module | None = None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class Concat(nn.Module):
    """``y = [b_1(x), b_2(x), ...]`` along the channels (dim 1): parallel branches of one input, Inception's
    module. Every branch must give the same spatial size."""

    def __init__(self, branches: list[nn.Sequential]):
        super().__init__()
        if len(branches) < 2:
            raise ValueError(f"a concatenation needs at least 2 branches; got {len(branches)}")
        for i, branch in enumerate(branches, 1):
            self.add_module(f"branch{i}", branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.children()], dim=1)


class DenseConcat(nn.Module):
    """``y = [x, body(x)]`` along the channels: a DenseNet layer's connection (each layer sees every earlier
    layer's maps). The body must keep the spatial size."""

    def __init__(self, body: nn.Sequential):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)
