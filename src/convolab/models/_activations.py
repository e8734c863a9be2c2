"""The activations a model family can be built with (``create_model(..., act="gelu")``, ``--act``).

A family takes the choice when its builder accepts ``act`` (a name below); ``create_model`` refuses it
for the others with one line naming the families that do. The names are torch's layers, used as they
are (``convolab.layers.activation`` has ``Swish(beta)`` for other slopes):

=============  ===========================================  =========
name           layer                                        monotone
=============  ===========================================  =========
relu           ``nn.ReLU``: max(0, x)                       yes
leaky_relu     ``nn.LeakyReLU(0.01)``: max(0.01 x, x)       yes
elu            ``nn.ELU(1.0)``: x, or exp(x) - 1 below 0    yes
sigmoid        ``nn.Sigmoid``: 1 / (1 + exp(-x))            yes
tanh           ``nn.Tanh``                                  yes
swish, silu    ``nn.SiLU``: x * sigmoid(x) (Swish, beta 1)  no
gelu           ``nn.GELU``: x * Phi(x) (erf form)           no
=============  ===========================================  =========

Monotone matters to the families that max-pool *before* the activation (``tutorial_cnn``, ``lenet5``):
``f(max(a, b)) == max(f(a), f(b))`` only for a non-decreasing ``f``. SiLU and GELU dip below zero
(SiLU's minimum is -0.278 at x = -1.278), so with them those families apply the activation first.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["ACTIVATIONS", "act_layer", "is_monotone", "check_act"]

# name -> a function building a fresh layer. ReLU is in place as the families always had it (it follows
# a convolution or a linear layer whose output nothing else reads); the others are not, which is always safe.
_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": lambda: nn.ELU(1.0),
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}
ACTIVATIONS: tuple[str, ...] = tuple(_LAYERS)
_NOT_MONOTONE = frozenset({"swish", "silu", "gelu"})


def check_act(act: str) -> str:
    """``act`` if it names an activation, else ``ValueError`` listing the names."""
    if act not in _LAYERS:
        raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")
    return act


def act_layer(act: str) -> Callable[[], nn.Module]:
    """The function that builds a fresh ``act`` layer (``act_layer("gelu")()`` is an ``nn.GELU()``)."""
    return _LAYERS[check_act(act)]


def is_monotone(act: str) -> bool:
    """Whether ``act`` is non-decreasing, so that it commutes with max-pooling."""
    return check_act(act) not in _NOT_MONOTONE
