"""Callbacks that hang off the training loop (see :mod:`convolab.train.callbacks.base`)."""

from convolab.train.callbacks.base import Callback, CallbackList
from convolab.train.callbacks.best import BestEpoch
from convolab.train.callbacks.checkpoint import Checkpointing
from convolab.train.callbacks.ema import EmaCallback
from convolab.train.callbacks.plots import Plots
from convolab.train.callbacks.stop import StopAt
from convolab.train.callbacks.tensorboard import TensorBoardCallback, check_tensorboard

__all__ = ["Callback", "CallbackList", "BestEpoch", "Checkpointing", "EmaCallback", "Plots", "StopAt",
           "TensorBoardCallback", "check_tensorboard", "default_callbacks"]


def default_callbacks(config, monitors: dict[str, str]) -> list[Callback]:
    """The callbacks a ``TrainConfig`` asks for, in dispatch order (the best epoch is decided before the checkpoint
    that records it)."""
    callbacks: list[Callback] = []
    if config.ema:
        callbacks.append(EmaCallback(config.ema))
    callbacks.append(BestEpoch(config.monitor, monitors.get(config.monitor, "max"), config.min_delta,
                               config.early_stopping))
    if config.stop_at_loss is not None or config.stop_at_accuracy is not None:  # decided before the checkpoint
        callbacks.append(StopAt(config.stop_at_loss, config.stop_at_accuracy))
    if config.tensorboard:
        callbacks.append(TensorBoardCallback())
    if config.checkpoints:
        callbacks.append(Checkpointing(config.checkpoint_every))
    if config.plots:
        callbacks.append(Plots())
    return callbacks
