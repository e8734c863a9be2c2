"""Exponential moving average of the weights (Polyak averaging; timm's ``ModelEmaV3``).

After every optimizer step, ``ema <- decay * ema + (1 - decay) * weights`` for every floating
parameter and buffer (BatchNorm's running statistics included); integer buffers are copied. The
first update copies the weights, as ``torch.optim.swa_utils.AveragedModel`` does. The average
usually generalises better than the last weights at the end of a run with a noisy, non-decaying
learning rate; it is what ``--ema`` evaluates and saves.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEma"]


class ModelEma:
    """An averaged copy of ``model`` (in eval mode, no gradients), updated by :meth:`update`."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"--ema must be in (0, 1), e.g. 0.999; got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple]]:
        mine = self.module.state_dict(keep_vars=True)
        averaged, current, copied = [], [], []
        for name, value in model.state_dict(keep_vars=True).items():
            target = mine[name]
            if target.is_floating_point():
                averaged.append(target.data)
                current.append(value.detach())
            else:
                copied.append((target.data, value.detach()))
        return averaged, current, copied

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average (one call per optimizer step)."""
        averaged, current, copied = self._pairs(model)
        if self.updates == 0:
            torch._foreach_copy_(averaged, current)
        else:
            torch._foreach_lerp_(averaged, current, 1.0 - self.decay)  # ema + (1 - decay) (w - ema)
        for target, value in copied:
            target.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"module": {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()},
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
