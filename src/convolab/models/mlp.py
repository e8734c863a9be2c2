"""The baselines the tutorials argue against: a single-layer perceptron and a multilayer perceptron.

Both flatten the image and never look at its spatial structure: every pixel has its own weight into
every hidden unit, so the first layer alone has ``C * H * W * width`` weights (401,408 for a 28x28
image into 512 units, where ``tutorial_cnn``'s two convolutions have 4,752). ``convolab summary mlp
tutorial_cnn`` prints the contrast.

The classifier contract, for a network with no feature extractor: ``features`` is the identity
(the image is the only map an MLP has, so ``forward_features`` returns it unchanged and Grad-CAM or
feature maps at ``features`` show the input), ``classifier`` holds the whole network (flatten ->
[linear -> activation -> dropout] x hidden layers -> linear), and ``forward_head(x, pre_logits=True)``
gives the last hidden layer's output (the flattened image for the perceptron).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from convolab.models._activations import act_layer
from convolab.models._base import ConvClassifier, check_drop_rate
from convolab.models._registry import register_model

__all__ = ["MLP", "mlp", "perceptron"]

_MNIST_CFG = dict(num_classes=10, in_chans=1, input_size=(28, 28))


# nn.Sequential first: its forward (features, then classifier) is the ConvClassifier forward, and being a
# Sequential of Identity, Flatten, Linear, activations and Dropout is what lets convolab.glass convert it
# layer by layer (--engine numpy). The contract's other methods come from ConvClassifier.
class MLP(nn.Sequential, ConvClassifier):
    """flatten -> [Linear(width) -> act -> Dropout(drop_rate)] for each of ``widths`` -> Linear(num_classes).

    ``widths=()`` is the single-layer perceptron: one linear map from the ``C*H*W`` pixels to the class
    scores (a softmax classifier once the cross-entropy loss applies the softmax). Parameters:
    ``sum(fan_in * width + width)`` over the layers, e.g. 784*512+512 + 512*256+256 + 256*10+10 =
    535,818 for ``mlp`` at 28x28x1 and 10 classes, 784*10+10 = 7,850 for ``perceptron``.

    Any input size works: the first layer is sized from ``in_chans * H * W``.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, input_size: tuple[int, int] = (28, 28),
                 widths: Sequence[int] = (512, 256), drop_rate: float = 0.2, act: str = "relu"):
        widths = tuple(widths) if isinstance(widths, (list, tuple)) else widths
        if not isinstance(widths, tuple) or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1
                                                    for w in widths):
            raise ValueError(f"widths must be a list of positive integers (hidden layer sizes, e.g. [512, 256]); "
                             f"got {widths!r}")
        drop_rate = check_drop_rate(drop_rate)
        make_act = act_layer(act)
        in_features = in_chans * input_size[0] * input_size[1]
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten(1))]   # (N, C*H*W)
        for i, width in enumerate(widths, 1):
            layers += [(f"fc{i}", nn.Linear(in_features, width)),            # (N, width)
                       (f"act{i}", make_act()),
                       (f"drop{i}", nn.Dropout(drop_rate))]
            in_features = width
        layers.append((f"fc{len(widths) + 1}", nn.Linear(in_features, num_classes)))  # (N, num_classes)
        super().__init__(OrderedDict([("features", nn.Identity()), ("classifier", nn.Sequential(OrderedDict(layers)))]))
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        self.widths, self.drop_rate, self.act = widths, drop_rate, act
        self.feature_info = [dict(module="features", num_chs=in_chans, reduction=1)]


@register_model(year=1986, default_cfg=_MNIST_CFG)
def mlp(*, num_classes: int = 10, in_chans: int = 1, input_size: tuple[int, int] | None = None, **kwargs) -> MLP:
    """Multilayer perceptron: flatten -> FC 512 -> FC 256 -> FC, ReLU and dropout 0.2 (Rumelhart et al., 1986).

    ``widths`` sets the hidden layers (``--model-arg widths=[1024]``), ``drop_rate`` and ``act`` the
    dropout and activation after each. 535,818 parameters at 28x28x1 with 10 classes.
    """
    return MLP(num_classes, in_chans, input_size or (28, 28), **kwargs)


@register_model(year=1958, default_cfg=_MNIST_CFG)
def perceptron(*, num_classes: int = 10, in_chans: int = 1, input_size: tuple[int, int] | None = None) -> MLP:
    """Single-layer perceptron: flatten -> FC num_classes, a linear softmax classifier (Rosenblatt, 1958).

    7,850 parameters at 28x28x1 with 10 classes. Trained with softmax cross-entropy rather than
    Rosenblatt's threshold rule, it is multinomial logistic regression.
    """
    return MLP(num_classes, in_chans, input_size or (28, 28), widths=())
