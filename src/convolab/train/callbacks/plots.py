"""Plots as a callback: the task's figures of a finished run, and the learning rate per step."""

from __future__ import annotations

from convolab.train.callbacks.base import Callback

__all__ = ["Plots"]


class Plots(Callback):
    """Writes RUN/plots/*.png at the end of a run (the task's: curves, predictions, confusion or masks ...)."""

    def on_fit_end(self, trainer, summary: dict, test) -> None:
        if not trainer.dist.is_main:
            return
        trainer.task.plots(trainer.history, test, trainer.run.plots)
        if trainer.config.schedule != "constant" or trainer.schedule.warmup_steps:
            from convolab.plotting import plot_lr_steps

            plot_lr_steps(trainer.run.read_steps(), trainer.run.plots / "lr.png")
