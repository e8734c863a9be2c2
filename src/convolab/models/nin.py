"""Network in Network: Lin, Chen & Yan, "Network In Network", ICLR 2014.

Each "mlpconv" block is a convolution followed by two 1x1 convolutions (a small MLP slid over the
image), each with a ReLU; there are no fully connected layers: the last block produces one map per
class and global average pooling turns the maps into class scores. The ImageNet layout is the one
of d2l.ai (Zhang, Lipton, Li & Smola, "Dive into Deep Learning", section 8.3 "Network in Network").
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from convolab.layers import ConvNormAct
from convolab.models._base import ConvClassifier, check_drop_rate, cumulative_strides, fits, fitting_pools
from convolab.models._registry import register_model

__all__ = ["MlpConv", "NiN", "nin"]

_IMAGENET_CFG = dict(num_classes=1000, in_chans=3, input_size=(224, 224))

# The native windows: block1's 11x11/4 unpadded conv and the three 3/2 max-pools (the others keep the size).
_NATIVE_STAGES = [
    ("block1", dict(kernel_size=11, stride=4)), ("pool1", dict(kernel_size=3, stride=2)),
    ("pool2", dict(kernel_size=3, stride=2)), ("pool3", dict(kernel_size=3, stride=2)),
]


class MlpConv(nn.Sequential):
    """conv kxk -> ReLU, then ``num_1x1`` times (1x1 conv -> ReLU): the paper's mlpconv layer.

    Each unit is a ``ConvNormAct`` without normalisation (conv index 0, ReLU index 1). The 1x1
    convolutions are a per-pixel fully connected layer across channels (the "micro network").
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 num_1x1: int = 2):
        units = [ConvNormAct(in_channels, out_channels, kernel_size, stride, padding, norm_layer=None)]
        units += [ConvNormAct(out_channels, out_channels, 1, norm_layer=None) for _ in range(num_1x1)]
        super().__init__(*units)


class NiN(ConvClassifier):
    """Four mlpconv blocks (96 11x11/4, 256 5x5, 384 3x3, num_classes 3x3), 3/2 max-pools, global average pooling.

    d2l's layout at 224x224 (sizes for that input)::

        block1  conv 11x11/4 + 1x1 + 1x1, 96        (N, 96, 54, 54)    pool1 3/2 -> 26
        block2  conv 5x5 pad 2 + 1x1 + 1x1, 256     (N, 256, 26, 26)   pool2 3/2 -> 12
        block3  conv 3x3 pad 1 + 1x1 + 1x1, 384     (N, 384, 12, 12)   pool3 3/2 -> 5, dropout
        block4  conv 3x3 pad 1 + 1x1, num_classes   (N, num_classes, 5, 5)
        classifier  global average pool -> (N, num_classes) -> fc: the block's last 1x1 conv, as nn.Linear

    The head. In the paper the last mlpconv block ends in a 1x1 convolution to ``num_classes`` maps
    that global average pooling (GAP) turns into scores. Here that last 1x1 convolution is applied
    after GAP as ``classifier.fc``, an ``nn.Linear(num_classes, num_classes)`` with the same weights:
    a 1x1 convolution is the same affine map ``W x + b`` at every pixel, and averaging commutes with
    an affine map, so ``GAP(W x + b) = W GAP(x) + b`` exactly (up to float rounding) and the
    parameter count is the same. This gives the model the usual ``get_classifier()`` Linear. It
    requires that no ReLU follows the final 1x1 convolution; d2l puts one there (its scores can't
    go negative), this model does not. The other two convolutions of block 4 keep their ReLUs, and
    their width stays ``num_classes`` as in d2l (``reset_classifier`` replaces only ``fc``).

    Parameters at 1000 classes, 3 channels (derived, weights + biases; no torchvision reference)::

        block1  3*96*11*11 + 96 + 2 * (96*96 + 96)            =    53,568
        block2  96*256*5*5 + 256 + 2 * (256*256 + 256)        =   746,240
        block3  256*384*3*3 + 384 + 2 * (384*384 + 384)       = 1,180,800
        block4  384*1000*3*3 + 1000 + (1000*1000 + 1000)      = 4,458,000
        fc      1000*1000 + 1000                              = 1,001,000
        total                                                 = 7,439,608

    Small inputs: the native layout needs at least 67x67. Below that block1's conv becomes 3x3
    stride 1 padding 1 (still 96 filters) and a max-pool is kept only when its 3x3 window fits the
    map that reaches it (otherwise ``nn.Identity``): 32x32 -> maps 32, 15, 7, 3; 28x28 -> 28, 13, 6, 2;
    8x8 -> 8, 3, 1, 1. GAP makes the head independent of the map size.

    Initialisation: He (Kaiming) normal, fan_out, zero biases (d2l uses Xavier; the paper does not say).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] = (224, 224),
                 drop_rate: float = 0.5):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        drop_rate = check_drop_rate(drop_rate)
        if fits(self.input_size, _NATIVE_STAGES):
            stem, keep, stem_stride = dict(kernel_size=11, stride=4, padding=0), [True] * 3, 4
        else:
            stem, keep, stem_stride = dict(kernel_size=3, stride=1, padding=1), fitting_pools(
                self.input_size, 3, kernel_size=3, stride=2), 1

        def pool(k: bool) -> nn.Module:
            return nn.MaxPool2d(kernel_size=3, stride=2) if k else nn.Identity()

        self.features = nn.Sequential(OrderedDict([
            ("block1", MlpConv(in_chans, 96, **stem)),                                # (N, 96, 54, 54) at 224
            ("pool1", pool(keep[0])),                                                 # (N, 96, 26, 26)
            ("block2", MlpConv(96, 256, kernel_size=5, padding=2)),                   # (N, 256, 26, 26)
            ("pool2", pool(keep[1])),                                                 # (N, 256, 12, 12)
            ("block3", MlpConv(256, 384, kernel_size=3, padding=1)),                  # (N, 384, 12, 12)
            ("pool3", pool(keep[2])),                                                 # (N, 384, 5, 5)
            ("drop", nn.Dropout(drop_rate)),                                          # d2l's one dropout
            ("block4", MlpConv(384, num_classes, kernel_size=3, padding=1, num_1x1=1)),  # (N, num_classes, 5, 5)
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("global_pool", nn.AdaptiveAvgPool2d(1)),                                 # (N, num_classes, 1, 1)
            ("flatten", nn.Flatten(1)),                                               # (N, num_classes)
            ("fc", nn.Linear(num_classes, num_classes)),                              # block4's last 1x1 conv
        ]))
        red = cumulative_strides(stem_stride, keep, 2)
        self.feature_info = [
            dict(module=f"features.block{i + 1}", num_chs=c, reduction=r)
            for i, (c, r) in enumerate(zip((96, 256, 384, num_classes), red))
        ]
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation (fan_out, as torchvision's VGG), zero biases; ``fc`` like the 1x1 conv it stands for.
        # With PyTorch's default, the activations of this deep normalisation-free ReLU stack are dominated
        # by the biases, and block 4 (only num_classes channels wide) can go dead for every input.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)


@register_model(year=2014, default_cfg=_IMAGENET_CFG)
def nin(*, num_classes: int = 1000, in_chans: int = 3, input_size: tuple[int, int] | None = None, **kwargs) -> NiN:
    """Network in Network: mlpconv blocks (conv + two 1x1 convs), global average pooling head (Lin et al., 2014).

    Lin, Chen & Yan, "Network In Network", ICLR 2014, in the ImageNet layout of d2l.ai ("Dive into
    Deep Learning", section 8.3): 7,439,608 parameters at 1000 classes (derived in :class:`NiN`).
    """
    return NiN(num_classes, in_chans, input_size or (224, 224), **kwargs)
