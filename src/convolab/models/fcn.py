"""Fully convolutional networks: Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015, in torchvision's form (``torchvision.models.segmentation.fcn_resnet50``).

The paper turns a classification network into a dense predictor: its fully connected layers become
convolutions, a 1x1 convolution scores every class at every position of the coarse map, and the
scores are upsampled to the image. torchvision's variant, followed here module for module so its
state dicts load unchanged, uses a ResNet-50 backbone whose last two stages trade their stride for
dilation (output stride 8 instead of 32, as in DeepLab; ``replace_stride_with_dilation=[False, True,
True]``), an FCN head on ``layer4`` (3x3 convolution to 512 channels, BatchNorm, ReLU, dropout 0.1,
1x1 convolution to the classes), bilinear upsampling to the input's size, and optionally an
auxiliary head of the same form on ``layer3`` (``aux_loss=True``) for a second training loss.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from convolab.layers import checkpoint_seq
from convolab.models._base import ConvSegmenter
from convolab.models._registry import register_model
from convolab.models.resnet import Bottleneck, ResNet

__all__ = ["FCNHead", "FCN", "fcn_resnet50"]


class FCNHead(nn.Sequential):
    """torchvision's FCN head: 3x3 conv (C -> C/4, no bias) -> BatchNorm -> ReLU -> dropout 0.1 -> 1x1 conv to classes.

    (N, C, h, w) -> (N, num_classes, h, w). Indices 0-4 are torchvision's (``classifier.0`` ... ``.4``).
    """

    def __init__(self, in_channels: int, num_classes: int, drop_rate: float = 0.1):
        inter = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(),
            nn.Dropout(drop_rate),
            nn.Conv2d(inter, num_classes, kernel_size=1),
        )


class FCN(ConvSegmenter):
    """A segmentation network: a dilated ResNet ``backbone``, an :class:`FCNHead` ``classifier`` on ``layer4``
    and, with ``aux_loss``, an ``aux_classifier`` on ``layer3``; logits upsampled (bilinear) to the input.

    Names are torchvision's ``FCN`` (``backbone.conv1`` ... ``backbone.layer4``, ``classifier.*``,
    ``aux_classifier.*``); the backbone has no ``fc`` (an identity) and a parameter-free ``avgpool``.

    What it returns: ``forward(x)`` is the convolab contract, the main head's logits
    (N, num_classes, H, W). ``forward_with_aux(x)`` returns what torchvision's ``forward`` does, a dict
    with ``"out"`` and, when built with ``aux_loss=True``, ``"aux"`` (both (N, num_classes, H, W)), for
    a training loop that adds the auxiliary loss (torchvision's reference recipe weights it 0.5).

    Small inputs: every layer is padded and the backbone's output stride is 8, so any input from
    1x1 up runs (a 28x28 image leaves a 4x4 map in ``layer4``); the stem is always the native one,
    so torchvision's weights load at every size. ``feature_info`` is the backbone's (reductions 2, 4,
    8, 8, 8: the dilated stages keep layer2's resolution). ``set_grad_checkpointing`` recomputes each
    residual block of the backbone in the backward pass.
    """

    def __init__(self, backbone: ResNet, num_classes: int = 21, in_chans: int = 3,
                 input_size: tuple[int, int] = (520, 520), aux_loss: bool = False):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        self.backbone = backbone
        widths = {i["module"]: i["num_chs"] for i in backbone.feature_info}
        self.classifier = FCNHead(widths["layer4"], num_classes)                    # on (N, 2048, H/8, W/8)
        self.aux_classifier = FCNHead(widths["layer3"], num_classes) if aux_loss else None
        self.feature_info = [dict(i, module=f"backbone.{i['module']}") for i in backbone.feature_info]
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each residual block of the backbone in the backward pass (training only)."""
        self.grad_checkpointing = bool(enable)

    def _backbone_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage's output: ``{"layer1": (N, 256, H/4, W/4), ... "layer4": (N, 2048, H/8, W/8)}``."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))                # (N, 64, H/4, W/4)
        maps = {}
        for name in b.stage_names:
            stage = getattr(b, name)
            x = checkpoint_seq(stage, x) if self.grad_checkpointing and self.training else stage(x)
            maps[name] = x
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> ``layer4``'s map (N, 2048, H/8, W/8)."""
        return self._backbone_maps(x)["layer4"]

    def forward_with_aux(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """torchvision's output: ``{"out": (N, num_classes, H, W)}``, plus ``"aux"`` (from ``layer3``) with aux_loss."""
        maps = self._backbone_maps(x)
        out = OrderedDict(out=self.forward_head(maps["layer4"]))
        if self.aux_classifier is not None:
            out["aux"] = self.aux_classifier(maps["layer3"])
        for key, logits in out.items():
            out[key] = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


@register_model(year=2015, input_kind="segmentation", default_cfg=dict(num_classes=21, in_chans=3,
                                                                       input_size=(520, 520)))
def fcn_resnet50(*, num_classes: int = 21, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                 aux_loss: bool = False) -> FCN:
    """FCN with a dilated ResNet-50 backbone (output stride 8), torchvision-compatible (Long et al., CVPR 2015).

    32,957,013 parameters at 21 classes (35,322,218 with ``aux_loss=True``; torchvision's counts).
    """
    input_size = input_size or (520, 520)
    backbone = ResNet(Bottleneck, (3, 4, 6, 3), num_classes=0, in_chans=in_chans, input_size=input_size,
                      small_stem=False, replace_stride_with_dilation=(False, True, True))
    return FCN(backbone, num_classes, in_chans, input_size, aux_loss=aux_loss)
