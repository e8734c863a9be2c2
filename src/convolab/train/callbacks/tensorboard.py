"""TensorBoard logging as a callback: the step and epoch figures of steps.jsonl and metrics.jsonl."""

from __future__ import annotations

import importlib.util

from convolab.train.callbacks.base import Callback

__all__ = ["TensorBoardCallback", "check_tensorboard"]

NEEDS = ("--tensorboard needs the tensorboard package: pip install tensorboard (metrics.jsonl and steps.jsonl hold "
         "the same figures)")


def check_tensorboard() -> None:
    """Refuse --tensorboard without the package, before any data loads."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError(NEEDS)


class TensorBoardCallback(Callback):
    """``--tensorboard``: RUN/tensorboard/ (the main process writes)."""

    def __init__(self):
        self.writer = None

    def setup(self, trainer) -> None:
        if not trainer.dist.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError(NEEDS) from None
        self.writer = SummaryWriter(log_dir=str(trainer.run.path / "tensorboard"))

    def on_steps_logged(self, trainer, rows: list[dict]) -> None:
        if self.writer is None:
            return
        for r in rows:
            for k in ("loss", "lr", "grad_norm", "scale"):
                if r.get(k) is not None:
                    self.writer.add_scalar(f"step/{k}", r[k], r["step"])

    def on_epoch_end(self, trainer, row: dict, val) -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)):
                self.writer.add_scalar(f"epoch/{k}", v, row["epoch"])
        self.writer.flush()

    def teardown(self, trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
