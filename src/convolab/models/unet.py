"""U-Net: Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation",
MICCAI 2015.

A contracting path (two 3x3 convolutions + ReLU, then a 2x2 max-pool that halves the map and a
doubling of the channels, four times) and a symmetric expanding path (a 2x2 "up-convolution" that
doubles the map and halves the channels, concatenation with the contracting path's map of the same
level, two 3x3 convolutions + ReLU), then a 1x1 convolution to the class scores (the paper's Figure 1).

One change from the paper: its convolutions are unpadded ("valid"), so a 572x572 tile gives 388x388
scores and each skip map is cropped to the expanding path's size. Here every 3x3 convolution is
padded (padding 1), so the output has the input's size, no cropping of the skips is needed, and any
image size works: where a side is odd, a max-pool rounds down and the up-convolution's map comes
back one pixel short; it is padded to the skip's size before the concatenation. Padding changes no
parameter count: 31,030,658 at ``in_chans=1, num_classes=2, base_channels=64`` with or without it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from convolab.layers import ConvNormAct, checkpoint_call
from convolab.models._base import ConvSegmenter, check_drop_rate, check_feature_size
from convolab.models._registry import register_model

__all__ = ["DoubleConv", "Down", "Up", "UNet", "unet"]


class DoubleConv(nn.Sequential):
    """Two padded 3x3 convolutions, each followed by [BatchNorm and] ReLU: (N, C_in, H, W) -> (N, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = False):
        norm = nn.BatchNorm2d if batch_norm else None  # without a norm layer the convolutions keep their bias
        super().__init__(ConvNormAct(in_channels, out_channels, 3, norm_layer=norm),
                         ConvNormAct(out_channels, out_channels, 3, norm_layer=norm))


class Down(nn.Sequential):
    """One step down the contracting path: 2x2 max-pool (stride 2), then :class:`DoubleConv`.

    (N, C_in, H, W) -> (N, C_out, floor(H/2), floor(W/2)).
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = False):
        super().__init__(nn.MaxPool2d(kernel_size=2, stride=2), DoubleConv(in_channels, out_channels, batch_norm))


class Up(nn.Module):
    """One step up the expanding path: 2x2 up-convolution (halving the channels), concatenation, DoubleConv.

    ``x`` (N, C_in, h, w) -> up-convolution (N, C_in/2, 2h, 2w) -> padded (or cropped) to the skip's
    (H, W) -> concatenated after the skip (N, C_in, H, W) -> :class:`DoubleConv` -> (N, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = False):
        super().__init__()
        self.upconv = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.upconv(x)                                       # (N, C_in/2, 2h, 2w)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dh or dw:  # an odd side upstream: 2 * floor(H/2) = H - 1. (A negative pad would crop.)
            x = F.pad(x, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(ConvSegmenter):
    """U-Net with padded convolutions: per-pixel logits (N, num_classes, H, W) at the input's resolution.

    Modules: ``inc`` (DoubleConv to ``base_channels``), ``down.0`` ... ``down.{depth-1}`` (:class:`Down`,
    channels doubling to ``base_channels * 2**depth``), ``up.0`` ... (:class:`Up`, back to
    ``base_channels``), ``classifier`` (``nn.Sequential`` holding the final 1x1 convolution).

    Args:
        base_channels: channels of the first level (the paper: 64); level i has ``base_channels * 2**i``.
        depth: number of 2x2 max-pools (the paper: 4). The smallest input side that works is ``2**depth``.
        batch_norm: BatchNorm between each 3x3 convolution and its ReLU (later than the paper, common
            practice since; the convolutions then have no bias).
        drop_rate: dropout on the map at the bottom of the U, before the expanding path (the paper:
            "drop-out layers at the end of the contracting path"; default 0).

    ``forward_features`` returns the expanding path's last map (N, base_channels, H, W); ``forward_head``
    applies the 1x1 convolution. ``feature_info`` lists the contracting path (``inc``, reduction 1,
    then each ``down.i``, reduction ``2**(i+1)``). ``set_grad_checkpointing`` recomputes each level's
    block in the backward pass.
    """

    def __init__(self, num_classes: int = 2, in_chans: int = 1, input_size: tuple[int, int] = (572, 572), *,
                 base_channels: int = 64, depth: int = 4, batch_norm: bool = False, drop_rate: float = 0.0):
        super().__init__()
        if base_channels < 1:
            raise ValueError(f"base_channels must be >= 1; got {base_channels}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1; got {depth}")
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        check_feature_size("unet", self.input_size,
                           [(f"down.{i} (2x2 max-pool)", dict(kernel_size=2, stride=2)) for i in range(depth)])
        widths = [base_channels * 2 ** i for i in range(depth + 1)]  # 64, 128, 256, 512, 1024 in the paper

        self.inc = DoubleConv(in_chans, widths[0], batch_norm)                      # (N, 64, H, W)
        self.down = nn.ModuleList(Down(widths[i], widths[i + 1], batch_norm) for i in range(depth))
        self.drop = nn.Dropout(check_drop_rate(drop_rate))
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i], batch_norm) for i in reversed(range(depth)))
        self.classifier = nn.Sequential(nn.Conv2d(widths[0], num_classes, kernel_size=1))  # (N, classes, H, W)
        self.feature_info = [dict(module="inc", num_chs=widths[0], reduction=1)] + [
            dict(module=f"down.{i}", num_chs=widths[i + 1], reduction=2 ** (i + 1)) for i in range(depth)]
        self.grad_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        # The paper's rule: Gaussian weights with std sqrt(2 / N), N the inputs of one unit (k * k * C_in
        # for a convolution; C_in for the 2x2 stride-2 up-convolution, whose windows do not overlap).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.in_channels * (math.prod(m.kernel_size) if isinstance(m, nn.Conv2d) else 1)
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each level's block (``inc``, ``down.i``, ``up.i``) in the backward pass (training only)."""
        self.grad_checkpointing = bool(enable)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> the expanding path's last map (N, base_channels, H, W)."""
        def run(block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
            return checkpoint_call(block, *args) if self.grad_checkpointing and self.training else block(*args)

        skips = [run(self.inc, x)]                              # (N, 64, H, W)
        for down in self.down:
            skips.append(run(down, skips[-1]))                   # (N, 2C, H/2, W/2) per level
        x = self.drop(skips.pop())                               # (N, 1024, H/16, W/16): the bottom of the U
        for up in self.up:
            x = run(up, x, skips.pop())                          # (N, C/2, 2h, 2w) per level
        return x


@register_model(year=2015, input_kind="segmentation", default_cfg=dict(num_classes=2, in_chans=1,
                                                                       input_size=(572, 572)))
def unet(*, num_classes: int = 2, in_chans: int = 1, input_size: tuple[int, int] | None = None, **kwargs) -> UNet:
    """U-Net, padded 3x3 convolutions so the logits have the input's size (Ronneberger et al., MICCAI 2015).

    31,030,658 parameters at ``in_chans=1, num_classes=2, base_channels=64`` (the paper's Figure 1,
    counted layer by layer; padding adds none). Options: ``base_channels``, ``depth``, ``batch_norm``,
    ``drop_rate``. Inputs from 16x16 up (4 max-pools), odd sizes included.
    """
    return UNet(num_classes, in_chans, input_size or (572, 572), **kwargs)
