"""Checkpointing as a callback: the full training state at every epoch's end and every ``--checkpoint-every``
steps (see :mod:`convolab.train.checkpoint` for what is in it and how it is written)."""

from __future__ import annotations

from pathlib import Path

from convolab.train.callbacks.base import Callback
from convolab.train.checkpoint import CHECKPOINTS, check_finite, checkpoint_name, prune_checkpoints, save_checkpoint

__all__ = ["Checkpointing"]


class Checkpointing(Callback):
    """Writes ``RUN/checkpoints/step-N.pt`` (the newest two kept) and ``best.pt`` when the epoch improved."""

    def __init__(self, every: int = 0):
        self.every = every
        self.last: Path | None = None  # the newest checkpoint on disk (Ctrl-C's message names it)

    def due(self, step: int) -> bool:
        """Whether optimizer step ``step`` ends with a checkpoint (--checkpoint-every)."""
        return bool(self.every) and step % self.every == 0

    def save(self, trainer, epoch_sums: dict | None = None, best: bool = False) -> None:
        """Every process calls it (the state is gathered from all), rank 0 writes."""
        state = trainer.state_dict(epoch_sums)
        if state is None:
            return
        for index, tensors in state["optimizer"]["state"].items():  # Adam's moments, momentum buffers ...
            check_finite({f"parameter {index} {k}": v for k, v in tensors.items()}, "optimizer state")
        folder = trainer.run.path / CHECKPOINTS
        path = save_checkpoint(folder / checkpoint_name(trainer.global_step), state)
        if path != self.last:  # an epoch end can rewrite the checkpoint --checkpoint-every just wrote
            prune_checkpoints(trainer.run.path, keep=path, previous=self.last)
            self.last = path
        if best:  # the same state, kept under its own name
            save_checkpoint(folder / "best.pt", state)

    def on_epoch_end(self, trainer, row: dict, val) -> None:
        self.save(trainer, best=trainer.improved)

    def load_state_dict(self, state: dict, trainer) -> None:
        self.last = trainer.resume_file  # kept as the previous one until the next is on disk
