"""DenseNet-BC: Huang, Liu, van der Maaten & Weinberger, "Densely Connected Convolutional Networks", CVPR 2017.

Inside a dense block every layer sees the concatenation of the block's input and of all earlier
layers' outputs, and adds ``growth_rate`` (the paper's k) new maps to it. The "BC" form of the
ImageNet models has a bottleneck (BN-ReLU-conv 1x1 to ``bn_size * k`` maps, then BN-ReLU-conv 3x3
to k maps) and transitions that halve the channels (compression 0.5) and the resolution.

Submodule names follow torchvision (``features.conv0``, ``features.denseblock1.denselayer1.norm1``,
``features.transition1.pool``, ``features.norm5``, ``classifier``), so torchvision's state dicts
load unchanged. (torchvision's pretrained files still hold the pre-0.4 keys ``norm.1``/``conv.1``,
which its own loader renames to ``norm1``/``conv1``; its freshly built models use the new names.)
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from convolab.layers import checkpoint_call
from convolab.models._base import check_drop_rate
from convolab.models._registry import register_model

__all__ = ["DenseNet", "DenseLayer", "DenseBlock", "Transition",
           "densenet121", "densenet161", "densenet169", "densenet201"]

# Below this many pixels (the smaller side) the ImageNet stem (7x7/2 conv + 3x3/2 max-pool, a
# stride of 4) would leave too little of the image: a 32x32 CIFAR image would reach the last
# dense block at 1x1. Smaller inputs get a CIFAR-style stem instead (see DenseNet's docstring).
SMALL_INPUT = 64


class DenseLayer(nn.Module):
    """BN-ReLU-conv 1x1 (to ``bn_size * growth_rate`` maps) -> BN-ReLU-conv 3x3 (to ``growth_rate`` maps).

    Takes the list of all earlier maps of the block, (N, C_i, H, W) each, and returns the
    ``growth_rate`` new ones (N, k, H, W). With ``memory_efficient`` the concatenation and the
    bottleneck (cat -> norm1 -> relu1 -> conv1) are recomputed in the backward pass instead of stored
    (Pleiss et al., "Memory-Efficient Implementation of DenseNets", 2017; torchvision's
    ``memory_efficient``): the concatenated input grows quadratically with depth otherwise.
    """

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0,
                 memory_efficient: bool = False):
        super().__init__()
        mid = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, growth_rate, kernel_size=3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient

    def bottleneck(self, *features: torch.Tensor) -> torch.Tensor:
        x = torch.cat(features, 1)                      # (N, C_in, H, W)
        return self.conv1(self.relu1(self.norm1(x)))    # (N, bn_size * k, H, W)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and torch.is_grad_enabled() and any(f.requires_grad for f in features):
            x = checkpoint_call(self.bottleneck, *features)
        else:
            x = self.bottleneck(*features)
        x = self.conv2(self.relu2(self.norm2(x)))       # (N, k, H, W)
        if self.drop_rate > 0:  # dropout after each dense layer, as the paper's C10/C100 runs (and torchvision)
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers (``denselayer1`` ...): (N, C, H, W) -> (N, C + num_layers * k, H, W)."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int = 4,
                 drop_rate: float = 0.0, memory_efficient: bool = False):
        super().__init__()
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size,
                                                    drop_rate, memory_efficient)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-conv 1x1 (compression to ``out_channels``) -> 2x2/2 average pool (no ``pool`` when ``pool=False``)."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool = True):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        if pool:
            self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(nn.Module):
    """DenseNet-BC: stem -> 4 dense blocks with transitions between them -> BN-ReLU -> global pool -> FC.

    At the native size (smaller side >= 64) the layout is torchvision's / the paper's: 7x7/2 conv0,
    3x3/2 max-pool ``pool0``, and a 2x2/2 average pool in each of the three transitions (total
    stride 32: 7x7 maps at 224x224).

    Small inputs (smaller side of ``input_size`` < 64) get the stem of the paper's CIFAR models:
    ``conv0`` is a 3x3 stride-1 convolution and there is no ``pool0`` (no ``features.pool0``
    module), so the dense blocks see the image at full resolution and the total stride is 8
    (a 32x32 image reaches the last block at 4x4, an 8x8 one at 1x1). A transition keeps its pool
    only while the map entering it is at least 2x2 (smaller side), so no map ever collapses: for
    inputs of 8 or more all three pools stay; a 4x4 input keeps two, a 1x1 input none. The
    decision is made from ``input_size`` at construction; ``feature_info`` gives the resulting
    strides. Parameter shapes differ from the native model only in ``conv0``.

    ``forward_features`` ends with ``features.relu5`` (the BN-ReLU after the last block that
    torchvision applies in ``forward``; a module here so that hooks and Grad-CAM can target it).
    """

    def __init__(self, growth_rate: int = 32, block_config: tuple[int, ...] = (6, 12, 24, 16),
                 num_init_features: int = 64, bn_size: int = 4, drop_rate: float = 0.0, num_classes: int = 1000,
                 in_chans: int = 3, input_size: tuple[int, int] = (224, 224), memory_efficient: bool = False):
        super().__init__()
        check_drop_rate(drop_rate)
        if bn_size < 1:
            raise ValueError(f"bn_size must be >= 1; got {bn_size}")
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        self.drop_rate = drop_rate
        small = min(self.input_size) < SMALL_INPUT
        h, w = self.input_size

        if small:  # CIFAR stem: 3x3/1, no max-pool                      (N, F0, H, W)
            stem = [("conv0", nn.Conv2d(in_chans, num_init_features, 3, stride=1, padding=1, bias=False)),
                    ("norm0", nn.BatchNorm2d(num_init_features)),
                    ("relu0", nn.ReLU(inplace=True))]
            reduction = 1
        else:  # ImageNet stem: 7x7/2 conv, 3x3/2 max-pool                (N, F0, H/4, W/4)
            stem = [("conv0", nn.Conv2d(in_chans, num_init_features, 7, stride=2, padding=3, bias=False)),
                    ("norm0", nn.BatchNorm2d(num_init_features)),
                    ("relu0", nn.ReLU(inplace=True)),
                    ("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))]
            h, w = (h + 1) // 2, (w + 1) // 2  # conv0 (k7 s2 p3)
            h, w = (h + 1) // 2, (w + 1) // 2  # pool0 (k3 s2 p1)
            reduction = 2
        self.features = nn.Sequential(OrderedDict(stem))
        self.feature_info = [dict(module="features.relu0", num_chs=num_init_features, reduction=reduction)]
        if not small:
            reduction = 4

        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(
                num_layers, channels, growth_rate, bn_size, drop_rate, memory_efficient))
            channels += num_layers * growth_rate                         # (N, C + L * k, h, w)
            if i < len(block_config) - 1:
                self.feature_info.append(dict(module=f"features.denseblock{i + 1}", num_chs=channels,
                                              reduction=reduction))
                pool = min(h, w) >= 2  # a 2x2/2 pool on a 1-pixel-wide map would collapse it
                self.features.add_module(f"transition{i + 1}", Transition(channels, channels // 2, pool=pool))
                channels //= 2                                           # compression 0.5
                if pool:
                    h, w, reduction = h // 2, w // 2, reduction * 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        # torchvision applies this ReLU functionally in forward(); not in place, so a hook on norm5 sees norm5's output.
        self.features.add_module("relu5", nn.ReLU())
        self.feature_info.append(dict(module="features.relu5", num_chs=channels, reduction=reduction))

        self.num_features = channels
        self.classifier: nn.Module = nn.Linear(channels, num_classes)
        self.grad_checkpointing = memory_efficient

        # torchvision's (and the reference Lua code's) initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each dense layer's concatenation + bottleneck in the backward pass (torchvision's
        ``memory_efficient``): outputs and gradients are unchanged, memory grows linearly with depth, not quadratically.
        """
        self.grad_checkpointing = enable
        for m in self.modules():
            if isinstance(m, DenseLayer):
                m.memory_efficient = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, C, H/32, W/32) natively (H/8 or less for small inputs), after BN-ReLU."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)   # (N, C)
        return x if pre_logits else self.classifier(x)      # (N, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes


_IMAGENET_CFG = dict(num_classes=1000, in_chans=3, input_size=(224, 224))


def _densenet(growth_rate: int, block_config: tuple[int, ...], num_init_features: int, num_classes: int,
              in_chans: int, input_size: tuple[int, int] | None, **kwargs) -> DenseNet:
    return DenseNet(growth_rate, block_config, num_init_features, num_classes=num_classes, in_chans=in_chans,
                    input_size=input_size or (224, 224), **kwargs)


@register_model(year=2017, default_cfg=_IMAGENET_CFG)
def densenet121(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                **kwargs) -> DenseNet:
    """DenseNet-121 (k=32, blocks 6-12-24-16): each layer sees all earlier maps of its block.

    Huang et al., "Densely Connected Convolutional Networks", CVPR 2017. 7,978,856 parameters at
    1000 classes (torchvision's figure). Options: ``drop_rate`` (dropout after each dense layer),
    ``memory_efficient`` (checkpointed bottlenecks), ``bn_size``.
    """
    return _densenet(32, (6, 12, 24, 16), 64, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2017, default_cfg=_IMAGENET_CFG)
def densenet161(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                **kwargs) -> DenseNet:
    """DenseNet-161 (k=48, 96 stem maps, blocks 6-12-36-24): the widest ImageNet DenseNet.

    Huang et al., "Densely Connected Convolutional Networks", CVPR 2017. 28,681,000 parameters at
    1000 classes (torchvision's figure).
    """
    return _densenet(48, (6, 12, 36, 24), 96, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2017, default_cfg=_IMAGENET_CFG)
def densenet169(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                **kwargs) -> DenseNet:
    """DenseNet-169 (k=32, blocks 6-12-32-32): densely connected layers, 169 deep.

    Huang et al., "Densely Connected Convolutional Networks", CVPR 2017. 14,149,480 parameters at
    1000 classes (torchvision's figure).
    """
    return _densenet(32, (6, 12, 32, 32), 64, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2017, default_cfg=_IMAGENET_CFG)
def densenet201(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                **kwargs) -> DenseNet:
    """DenseNet-201 (k=32, blocks 6-12-48-32): densely connected layers, 201 deep.

    Huang et al., "Densely Connected Convolutional Networks", CVPR 2017. 20,013,928 parameters at
    1000 classes (torchvision's figure).
    """
    return _densenet(32, (6, 12, 48, 32), 64, num_classes, in_chans, input_size, **kwargs)
