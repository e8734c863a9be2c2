"""The best epoch and early stopping as a callback: watches ``--monitor`` on the validation split."""

from __future__ import annotations

import logging

from convolab.train.callbacks.base import Callback
from convolab.train.checkpoint import CHECKPOINTS, load_checkpoint

__all__ = ["BestEpoch"]

log = logging.getLogger(__name__)


class BestEpoch(Callback):
    """Tracks the best value of --monitor (``trainer.improved`` says whether this epoch set it: ``best.pt`` is
    written then) and, with --early-stopping N, stops after N epochs without improvement and restores the best
    epoch's weights at the end. Checkpoint fields: ``best``, ``bad_epochs``."""

    def __init__(self, monitor: str, mode: str, min_delta: float, patience: int | None):
        self.monitor, self.mode, self.min_delta, self.patience = monitor, mode, min_delta, patience
        self.best: dict = {"value": None, "epoch": None}
        self.bad_epochs = 0  # epochs since the last improvement
        self.best_state: dict | None = None  # weights of the best epoch, kept for early stopping

    def _improved(self, trainer, val, epoch: int) -> bool:
        if val is None:
            return False
        value = trainer.task.monitor_value(val)
        best, delta = self.best["value"], self.min_delta
        if best is None or (value > best + delta if self.mode == "max" else value < best - delta):
            self.best = {"value": value, "epoch": epoch}
            return True
        return False

    def on_epoch_end(self, trainer, row: dict, val) -> None:
        epoch = row["epoch"]
        trainer.improved = self._improved(trainer, val, epoch)
        if trainer.improved:
            self.bad_epochs = 0
            if self.patience:
                kept = trainer.kept_model()
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in kept.state_dict().items()}
        elif val is not None:
            self.bad_epochs += 1
        if self.patience and self.bad_epochs >= self.patience and epoch < trainer.config.epochs:
            trainer.stop_reason = (f"early stopping: {self.monitor} has not improved for {self.bad_epochs} epochs; "
                                   f"keeping epoch {self.best['epoch']}'s weights")

    def on_train_end(self, trainer) -> None:
        if self.best_state is not None and self.best["epoch"] != trainer.history[-1]["epoch"]:
            trainer.kept_model().load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {"best": dict(self.best), "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict, trainer) -> None:
        self.best, self.bad_epochs = dict(state["best"]), state["bad_epochs"]
        best_file = trainer.run.path / CHECKPOINTS / "best.pt"
        if self.patience and self.best["epoch"] is not None and best_file.is_file():
            self.best_state = load_checkpoint(best_file)["model"]
