"""Layers by name: the one place explanation tools turn a user's layer name into a module.

Names are the model's own ``named_modules()`` names (``features.conv1``, ``layer4.1.conv2``). The
default layer is the last entry of the model's ``feature_info`` (the deepest unpooled feature map),
so no tool needs per-model code.
"""

from __future__ import annotations

import torch
from torch import nn

from convolab.errors import close_matches

__all__ = ["resolve_layer", "conv_layers", "feature_layers", "first_conv", "check_map_layer", "layer_choices"]

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
    hits = close_matches(name, sorted(modules))
    msg = f"unknown layer {name!r}: {type(model).__name__} has no module of that name"
    if hits:
        msg += "; did you mean " + ", ".join(repr(h) for h in hits) + "?"
    raise ValueError(f"{msg} (layers: {layer_choices(model)}; any name from model.named_modules() works)")


def layer_choices(model: nn.Module) -> str:
    """The usual layers to name, for error messages: ``feature stages: ...; convolutions: ...``."""
    stages, convs = feature_layers(model), conv_layers(model)
    hint = []
    if stages:
        hint.append("feature stages: " + _listing(stages))
    if convs:
        hint.append("convolutions: " + _listing(convs))
    return "; ".join(hint) or "none with feature_info or a convolution"


def check_map_layer(model: nn.Module, name: str, x: torch.Tensor, what: str = "Grad-CAM", *,
                    spatial: bool = True) -> None:
    """ValueError unless layer ``name`` runs in ``model(x[:1])`` and (with ``spatial``) gives (N, C, H, W) maps.

    Checked with one forward pass of one sample, so that a layer the prediction does not go
    through, or one that gives vectors (a linear layer, a flatten), is one clear line instead of
    captum's or torch's internal error text.
    """
    name, module = resolve_layer(model, name)
    seen: list = []

    def hook(_module, _inputs, output):
        seen.append(tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__)

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        handle.remove()
    model_name = type(model).__name__
    if not seen:
        raise ValueError(f"layer {name!r} does not run in {model_name}'s forward pass, so {what} cannot use it; "
                         f"name a layer the prediction goes through ({layer_choices(model)})")
    if not spatial:
        return
    out = seen[0]
    if not isinstance(out, tuple) or len(out) != 4:
        shown = "(N, " + ", ".join(map(str, out[1:])) + ")" if isinstance(out, tuple) else f"a {out}"
        raise ValueError(f"layer {name!r} of {model_name} gives {shown}, not (N, C, H, W) maps; {what} needs a "
                         f"convolutional layer ({layer_choices(model)})")
