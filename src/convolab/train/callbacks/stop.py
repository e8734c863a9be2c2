"""Stop conditions as a callback: stop once the training loss is low enough or the validation accuracy high enough."""

from __future__ import annotations

from convolab.train.callbacks.base import Callback

__all__ = ["StopAt"]


class StopAt(Callback):
    """``--stop-at-loss LOSS``: stop after the first epoch whose training loss (the epoch's mean of the training
    objective, metrics.jsonl's ``train_loss``) is <= LOSS; ``--stop-at-accuracy A``: after the first epoch whose
    validation accuracy is >= A. The epoch that meets a condition is the last one trained; ``trainer.stop_reason``
    says which (summary.json's ``stop_reason``), as early stopping does, unless the run ends there anyway.

    Checkpoint field (under ``callbacks``): ``stop_at``, the reason decided, so a run killed after that epoch's
    checkpoint and resumed stops there too instead of training on.
    """

    def __init__(self, loss: float | None = None, accuracy: float | None = None):
        self.loss, self.accuracy = loss, accuracy
        self.reason: str | None = None

    def on_epoch_end(self, trainer, row: dict, val) -> None:
        if trainer.stop_reason is not None or row["epoch"] >= trainer.config.epochs:
            return  # stopped for another reason, or the last epoch: nothing to stop
        loss, acc = row.get("train_loss"), row.get("val_accuracy")
        if self.loss is not None and loss is not None and loss <= self.loss:
            self.reason = f"stop at loss: training loss {loss:.4g} <= {self.loss:g} after epoch {row['epoch']}"
        elif self.accuracy is not None and acc is not None and acc >= self.accuracy:
            self.reason = (f"stop at accuracy: validation accuracy {acc:.4g} >= {self.accuracy:g} after epoch "
                           f"{row['epoch']}")
        if self.reason is not None:
            trainer.stop_reason = self.reason

    def state_dict(self) -> dict:
        return {"stop_at": {"reason": self.reason}}

    def load_state_dict(self, state: dict, trainer) -> None:
        saved = state.get("stop_at")  # (a checkpoint written without --stop-at-* has none)
        self.reason = saved["reason"] if saved else None
        if self.reason is not None:
            trainer.stop_reason = self.reason
