"""The engine interface: how a training step's arithmetic is computed (torch's autograd, or convolab.glass).

The loop calls an engine for the forward pass, the loss, gradient clipping and evaluation, and keeps the
engine's extra state in the checkpoint. Engines are strategies the loop holds, not subclasses of it.
"""

from __future__ import annotations

import torch
from torch import nn

from convolab.train.metrics import EvalResult

__all__ = ["Engine"]


class Engine:
    """torch's own arithmetic; subclasses replace what they compute another way."""

    name = "torch"
    device: torch.device | None = None  # where the engine computes (None: the run's device)
    precision: str | None = None  # the precision it computes in (None: the run's)

    def check(self, config) -> None:
        """Refuse, before any data loads, options or models this engine cannot run (ValueError)."""

    def attach(self, trainer) -> None:
        """Called once the model, the optimizer and the schedule exist, before a checkpoint is restored."""

    def forward(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A training batch's outputs."""
        return net(x)

    def loss(self, task, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """A batch's mean loss (the task's)."""
        return task.loss(outputs, targets)

    def clip_grad_norm(self, params: list, max_norm: float) -> torch.Tensor:
        """Scale the gradients so that their joint L2 norm is at most ``max_norm``; returns the norm before."""
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)

    def evaluate(self, task, model: nn.Module, loader, keep: bool = False) -> EvalResult:
        """The task's evaluation of ``model`` over ``loader``."""
        return task.evaluate(model, loader, keep)

    def optimizer_state(self, state: dict) -> dict:
        """An optimizer state dict as the checkpoint keeps it (tensors)."""
        return state

    def load_optimizer_state(self, state: dict) -> dict:
        """The checkpoint's optimizer state as this engine's optimizer loads it."""
        return state

    def state_dict(self) -> dict | None:
        """The engine's own state for the checkpoint (its random generator ...), or None."""
        return None

    def load_state_dict(self, state: dict | None) -> None:
        """Restore :meth:`state_dict`."""
