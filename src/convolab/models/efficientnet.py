"""EfficientNet B0-B7: Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019.

B0 is a stack of MBConv blocks (MobileNetV2's inverted residual with squeeze-and-excitation and
SiLU/swish) found by architecture search; B1-B7 scale it by compound scaling: the channels by a
width multiplier (rounded to multiples of 8), the number of blocks per stage by a depth multiplier
(rounded up), and the input resolution. Residual branches use stochastic depth whose drop
probability grows linearly with the block index, from 0 to ``drop_path_rate`` (0.2).

Submodule names follow torchvision (``features.0`` stem, ``features.1`` ... ``features.7`` stages
of ``MBConv`` blocks with ``block`` and ``stochastic_depth``, ``features.8`` head conv, ``avgpool``,
``classifier`` = Dropout + Linear), so torchvision's state dicts load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from convolab.layers import ConvNormAct, DropPath, SqueezeExcite, checkpoint_seq, make_divisible
from convolab.models._base import ConvClassifier, check_drop_rate
from convolab.models._registry import register_model

__all__ = ["EfficientNet", "MBConv"] + [f"efficientnet_b{i}" for i in range(8)]

# Below this many pixels (the smaller side) the stem and the first stride-2 stage keep stride 1
# (see EfficientNet's docstring): a stride of 32 would reach the last stages at 1x1 on CIFAR.
SMALL_INPUT = 64

# EfficientNet-B0, the paper's Table 1 (stages 2-8; stage 1 is the 3x3/2 stem with 32 channels, stage
# 9 the 1x1 head with 1280): (expand ratio, kernel, stride, in channels, out channels, blocks).
_B0_STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]

# Compound scaling (the paper's Table/appendix; torchvision's builders): width multiplier, depth
# multiplier, input resolution, dropout before the classifier.
_VARIANTS = {
    "efficientnet_b0": (1.0, 1.0, 224, 0.2),
    "efficientnet_b1": (1.0, 1.1, 240, 0.2),
    "efficientnet_b2": (1.1, 1.2, 260, 0.3),
    "efficientnet_b3": (1.2, 1.4, 300, 0.3),
    "efficientnet_b4": (1.4, 1.8, 380, 0.4),
    "efficientnet_b5": (1.6, 2.2, 456, 0.4),
    "efficientnet_b6": (1.8, 2.6, 528, 0.5),
    "efficientnet_b7": (2.0, 3.1, 600, 0.5),
}


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise (stride) -> squeeze-excite -> 1x1 project (linear).

    (N, C_in, H, W) -> (N, C_in * expand_ratio, H/s, W/s) -> (N, C_out, H/s, W/s). ``block`` is an
    ``nn.Sequential`` indexed like torchvision's (no expand conv when ``expand_ratio`` is 1). The
    residual connection, with stochastic depth on the branch, exists when the shapes match.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expand_ratio: float,
                 drop_path_rate: float = 0.0, norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        expanded = make_divisible(in_channels * expand_ratio, 8)
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvNormAct(in_channels, expanded, 1, norm_layer=norm_layer, act_layer=nn.SiLU))
        layers += [
            ConvNormAct(expanded, expanded, kernel_size, stride, groups=expanded, norm_layer=norm_layer,
                        act_layer=nn.SiLU),
            # The squeeze width is a quarter of the block's *input* channels (the paper's se_ratio 0.25).
            SqueezeExcite(expanded, max(1, in_channels // 4), act_layer=partial(nn.SiLU, inplace=True)),
            ConvNormAct(expanded, out_channels, 1, norm_layer=norm_layer, act_layer=None),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = DropPath(drop_path_rate)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = self.stochastic_depth(out) + x
        return out


class EfficientNet(ConvClassifier):
    """Stem 3x3/2 -> 7 stages of MBConv blocks -> 1x1 head conv -> global average pool -> dropout -> FC.

    At the native size (smaller side >= 64) the layout is torchvision's / the paper's, total stride
    32 (7x7 maps at 224x224). Small inputs (smaller side of ``input_size`` < 64): the stem
    (``features.0``) and the first block of the first stride-2 stage (``features.2.0``) use stride 1,
    so the total stride is 8 (a 32x32 image reaches the head at 4x4, an 8x8 one at 1x1). All
    convolutions are padded, so no map collapses. Parameter shapes are those of the native model:
    only strides change, and torchvision's weights load at every input size.

    Args:
        width_mult, depth_mult: compound-scaling multipliers of channels and blocks.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic-depth probability of the last block (torchvision's
            ``stochastic_depth_prob``); block ``i`` of ``n`` gets ``drop_path_rate * i / n``.
        norm_layer: BatchNorm2d for B0-B4; B5-B7 use eps 1e-3, momentum 0.01 as torchvision.
    """

    def __init__(self, width_mult: float = 1.0, depth_mult: float = 1.0, drop_rate: float = 0.2,
                 drop_path_rate: float = 0.2, num_classes: int = 1000, in_chans: int = 3,
                 input_size: tuple[int, int] = (224, 224), norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d):
        super().__init__()
        for arg, value in (("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
            check_drop_rate(value, arg)
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        small = min(self.input_size) < SMALL_INPUT

        def width(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        stages = [(e, k, s, width(cin), width(cout), math.ceil(n * depth_mult)) for e, k, s, cin, cout, n in _B0_STAGES]
        if small:  # the first stride-2 stage keeps the resolution
            first = next(i for i, st in enumerate(stages) if st[2] == 2)
            stages[first] = stages[first][:2] + (1,) + stages[first][3:]
        stem_stride = 1 if small else 2

        layers: list[nn.Module] = [ConvNormAct(in_chans, stages[0][3], 3, stem_stride, norm_layer=norm_layer,
                                               act_layer=nn.SiLU)]       # (N, 32w, H/2, W/2)
        reduction = stem_stride
        total_blocks = sum(st[5] for st in stages)
        block_id = 0
        stage_info = []
        for expand, k, stride, cin, cout, n in stages:
            blocks = []
            for j in range(n):
                blocks.append(MBConv(cin if j == 0 else cout, cout, k, stride if j == 0 else 1, expand,
                                     drop_path_rate * block_id / total_blocks, norm_layer))
                block_id += 1
            reduction *= stride
            layers.append(nn.Sequential(*blocks))                          # (N, cout, H/r, W/r)
            stage_info.append(dict(module=f"features.{len(layers) - 1}", num_chs=cout, reduction=reduction))
        head_chs = 4 * stages[-1][4]
        layers.append(ConvNormAct(stages[-1][4], head_chs, 1, norm_layer=norm_layer, act_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)                            # (N, 1280w, H/32, W/32)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(drop_rate, inplace=True), nn.Linear(head_chs, num_classes))

        # The last stage at each stride, then the head conv (same stride) whose output forward_features returns.
        self.feature_info = [i for i, nxt in zip(stage_info, stage_info[1:]) if nxt["reduction"] != i["reduction"]]
        self.feature_info.append(dict(module=f"features.{len(layers) - 1}", num_chs=head_chs, reduction=reduction))

        # torchvision's initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each MBConv block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, 1280w, H/32, W/32) natively, (N, 1280w, H/8, W/8) for small inputs."""
        if not (self.grad_checkpointing and self.training):
            return self.features(x)
        x = self.features[0](x)
        for stage in self.features[1:-1]:
            x = checkpoint_seq(stage, x)
        return self.features[-1](x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)   # (N, C)
        return super().forward_head(x, pre_logits)


def _efficientnet(name: str, num_classes: int, in_chans: int, input_size: tuple[int, int] | None,
                  **kwargs) -> EfficientNet:
    width_mult, depth_mult, resolution, drop_rate = _VARIANTS[name]
    kwargs.setdefault("drop_rate", drop_rate)
    if name in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7"):
        # torchvision's B5-B7 (ported from the TensorFlow weights) use TensorFlow's BN settings.
        kwargs.setdefault("norm_layer", partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01))
    return EfficientNet(width_mult, depth_mult, num_classes=num_classes, in_chans=in_chans,
                        input_size=input_size or (resolution, resolution), **kwargs)


def _cfg(name: str) -> dict:
    resolution = _VARIANTS[name][2]
    return dict(num_classes=1000, in_chans=3, input_size=(resolution, resolution))


@register_model(year=2019, default_cfg=_cfg("efficientnet_b0"))
def efficientnet_b0(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B0: searched MBConv+SE network, the base of compound scaling (224x224).

    Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019.
    5,288,548 parameters at 1000 classes (torchvision's figure; the paper's Table 2 says 5.3 M).
    Options: ``drop_rate`` (0.2), ``drop_path_rate`` (0.2).
    """
    return _efficientnet("efficientnet_b0", num_classes, in_chans, input_size, **kwargs)


@register_model(year=2019, default_cfg=_cfg("efficientnet_b1"))
def efficientnet_b1(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B1: B0 with depth x1.1 at 240x240.

    Tan & Le, ICML 2019. 7,794,184 parameters at 1000 classes (torchvision's figure; paper: 7.8 M).
    """
    return _efficientnet("efficientnet_b1", num_classes, in_chans, input_size, **kwargs)


@register_model(year=2019, default_cfg=_cfg("efficientnet_b2"))
def efficientnet_b2(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B2: B0 with width x1.1, depth x1.2 at 260x260.

    Tan & Le, ICML 2019. 9,109,994 parameters at 1000 classes (torchvision's figure; paper: 9.2 M).
    """
    return _efficientnet("efficientnet_b2", num_classes, in_chans, input_size, **kwargs)


@register_model(year=2019, default_cfg=_cfg("efficientnet_b3"))
def efficientnet_b3(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B3: B0 with width x1.2, depth x1.4 at 300x300.

    Tan & Le, ICML 2019. 12,233,232 parameters at 1000 classes (torchvision's figure; paper: 12 M).
    """
    return _efficientnet("efficientnet_b3", num_classes, in_chans, input_size, **kwargs)


@register_model(year=2019, default_cfg=_cfg("efficientnet_b4"))
def efficientnet_b4(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B4: B0 with width x1.4, depth x1.8 at 380x380.

    Tan & Le, ICML 2019. 19,341,616 parameters at 1000 classes (torchvision's figure; paper: 19 M).
    """
    return _efficientnet("efficientnet_b4", num_classes, in_chans, input_size, **kwargs)


@register_model(year=2019, default_cfg=_cfg("efficientnet_b5"))
def efficientnet_b5(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B5: B0 with width x1.6, depth x2.2 at 456x456.

    Tan & Le, ICML 2019. 30,389,784 parameters at 1000 classes (torchvision's figure; paper: 30 M).
    BatchNorm eps 1e-3, momentum 0.01 (torchvision's B5-B7).
    """
    return _efficientnet("efficientnet_b5", num_classes, in_chans, input_size, **kwargs)


@register_model(year=2019, default_cfg=_cfg("efficientnet_b6"))
def efficientnet_b6(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B6: B0 with width x1.8, depth x2.6 at 528x528.

    Tan & Le, ICML 2019. 43,040,704 parameters at 1000 classes (torchvision's figure; paper: 43 M).
    BatchNorm eps 1e-3, momentum 0.01 (torchvision's B5-B7).
    """
    return _efficientnet("efficientnet_b6", num_classes, in_chans, input_size, **kwargs)


@register_model(year=2019, default_cfg=_cfg("efficientnet_b7"))
def efficientnet_b7(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                    **kwargs) -> EfficientNet:
    """EfficientNet-B7: B0 with width x2.0, depth x3.1 at 600x600, the largest of the family.

    Tan & Le, ICML 2019. 66,347,960 parameters at 1000 classes (torchvision's figure; paper: 66 M).
    BatchNorm eps 1e-3, momentum 0.01 (torchvision's B5-B7).
    """
    return _efficientnet("efficientnet_b7", num_classes, in_chans, input_size, **kwargs)
