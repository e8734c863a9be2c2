"""Layers by name: the one place explanation tools turn a user's layer name into a module.

Names are the model's own ``named_modules()`` names (``features.conv1``, ``layer4.1.conv2``). The
default layer is the last entry of the model's ``feature_info`` (the deepest unpooled feature map),
so no tool needs per-model code.
"""

from __future__ import annotations

from torch import nn

from convolab.errors import UnknownNameError

__all__ = ["resolve_layer", "conv_layers", "feature_layers", "first_conv"]

_MAX_LISTED = 24  # names listed in an error before "... N more" (a ResNet-152 has hundreds)


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the model's convolutions (any ``nn.modules.conv._ConvNd``), in definition order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)]


def feature_layers(model: nn.Module) -> list[str]:
    """The ``module`` names of the model's ``feature_info`` stages (empty if it has none)."""
    return [str(info["module"]) for info in getattr(model, "feature_info", None) or []]


def first_conv(model: nn.Module) -> tuple[str, nn.Module]:
    """The first convolution in definition order (the stem's: its kernels look at pixels).

    Raises:
        ValueError: the model has no convolution.
    """
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return name, m
    raise ValueError(f"{type(model).__name__} has no convolutional layer")


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def resolve_layer(model: nn.Module, name: str | None = None) -> tuple[str, nn.Module]:
    """The module called ``name`` in ``model`` (default: ``feature_info[-1]["module"]``), with its name.

    Without ``feature_info`` the default is the last convolution.

    Raises:
        ValueError: ``name`` is not one of the model's module names; the message gives close matches
            and lists the feature stages and convolutions, which are the usual choices.
    """
    modules = dict(model.named_modules())
    modules.pop("", None)  # the model itself is not a layer
    if name is None:
        stages = feature_layers(model)
        convs = conv_layers(model)
        if stages:
            name = stages[-1]
        elif convs:
            name = convs[-1]
        else:
            raise ValueError(f"{type(model).__name__} has neither feature_info nor a convolution; name a layer")
        if name not in modules:  # a model whose feature_info names a module it lacks is a model bug
            raise ValueError(f"{type(model).__name__}.feature_info names {name!r}, which is not one of its modules")
        return name, modules[name]
    if name in modules:
        return name, modules[name]
    stages, convs = feature_layers(model), conv_layers(model)
    hint = []
    if stages:
        hint.append("feature stages: " + _listing(stages))
    if convs:
        hint.append("convolutions: " + _listing(convs))
    hint.append("any name from model.named_modules() works")
    raise UnknownNameError("layer", name, modules, hint="; ".join(hint))
