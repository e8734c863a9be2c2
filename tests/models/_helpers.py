"""Helpers shared by the model-family tests."""

from __future__ import annotations

import torch
from torch import nn


def n_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def feature_maps(model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Size], torch.Tensor]:
    """Shapes of the maps at the ``feature_info`` modules (hooked), and ``forward_features(x)``."""
    modules, got = dict(model.named_modules()), {}
    hooks = [modules[i["module"]].register_forward_hook(
        lambda _m, _i, out, key=i["module"]: got.__setitem__(key, out.shape)) for i in model.feature_info]
    try:
        with torch.no_grad():
            feats = model.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    return [got[i["module"]] for i in model.feature_info], feats
