"""Normalisation layers built from the number of channels alone.

torch has the normalisations the tutorials teach -- ``nn.BatchNorm2d``, ``nn.LayerNorm``,
``nn.GroupNorm``, ``nn.LocalResponseNorm`` (which divides ``alpha`` by ``size``, as Caffe and the
AlexNet paper's code do) -- and convolab uses them directly. What it lacks is a LayerNorm over a
whole image that can be built before the map's height and width are known: ``nn.LayerNorm((C, H, W))``
needs them, and learns one gain and bias per *element*.
"""

from __future__ import annotations

from torch import nn

__all__ = ["GroupNorm1"]


class GroupNorm1(nn.GroupNorm):
    """LayerNorm over (C, H, W) of each sample with a per-channel gain and bias: ``GroupNorm(1, C)``.

    ``y = (x - mean_{c,h,w} x) / sqrt(var_{c,h,w} x + eps) * gamma[c] + beta[c]`` (biased variance,
    statistics per sample, the same in training and evaluation). timm's name for it (PoolFormer).
    It equals ``nn.LayerNorm((C, H, W))`` when that layer's gain and bias are constant over (H, W).
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True):
        if num_channels < 1:
            raise ValueError(f"GroupNorm1: num_channels must be >= 1; got {num_channels}")
        super().__init__(1, num_channels, eps=eps, affine=affine)
