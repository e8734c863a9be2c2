"""Squeeze-and-excitation: Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["SqueezeExcite"]


class SqueezeExcite(nn.Module):
    """Channel attention: ``x * gate(fc2(act(fc1(avgpool(x)))))``.

    (N, C, H, W) -> global average pool (N, C, 1, 1) -> 1x1 conv to ``squeeze_channels`` -> act ->
    1x1 conv back to C -> gate (sigmoid) -> rescale each channel of x. Submodule names match
    torchvision's ``SqueezeExcitation`` (avgpool, fc1, fc2, activation, scale_activation).
    """

    def __init__(self, input_channels: int, squeeze_channels: int, act_layer: Callable[..., nn.Module] = nn.ReLU,
                 gate_layer: Callable[..., nn.Module] = nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = act_layer()
        self.scale_activation = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.avgpool(x)                                   # (N, C, 1, 1)
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(scale))))
        return x * scale
