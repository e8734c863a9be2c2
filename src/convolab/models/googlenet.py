"""GoogLeNet (Inception v1): Szegedy et al., "Going Deeper with Convolutions", CVPR 2015.

Nine Inception modules, each four parallel branches (1x1; 1x1 -> 3x3; 1x1 -> "5x5"; 3x3 max-pool ->
1x1) concatenated along the channels, with 1x1 reductions in front of the expensive convolutions.
Two auxiliary classifiers on inception4a and inception4d add their losses (weight 0.3 in the
paper) during training only.

Submodule names and layout follow torchvision (``conv1`` ... ``inception5b``, ``aux1``, ``aux2``,
``fc``), so torchvision's state dicts load unchanged. Two details come from torchvision rather than
the paper: every convolution is followed by batch normalisation (eps 0.001, bias-free convolution;
BN came later in 2015), and the "5x5" branch uses a 3x3 kernel (torchvision issue #906: the
ported weights have 3x3 kernels there; it is kept for weight compatibility).
"""

from __future__ import annotations

from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import nn

from convolab.layers import checkpoint_seq
from convolab.models._base import check_drop_rate
from convolab.models._registry import register_model

__all__ = ["GoogLeNet", "GoogLeNetOutputs", "BasicConv2d", "Inception", "InceptionAux", "googlenet"]

# Below this many pixels (the smaller side) the 7x7/2 stem and its max-pool would shrink the image
# 4x before the first Inception module; see GoogLeNet's docstring for the small-input stem.
SMALL_INPUT = 64

# What forward() returns in training mode when the auxiliary heads are on (torchvision's order).
GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 0.001) -> ReLU, under torchvision's names ``conv`` and ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four branches concatenated: (N, C, H, W) -> (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(in_channels, ch3x3red, 1), BasicConv2d(ch3x3red, ch3x3, 3, padding=1))
        # The paper's 5x5 branch; 3x3 as in torchvision and its weights (see the module docstring).
        self.branch3 = nn.Sequential(BasicConv2d(in_channels, ch5x5red, 1), BasicConv2d(ch5x5red, ch5x5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(in_channels, pool_proj, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool -> conv 1x1 128 -> FC 1024 -> ReLU -> dropout -> FC.

    The paper pools 5x5/3 from the 14x14 map; torchvision pools adaptively to 4x4, which is the same
    at 224x224 and works at every input size.
    """

    def __init__(self, in_channels: int, num_classes: int, drop_rate: float = 0.7):
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))      # (N, 128, 4, 4)
        x = F.relu(self.fc1(torch.flatten(x, 1)), inplace=True)  # (N, 1024)
        return self.fc2(self.dropout(x))                      # (N, num_classes)


# (in, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj): the paper's Table 1.
_INCEPTION_CFG = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNet(nn.Module):
    """GoogLeNet: stem (conv1, maxpool1, conv2, conv3, maxpool2) -> 3a 3b -> pool -> 4a..4e -> pool -> 5a 5b -> FC.

    At the native size (smaller side >= 64) the layout is torchvision's: 7x7/2 ``conv1`` and four
    3x3/2 (2x2/2 for ``maxpool4``) max-pools with ``ceil_mode``, total stride 32 (7x7 maps at 224).

    Small inputs (smaller side of ``input_size`` < 64): ``conv1`` is a 3x3 stride-1 convolution
    (padding 1) and there is no ``maxpool1``, so the stem keeps the full resolution until
    ``maxpool2``; the total stride is 8 (a 32x32 image reaches inception5b at 4x4, an 8x8 one at
    1x1). The ceil-mode pools never collapse a map, so every input size works. Only ``conv1``'s
    weight shape differs from the native model.

    ``aux_logits=True`` adds the two auxiliary heads (``aux1`` on inception4a, ``aux2`` on
    inception4d). Then, in training mode only, ``forward`` returns ``GoogLeNetOutputs(logits,
    aux_logits2, aux_logits1)`` like torchvision (the paper adds 0.3 x each auxiliary loss); in eval
    mode, and always from ``forward_features``/``forward_head``, it is plain logits. convolab's
    trainer expects plain logits, hence the default ``False``.

    ``transform_input=True`` (3 channels only) maps inputs normalised with ImageNet's mean/std to
    the (x - 0.5) / 0.5 scaling of the original Caffe weights, as torchvision does for those weights;
    off by default (torchvision's default without pretrained weights).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] = (224, 224),
                 aux_logits: bool = False, transform_input: bool = False, drop_rate: float = 0.2,
                 aux_drop_rate: float = 0.7):
        super().__init__()
        for arg, value in (("drop_rate", drop_rate), ("aux_drop_rate", aux_drop_rate)):
            check_drop_rate(value, arg)
        if transform_input and in_chans != 3:
            raise ValueError(f"transform_input needs in_chans=3 (it rescales ImageNet's RGB statistics); "
                             f"got {in_chans}")
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        self.aux_logits, self.transform_input, self.drop_rate = aux_logits, transform_input, drop_rate
        self.grad_checkpointing = False
        small = min(self.input_size) < SMALL_INPUT
        s = 1 if small else 2  # stride of conv1 and of maxpool1 (absent when small)

        if small:
            self.conv1 = BasicConv2d(in_chans, 64, 3, padding=1)             # (N, 64, H, W)
        else:
            self.conv1 = BasicConv2d(in_chans, 64, 7, stride=2, padding=3)   # (N, 64, H/2, W/2)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)        # (N, 64, H/4, W/4)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)                      # (N, 192, H/4, W/4)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)            # (N, 192, H/8, W/8)
        self.inception3a = Inception(*_INCEPTION_CFG["inception3a"])
        self.inception3b = Inception(*_INCEPTION_CFG["inception3b"])         # (N, 480, H/8, W/8)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)            # (N, 480, H/16, W/16)
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            setattr(self, name, Inception(*_INCEPTION_CFG[name]))             # (N, 832, H/16, W/16) after 4e
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)            # (N, 832, H/32, W/32)
        self.inception5a = Inception(*_INCEPTION_CFG["inception5a"])
        self.inception5b = Inception(*_INCEPTION_CFG["inception5b"])         # (N, 1024, H/32, W/32)

        self.aux1: InceptionAux | None = InceptionAux(512, num_classes, aux_drop_rate) if aux_logits else None
        self.aux2: InceptionAux | None = InceptionAux(528, num_classes, aux_drop_rate) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(1024, num_classes)

        # The order forward_features runs the stages in; aux1 taps after inception4a, aux2 after inception4d.
        self.stage_names = [n for n in ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a",
                                        "inception3b", "maxpool3", "inception4a", "inception4b", "inception4c",
                                        "inception4d", "inception4e", "maxpool4", "inception5a", "inception5b")
                            if hasattr(self, n)]
        self.feature_info = [
            dict(module="conv1", num_chs=64, reduction=s),
            dict(module="conv3", num_chs=192, reduction=s * s),
            dict(module="inception3b", num_chs=480, reduction=2 * s * s),
            dict(module="inception4e", num_chs=832, reduction=4 * s * s),
            dict(module="inception5b", num_chs=1024, reduction=8 * s * s),
        ]

        # torchvision's initialisation (truncated normal, std 0.01, for convolutions and FC weights).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stem layer and Inception module in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.transform_input:
            return x
        # x_c * std_c / 0.5 + (mean_c - 0.5) / 0.5, per channel: ImageNet normalisation -> [-1, 1] scaling.
        std = x.new_tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        mean = x.new_tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        return x * (std / 0.5) + (mean - 0.5) / 0.5

    def _run(self, x: torch.Tensor, names: list[str]) -> torch.Tensor:
        blocks = [getattr(self, n) for n in names]
        if self.grad_checkpointing and self.training:
            return checkpoint_seq(blocks, x)
        for block in blocks:
            x = block(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, 1024, H/32, W/32) natively, (N, 1024, H/8, W/8) for small inputs."""
        return self._run(self._transform_input(x), self.stage_names)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))  # (N, 1024)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        if not (self.aux_logits and self.training):
            return self.forward_head(self.forward_features(x))
        names = self.stage_names
        i4a, i4d = names.index("inception4a") + 1, names.index("inception4d") + 1
        x = self._run(self._transform_input(x), names[:i4a])   # (N, 512, H/16, W/16)
        aux1 = self.aux1(x)
        x = self._run(x, names[i4a:i4d])                        # (N, 528, H/16, W/16)
        aux2 = self.aux2(x)
        x = self._run(x, names[i4d:])
        return GoogLeNetOutputs(self.forward_head(x), aux2, aux1)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """New main classifier (the auxiliary heads, if any, are replaced too, so all outputs agree)."""
        self.fc = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()
        if self.aux_logits and num_classes > 0:
            self.aux1.fc2 = nn.Linear(1024, num_classes)
            self.aux2.fc2 = nn.Linear(1024, num_classes)
        self.num_classes = num_classes


@register_model(year=2015, default_cfg=dict(num_classes=1000, in_chans=3, input_size=(224, 224)))
def googlenet(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
              **kwargs) -> GoogLeNet:
    """GoogLeNet / Inception v1: nine Inception modules of parallel 1x1, 3x3, "5x5" and pooling branches.

    Szegedy et al., "Going Deeper with Convolutions", CVPR 2015. 6,624,904 parameters at 1000
    classes without the auxiliary heads (torchvision's figure; 13,004,888 with ``aux_logits=True``).
    Options: ``aux_logits``, ``transform_input``, ``drop_rate`` (0.2 before the FC, torchvision's;
    the paper uses 0.4), ``aux_drop_rate`` (0.7).
    """
    return GoogLeNet(num_classes, in_chans, input_size or (224, 224), **kwargs)
