"""The classification-model surface every convolab model shares (timm's contract).

A model built on :class:`ConvClassifier` has a ``features`` module (image -> unpooled feature map)
and a ``classifier`` ``nn.Sequential`` whose last layer is the ``nn.Linear`` that produces logits.
Tools around the models (trainer, analysis, explanation) use only the methods below.
"""

from __future__ import annotations

import torch
from torch import nn

from convolab.analysis.formulas import conv_output_size

__all__ = ["ConvClassifier", "check_feature_size"]


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
