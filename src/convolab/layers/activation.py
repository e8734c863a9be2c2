"""Activations torch lacks: ``Swish(beta)`` (Ramachandran, Zoph & Le, "Searching for Activation Functions", 2017).

torch has the others the tutorials name (``nn.ReLU``, ``nn.LeakyReLU``, ``nn.ELU``, ``nn.Sigmoid``,
``nn.Tanh``, ``nn.SiLU``, ``nn.GELU``); use those directly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Swish"]


class Swish(nn.Module):
    """``y = x * sigmoid(beta * x)``, element-wise.

    ``beta = 1`` is SiLU (``nn.SiLU``); ``beta -> inf`` tends to ReLU, ``beta = 0`` gives ``x / 2``.
    With ``trainable=True`` beta is a learned scalar parameter (``beta``, shape ``()``), as in the
    paper's Swish; otherwise a constant float. Derivatives, with ``s = sigmoid(beta * x)``::

        dy/dx    = s + beta * x * s * (1 - s)
        dy/dbeta = x^2 * s * (1 - s)
    """

    def __init__(self, beta: float = 1.0, trainable: bool = False):
        super().__init__()
        beta = float(beta)
        if not math.isfinite(beta):
            raise ValueError(f"Swish: beta must be a finite number; got {beta}")
        self.trainable = bool(trainable)
        if self.trainable:
            self.beta = nn.Parameter(torch.tensor(beta))
        else:
            self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)

    def extra_repr(self) -> str:
        beta = self.beta.item() if isinstance(self.beta, torch.Tensor) else self.beta
        return f"beta={beta:g}, trainable={self.trainable}"
