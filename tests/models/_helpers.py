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


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random affine terms for every norm layer and random running statistics for BatchNorm (2-D or 3-D).

    Freshly built norm layers are the identity (weight 1, bias 0, mean 0, var 1), so a parity test in
    eval mode would pass with the norm layers' weights or buffers wired wrongly; after this it cannot.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model
