"""ConvNeXt: Liu, Mao, Wu, Feichtenhofer, Darrell & Xie, "A ConvNet for the 2020s", CVPR 2022.

A ResNet modernised step by step towards a Swin Transformer: a 4x4/4 "patchify" stem, stage depths
3-3-9-3 (tiny) or 3-3-27-3, inverted bottleneck blocks with a 7x7 depthwise convolution first,
LayerNorm instead of BatchNorm, GELU, one normalisation and one activation per block, separate
downsampling layers (LayerNorm + 2x2/2 conv), layer scale and stochastic depth.

Submodule names follow torchvision (``features.0`` stem, ``features.1/3/5/7`` stages of
``CNBlock``, ``features.2/4/6`` downsampling, ``avgpool``, ``classifier`` = LayerNorm2d + Flatten
+ Linear), so torchvision's state dicts load unchanged.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from convolab.layers import ConvNormAct, DropPath, checkpoint_seq
from convolab.models._base import ConvClassifier, check_drop_rate
from convolab.models._registry import register_model

__all__ = ["ConvNeXt", "CNBlock", "LayerNorm2d", "Permute",
           "convnext_tiny", "convnext_small", "convnext_base", "convnext_large"]

# Below this many pixels (the smaller side) the 4x4/4 patchify stem is replaced (see ConvNeXt's docstring).
SMALL_INPUT = 64


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map, at every pixel (channels-last inside)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)                                              # (N, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)                                           # (N, C, H, W)


class Permute(nn.Module):
    """``x.permute(*dims)`` as a module (parameter-free; keeps torchvision's indices inside ``CNBlock.block``)."""

    def __init__(self, dims: list[int]):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class CNBlock(nn.Module):
    """dwconv 7x7 -> LayerNorm -> Linear (4x) -> GELU -> Linear -> layer scale -> stochastic depth -> + x.

    (N, C, H, W) -> (N, C, H, W). The two pointwise layers run channels-last as ``nn.Linear`` (the
    paper's reference code does the same; it is a 1x1 convolution). ``layer_scale`` multiplies the
    branch per channel, initialised to 1e-6 so each block starts close to the identity.
    """

    def __init__(self, dim: int, layer_scale: float = 1e-6, drop_path_rate: float = 0.0):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim),         # (N, C, H, W)
            Permute([0, 2, 3, 1]),                                             # (N, H, W, C)
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),                                           # (N, H, W, 4C)
            nn.GELU(),
            nn.Linear(4 * dim, dim),                                           # (N, H, W, C)
            Permute([0, 3, 1, 2]),                                             # (N, C, H, W)
        )
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale)))
        self.stochastic_depth = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.layer_scale * self.block(x)
        return self.stochastic_depth(x) + shortcut


class ConvNeXt(ConvClassifier):
    """Patchify stem -> 4 stages of CNBlocks with a downsampling layer between stages -> pool -> LayerNorm -> FC.

    At the native size (smaller side >= 64) the layout is torchvision's / the paper's: 4x4/4 stem,
    three LayerNorm + 2x2/2 conv downsamplings, total stride 32 (7x7 maps at 224x224).

    Small inputs (smaller side of ``input_size`` < 64): the stem is a 3x3 stride-1 convolution
    (padding 1) + LayerNorm, so the first stage sees the full image and the total stride is 8
    (a 32x32 image reaches the last stage at 4x4, an 8x8 one at 1x1). A downsampling layer whose
    input map would be under 2 pixels (smaller side), which only happens for inputs below 8, is
    replaced by LayerNorm + a 1x1 convolution that only widens the channels, so no map collapses.
    The decision is made from ``input_size`` at construction; ``feature_info`` gives the strides.
    Only the stem (and any such 1x1 layer) has other weight shapes than the native model.

    Args:
        depths, dims: blocks and channels per stage.
        drop_path_rate: stochastic-depth probability of the last block (torchvision's
            ``stochastic_depth_prob``); block ``i`` of ``n`` gets ``drop_path_rate * i / (n - 1)``.
        layer_scale: initial value of the per-channel branch scale (1e-6).
    """

    def __init__(self, depths: tuple[int, ...] = (3, 3, 9, 3), dims: tuple[int, ...] = (96, 192, 384, 768),
                 drop_path_rate: float = 0.1, layer_scale: float = 1e-6, num_classes: int = 1000, in_chans: int = 3,
                 input_size: tuple[int, int] = (224, 224)):
        super().__init__()
        check_drop_rate(drop_path_rate, "drop_path_rate")
        if layer_scale <= 0:
            raise ValueError(f"layer_scale must be > 0; got {layer_scale}")
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        self.grad_checkpointing = False
        norm_layer = partial(LayerNorm2d, eps=1e-6)
        small = min(self.input_size) < SMALL_INPUT

        if small:  # 3x3/1 stem: (N, C0, H, W)
            stem = ConvNormAct(in_chans, dims[0], 3, 1, norm_layer=norm_layer, act_layer=None, bias=True)
            side, reduction = min(self.input_size), 1
        else:  # patchify: non-overlapping 4x4 patches, (N, C0, H/4, W/4)
            stem = ConvNormAct(in_chans, dims[0], 4, 4, padding=0, norm_layer=norm_layer, act_layer=None, bias=True)
            side, reduction = min(self.input_size) // 4, 4
        layers: list[nn.Module] = [stem]
        self.feature_info = []
        total_blocks, block_id = sum(depths), 0
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            if i > 0:
                if side >= 2:  # LayerNorm + 2x2/2 conv: (N, C, h, w) -> (N, C', h/2, w/2)
                    down = nn.Conv2d(dims[i - 1], dim, kernel_size=2, stride=2)
                    side, reduction = side // 2, reduction * 2
                else:  # the map is 1 pixel wide: widen the channels only
                    down = nn.Conv2d(dims[i - 1], dim, kernel_size=1)
                layers.append(nn.Sequential(norm_layer(dims[i - 1]), down))
            blocks = []
            for _ in range(depth):
                blocks.append(CNBlock(dim, layer_scale, drop_path_rate * block_id / max(total_blocks - 1, 1)))
                block_id += 1
            layers.append(nn.Sequential(*blocks))
            self.feature_info.append(dict(module=f"features.{len(layers) - 1}", num_chs=dim, reduction=reduction))
        self.features = nn.Sequential(*layers)                                 # (N, C3, H/32, W/32)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(norm_layer(dims[-1]), nn.Flatten(1), nn.Linear(dims[-1], num_classes))

        # torchvision's initialisation (the paper's: truncated normal, std 0.02, zero bias).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each CNBlock in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, C, H/32, W/32) natively, (N, C, H/8, W/8) for small inputs."""
        if not (self.grad_checkpointing and self.training):
            return self.features(x)
        for i, layer in enumerate(self.features):
            x = checkpoint_seq(layer, x) if i % 2 == 1 else layer(x)           # odd indices are the stages
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return super().forward_head(self.avgpool(x), pre_logits)               # pool -> LayerNorm -> flatten -> FC


_IMAGENET_CFG = dict(num_classes=1000, in_chans=3, input_size=(224, 224))


def _convnext(depths: tuple[int, ...], dims: tuple[int, ...], default_drop_path_rate: float, num_classes: int,
              in_chans: int, input_size: tuple[int, int] | None, **kwargs) -> ConvNeXt:
    kwargs.setdefault("drop_path_rate", default_drop_path_rate)
    return ConvNeXt(depths, dims, num_classes=num_classes, in_chans=in_chans, input_size=input_size or (224, 224),
                    **kwargs)


@register_model(year=2022, default_cfg=_IMAGENET_CFG)
def convnext_tiny(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                  **kwargs) -> ConvNeXt:
    """ConvNeXt-T (96-192-384-768, 3-3-9-3 blocks): a ResNet modernised towards Swin-T.

    Liu et al., "A ConvNet for the 2020s", CVPR 2022. 28,589,128 parameters at 1000 classes
    (torchvision's figure; the paper's Table 1: 29 M). Options: ``drop_path_rate`` (0.1),
    ``layer_scale`` (1e-6).
    """
    return _convnext((3, 3, 9, 3), (96, 192, 384, 768), 0.1, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2022, default_cfg=_IMAGENET_CFG)
def convnext_small(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                   **kwargs) -> ConvNeXt:
    """ConvNeXt-S (96-192-384-768, 3-3-27-3 blocks): the counterpart of Swin-S.

    Liu et al., "A ConvNet for the 2020s", CVPR 2022. 50,223,688 parameters at 1000 classes
    (torchvision's figure; paper: 50 M). ``drop_path_rate`` 0.4.
    """
    return _convnext((3, 3, 27, 3), (96, 192, 384, 768), 0.4, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2022, default_cfg=_IMAGENET_CFG)
def convnext_base(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                  **kwargs) -> ConvNeXt:
    """ConvNeXt-B (128-256-512-1024, 3-3-27-3 blocks): the counterpart of Swin-B.

    Liu et al., "A ConvNet for the 2020s", CVPR 2022. 88,591,464 parameters at 1000 classes
    (torchvision's figure; paper: 89 M). ``drop_path_rate`` 0.5.
    """
    return _convnext((3, 3, 27, 3), (128, 256, 512, 1024), 0.5, num_classes, in_chans, input_size, **kwargs)


@register_model(year=2022, default_cfg=_IMAGENET_CFG)
def convnext_large(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                   **kwargs) -> ConvNeXt:
    """ConvNeXt-L (192-384-768-1536, 3-3-27-3 blocks): the largest ImageNet-1k ConvNeXt.

    Liu et al., "A ConvNet for the 2020s", CVPR 2022. 197,767,336 parameters at 1000 classes
    (torchvision's figure; paper: 198 M). ``drop_path_rate`` 0.5.
    """
    return _convnext((3, 3, 27, 3), (192, 384, 768, 1536), 0.5, num_classes, in_chans, input_size, **kwargs)
