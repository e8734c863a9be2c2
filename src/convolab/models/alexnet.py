"""AlexNet: Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural Networks", 2012.

Two forms:

- ``alexnet``: torchvision's layout (the "one weird trick" widths 64/192/384/256/256, no local
  response normalisation, dropout before the first two FC layers). Submodule names are
  torchvision's, so ``torchvision.models.alexnet`` weights load unchanged.
- ``alexnet_lrn``: the 2012 paper's network (96/256/384/384/256 filters, local response
  normalisation after conv1 and conv2, the two-GPU grouping of conv2, conv4 and conv5).

Small inputs. The native stem (11x11 stride 4, then three 3x3 stride-2 max-pools) needs at least
63x63 pixels. Below that both forms switch to a small-image layout decided from ``input_size``
alone: conv1 becomes 3x3 stride 1 padding 1 (same width), and each max-pool is kept only when its
window fits the map that reaches it (:func:`fitting_pools`). Every other layer is unchanged, so a
small model differs from the native one only in conv1's kernel and in the dropped pools.

``act`` (a ``convolab.models._activations`` name, default ReLU) replaces every ReLU of both forms; the
modules keep their names (``relu1`` ... in ``alexnet_lrn``). The paper's section 3.1 argues for ReLU
against tanh (a four-layer network reached 25 % training error on CIFAR-10 six times sooner):
``--act tanh`` is the other side of that comparison.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from convolab.models._activations import act_layer
from convolab.models._base import PooledClassifier, check_drop_rate, cumulative_strides, fits, fitting_pools
from convolab.models._registry import register_model

__all__ = ["AlexNet", "AlexNetLRN", "alexnet", "alexnet_lrn"]

_IMAGENET_CFG = dict(num_classes=1000, in_chans=3, input_size=(224, 224))


# -- AlexNet ------------------------------------------------------------------------------------------
# The native feature stack's windows (conv1 11/4 pad 2, three 3/2 pools; the other convs keep the size).
_NATIVE_STAGES = [
    ("conv1", dict(kernel_size=11, stride=4, padding=2)), ("pool1", dict(kernel_size=3, stride=2)),
    ("pool2", dict(kernel_size=3, stride=2)), ("pool5", dict(kernel_size=3, stride=2)),
]
_SMALLEST_NATIVE = next(s for s in range(1, 1024) if fits((s, s), _NATIVE_STAGES))  # 63, torchvision's min_size


def _stem_plan(input_size: tuple[int, int]) -> tuple[dict, list[bool], int]:
    """conv1's arguments, which of the three pools to keep, and conv1's stride, for this input size."""
    if fits(input_size, _NATIVE_STAGES):
        return dict(kernel_size=11, stride=4, padding=2), [True, True, True], 4
    return dict(kernel_size=3, stride=1, padding=1), fitting_pools(input_size, 3, kernel_size=3, stride=2), 1


def _pool(keep: bool) -> nn.Module:
    # Overlapping pooling (window 3, stride 2): the paper reports 0.3-0.4 % lower top-1 error than 2/2.
    return nn.MaxPool2d(kernel_size=3, stride=2) if keep else nn.Identity()


class AlexNet(PooledClassifier):
    """torchvision's AlexNet: five convolutions (64/192/384/256/256), three max-pools, three FC layers.

    Layout at 224x224 (sizes for that input), module names torchvision's::

        features.0  conv 11x11/4 pad 2   (N, 64, 55, 55)     features.2  max-pool 3/2  (N, 64, 27, 27)
        features.3  conv 5x5 pad 2       (N, 192, 27, 27)    features.5  max-pool 3/2  (N, 192, 13, 13)
        features.6/8/10  conv 3x3 pad 1  384, 256, 256       features.12 max-pool 3/2  (N, 256, 6, 6)
        avgpool  adaptive 6x6; classifier: dropout, FC 4096, ReLU, dropout, FC 4096, ReLU, FC num_classes

    61,100,840 parameters at 1000 classes, 3 channels (torchvision's figure). The native layout is
    used for every input of at least 63x63. Smaller inputs get a 3x3 stride-1 conv1 (padding 1) and
    keep a max-pool only when its 3x3 window fits the map (a dropped pool is an ``nn.Identity``, so the
    indices stay torchvision's): 32x32 -> maps 32, 15, 7, 3; 28x28 -> 28, 13, 6, 2; 8x8 -> 8, 3, 1, 1.
    ``avgpool`` then brings any map to 6x6 (replicating a smaller one), so the FC layers never change.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] = (224, 224),
                 drop_rate: float = 0.5, act: str = "relu"):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        drop_rate = check_drop_rate(drop_rate)
        make_act = act_layer(act)
        stem, keep, stem_stride = _stem_plan(self.input_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 64, **stem),                  # 0: (N, 64, 55, 55) at 224
            make_act(),
            _pool(keep[0]),                                   # 2: (N, 64, 27, 27)
            nn.Conv2d(64, 192, kernel_size=5, padding=2),     # 3: (N, 192, 27, 27)
            make_act(),
            _pool(keep[1]),                                   # 5: (N, 192, 13, 13)
            nn.Conv2d(192, 384, kernel_size=3, padding=1),    # 6: (N, 384, 13, 13)
            make_act(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),    # 8: (N, 256, 13, 13)
            make_act(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),    # 10: (N, 256, 13, 13)
            make_act(),
            _pool(keep[2]),                                   # 12: (N, 256, 6, 6)
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))           # (N, 256, 6, 6) whatever the map size
        self.classifier = nn.Sequential(
            nn.Dropout(drop_rate),
            nn.Linear(256 * 6 * 6, 4096),
            make_act(),
            nn.Dropout(drop_rate),
            nn.Linear(4096, 4096),
            make_act(),
            nn.Linear(4096, num_classes),
        )
        red = cumulative_strides(stem_stride, keep, 2)
        self.feature_info = [  # the map before each max-pool
            dict(module="features.1", num_chs=64, reduction=red[0]),
            dict(module="features.4", num_chs=192, reduction=red[1]),
            dict(module="features.11", num_chs=256, reduction=red[2]),
        ]


class AlexNetLRN(PooledClassifier):
    """The 2012 paper's AlexNet: 96/256/384/384/256 filters, LRN after conv1 and conv2, overlapping pooling.

    Per the paper (section 3): conv -> ReLU on every layer; local response normalisation after the
    first two ReLUs, each followed by a 3/2 max-pool; a third max-pool after conv5; FC 4096, 4096,
    1000 with dropout 0.5 on the outputs of the two hidden FC layers. ``groups=2`` (default) keeps the
    two-GPU split: conv2, conv4 and conv5 see only the half of the previous layer's maps on their
    GPU (kernels 5x5x48, 3x3x192, 3x3x192); conv3 and the FC layers see everything. ``groups=1`` gives
    the single-tower network.

    Parameters at 1000 classes, 3 channels, derived layer by layer (weights + biases)::

        conv1   3*96*11*11 + 96      =     34,944     conv2  48*256*5*5 + 256  =    307,456
        conv3   256*384*3*3 + 384    =    885,120     conv4  192*384*3*3 + 384 =    663,936
        conv5   192*256*3*3 + 256    =    442,624     fc6    9216*4096 + 4096  = 37,752,832
        fc7     4096*4096 + 4096     = 16,781,312     fc8    4096*1000 + 1000  =  4,097,000
        total                                                                  = 60,965,224

    The paper says "60 million parameters"; 60,965,224 is the exact figure (1.6 % above the round
    number; Caffe's reference AlexNet has the same count). With ``groups=1``: 62,378,344.

    Choices where the paper is silent or inconsistent:

    - conv1 has padding 2, so a 224x224 input gives the paper's 55x55 map (the paper's 224 does not
      give 55 unpadded; Caffe uses 227). Sizes at 224: 55, 27, 27, 13, 13, 6.
    - LRN is ``nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2)``. PyTorch (like Caffe) divides
      ``alpha`` by the window size: ``b_i = a_i / (k + alpha / 5 * sum_j a_j^2) ** beta``; the paper's
      formula has no ``/ 5``, so this is Caffe's AlexNet normalisation, five times weaker than the
      paper's equation read literally.
    - ``avgpool`` (adaptive, 6x6) sits before fc6 as in torchvision: at 224 the map is already 6x6 and
      it is the identity; other input sizes keep the paper's FC layers.
    - PyTorch's default initialisation, not the paper's N(0, 0.01) with biases 1 (which stalls
      training without the paper's schedule).

    Small inputs (below 63x63): conv1 becomes 3x3 stride 1 padding 1 (still 96 filters) and a max-pool
    is kept only when its 3x3 window fits the map, as in :class:`AlexNet`.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] = (224, 224),
                 drop_rate: float = 0.5, groups: int = 2, act: str = "relu"):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        drop_rate = check_drop_rate(drop_rate)
        make_act = act_layer(act)
        if not isinstance(groups, int) or groups < 1 or any(c % groups for c in (96, 256, 384)):
            raise ValueError(f"groups must be a positive integer dividing 96, 256 and 384 (1 or 2 in the paper); "
                             f"got {groups!r}")
        stem, keep, stem_stride = _stem_plan(self.input_size)

        def lrn() -> nn.Module:
            return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)

        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_chans, 96, **stem)),                             # (N, 96, 55, 55) at 224
            ("relu1", make_act()),
            ("norm1", lrn()),
            ("pool1", _pool(keep[0])),                                              # (N, 96, 27, 27)
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=groups)),  # (N, 256, 27, 27)
            ("relu2", make_act()),
            ("norm2", lrn()),
            ("pool2", _pool(keep[1])),                                              # (N, 256, 13, 13)
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),               # (N, 384, 13, 13)
            ("relu3", make_act()),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=groups)),  # (N, 384, 13, 13)
            ("relu4", make_act()),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=groups)),  # (N, 256, 13, 13)
            ("relu5", make_act()),
            ("pool5", _pool(keep[2])),                                              # (N, 256, 6, 6)
        ]))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * 6 * 6, 4096)),
            ("relu6", make_act()),
            ("drop6", nn.Dropout(drop_rate)),  # "dropout in the first two fully-connected layers": on their outputs
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", make_act()),
            ("drop7", nn.Dropout(drop_rate)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))
        red = cumulative_strides(stem_stride, keep, 2)
        self.feature_info = [  # the map before each max-pool
            dict(module="features.norm1", num_chs=96, reduction=red[0]),
            dict(module="features.norm2", num_chs=256, reduction=red[1]),
            dict(module="features.relu5", num_chs=256, reduction=red[2]),
        ]


@register_model(year=2012, default_cfg=_IMAGENET_CFG)
def alexnet(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
            **kwargs) -> AlexNet:
    """AlexNet as in torchvision (Krizhevsky et al., 2012; 61,100,840 parameters), torchvision's weights load.

    Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural Networks",
    NeurIPS 2012, in the single-tower form of Krizhevsky, "One weird trick for parallelizing
    convolutional neural networks", 2014, as torchvision builds it. Inputs below 63x63 get a 3x3
    stride-1 stem (see :class:`AlexNet`).
    """
    return AlexNet(num_classes, in_chans, input_size or (224, 224), **kwargs)


@register_model(year=2012, default_cfg=_IMAGENET_CFG)
def alexnet_lrn(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None,
                **kwargs) -> AlexNetLRN:
    """AlexNet as published in 2012: 96/256/384/384/256 filters, LRN, two-GPU grouping (60,965,224 parameters).

    Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural Networks",
    NeurIPS 2012 ("60 million parameters"; the exact count is derived in :class:`AlexNetLRN`).
    ``groups=1`` removes the two-GPU split (62,378,344 parameters).
    """
    return AlexNetLRN(num_classes, in_chans, input_size or (224, 224), **kwargs)
