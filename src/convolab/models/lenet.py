"""LeNet-5: LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document recognition", 1998.

The paper feeds 32x32 images (MNIST's 28x28 digits centred in a 32x32 field), so that the map
reaching C5 is 5x5. Both builders keep that: for inputs smaller than 32 the first convolution is
zero-padded by ``ceil((32 - size) / 2)`` (2 for 28x28, as d2l does), which keeps the paper's layer
sizes and parameter count; larger inputs are not padded and the first FC layer grows with them.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from convolab.models._activations import act_layer, is_monotone
from convolab.models._base import ConvClassifier, check_feature_size
from convolab.models._registry import register_model

__all__ = ["LeNet5", "lenet5", "lenet5_classic"]


class LeNet5(ConvClassifier):
    """conv 6 5x5 -> pool -> conv 16 5x5 -> pool -> FC 120 -> FC 84 -> FC num_classes.

    ``classic=False``: ReLU and max-pooling (the modern form; pooling is applied before the ReLU,
    which gives identical values and gradients, see ``convolab.models.tutorial``).
    ``classic=True``: tanh and 2x2 average pooling, as in 1998. Two simplifications of the paper
    remain: C3 connects to all six S2 maps (the paper's connection table gives 1,516 instead of
    2,416 weights) and the output is a linear layer, not Euclidean RBF units.

    ``act`` (a ``convolab.models._activations`` name) replaces the variant's activation everywhere
    (``None``: ReLU, or tanh when ``classic``). The modern form keeps its pool-first order only for a
    monotone activation; with SiLU or GELU, which are not, each activation comes before its pool.

    Parameters at 10 classes: 61,706 (conv1 156, conv2 2,416, fc1 48,120, fc2 10,164, fc3 850).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size: tuple[int, int] = (32, 32),
                 classic: bool = False, act: str | None = None):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        pad = tuple(max(0, math.ceil((32 - s) / 2)) for s in self.input_size)
        name = "lenet5_classic" if classic else "lenet5"
        h, w = check_feature_size(name, (self.input_size[0] + 2 * pad[0], self.input_size[1] + 2 * pad[1]), [
            ("conv1", dict(kernel_size=5)), ("pool1", dict(kernel_size=2, stride=2)),
            ("conv2", dict(kernel_size=5)), ("pool2", dict(kernel_size=2, stride=2)),
        ])
        act_name = act or ("tanh" if classic else "relu")
        make_act = act_layer(act_name)
        pool = nn.AvgPool2d if classic else nn.MaxPool2d
        conv1 = nn.Conv2d(in_chans, 6, kernel_size=5, padding=pad)   # (N, 6, 28, 28) at 32x32 (or 28x28 padded)
        conv2 = nn.Conv2d(6, 16, kernel_size=5)                     # (N, 16, 10, 10)
        act_first = classic or not is_monotone(act_name)
        if act_first:  # the 1998 order: squash, then subsample (and any order for a non-monotone activation)
            layers = [("conv1", conv1), ("act1", make_act()), ("pool1", pool(2)),
                      ("conv2", conv2), ("act2", make_act()), ("pool2", pool(2))]
        else:  # max-pool commutes with a monotone activation: pool first, a quarter of the activation work
            layers = [("conv1", conv1), ("pool1", pool(2)), ("act1", make_act()),
                      ("conv2", conv2), ("pool2", pool(2)), ("act2", make_act())]
        self.features = nn.Sequential(OrderedDict(layers))      # (N, 16, 5, 5) at 32x32
        self.classifier = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten(1)),                          # (N, 400)
            ("fc1", nn.Linear(16 * h * w, 120)),                 # the paper's C5
            ("act3", make_act()),
            ("fc2", nn.Linear(120, 84)),                         # F6
            ("act4", make_act()),
            ("fc3", nn.Linear(84, num_classes)),
        ]))
        last = "pool" if act_first else "act"
        self.feature_info = [
            dict(module=f"features.{last}1", num_chs=6, reduction=2),
            dict(module=f"features.{last}2", num_chs=16, reduction=4),
        ]


_LENET_CFG = dict(num_classes=10, in_chans=1, input_size=(28, 28))


@register_model(year=1998, default_cfg=_LENET_CFG)
def lenet5(*, num_classes: int = 10, in_chans: int = 1, input_size: tuple[int, int] | None = None, **kwargs) -> LeNet5:
    """LeNet-5 with ReLU and max-pooling, the form most tutorials train (LeCun et al., 1998)."""
    return LeNet5(num_classes, in_chans, input_size or (32, 32), classic=False, **kwargs)


@register_model(year=1998, default_cfg=_LENET_CFG)
def lenet5_classic(*, num_classes: int = 10, in_chans: int = 1, input_size: tuple[int, int] | None = None,
                   **kwargs) -> LeNet5:
    """LeNet-5 as published in 1998: tanh activations and average-pool subsampling."""
    return LeNet5(num_classes, in_chans, input_size or (32, 32), classic=True, **kwargs)
