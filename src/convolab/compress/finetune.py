"""Fine-tune a compressed model on the data and with the recipe of the run it came from.

Pruning, quantization-aware training and the fp32 controls they are measured against all fine-tune the same way:
the run's own dataset, split as in training (:func:`convolab.runs.recipe.load_data`), its batch size, optimizer,
augmentation and loss (:func:`convolab.runs.recipe.run_config`), for ``epochs`` more epochs at a smaller rate. The
result is a normal run folder: ``eval``, ``predict``, ``explain`` and ``report`` work on it, and ``load_run``
rebuilds its model from config.json's ``build`` (the ``convolab_build`` the compressed model carries).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from torch import nn

from convolab.runs.reader import Run, load_run
from convolab.runs.recipe import load_data, run_config

__all__ = ["finetune", "finetune_config", "FINETUNE_LR_FACTOR"]

FINETUNE_LR_FACTOR = 0.1  # the default fine-tuning rate: a tenth of the run's peak rate (the weights are trained)

# Settings of the original run that do not carry over to a fine-tuning of its (changed) model.
_RESET = dict(init_from=None, freeze=None, lr_decay_per_stage=1.0, early_stopping=None, stop_at_loss=None,
              stop_at_accuracy=None, pipeline_stages=1, engine="torch", cuda_graphs=False, tensorboard=False,
              warmup_epochs=0.0, warmup_steps=0)


def finetune_config(run: Run, out: str | os.PathLike, *, epochs: int, lr: float | None = None,
                    overwrite: bool = False, progress: bool = True, **overrides):
    """The ``TrainConfig`` :func:`finetune` trains with: the run's recipe, ``epochs`` epochs at ``lr`` (default: a
    tenth of the run's rate), written to ``out``; ``overrides`` replace any other field."""
    base = run_config(run)
    lr = base.lr * FINETUNE_LR_FACTOR if lr is None else lr
    config = replace(base, **{**_RESET, "out": str(out), "epochs": epochs, "lr": lr, "overwrite": overwrite,
                              "progress": progress, **overrides})
    config.validate()
    return config


def finetune(run: Run | str | os.PathLike, model: nn.Module, out: str | os.PathLike, *, epochs: int,
             lr: float | None = None, overwrite: bool = False, progress: bool = True, data=None, **built_and_overrides):
    """Train ``model`` (already built: pruned, prepared for QAT, a student ...) on ``run``'s data with its recipe.

    Args:
        run: the run the model came from (a :class:`Run` or its folder).
        model: the model to train; its ``convolab_build`` (if any) is recorded as config.json's ``build`` and its
            ``convolab_cfg`` (the base registry model) in the weights metadata.
        out: the new run folder (refused if it exists, unless ``overwrite``).
        epochs, lr: the fine-tuning length and peak rate (default: a tenth of the run's).
        data: the run's dataset, already loaded (default: loaded here as the run had it).
        built_and_overrides: ``task``, ``optimizers``, ``step_rule``, ``callbacks`` (see :class:`Trainer`) are
            passed to the trainer; any other key replaces that field of the config.

    Returns:
        the :class:`~convolab.train.loop.TrainResult` of the new run.
    """
    from convolab.runs.session import make_trainer

    run = run if isinstance(run, Run) else load_run(run)
    built = {k: built_and_overrides.pop(k) for k in ("task", "optimizers", "step_rule", "callbacks")
             if k in built_and_overrides}
    config = finetune_config(run, out, epochs=epochs, lr=lr, overwrite=overwrite, progress=progress,
                             **built_and_overrides)
    if getattr(model, "convolab_build", None) is None and hasattr(model, "convolab_cfg"):  # a registry model as built
        cfg = dict(model.convolab_cfg)
        model.convolab_build = {"kind": "registry", "name": cfg.pop("name"), "kwargs": cfg}
    data = load_data(run, config) if data is None else data
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return make_trainer(config, model=model, data=data, **built).fit()
