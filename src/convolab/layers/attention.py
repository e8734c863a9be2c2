"""Attention blocks for CNNs: CBAM (channel then spatial attention) and the non-local self-attention block.

* CBAM: Woo, Park, Lee & Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018.
* Non-local: Wang, Girshick, Gupta & He, "Non-local Neural Networks", CVPR 2018 (embedded Gaussian).

Squeeze-and-excitation lives in ``squeeze_excite.py``. Every block maps (N, C, H, W) to the same shape,
so it can follow any convolution. The NumPy twins, with their backward passes, are in
``convolab.glass.attention``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ChannelAttention", "SpatialAttention", "CBAM", "NonLocalBlock"]


def _check_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{owner}: {name} must be an integer >= 1; got {value!r}")


class ChannelAttention(nn.Module):
    """CBAM's channel attention (the paper's Eq. 2): ``y = x * Mc(x)``, one weight per channel.

    ``Mc(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))`` with the pools global over (H, W) and
    one MLP shared by both descriptors: ``MLP(d) = fc2(relu(fc1(d)))``, C -> C / reduction -> C (1x1
    convolutions with bias, as in the authors' code; at least one hidden unit). Unlike
    squeeze-excitation, the max-pooled descriptor adds "the most distinctive feature" of each map.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        _check_positive("ChannelAttention", channels=channels, reduction=reduction)
        self.channels, self.reduction = channels, reduction
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def mlp(self, d: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(d)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean(dim=(2, 3), keepdim=True)                    # (N, C, 1, 1)
        mx = x.amax(dim=(2, 3), keepdim=True)                     # (N, C, 1, 1)
        return x * torch.sigmoid(self.mlp(avg) + self.mlp(mx))


class SpatialAttention(nn.Module):
    """CBAM's spatial attention (the paper's Eq. 3): ``y = x * Ms(x)``, one weight per position.

    ``Ms(F) = sigmoid(conv_kxk([AvgPool_c(F); MaxPool_c(F)]))``: mean and max over the channels give a
    (N, 2, H, W) map, a k x k convolution (``kernel_size`` odd, "same" padding, no bias as in the
    authors' code; 7 in the paper) turns it into one (N, 1, H, W) map.
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        _check_positive("SpatialAttention", kernel_size=kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"SpatialAttention: kernel_size must be odd (same-size output); got {kernel_size}")
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (N, 2, H, W)
        return x * torch.sigmoid(self.conv(desc))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention (the paper's Eq. 1).

    ``F' = Mc(F) * F``, ``F'' = Ms(F') * F'``. The paper found this sequential, channel-first order
    better than the parallel one or spatial-first.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class NonLocalBlock(nn.Module):
    """Non-local block, embedded Gaussian version (the paper's Eqs. 1, 3 and 6), for (N, C, H, W) maps.

    With ``theta``, ``phi``, ``g`` 1x1 convolutions C -> C_i (``inter_channels``, C // 2 by default)
    and positions i, j running over the H*W pixels::

        f(x_i, x_j) = exp(theta(x_i)^T phi(x_j))
        y_i         = sum_j f(x_i, x_j) g(x_j) / sum_j f(x_i, x_j)   (a softmax over j)
        z_i         = W_z y_i + x_i                                   (1x1 conv C_i -> C, then the residual)

    Every position attends to every other: cost O((H W)^2 C_i). ``sub_sample=True`` max-pools the
    ``phi`` and ``g`` maps 2x2 (the paper's trick: a quarter of the pairs, same output size).
    ``zero_init=True`` zeroes ``w_z`` so the block starts as the identity (the paper zero-initialises
    the BatchNorm after W_z for the same reason: it can be inserted into a pretrained network).
    ``phi``'s bias never receives a gradient: it adds ``theta(x_i)^T b`` to every score of row i,
    and the softmax over j ignores a shift shared by the whole row.
    """

    def __init__(self, in_channels: int, inter_channels: int | None = None, sub_sample: bool = False,
                 zero_init: bool = True):
        super().__init__()
        if inter_channels is None:
            inter_channels = max(1, in_channels // 2)
        _check_positive("NonLocalBlock", in_channels=in_channels, inter_channels=inter_channels)
        self.in_channels, self.inter_channels, self.sub_sample = in_channels, inter_channels, bool(sub_sample)
        self.theta = nn.Conv2d(in_channels, inter_channels, 1)
        self.phi = nn.Conv2d(in_channels, inter_channels, 1)
        self.g = nn.Conv2d(in_channels, inter_channels, 1)
        self.pool = nn.MaxPool2d(2) if self.sub_sample else None
        self.w_z = nn.Conv2d(inter_channels, in_channels, 1)
        if zero_init:
            nn.init.zeros_(self.w_z.weight)
            nn.init.zeros_(self.w_z.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ci = self.inter_channels
        if self.pool is not None and (h < 2 or w < 2):
            raise ValueError(f"NonLocalBlock: sub_sample needs maps of at least 2x2, got {h}x{w}")
        phi, g = self.phi(x), self.g(x)                           # (N, C_i, H, W)
        if self.pool is not None:
            phi, g = self.pool(phi), self.pool(g)                 # (N, C_i, H/2, W/2)
        theta = self.theta(x).reshape(n, ci, h * w).transpose(1, 2)  # (N, HW, C_i)
        phi = phi.reshape(n, ci, -1)                               # (N, C_i, M)
        g = g.reshape(n, ci, -1).transpose(1, 2)                   # (N, M, C_i)
        attn = torch.softmax(theta @ phi, dim=-1)                  # (N, HW, M), rows sum to 1
        y = (attn @ g).transpose(1, 2).reshape(n, ci, h, w)        # (N, C_i, H, W)
        return self.w_z(y) + x

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, inter_channels={self.inter_channels}, sub_sample={self.sub_sample}"
