"""fastcnn: a small BatchNorm CNN laid out for speed runs on 28x28 and 32x32 images.

The layout follows airbench (Jordan 2024), the network behind the fastest CIFAR-10 training runs: a
3x3 stem, then three blocks of

    conv 3x3 -> max-pool 2 -> BatchNorm -> ReLU -> conv 3x3 -> BatchNorm -> ReLU

whose first convolution widens the map and whose pooling halves it, then a global max-pool and one
linear layer. Few layers and wide ones keep a GPU busy (little launch overhead per image), and
pooling right after the first convolution of each block puts most of the work at the lower
resolution. The convolutions have no bias (BatchNorm's shift replaces it). Unlike airbench it uses
ReLU, a trainable 3x3 stem and no logit scaling, so it trains with the engine's usual recipes.

``fastcnn`` (32/64/128, about 0.3 M parameters, 17.8 M multiply-adds at 28x28) reaches about 94 % on
Fashion-MNIST in 12-15 epochs (README: Speed); ``fastcnn_wide`` doubles every width (four times the
compute).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from convolab.models._base import ConvClassifier, check_feature_size
from convolab.models._registry import register_model

__all__ = ["FastCNN", "fastcnn", "fastcnn_wide"]


def _block(in_chs: int, out_chs: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1, bias=False)),
        ("pool", nn.MaxPool2d(2)),
        ("bn1", nn.BatchNorm2d(out_chs)),
        ("relu1", nn.ReLU(inplace=True)),
        ("conv2", nn.Conv2d(out_chs, out_chs, kernel_size=3, padding=1, bias=False)),
        ("bn2", nn.BatchNorm2d(out_chs)),
        ("relu2", nn.ReLU(inplace=True)),
    ]))


class FastCNN(ConvClassifier):
    """stem conv 3x3 (``stem_chs``) -> BN -> ReLU -> three blocks (``widths``) -> global max-pool -> FC.

    Each block halves the map (floor), so an input needs at least 8x8 pixels; the map after the last
    block is ``H // 8`` by ``W // 8`` (3x3 at 28x28), and the head's global pool makes the classifier
    independent of the input size.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size: tuple[int, int] = (28, 28),
                 widths: Sequence[int] = (32, 64, 128), stem_chs: int = 24):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        positive = [isinstance(w, int) and w >= 1 for w in (*widths, stem_chs)]
        if len(widths) != 3 or not all(positive):
            raise ValueError(f"fastcnn takes three positive widths and a positive stem width; got {tuple(widths)} "
                             f"and {stem_chs}")
        check_feature_size("fastcnn", self.input_size, [
            ("stem", dict(kernel_size=3, padding=1)),
            *[(f"block{i}.pool", dict(kernel_size=2, stride=2)) for i in (1, 2, 3)],
        ])
        w1, w2, w3 = widths
        self.features = nn.Sequential(OrderedDict([
            ("stem", nn.Conv2d(in_chans, stem_chs, kernel_size=3, padding=1, bias=False)),  # (N, stem, H, W)
            ("stem_bn", nn.BatchNorm2d(stem_chs)),
            ("stem_relu", nn.ReLU(inplace=True)),
            ("block1", _block(stem_chs, w1)),                                                # (N, w1, H/2, W/2)
            ("block2", _block(w1, w2)),                                                      # (N, w2, H/4, W/4)
            ("block3", _block(w2, w3)),                                                      # (N, w3, H/8, W/8)
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("pool", nn.AdaptiveMaxPool2d(1)),
            ("flatten", nn.Flatten(1)),
            ("fc", nn.Linear(w3, num_classes)),
        ]))
        self.feature_info = [
            dict(module="features.stem_relu", num_chs=stem_chs, reduction=1),
            *[dict(module=f"features.block{i + 1}", num_chs=w, reduction=2 ** (i + 1)) for i, w in enumerate(widths)],
        ]


_CFG = dict(num_classes=10, in_chans=1, input_size=(28, 28))


@register_model(year=2024, default_cfg=_CFG)
def fastcnn(num_classes: int = 10, in_chans: int = 1, input_size: tuple[int, int] = (28, 28), **kwargs) -> FastCNN:
    """fastcnn: BatchNorm CNN for speed runs, airbench's block layout, widths 32/64/128 (Jordan 2024)."""
    return FastCNN(num_classes, in_chans, input_size, **kwargs)


@register_model(year=2024, default_cfg=_CFG)
def fastcnn_wide(num_classes: int = 10, in_chans: int = 1, input_size: tuple[int, int] = (28, 28),
                 **kwargs) -> FastCNN:
    """fastcnn_wide: fastcnn with every width doubled (stem 48, blocks 64/128/256), four times the compute."""
    kwargs.setdefault("widths", (64, 128, 256))
    kwargs.setdefault("stem_chs", 48)
    return FastCNN(num_classes, in_chans, input_size, **kwargs)
