"""The classification-model surface every convolab model shares (timm's contract), and the helpers
the families share to check arguments and fit their layouts to small inputs.

A model built on :class:`ConvClassifier` has a ``features`` module (image -> unpooled feature map)
and a ``classifier`` ``nn.Sequential`` whose last layer is the ``nn.Linear`` that produces logits.
:class:`PooledClassifier` puts an adaptive pool and a flatten in front of that classifier.
Tools around the models (trainer, analysis, explanation) use only the methods below.

The contract by input kind (``register_model(input_kind=...)``):

- ``"image"``: (N, C, H, W) -> logits (N, num_classes); ``forward_features`` gives an unpooled
  (N, C', H', W') map; ``get_classifier()`` is the final ``nn.Linear``.
- ``"clip"``: the same on video clips (N, C, T, H, W); ``forward_features`` gives (N, C', T', H', W');
  ``input_size`` is (T, H, W); ``feature_info``'s ``reduction`` is the spatial stride (H and W) and
  ``temporal_reduction`` the stride along T.
- ``"segmentation"`` (:class:`ConvSegmenter`): (N, C, H, W) -> per-pixel logits (N, num_classes, H, W)
  at the input's resolution; ``forward_head`` gives logits at the feature map's resolution and
  ``forward`` resizes them (bilinear) to the input's where they differ; ``get_classifier()`` is the
  final 1x1 ``nn.Conv2d``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from convolab.models._sizes import conv_output_size

__all__ = ["ConvClassifier", "PooledClassifier", "ConvSegmenter", "init_vgg_style", "check_drop_rate",
           "check_feature_size", "fits",
           "fitting_pools", "cumulative_strides", "adapt_strides", "feature_info_from_strides"]


class ConvClassifier(nn.Module):
    """Base for ``features`` + ``classifier`` models.

    Subclasses set ``self.features``, ``self.classifier`` (ending in ``nn.Linear``), ``self.num_classes``,
    ``self.in_chans``, ``self.input_size`` (H, W) and ``self.feature_info``: a list of dicts with
    ``module`` (dotted name), ``num_chs`` and ``reduction`` (the cumulative stride up to that module,
    timm's meaning: unpadded convolutions make the map a few pixels smaller than input / reduction).
    """

    features: nn.Module
    classifier: nn.Sequential
    num_classes: int
    in_chans: int
    input_size: tuple[int, int]
    feature_info: list[dict]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch (N, C, H, W) -> last feature map (N, C', H', W'), before any pooling or flattening."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits (N, num_classes), or the classifier's input features when ``pre_logits``."""
        *hidden, fc = self.classifier
        for layer in hidden:
            x = layer(x)
        return x if pre_logits else fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final layer that produces the logits."""
        return self.classifier[-1]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer with a freshly initialised one of ``num_classes`` outputs (0: identity)."""
        in_features = self.classifier[-1].in_features
        self.classifier[-1] = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes


class PooledClassifier(ConvClassifier):
    """A :class:`ConvClassifier` whose head starts with ``self.avgpool`` (adaptive) and a flatten (torchvision's
    AlexNet and VGG). The adaptive pool makes the classifier's input size independent of the image size."""

    avgpool: nn.Module

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (N, C * 6 * 6) for AlexNet, (N, C * 7 * 7) for VGG
        return super().forward_head(x, pre_logits)


class ConvSegmenter(ConvClassifier):
    """The per-pixel form of :class:`ConvClassifier`: ``classifier`` ends in the 1x1 ``nn.Conv2d`` that
    gives the class scores, and ``forward`` returns (N, num_classes, H, W) at the input's resolution.

    Subclasses write ``forward_features`` (image -> the map the classifier reads). ``forward_head``
    runs ``classifier`` (its earlier layers are the "pre-logits" head, as for the image models).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.forward_head(self.forward_features(x))    # (N, num_classes, H', W')
        if logits.shape[-2:] != x.shape[-2:]:  # a strided backbone (FCN: H' = H / 8): back to the input's size
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final 1x1 convolution with a freshly initialised one of ``num_classes`` outputs (0: identity)."""
        in_channels = self.classifier[-1].in_channels
        self.classifier[-1] = nn.Conv2d(in_channels, num_classes, kernel_size=1) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes


def init_vgg_style(model: nn.Module) -> None:
    """torchvision's initialisation of VGG and of its video ResNets: He et al.'s normal (fan_out, ReLU
    gain) for every convolution, norm layers at identity, N(0, 0.01) for the linear layers, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


# -- argument checks and small-input layouts shared by the families ------------------------------
def check_drop_rate(drop_rate: float, name: str = "drop_rate") -> float:
    """Raise ``ValueError`` unless ``0 <= drop_rate < 1``; return it as a float."""
    if not 0.0 <= float(drop_rate) < 1.0:
        raise ValueError(f"{name} must be in [0, 1); got {drop_rate!r}")
    return float(drop_rate)


def check_feature_size(model_name: str, input_size: tuple[int, int], stages: list[tuple[str, dict]]) -> tuple[int, int]:
    """Follow (H, W) through a list of ``(layer_name, window)`` stages; raise a clear error where it collapses.

    ``window`` holds ``conv_output_size`` arguments (kernel_size, stride, padding, ...). Returns the
    final (H, W). The error names the layer and the smallest square input that works.
    """
    def run(size: tuple[int, int]) -> tuple[tuple[int, int], str | None]:
        h, w = size
        for name, win in stages:
            h, w = conv_output_size(h, **win), conv_output_size(w, **win)
            if h < 1 or w < 1:
                return (h, w), name
        return (h, w), None

    out, failed_at = run(input_size)
    if failed_at is None:
        return out
    smallest = next(s for s in range(1, 4096) if run((s, s))[1] is None)
    raise ValueError(
        f"{model_name}: a {input_size[0]}x{input_size[1]} input is too small; the feature map collapses "
        f"at {failed_at}. The smallest input that works is {smallest}x{smallest}."
    )


def fits(input_size: tuple[int, int], stages: list[tuple[str, dict]]) -> bool:
    """Whether no map collapses when ``input_size`` goes through ``stages`` (``check_feature_size``'s format)."""
    try:
        check_feature_size("", input_size, stages)
    except ValueError:
        return False
    return True


def fitting_pools(input_size: tuple[int, int], num_pools: int, kernel_size: int, stride: int) -> list[bool]:
    """Which max-pools to keep in a chain of size-preserving convolutions separated by ``num_pools`` pools.

    The rule: a pool is kept when its window fits the map that reaches it (the smaller side is at
    least ``kernel_size``, so its output is at least 1x1); otherwise it is dropped and the map goes
    on at its size. Once one pool is dropped, all later ones are too.
    """
    side, keep = min(input_size), []
    for _ in range(num_pools):
        keep.append(side >= kernel_size)
        if keep[-1]:
            side = conv_output_size(side, kernel_size, stride)
    return keep


def cumulative_strides(first: int, keep: list[bool], stride: int) -> list[int]:
    """Cumulative stride before each pool and after the last: ``first``, then x ``stride`` per kept pool."""
    out = [first]
    for k in keep:
        out.append(out[-1] * (stride if k else 1))
    return out


def adapt_strides(strides: Sequence[int], input_size: tuple[int, int]) -> list[int]:
    """Per-layer strides for an input of ``input_size``: early stride-2 layers become stride 1 for small inputs.

    ``strides`` lists the native stride of each layer in order (1 or 2), for "same"-padded layers
    (a map of side n leaves a stride-r layer with side ceil(n / r)). While the total stride is above
    1 and the last map ``ceil(min(H, W) / total)`` would be smaller than 4, the earliest remaining
    stride-2 layer is set to 1. At 224 (anything above 3 * native total) the strides are unchanged.
    """
    strides = list(strides)
    total = math.prod(strides)
    side = min(input_size)
    for i, s in enumerate(strides):
        if total == 1 or -(-side // total) >= 4:  # ceil(side / total): the last map's side
            break
        if s > 1:
            strides[i] = 1
            total //= s
    return strides


def feature_info_from_strides(layers: Sequence[tuple[str, int, int]]) -> list[dict]:
    """``feature_info`` from ``(module, out_channels, stride)`` triples in forward order.

    One entry per resolution: the last module before the next downsampling (and the last module).
    ``reduction`` is the cumulative stride at that module.
    """
    info, reduction = [], 1
    for i, (name, chs, stride) in enumerate(layers):
        reduction *= stride
        if i == len(layers) - 1 or layers[i + 1][2] > 1:
            info.append(dict(module=name, num_chs=chs, reduction=reduction))
    return info
