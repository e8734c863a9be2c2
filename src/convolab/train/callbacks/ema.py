"""The exponential moving average of the weights as a callback: updated after every step, evaluated and saved."""

from __future__ import annotations

from torch import nn

from convolab.train.callbacks.base import Callback
from convolab.train.ema import ModelEma

__all__ = ["EmaCallback"]


class EmaCallback(Callback):
    """``--ema DECAY`` (warmed up: see :class:`convolab.train.ema.ModelEma`). Checkpoint field: ``ema``."""

    def __init__(self, decay: float):
        self.decay = decay
        self.ema: ModelEma | None = None

    def setup(self, trainer) -> None:
        self.ema = ModelEma(trainer.model, self.decay, warmup=True)

    def on_optimizer_step(self, trainer) -> None:
        self.ema.update(trainer.model)

    def eval_model(self, model: nn.Module) -> nn.Module:
        return self.ema.module if self.ema is not None else model

    def state_dict(self) -> dict:
        return {"ema": self.ema.state_dict()}

    def load_state_dict(self, state: dict, trainer) -> None:
        trainer.restore_part("ema", self.ema, state)
