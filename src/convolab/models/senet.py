"""SE-ResNets: Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018.

A squeeze-and-excitation block (``convolab.layers.SqueezeExcite``, reduction ratio r = 16) rescales
the channels of each residual branch before the addition (the paper's Figure 3, "SE-ResNet
module"): ``relu(se(branch(x)) + shortcut(x))``. Everything else is ``convolab.models.resnet``'s
:class:`~convolab.models.resnet.ResNet` and its blocks, which take the SE module through their
``attn_layer`` argument and register it as ``se`` (``layerI.J.se.fc1`` / ``.fc2``, torchvision's
``SqueezeExcitation`` names). The small-input adaptation is ResNet's: when either side of
``input_size`` is below 64, ``conv1`` is a 3x3 stride-1 convolution and there is no max-pool.
"""

from __future__ import annotations

import functools

from torch import nn

from convolab.layers import SqueezeExcite
from convolab.models._activations import act_layer
from convolab.models._registry import register_model
from convolab.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["SE_REDUCTION", "se_layer", "se_resnet18", "se_resnet34", "se_resnet50"]

SE_REDUCTION = 16  # the paper's reduction ratio r (its section 6.1 ablation picks 16)

_IMAGENET_CFG = dict(num_classes=1000, in_chans=3, input_size=(224, 224))


def se_layer(channels: int, act: str = "relu") -> nn.Module:
    """The SE block for a branch of ``channels`` outputs: C -> C / 16 -> C, ReLU (or ``act``) then sigmoid gate."""
    return SqueezeExcite(channels, max(1, channels // SE_REDUCTION), act_layer=act_layer(act))


def _se_resnet(block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, ...], num_classes: int, in_chans: int,
               input_size: tuple[int, int] | None, act: str = "relu", **kwargs) -> ResNet:
    # --act reaches the excitation's hidden layer too (the gate stays a sigmoid: it is a weight in (0, 1))
    return ResNet(block, layers, num_classes, in_chans, input_size or (224, 224),
                  attn_layer=functools.partial(se_layer, act=act), act=act, **kwargs)


@register_model(year=2018, default_cfg=_IMAGENET_CFG)
def se_resnet18(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                **kwargs) -> ResNet:
    """SE-ResNet-18: ResNet-18 with squeeze-and-excitation (r = 16) on every residual branch (Hu et al., 2018).

    The paper reports no ResNet-18 variant; this one has 11,778,592 parameters at 1000 classes
    (ResNet-18's 11,689,512 plus 89,080 in the SE blocks).
    """
    return _se_resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans, input_size, **kwargs)


@register_model(year=2018, default_cfg=_IMAGENET_CFG)
def se_resnet34(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                **kwargs) -> ResNet:
    """SE-ResNet-34: ResNet-34 with squeeze-and-excitation (r = 16) on every residual branch (Hu et al., 2018).

    The paper reports no ResNet-34 variant; this one has 21,958,868 parameters at 1000 classes
    (ResNet-34's 21,797,672 plus 161,196 in the SE blocks).
    """
    return _se_resnet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans, input_size, **kwargs)


@register_model(year=2018, default_cfg=_IMAGENET_CFG)
def se_resnet50(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                **kwargs) -> ResNet:
    """SE-ResNet-50: ResNet-50 with squeeze-and-excitation (r = 16) on every residual branch (Hu et al., 2018).

    The paper gives 28.09 M parameters (about 2.5 M more than ResNet-50); this one has 28,088,024
    at 1000 classes. The bottleneck strides its 3x3 convolution (torchvision's ResNet v1.5; the
    paper's model strides the first 1x1, with the same parameter count).
    """
    return _se_resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans, input_size, **kwargs)
