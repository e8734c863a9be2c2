"""ShuffleNet v1 and v2: cheap pointwise convolutions made to mix information by shuffling channels.

- v1: Zhang, Zhou, Lin & Sun, "ShuffleNet: An Extremely Efficient Convolutional Neural Network for
  Mobile Devices", CVPR 2018. The 1x1 convolutions are *grouped* (g groups); a channel shuffle after
  the first one lets the next group convolution see every group (Fig. 1, Fig. 2, Table 1).
- v2: Ma, Zhang, Zheng & Sun, "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
  Design", ECCV 2018. No group convolutions; each unit splits its channels in two, transforms one
  half, concatenates and shuffles with g = 2 (Fig. 3c/d, Table 5).

Names follow torchvision's ``shufflenet_v2_*`` (``conv1``, ``maxpool``, ``stage2``-``stage4``,
``conv5``, ``fc``; units with ``branch1``/``branch2``) so its state dicts load unchanged; v1 uses
the same top-level names (it has no ``conv5``).

Small inputs: the same rule as the MobileNets (:func:`convolab.models._base.adapt_strides`).
The five stride-2 layers, in order ``conv1``, ``maxpool``, ``stage2``, ``stage3``, ``stage4``, become
stride 1, earliest first, while the last map, ``ceil(min(H, W) / total_stride)``, would be smaller
than 4x4: native above 96; 49-96: stem stride 1 (total 16); 25-48 (CIFAR's 32, Fashion-MNIST's 28):
also no max-pool (``maxpool`` is ``nn.Identity``; total 8, last map 4x4); 13-24: stage2 keeps its
size too (total 4); 7-12 (8x8 digits): only stage4 downsamples (total 2, last map 4x4); 6 and
below: stride 1. A stage whose first unit loses its stride keeps that unit's two-branch
(concatenating) form, which is what widens the channels.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from convolab.layers import ConvNormAct, checkpoint_seq
from convolab.models._base import adapt_strides, check_drop_rate, feature_info_from_strides
from convolab.models._registry import register_model

__all__ = ["channel_shuffle", "ShuffleV1Unit", "ShuffleV2Unit", "ShuffleNetV1", "ShuffleNetV2", "shufflenet_v1",
           "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]

_IMAGENET_CFG = dict(num_classes=1000, in_chans=3, input_size=(224, 224))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups (ShuffleNet v1, Sec. 3.1, Fig. 1c).

    Channel ``i * n + j`` (group i, j-th channel of the group, n = C / groups) moves to
    ``j * groups + i``: after the shuffle, every run of ``groups`` consecutive channels holds one
    channel from each group, so the next group convolution sees all of them.
    """
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w)  # (N, g, C/g, H, W)
    x = x.transpose(1, 2).contiguous()        # (N, C/g, g, H, W)
    return x.view(n, c, h, w)                 # (N, C, H, W), groups interleaved


class ShuffleV1Unit(nn.Module):
    """ShuffleNet v1 unit (Fig. 2b/c): 1x1 GConv-BN-ReLU, shuffle, 3x3 DWConv-BN, 1x1 GConv-BN, merge, ReLU.

    The bottleneck is a quarter of the stage's output width. The basic unit adds the identity;
    the first unit of a stage concatenates a 3x3 average-pooled shortcut (stride 2; the identity
    when the stride was removed for a small input) with a branch of ``out - in`` channels, which
    widens the map. No ReLU after the depthwise convolution (Sec. 3.2). ``group_first`` = False
    makes the first 1x1 dense (the paper: stage 2's first unit, whose 24 input channels are few);
    the shuffle is skipped then, as a permutation after a dense convolution only relabels channels.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int, stride: int, group_first: bool = True):
        super().__init__()
        self.concat = stride > 1 or in_channels != out_channels
        branch = out_channels - in_channels if self.concat else out_channels
        mid = out_channels // 4
        self.groups = groups if group_first else 1
        self.conv1 = ConvNormAct(in_channels, mid, 1, groups=self.groups)
        self.dwconv = ConvNormAct(mid, mid, 3, stride, groups=mid, act_layer=None)
        self.conv2 = ConvNormAct(mid, branch, 1, groups=groups, act_layer=None)
        self.shortcut = nn.AvgPool2d(3, stride, padding=1) if stride > 1 else nn.Identity()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)   # (N, C_in, H/s, W/s)
        x = self.conv1(x)             # (N, C_out/4, H, W)
        if self.groups > 1:
            x = channel_shuffle(x, self.groups)
        x = self.conv2(self.dwconv(x))  # (N, C_out - C_in or C_out, H/s, W/s)
        x = torch.cat((shortcut, x), 1) if self.concat else x + shortcut
        return F.relu(x)              # (N, C_out, H/s, W/s)


class ShuffleV2Unit(nn.Module):
    """ShuffleNet v2 unit: split-transform-concat-shuffle (Fig. 3c), or its downsampling form (Fig. 3d).

    Basic unit (stride 1, same width): half the channels pass untouched, ``branch2`` (1x1-BN-ReLU,
    3x3 depthwise-BN, 1x1-BN-ReLU) transforms the other half. Downsampling unit: no split;
    ``branch1`` (3x3 depthwise-BN, 1x1-BN-ReLU) and ``branch2`` both see the whole input and each
    give half the output. The concatenation is shuffled with 2 groups. ``branch1``/``branch2`` are flat
    Sequentials with torchvision's indices (ConvNormActs unpacked into their Conv/BN/ReLU).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"out_channels must be even; got {out_channels}")
        branch = out_channels // 2
        self.split = stride == 1 and in_channels == out_channels
        self.branch1: nn.Sequential | None = None
        if not self.split:
            self.branch1 = nn.Sequential(
                *ConvNormAct(in_channels, in_channels, 3, stride, groups=in_channels, act_layer=None),
                *ConvNormAct(in_channels, branch, 1),
            )
        self.branch2 = nn.Sequential(
            *ConvNormAct(branch if self.split else in_channels, branch, 1),
            *ConvNormAct(branch, branch, 3, stride, groups=branch, act_layer=None),
            *ConvNormAct(branch, branch, 1),
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            shortcut, x = x.chunk(2, dim=1)                         # two (N, C/2, H, W) halves
            x = torch.cat((shortcut, self.branch2(x)), 1)           # (N, C, H, W)
        else:
            x = torch.cat((self.branch1(x), self.branch2(x)), 1)    # (N, C_out, H/s, W/s)
        return channel_shuffle(x, 2)


class _ShuffleNet(nn.Module):
    """Shared surface: ``conv1`` -> ``maxpool`` -> ``stage2``-``stage4`` [-> ``conv5``] -> mean -> ``fc``."""

    conv1: nn.Module
    maxpool: nn.Module
    stage2: nn.Sequential
    stage3: nn.Sequential
    stage4: nn.Sequential
    conv5: nn.Module | None
    fc: nn.Module

    def _build(self, unit, stage_channels, repeats, stem_channels, last_channels, num_classes, in_chans,
               input_size, drop_rate) -> None:
        """Stem, stages and classifier; ``unit(in, out, stride, index_in_network)`` builds one unit."""
        check_drop_rate(drop_rate)
        size = tuple(input_size) if input_size is not None else (224, 224)
        self.num_classes, self.in_chans, self.input_size, self.drop_rate = num_classes, in_chans, size, drop_rate
        s_conv1, s_pool, *s_stages = adapt_strides([2, 2, 2, 2, 2], size)
        self.conv1 = ConvNormAct(in_chans, stem_channels, 3, s_conv1)        # (N, 24, H/2, W/2) natively
        # Dropped (not made stride 1) for small inputs: a stride-1 3x3 max-pool is not the identity.
        self.maxpool = nn.MaxPool2d(3, 2, padding=1) if s_pool > 1 else nn.Identity()  # (N, 24, H/4, W/4)
        layers = [("conv1", stem_channels, s_conv1)] + ([("maxpool", stem_channels, 2)] if s_pool > 1 else [])
        chs, index = stem_channels, 0
        for i, (out, n, stride) in enumerate(zip(stage_channels, repeats, s_stages)):
            units = []
            for j in range(n):
                units.append(unit(chs, out, stride if j == 0 else 1, index))
                chs, index = out, index + 1
            setattr(self, f"stage{i + 2}", nn.Sequential(*units))            # (N, out, H/8, ...) natively
            layers.append((f"stage{i + 2}", out, stride))
        self.conv5 = ConvNormAct(chs, last_channels, 1) if last_channels else None  # (N, 1024, H/32, W/32)
        if last_channels:
            chs = last_channels
            layers.append(("conv5", chs, 1))
        self.fc = nn.Linear(chs, num_classes)
        self.num_features = chs
        self.feature_info = feature_info_from_strides(layers)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each unit of the stages in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        if self.grad_checkpointing and self.training:
            x = checkpoint_seq(itertools.chain(self.stage2, self.stage3, self.stage4), x)
        else:
            x = self.stage4(self.stage3(self.stage2(x)))
        return self.conv5(x) if self.conv5 is not None else x  # (N, num_features, H/32, W/32) natively

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))  # global average pool: (N, num_features)
        x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final layer that produces the logits."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``fc`` with a freshly initialised one of ``num_classes`` outputs (0: identity)."""
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes


# ShuffleNet v1, Table 1: output channels of stages 2-4 at 1x for each number of groups g, chosen so
# that every g costs about 140 MFLOPs.
_V1_STAGE_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088),
                      8: (384, 768, 1536)}


class ShuffleNetV1(_ShuffleNet):
    """ShuffleNet v1 at 1x: conv 3x3 24 /2, max-pool /2, stages of 4, 8, 4 units, global pool, (dropout), FC.

    Stage widths from Table 1 for ``groups`` g (240/480/960 for g = 3). No ``conv5``: the last map is
    stage 4's. The FC has a bias (the official code's has none: 1,000 parameters fewer).
    At g = 3, 1000 classes: 1,865,728 parameters and 137.5 M multiply-adds (convolutions and FC) at
    224x224; the paper's Table 1 gives 137 MFLOPs for g = 3 (143, 140, 137, 133, 137 for g = 1, 2, 3,
    4, 8; here 143.1, 140.8, 137.5, 134.3, 138.4); the official megvii-model/ShuffleNet-Series README
    gives 1.9 M parameters and 138 M FLOPs.

    Small inputs: stride-2 layers are removed earliest first until the last map is at least 4x4
    (module docstring): native above 96, total stride 8 at 28x28 and 32x32 (stem stride 1, no
    max-pool), 2 at 8x8 (only stage4 downsamples).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                 groups: int = 3, drop_rate: float = 0.0):
        super().__init__()
        if groups not in _V1_STAGE_CHANNELS:
            raise ValueError(f"groups must be one of {sorted(_V1_STAGE_CHANNELS)} (the paper's Table 1); got {groups}")
        self.groups = groups
        self._build(lambda cin, cout, stride, index: ShuffleV1Unit(cin, cout, groups, stride, group_first=index > 0),
                    _V1_STAGE_CHANNELS[groups], (4, 8, 4), 24, None, num_classes, in_chans, input_size, drop_rate)


class ShuffleNetV2(_ShuffleNet):
    """ShuffleNet v2: conv 3x3 24 /2, max-pool /2, stages of 4, 8, 4 units, conv5 1x1, global pool, FC.

    Widths from Table 5 (``stage_channels`` for stages 2-4 and conv5's ``last_channels``). Layout
    and names are torchvision's ``shufflenet_v2_x*``.

    Small inputs: stride-2 layers are removed earliest first until the last map is at least 4x4
    (module docstring): native above 96, total stride 8 at 28x28 and 32x32 (stem stride 1, no
    max-pool), 2 at 8x8 (only stage4 downsamples).
    """

    def __init__(self, stage_channels: tuple[int, int, int], last_channels: int, num_classes: int = 1000,
                 in_chans: int = 3, input_size: tuple[int, int] | None = None, drop_rate: float = 0.0):
        super().__init__()
        self._build(lambda cin, cout, stride, index: ShuffleV2Unit(cin, cout, stride), stage_channels, (4, 8, 4), 24,
                    last_channels, num_classes, in_chans, input_size, drop_rate)


# -- builders -------------------------------------------------------------------------------------
@register_model(year=2018, default_cfg=_IMAGENET_CFG)
def shufflenet_v1(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                  **kwargs) -> ShuffleNetV1:
    """ShuffleNet v1 1x, g = 3: pointwise group convolutions and channel shuffle (1.9 M parameters).

    Zhang et al., "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile
    Devices", CVPR 2018. Reference: 137 MFLOPs (the paper's Table 1, g = 3); 1.9 M parameters
    (megvii-model/ShuffleNet-Series README, ShuffleNetV1 1.0x group=3). This implementation:
    1,865,728 parameters, 137.5 M multiply-adds at 224x224. Options: ``groups`` (1, 2, 3, 4, 8),
    ``drop_rate`` (default 0).
    """
    return ShuffleNetV1(num_classes, in_chans, input_size, **kwargs)


@register_model(year=2018, default_cfg=_IMAGENET_CFG)
def shufflenet_v2_x0_5(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                       **kwargs) -> ShuffleNetV2:
    """ShuffleNet v2 0.5x: channel split, concat and shuffle (1.4 M parameters).

    Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design", ECCV
    2018, Table 5 (1.4 M); torchvision's ``shufflenet_v2_x0_5``: 1,366,792, equal here.
    """
    return ShuffleNetV2((48, 96, 192), 1024, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2018, default_cfg=_IMAGENET_CFG)
def shufflenet_v2_x1_0(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                       **kwargs) -> ShuffleNetV2:
    """ShuffleNet v2 1x: channel split, concat and shuffle (2.3 M parameters).

    Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design", ECCV
    2018, Table 5 (2.3 M); torchvision's ``shufflenet_v2_x1_0``: 2,278,604, equal here.
    """
    return ShuffleNetV2((116, 232, 464), 1024, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2018, default_cfg=_IMAGENET_CFG)
def shufflenet_v2_x1_5(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                       **kwargs) -> ShuffleNetV2:
    """ShuffleNet v2 1.5x: channel split, concat and shuffle (3.5 M parameters).

    Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design", ECCV
    2018, Table 5 (3.5 M); torchvision's ``shufflenet_v2_x1_5``: 3,503,624, equal here.
    """
    return ShuffleNetV2((176, 352, 704), 1024, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2018, default_cfg=_IMAGENET_CFG)
def shufflenet_v2_x2_0(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                       **kwargs) -> ShuffleNetV2:
    """ShuffleNet v2 2x: channel split, concat and shuffle, conv5 of 2048 (7.4 M parameters).

    Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design", ECCV
    2018, Table 5 (7.4 M); torchvision's ``shufflenet_v2_x2_0``: 7,393,996, equal here.
    """
    return ShuffleNetV2((244, 488, 976), 2048, num_classes, in_chans, input_size, **kwargs)
