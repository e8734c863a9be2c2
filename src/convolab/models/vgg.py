"""VGG: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.

Stacks of 3x3 convolutions (padding 1, so they keep the size) separated by 2x2 max-pools, then
three FC layers. The variants are data: a list of channel counts per configuration, ``"M"`` for a
max-pool (the paper's table 1, torchvision's ``cfgs``). Submodule names and initialisation are
torchvision's, so ``torchvision.models.vgg*`` weights load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from convolab.layers import checkpoint_seq
from convolab.models._activations import act_layer
from convolab.models._base import PooledClassifier, check_drop_rate, fitting_pools, init_vgg_style
from convolab.models._registry import register_model

__all__ = ["VGG", "VGG_CFGS", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]

_IMAGENET_CFG = dict(num_classes=1000, in_chans=3, input_size=(224, 224))

# The paper's configurations A, B, D, E by weight-layer count: output channels of each 3x3 conv, "M" a max-pool.
VGG_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(PooledClassifier):
    """VGG: 3x3 conv (-> BatchNorm) -> ReLU stacks in five stages, each closed by a 2x2 max-pool; FC 4096, 4096.

    ``features`` is one flat ``nn.Sequential`` (torchvision's indices: conv, [bn,] relu per layer, a
    pool per "M"); ``avgpool`` is adaptive to 7x7 and the classifier is FC 4096 -> ReLU -> dropout ->
    FC 4096 -> ReLU -> dropout -> FC num_classes, dropout ``drop_rate`` (0.5 in the paper).
    At 224x224 the five pools take the map to 7x7 (N, 512, 7, 7) and ``avgpool`` is the identity.

    Small inputs: the convolutions keep the size, so only the pools can collapse a map. A max-pool is
    kept when its 2x2 window fits the map that reaches it (the smaller side is at least 2) and is
    otherwise an ``nn.Identity`` (the indices stay torchvision's): 32x32 keeps all five (last map
    1x1), 28x28 drops the fifth (28, 14, 7, 3, 1 -> 1), 8x8 drops the fourth and fifth (8, 4, 2, 1).
    At 32x32 and above nothing changes. ``avgpool`` replicates a smaller map to 7x7, so the FC
    layers and the parameter count never depend on the input size; torchvision's weights load at any size.

    ``batch_norm=True`` (the ``_bn`` builders, torchvision's variants; BatchNorm is Ioffe & Szegedy, 2015, later
    than the paper) puts a BatchNorm2d between each convolution and its ReLU.

    ``act`` (a ``convolab.models._activations`` name, default ReLU) replaces every ReLU, in the features
    and in the classifier; the indices stay torchvision's (one module per activation).

    ``set_grad_checkpointing()`` recomputes each stage (the layers up to and including its pool) in
    the backward pass instead of storing its activations.
    """

    def __init__(self, cfg: list[int | str], batch_norm: bool = False, num_classes: int = 1000, in_chans: int = 3,
                 input_size: tuple[int, int] = (224, 224), drop_rate: float = 0.5, act: str = "relu"):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        drop_rate = check_drop_rate(drop_rate)
        make_act = act_layer(act)
        keep = iter(fitting_pools(self.input_size, cfg.count("M"), kernel_size=2, stride=2))
        layers: list[nn.Module] = []
        self.feature_info: list[dict] = []
        self._stage_ends: list[int] = []  # index just past each stage's pool in `features`
        channels, reduction = in_chans, 1
        for v in cfg:
            if v == "M":
                # The map before the pool is the stage's output (timm's VGG feature_info).
                self.feature_info.append(dict(module=f"features.{len(layers) - 1}", num_chs=channels,
                                              reduction=reduction))
                if next(keep):
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))  # (N, C, H/2, W/2)
                    reduction *= 2
                else:
                    layers.append(nn.Identity())
                self._stage_ends.append(len(layers))
                continue
            layers.append(nn.Conv2d(channels, int(v), kernel_size=3, padding=1))  # (N, v, H, W)
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(v)))
            layers.append(make_act())
            channels = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))  # (N, 512, 7, 7) whatever the map size
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, 4096),
            make_act(),
            nn.Dropout(drop_rate),
            nn.Linear(4096, 4096),
            make_act(),
            nn.Dropout(drop_rate),
            nn.Linear(4096, num_classes),
        )
        self.grad_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation (He et al. 2015 for the convolutions); the paper instead
        # initialised the deeper nets from a trained configuration A, or with Glorot's scheme.
        init_vgg_style(self)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each feature stage in the backward pass (less memory, one more forward)."""
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training:
            starts = [0, *self._stage_ends[:-1]]
            return checkpoint_seq([self.features[a:b] for a, b in zip(starts, self._stage_ends)], x)
        return self.features(x)


def _vgg(name: str, batch_norm: bool, num_classes: int, in_chans: int, input_size: tuple[int, int] | None,
         **kwargs) -> VGG:
    return VGG(VGG_CFGS[name], batch_norm, num_classes, in_chans, input_size or (224, 224), **kwargs)


@register_model(year=2014, default_cfg=_IMAGENET_CFG)
def vgg11(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
          **kwargs) -> VGG:
    """VGG-11, configuration A: 8 conv + 3 FC layers (Simonyan & Zisserman, 2014; 132,863,336 parameters)."""
    return _vgg("vgg11", False, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2014, default_cfg=_IMAGENET_CFG)
def vgg13(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
          **kwargs) -> VGG:
    """VGG-13, configuration B: 10 conv + 3 FC layers (Simonyan & Zisserman, 2014; 133,047,848 parameters)."""
    return _vgg("vgg13", False, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2014, default_cfg=_IMAGENET_CFG)
def vgg16(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
          **kwargs) -> VGG:
    """VGG-16, configuration D: 13 conv + 3 FC layers (Simonyan & Zisserman, 2014; 138,357,544 parameters)."""
    return _vgg("vgg16", False, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2014, default_cfg=_IMAGENET_CFG)
def vgg19(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
          **kwargs) -> VGG:
    """VGG-19, configuration E: 16 conv + 3 FC layers (Simonyan & Zisserman, 2014; 143,667,240 parameters)."""
    return _vgg("vgg19", False, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2014, default_cfg=_IMAGENET_CFG)
def vgg11_bn(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
             **kwargs) -> VGG:
    """VGG-11 with BatchNorm after every conv (Simonyan & Zisserman, 2014; 132,868,840 parameters)."""
    return _vgg("vgg11", True, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2014, default_cfg=_IMAGENET_CFG)
def vgg13_bn(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
             **kwargs) -> VGG:
    """VGG-13 with BatchNorm after every conv (Simonyan & Zisserman, 2014; 133,053,736 parameters)."""
    return _vgg("vgg13", True, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2014, default_cfg=_IMAGENET_CFG)
def vgg16_bn(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
             **kwargs) -> VGG:
    """VGG-16 with BatchNorm after every conv (Simonyan & Zisserman, 2014; 138,365,992 parameters)."""
    return _vgg("vgg16", True, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2014, default_cfg=_IMAGENET_CFG)
def vgg19_bn(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
             **kwargs) -> VGG:
    """VGG-19 with BatchNorm after every conv (Simonyan & Zisserman, 2014; 143,678,248 parameters)."""
    return _vgg("vgg19", True, num_classes, in_chans, input_size, **kwargs)
