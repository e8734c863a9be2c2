"""Optimizers by name."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["create_optimizer"]


def create_optimizer(model: nn.Module, name: str, lr: float, momentum: float = 0.9,
                     weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``sgd`` (with ``momentum``), ``adam`` or ``adamw`` over the model's trainable parameters.

    Adam and AdamW use torch's fused kernels where the device supports them (one kernel for all
    parameters instead of several per parameter; same arithmetic).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    fused = device.type in ("cpu", "cuda")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        kwargs = dict(lr=lr, weight_decay=weight_decay)  # explicit: AdamW's own default would be 0.01
        try:
            return cls(params, fused=fused, **kwargs)
        except (RuntimeError, TypeError):  # an older torch or an unsupported device
            return cls(params, **kwargs)
    raise ValueError(f"unknown optimizer {name!r}; choose one of sgd, adam, adamw")
