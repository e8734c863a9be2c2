"""Stochastic depth: Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropPath", "drop_path"]


def drop_path(x: torch.Tensor, drop_prob: float, training: bool, scale_by_keep: bool = True) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability ``drop_prob`` (training only).

    Kept samples are divided by the keep probability so the expected value is unchanged
    (torchvision's ``StochasticDepth(mode="row")``).
    """
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)  # (N, 1, 1, 1)
    if scale_by_keep and keep > 0:
        mask.div_(keep)
    return x * mask


class DropPath(nn.Module):
    """Module form of :func:`drop_path`."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1); got {drop_prob}")
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
