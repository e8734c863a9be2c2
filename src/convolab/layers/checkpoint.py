"""Gradient checkpointing over a sequence of blocks, or around one call."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_seq", "checkpoint_call"]


def checkpoint_call(fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    """``fn(*args)``, under ``torch.utils.checkpoint`` when gradients are being recorded.

    For blocks with more than one input (a U-Net decoder block takes the upsampled map and the skip).
    """
    # The non-reentrant form works whether or not the inputs themselves require grad.
    return checkpoint(fn, *args, use_reentrant=False) if torch.is_grad_enabled() else fn(*args)


def checkpoint_seq(blocks: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Run ``blocks`` in order, each under ``torch.utils.checkpoint`` when gradients are being recorded.

    Activations inside each block are recomputed in the backward pass instead of stored: memory
    drops to about one block's activations per block boundary, at the cost of a second forward.
    Outputs and gradients are unchanged. BatchNorm layers inside a block see the recomputation as
    a second forward in training mode, so their running statistics are updated twice per step
    (torchvision's memory-efficient DenseNet behaves the same).
    """
    for block in blocks:
        x = checkpoint_call(block, x)
    return x
