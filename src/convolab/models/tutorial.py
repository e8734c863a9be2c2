"""The small CNNs the tutorials train first on MNIST-like data.

Both models apply max-pooling *before* the ReLU that the tutorials write after the convolution.
ReLU is monotone, so ``relu(maxpool(x)) == maxpool(relu(x))`` exactly, and the gradients are the
same too (the pooled argmax is the same element; where it is <= 0 both give zero). Pooling first
runs the ReLU and its backward on a quarter of the values, which is a measurable share of a
CPU training step for these small networks.

``act`` chooses the activation (``convolab.models._activations``: relu, leaky_relu, elu, sigmoid,
tanh, swish/silu, gelu). The monotone ones keep the pool-first order; SiLU and GELU are not
monotone, so with them each activation comes before its pool, as the tutorials write it. The
activation layers are named ``relu1`` ... for ReLU (the names the tutorials' code uses) and
``act1`` ... for the others.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from convolab.models._activations import act_layer, is_monotone
from convolab.models._base import ConvClassifier, check_feature_size
from convolab.models._registry import register_model

__all__ = ["TutorialCNN", "MnistCNN", "tutorial_cnn", "mnist_cnn"]

_TUTORIAL_CFG = dict(num_classes=10, in_chans=1, input_size=(28, 28))


def _act(i: int, act: str) -> tuple[str, nn.Module]:
    """The ``i``-th activation layer and its name (``relu{i}`` for ReLU, ``act{i}`` for the others)."""
    return (f"relu{i}" if act == "relu" else f"act{i}", act_layer(act)())


def _pool_and_act(pool_name: str, i: int, act: str) -> list[tuple[str, nn.Module]]:
    """A 2x2 max-pool and the ``i``-th activation: the pool first for a monotone activation (the same values
    for a quarter of the activation's work), the activation first for one that is not (SiLU, GELU)."""
    layers = [(pool_name, nn.MaxPool2d(2)), _act(i, act)]
    return layers if is_monotone(act) else layers[::-1]


class TutorialCNN(ConvClassifier):
    """conv 16 3x3 pad 1 -> ReLU -> max-pool 2 -> conv 32 3x3 pad 1 -> ReLU -> max-pool 2 -> FC 128 -> ReLU -> FC.

    The convolutions keep the size (padding 1) and each pool halves it, so the first fully
    connected layer sees ``32 * floor(H/4) * floor(W/4)`` features (1,568 at 28x28): the model
    adapts to any input of at least 4x4 through that count alone. ``act`` replaces every ReLU (the
    module docstring says where it goes).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size: tuple[int, int] = (28, 28),
                 act: str = "relu"):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        h, w = check_feature_size("tutorial_cnn", self.input_size, [
            ("conv1", dict(kernel_size=3, padding=1)), ("pool1", dict(kernel_size=2, stride=2)),
            ("conv2", dict(kernel_size=3, padding=1)), ("pool2", dict(kernel_size=2, stride=2)),
        ])
        stage1, stage2 = _pool_and_act("pool1", 1, act), _pool_and_act("pool2", 2, act)  # each pool halves H, W
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_chans, 16, kernel_size=3, padding=1)),  # (N, 16, H, W)
            *stage1,                                                        # (N, 16, H/2, W/2)
            ("conv2", nn.Conv2d(16, 32, kernel_size=3, padding=1)),         # (N, 32, H/2, W/2)
            *stage2,                                                        # (N, 32, H/4, W/4)
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten(1)),                                     # (N, 32*H/4*W/4)
            ("fc1", nn.Linear(32 * h * w, 128)),
            _act(3, act),
            ("fc2", nn.Linear(128, num_classes)),
        ]))
        self.feature_info = [
            dict(module=f"features.{stage1[-1][0]}", num_chs=16, reduction=2),
            dict(module=f"features.{stage2[-1][0]}", num_chs=32, reduction=4),
        ]


class MnistCNN(ConvClassifier):
    """conv 32 3x3 -> ReLU -> conv 64 3x3 -> ReLU -> max-pool 2 -> dropout -> FC 128 -> ReLU -> dropout -> FC.

    The classic Keras/PyTorch MNIST example network (1,199,882 parameters at 28x28 with 10 classes).
    The unpadded convolutions shrink the map by 4, the pool halves it: the first fully connected
    layer sees ``64 * floor((H-4)/2) * floor((W-4)/2)`` features, so any input of 6x6 or more works.
    ``act`` replaces every ReLU (the module docstring says where it goes).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size: tuple[int, int] = (28, 28),
                 drop_rate: float = 0.5, feature_drop_rate: float = 0.25, act: str = "relu"):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        h, w = check_feature_size("mnist_cnn", self.input_size, [
            ("conv1", dict(kernel_size=3)), ("conv2", dict(kernel_size=3)), ("pool", dict(kernel_size=2, stride=2)),
        ])
        act1, stage2 = _act(1, act), _pool_and_act("pool", 2, act)
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(in_chans, 32, kernel_size=3)),   # (N, 32, H-2, W-2)
            act1,
            ("conv2", nn.Conv2d(32, 64, kernel_size=3)),          # (N, 64, H-4, W-4)
            *stage2,                                              # (N, 64, (H-4)/2, (W-4)/2)
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("drop1", nn.Dropout(feature_drop_rate)),
            ("flatten", nn.Flatten(1)),
            ("fc1", nn.Linear(64 * h * w, 128)),
            _act(3, act),
            ("drop2", nn.Dropout(drop_rate)),
            ("fc2", nn.Linear(128, num_classes)),
        ]))
        self.feature_info = [
            dict(module=f"features.{act1[0]}", num_chs=32, reduction=1),
            dict(module=f"features.{stage2[-1][0]}", num_chs=64, reduction=2),
        ]


@register_model(year=2015, default_cfg=_TUTORIAL_CFG)
def tutorial_cnn(*, num_classes: int = 10, in_chans: int = 1, input_size: tuple[int, int] | None = None,
                 **kwargs) -> TutorialCNN:
    """Two conv-ReLU-pool blocks and two FC layers: the CNN the PyTorch/Keras tutorials train first."""
    return TutorialCNN(num_classes, in_chans, input_size or (28, 28), **kwargs)


@register_model(year=2015, default_cfg=_TUTORIAL_CFG)
def mnist_cnn(*, num_classes: int = 10, in_chans: int = 1, input_size: tuple[int, int] | None = None,
              **kwargs) -> MnistCNN:
    """The Keras/PyTorch MNIST example: two 3x3 convs, max-pool, dropout, FC 128 (about 1.2 M parameters)."""
    return MnistCNN(num_classes, in_chans, input_size or (28, 28), **kwargs)
