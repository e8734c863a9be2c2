"""``train`` and ``resume``: pick who takes the steps (torch's :class:`~convolab.train.trainer.Trainer`, or the NumPy
engine's :class:`~convolab.train.numpy_engine.GlassTrainer`) and run a config end to end.

It sits above both trainers, so neither imports the other's module back.
"""

from __future__ import annotations

import os

from convolab.data.resolve import recorded_data_dir
from convolab.train.checkpoint import find_checkpoint
from convolab.train.config import TrainConfig
from convolab.train.trainer import Trainer, TrainResult, config_differences

__all__ = ["train", "resume"]


def _console(config: TrainConfig) -> None:
    if config.progress:
        from convolab._logging import ensure_console

        ensure_console()


def train(config: TrainConfig | None = None, **overrides) -> TrainResult:
    """Train a model as ``config`` (or keyword overrides of the defaults) says; returns the run.

    Example:
        >>> result = convolab.train(model="tutorial_cnn", data="digits", epochs=3, out="runs/digits")
        >>> result.summary["test_accuracy"]
    """
    if config is None:
        config = TrainConfig(**overrides)
    elif overrides:
        config = TrainConfig(**{**config.to_dict(), **overrides})
    _console(config)
    return _trainer_class(config)(config).fit()


def resume(path: str | os.PathLike, **overrides) -> TrainResult:
    """Continue an interrupted run from its newest checkpoint (or from the checkpoint file ``path``).

    ``overrides`` may change only what does not affect the numbers (``RESUME_FREE``: device,
    progress, plots ...); any other setting that differs from the run's is refused with the list.

    Example:
        >>> from convolab.train import resume
        >>> resume("runs/fm")  # after a crash, a kill or a reboot
    """
    _, _, state = find_checkpoint(path)
    saved = dict(state["config"])
    differences = config_differences(saved, overrides)
    if differences:
        raise ValueError(f"refusing to resume {path}: these options differ from the run's: "
                         f"{', '.join(differences)}; drop them (or train a new run)")
    saved["data_dir"] = recorded_data_dir(saved.get("data_dir"))  # (a --data-dir given now overrides it)
    config = TrainConfig(**{**saved, **overrides})
    _console(config)
    return _trainer_class(config)(config, resume_from=path).fit()


def _trainer_class(config: TrainConfig) -> type[Trainer]:
    """Who takes the steps: torch's autograd, or (``engine="numpy"``) convolab.glass's hand-written backward."""
    if config.engine == "numpy":
        from convolab.train.numpy_engine import GlassTrainer  # (imports glass only when asked for)

        return GlassTrainer
    return Trainer
