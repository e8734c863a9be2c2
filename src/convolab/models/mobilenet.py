"""MobileNet v1, v2 and v3: depthwise-separable networks for mobile devices.

- v1: Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
  Applications", arXiv:1704.04861, 2017. A 3x3 depthwise convolution (one filter per channel)
  followed by a 1x1 pointwise convolution replaces each full 3x3 convolution (Table 1).
- v2: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018. Narrow
  residual stream, 1x1 expansion by t, 3x3 depthwise, *linear* 1x1 projection (Table 2).
- v3: Howard et al., "Searching for MobileNetV3", ICCV 2019. v2's block with squeeze-and-excite
  (hard-sigmoid gate), hard-swish in the deeper half and a cheaper last stage (Tables 1 and 2).

Submodule names follow torchvision (``features.N``, v2's ``conv``, v3's ``block``, ``classifier``),
so torchvision's state dicts load unchanged and give the same outputs.

Small inputs (the same rule for every model here and in ``shufflenet``, see
:func:`convolab.models._base.adapt_strides`): the native networks downsample by 32, so a 32x32
image would reach the last stages as a single pixel. Every convolution is "same"-padded, so a map
of side ``n`` after a total stride ``r`` has side ``ceil(n / r)`` and nothing collapses to zero;
instead, the stride-2 layers are made stride 1, earliest first, while the last map,
``ceil(min(H, W) / total_stride)``, would be smaller than 4x4. Total stride by ``min(H, W)``: 97
and above, the native 32 (the MobileNet papers evaluate the same network from 128 to 224); 49-96:
16; 25-48 (CIFAR's 32, Fashion-MNIST's 28): 8, last map 4x4; 13-24: 4; 7-12 (scikit-learn's 8x8
digits): 2, last map 4x4; 6 and below: 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from convolab.layers import ConvNormAct, SqueezeExcite, checkpoint_seq, make_divisible
from convolab.models._base import ConvClassifier, adapt_strides, check_drop_rate, feature_info_from_strides
from convolab.models._registry import register_model

__all__ = ["MobileNetV1", "MobileNetV2", "MobileNetV3", "DepthwiseSeparable", "InvertedResidual",
           "InvertedResidualV3",
           "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]

_IMAGENET_CFG = dict(num_classes=1000, in_chans=3, input_size=(224, 224))


def _check_args(width_mult: float, drop_rate: float) -> None:
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0; got {width_mult}")
    check_drop_rate(drop_rate)


def _init_weights(model: nn.Module) -> None:
    """The initialisation of the MobileNet reference code (and torchvision's)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


# -- blocks ---------------------------------------------------------------------------------------
class DepthwiseSeparable(nn.Module):
    """MobileNet v1's unit: 3x3 depthwise conv-BN-ReLU (``dw``), then 1x1 pointwise conv-BN-ReLU (``pw``).

    Costs ``9*C_in + C_in*C_out`` weights instead of ``9*C_in*C_out`` for a full 3x3 convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 act_layer: Callable[..., nn.Module] = nn.ReLU):
        super().__init__()
        self.dw = ConvNormAct(in_channels, in_channels, 3, stride, groups=in_channels, act_layer=act_layer)
        self.pw = ConvNormAct(in_channels, out_channels, 1, act_layer=act_layer)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))  # (N, C_in, H, W) -> (N, C_out, H/stride, W/stride)


class InvertedResidual(nn.Module):
    """MobileNet v2's inverted residual: 1x1 expand (x t) -> 3x3 depthwise -> linear 1x1 project (+ shortcut).

    ``conv`` holds, in torchvision's indices: [0] expand ConvNormAct (absent when t = 1), then the
    depthwise ConvNormAct, then the projection as a bare ``Conv2d`` and ``BatchNorm2d`` (two flat
    entries, not a nested ConvNormAct, so the state-dict keys match). The projection has no
    activation: the paper's linear bottleneck (Sec. 3.2), ReLU on the narrow stream loses information.
    The shortcut is the identity when stride is 1 and the channel counts agree.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: float,
                 norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_channels, hidden, 1, norm_layer=norm_layer, act_layer=nn.ReLU6))
        layers.append(ConvNormAct(hidden, hidden, 3, stride, groups=hidden, norm_layer=norm_layer,
                                  act_layer=nn.ReLU6))
        layers.extend(ConvNormAct(hidden, out_channels, 1, norm_layer=norm_layer, act_layer=None))  # flat Conv, BN
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv(x)  # (N, C_in, H, W) -> (N, C_out, H/stride, W/stride)
        return x + shortcut if self.use_res_connect else x


class InvertedResidualV3(nn.Module):
    """MobileNet v3's bneck: v2's inverted residual with a k x k depthwise, optional SE and ReLU or hard-swish.

    ``block``: [expand ConvNormAct (absent when the expansion keeps the width)], depthwise
    ConvNormAct, [SqueezeExcite: squeeze to ``make_divisible(expanded / 4)``, ReLU, hard-sigmoid gate
    (Sec. 5.3)], projection ConvNormAct without activation.
    """

    def __init__(self, in_channels: int, kernel_size: int, expanded: int, out_channels: int, use_se: bool,
                 act_layer: Callable[..., nn.Module], stride: int, norm_layer: Callable[..., nn.Module]):
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvNormAct(in_channels, expanded, 1, norm_layer=norm_layer, act_layer=act_layer))
        layers.append(ConvNormAct(expanded, expanded, kernel_size, stride, groups=expanded, norm_layer=norm_layer,
                                  act_layer=act_layer))
        if use_se:
            layers.append(SqueezeExcite(expanded, make_divisible(expanded // 4, 8), act_layer=nn.ReLU,
                                        gate_layer=nn.Hardsigmoid))
        layers.append(ConvNormAct(expanded, out_channels, 1, norm_layer=norm_layer, act_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.block(x)  # (N, C_in, H, W) -> (N, C_out, H/stride, W/stride)
        return x + shortcut if self.use_res_connect else x


# -- networks -------------------------------------------------------------------------------------
class _MobileNet(ConvClassifier):
    """``features`` (a Sequential) -> global average pool -> ``classifier`` (ending in the logits Linear)."""

    avgpool: nn.Module
    grad_checkpointing: bool = False

    def _finish(self, layers: list[nn.Module], strides: list[int], num_classes: int, in_chans: int,
                input_size: tuple[int, int]) -> None:
        """Set the shared attributes once ``features`` and ``classifier`` layers are known."""
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # no parameters; torchvision v3 has it as a module too
        self.feature_info = feature_info_from_strides(
            [(f"features.{i}", m.out_channels, s) for i, (m, s) in enumerate(zip(layers, strides))])
        self.num_features = layers[-1].out_channels
        self.grad_checkpointing = False
        _init_weights(self)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each ``features`` block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training:
            return checkpoint_seq(self.features, x)
        return self.features(x)  # (N, C, H, W) -> (N, num_features, H/r, W/r)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x).flatten(1)  # (N, num_features)
        *hidden, fc = self.classifier
        for layer in hidden:
            x = layer(x)
        return x if pre_logits else fc(x)


def _strides_and_size(native: list[int], input_size: tuple[int, int] | None) -> tuple[list[int], tuple[int, int]]:
    size = tuple(input_size) if input_size is not None else (224, 224)
    return adapt_strides(native, size), size


# MobileNet v1, Table 1: (depthwise stride, pointwise output channels) of the 13 separable layers
# after the 32-channel stride-2 stem. The table's second-to-last "s2" at 7x7 is a known typo: the
# reference implementation (and every port) uses stride 1 there.
_V1_LAYERS = ((1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
              (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))


class MobileNetV1(_MobileNet):
    """MobileNet v1: 3x3 stem (32, stride 2), 13 depthwise-separable layers, global pool, (dropout), FC.

    ``features.0`` is the stem ConvNormAct, ``features.1``-``features.13`` are
    :class:`DepthwiseSeparable` units (``dw``, ``pw``); ``classifier`` is Dropout + Linear.
    Channels are ``make_divisible(c * width_mult, 8)`` (the paper's width multiplier alpha).
    Parameters at 1000 classes, width 1.0: 4,231,976 (the paper's Table 8: 4.2 M).

    Small inputs: the stride-2 layers (stem, units 2, 4, 6, 12) become stride 1, earliest first,
    until the last map is at least 4x4 (module docstring): native above 96, stride 8 at 28x28 and
    32x32 (stem and unit 2 at stride 1; last map 4x4), stride 2 at 8x8 (only unit 12 keeps stride 2).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                 width_mult: float = 1.0, drop_rate: float = 0.0):
        super().__init__()
        _check_args(width_mult, drop_rate)
        strides, size = _strides_and_size([2] + [s for s, _ in _V1_LAYERS], input_size)
        chs = make_divisible(32 * width_mult, 8)
        layers: list[nn.Module] = [ConvNormAct(in_chans, chs, 3, strides[0])]  # (N, 32, H/2, W/2) natively
        for stride, out in zip(strides[1:], (c for _, c in _V1_LAYERS)):
            layers.append(DepthwiseSeparable(chs, make_divisible(out * width_mult, 8), stride))
            chs = layers[-1].out_channels
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(chs, num_classes))
        self._finish(layers, strides, num_classes, in_chans, size)


# MobileNet v2, Table 2: expansion t, output channels c, repeats n, stride s of the first repeat.
_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1))


class MobileNetV2(_MobileNet):
    """MobileNet v2: 3x3 stem (32, stride 2), 17 inverted residuals, 1x1 conv to 1280, pool, dropout, FC.

    ``features.0`` stem, ``features.1``-``features.17`` :class:`InvertedResidual` (Table 2's
    t, c, n, s rows), ``features.18`` the 1x1 ConvNormAct to ``1280 * max(1, width_mult)``;
    ReLU6 throughout; ``classifier`` = Dropout(``drop_rate``, 0.2) + Linear. Layout and names are
    torchvision's ``mobilenet_v2``: 3,504,872 parameters at 1000 classes.

    Small inputs: the stride-2 layers (stem, ``features.2``, ``.4``, ``.7``, ``.14``) become
    stride 1, earliest first, until the last map is at least 4x4 (module docstring): native above
    96, stride 8 at 28x28 and 32x32 (stem and ``.2`` at stride 1), stride 2 at 8x8 (only ``.14``
    keeps stride 2). A block whose stride drops to 1
    keeps no shortcut when its channel count changes (the paper's rule).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                 width_mult: float = 1.0, drop_rate: float = 0.2):
        super().__init__()
        _check_args(width_mult, drop_rate)
        rows = [(t, c, s if i == 0 else 1) for t, c, n, s in _V2_SETTING for i in range(n)]  # one per block
        strides, size = _strides_and_size([2] + [s for _, _, s in rows] + [1], input_size)
        chs = make_divisible(32 * width_mult, 8)
        layers: list[nn.Module] = [ConvNormAct(in_chans, chs, 3, strides[0], act_layer=nn.ReLU6)]
        for (t, c, _), stride in zip(rows, strides[1:]):
            layers.append(InvertedResidual(chs, make_divisible(c * width_mult, 8), stride, t))
            chs = layers[-1].out_channels
        last = make_divisible(1280 * max(1.0, width_mult), 8)  # the paper keeps 1280 for widths below 1
        layers.append(ConvNormAct(chs, last, 1, act_layer=nn.ReLU6))  # (N, 1280, H/32, W/32) natively
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(last, num_classes))
        self._finish(layers, strides, num_classes, in_chans, size)


# MobileNet v3, Tables 1 (large) and 2 (small): kernel, expanded width, output channels, SE,
# activation ("RE" ReLU, "HS" hard-swish), stride. Inputs of the first block: the 16-channel stem.
_V3_LARGE = (
    (3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1),
)
_V3_SMALL = (
    (3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1),
)


class MobileNetV3(_MobileNet):
    """MobileNet v3 (large or small): hard-swish stem, bneck blocks, 1x1 conv to 6x, pool, Linear-HS-Dropout-FC.

    ``features.0`` stem (16 channels, stride 2, hard-swish), ``features.1``.. :class:`InvertedResidualV3`
    (the paper's Table 1 or 2), last ``features`` entry a 1x1 ConvNormAct to 6x the last block's
    channels (960 large, 576 small); ``avgpool``; ``classifier`` = Linear to 1280 (large) / 1024
    (small), Hardswish, Dropout(``drop_rate``, 0.2), Linear. BatchNorm eps 0.001, momentum 0.01 (the
    TensorFlow defaults of the reference). Names and layout are torchvision's: 5,483,032 (large) and
    2,542,856 (small) parameters at 1000 classes.

    Small inputs: the stem and the blocks with stride 2 become stride 1, earliest first, until the
    last map is at least 4x4 (module docstring): native above 96, stride 8 at 28x28 and 32x32 (stem
    and the first stride-2 block at stride 1), stride 2 at 8x8 (only the last stride-2 block keeps
    it). A stride-1 block whose input and output widths agree gains the identity
    shortcut (the paper's rule).
    """

    def __init__(self, setting: Sequence[tuple], last_channel: int, num_classes: int = 1000, in_chans: int = 3,
                 input_size: tuple[int, int] | None = None, width_mult: float = 1.0, drop_rate: float = 0.2):
        super().__init__()
        _check_args(width_mult, drop_rate)
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        strides, size = _strides_and_size([2] + [row[-1] for row in setting] + [1], input_size)
        chs = make_divisible(16 * width_mult, 8)
        layers: list[nn.Module] = [ConvNormAct(in_chans, chs, 3, strides[0], norm_layer=norm_layer,
                                               act_layer=nn.Hardswish)]
        for (k, exp, out, use_se, act, _), stride in zip(setting, strides[1:]):
            layers.append(InvertedResidualV3(
                chs, k, make_divisible(exp * width_mult, 8), make_divisible(out * width_mult, 8), use_se,
                nn.Hardswish if act == "HS" else nn.ReLU, stride, norm_layer))
            chs = layers[-1].out_channels
        layers.append(ConvNormAct(chs, 6 * chs, 1, norm_layer=norm_layer, act_layer=nn.Hardswish))
        hidden = make_divisible(last_channel * width_mult, 8)
        self.classifier = nn.Sequential(
            nn.Linear(6 * chs, hidden),  # a Linear on the pooled vector: the paper's 1x1 conv without BN
            nn.Hardswish(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, num_classes),
        )
        self._finish(layers, strides, num_classes, in_chans, size)


# -- builders -------------------------------------------------------------------------------------
@register_model(year=2017, default_cfg=_IMAGENET_CFG)
def mobilenet_v1(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                 **kwargs) -> MobileNetV1:
    """MobileNet v1: 13 depthwise-separable conv layers, width 1.0 (4.2 M parameters).

    Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
    Applications", arXiv:1704.04861, 2017. Reference count: 4.2 M (Table 8, 1.0 MobileNet-224);
    this implementation: 4,231,976. Options: ``width_mult`` (alpha), ``drop_rate`` (default 0).
    """
    return MobileNetV1(num_classes, in_chans, input_size, **kwargs)


@register_model(year=2018, default_cfg=_IMAGENET_CFG)
def mobilenet_v2(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                 **kwargs) -> MobileNetV2:
    """MobileNet v2: inverted residuals with linear bottlenecks (3.5 M parameters).

    Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018. Reference
    count: 3.4 M (Table 4); torchvision's ``mobilenet_v2``: 3,504,872, equal here. Options:
    ``width_mult``, ``drop_rate`` (default 0.2).
    """
    return MobileNetV2(num_classes, in_chans, input_size, **kwargs)


@register_model(year=2019, default_cfg=_IMAGENET_CFG)
def mobilenet_v3_large(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                       **kwargs) -> MobileNetV3:
    """MobileNet v3-Large: NAS-found bneck blocks with SE and hard-swish (5.5 M parameters).

    Howard et al., "Searching for MobileNetV3", ICCV 2019, Table 1. Reference count: 5.4 M
    (Table 3); torchvision's ``mobilenet_v3_large``: 5,483,032, equal here. Options: ``width_mult``,
    ``drop_rate`` (default 0.2).
    """
    return MobileNetV3(_V3_LARGE, 1280, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2019, default_cfg=_IMAGENET_CFG)
def mobilenet_v3_small(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                       **kwargs) -> MobileNetV3:
    """MobileNet v3-Small: the low-resource bneck network with SE and hard-swish (2.5 M parameters).

    Howard et al., "Searching for MobileNetV3", ICCV 2019, Table 2. Reference count: 2.5 M
    (Table 3); torchvision's ``mobilenet_v3_small``: 2,542,856, equal here. Options: ``width_mult``,
    ``drop_rate`` (default 0.2).
    """
    return MobileNetV3(_V3_SMALL, 1024, num_classes, in_chans, input_size, **kwargs)
