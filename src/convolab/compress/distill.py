"""Knowledge distillation (Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a neural network").

A student is trained against a trained teacher's softened outputs as well as the labels::

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

with ``s``, ``t`` the student's and teacher's logits (N, K), ``T`` the temperature and the KL divergence summed
over classes and averaged over the batch. The ``T^2`` keeps the soft term's gradient on the scale of the hard
one's as ``T`` changes (the soft gradient shrinks as ``1/T^2``; section 2 of the paper).

The teacher sees exactly the batch the student sees, augmentation included: :class:`DistillStep` is a step rule
(:class:`convolab.train.step.StandardStep`) that augments once and runs both networks on the result, so the loop
stays as it is. The run is a normal run of the student (a registry model rebuilds from its name);
``config.json`` records the teacher, ``T`` and ``alpha`` under ``"distill"``.

Its honest control is :func:`distill_control`: the same student, recipe, seed and number of steps, without the
teacher.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from convolab.data.resolve import recorded_data_dir
from convolab.runs.reader import Run, load_run
from convolab.runs.session import RunFolder, make_trainer
from convolab.train.config import TrainConfig
from convolab.train.loop import TrainResult
from convolab.train.step import StandardStep

__all__ = ["distillation_loss", "soft_loss", "DistillStep", "distill", "distill_control", "recipe_config"]

# Settings of a run's recipe that belong to its model, not to the recipe: a new model trained "with the run's
# recipe" starts from these defaults instead (the teacher's --model-arg would not fit a student).
_MODEL_SETTINGS = ("model_kwargs", "act", "init", "init_from", "freeze", "lr_decay_per_stage", "input_size",
                   "grad_checkpointing", "pipeline_stages", "compile", "cuda_graphs", "tensorboard")


def soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(t / T) || softmax(s / T))``, summed over the classes and averaged over the batch (float32).

    Args:
        student_logits: (N, K).
        teacher_logits: (N, K); no gradient flows into them.
    """
    log_q = (teacher_logits.detach().float() / temperature).log_softmax(1)  # (N, K) teacher, log-probabilities
    log_p = (student_logits.float() / temperature).log_softmax(1)  # (N, K) student
    return (log_q.exp() * (log_q - log_p)).sum(1).mean()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, hard_loss: torch.Tensor, *,
                      temperature: float, alpha: float) -> torch.Tensor:
    """``alpha * T^2 * soft_loss + (1 - alpha) * hard_loss``; ``hard_loss`` is the student's loss on the labels
    (the task's: cross-entropy, label-smoothed or mixed as the recipe says)."""
    soft = soft_loss(student_logits, teacher_logits, temperature)
    return alpha * temperature ** 2 * soft + (1 - alpha) * hard_loss


def check_distill_settings(temperature: float, alpha: float) -> None:
    """Refuse a temperature or a weight outside their ranges (one line each)."""
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature must be a positive number (Hinton et al. use 1-20, commonly 4); "
                         f"got {temperature!r}")
    if not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
        raise ValueError(f"alpha (the weight of the soft loss) must be in [0, 1]; got {alpha!r}")


class DistillStep(StandardStep):
    """The standard step with a teacher: each training batch is augmented once; the teacher (eval mode, no
    gradient) and the student both run on it, and the loss is :func:`distillation_loss`.

    Args:
        trainer, optimizers: as :class:`StandardStep` (the optimizers hold the student's parameters only).
        teacher: the trained teacher; moved to the trainer's device, put in eval mode, its parameters frozen.
        temperature, alpha: ``T`` and the soft loss's weight.
        check: called with the trainer once its data has loaded (e.g. that the teacher knows these classes).
    """

    def __init__(self, trainer, optimizers: list[torch.optim.Optimizer], *, teacher: nn.Module,
                 temperature: float, alpha: float, check: Callable | None = None):
        super().__init__(trainer, optimizers)
        if check is not None:
            check(trainer)
        if trainer.config.engine != "torch" or self.cuda_graphs:
            raise ValueError("distillation runs on the torch engine without --cuda-graphs; drop --engine/--cuda-graphs")
        self.teacher = teacher.to(trainer.device).eval().requires_grad_(False)
        self.temperature, self.alpha = float(temperature), float(alpha)

    def augmented_forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self.t
        mix = None
        if t.augment is not None:  # (as StandardStep: the one augmentation both networks see)
            x, y, mix = t.task.augment(t.augment, x, y)
            if t.channels_last:
                x = x.contiguous(memory_format=t.memory_format(x.ndim))
        with self.autocast():
            with torch.no_grad():
                teacher_logits = self.teacher(x)  # (N, K) on the same augmented batch
            outputs = t.engine.forward(t.net, x)  # (N, K)
            hard = t.engine.loss(t.task, outputs, y)
            if mix is not None:  # mixup/cutmix: the label term mixes; the teacher already saw the mixed images
                hard = mix.lam * hard + (1 - mix.lam) * t.engine.loss(t.task, outputs, mix.y2)
            loss = distillation_loss(outputs, teacher_logits, hard, temperature=self.temperature, alpha=self.alpha)
        return outputs, loss, y if mix is None or mix.lam >= 0.5 else mix.y2


class _RecordingFolder(RunFolder):
    """A run folder whose config.json carries ``extra`` fields beside the run record's."""

    def __init__(self, path, extra: dict):
        super().__init__(path)
        self.extra = extra

    def write_config(self, config: dict) -> None:
        super().write_config({**config, **self.extra})


def record_in_config(trainer, extra: dict):
    """Make ``trainer`` (from :func:`convolab.runs.session.make_trainer`, not yet fitted) write ``extra`` into its
    config.json beside the run record: e.g. ``{"distill": {...}}``. Returns the trainer."""
    open_run = trainer.open_run

    def open_recording(t):
        return _RecordingFolder(open_run(t).path, extra)

    trainer.open_run = open_recording
    return trainer


def _as_run(run: Run | str | os.PathLike) -> Run:
    return run if isinstance(run, Run) else load_run(run)


def recipe_config(run: Run, out, *, model: str, epochs: int, seed: int | None = None, overwrite: bool = False,
                  progress: bool = True, **overrides) -> TrainConfig:
    """The ``TrainConfig`` that trains ``model`` from scratch with ``run``'s recipe (its dataset, split, optimizer,
    rate, schedule, batch size, augmentation: :func:`convolab.runs.recipe.run_config`) for ``epochs`` epochs into
    ``out``; the run's model-specific settings (``--model-arg``, ``--init-from``, ``--freeze`` ...) are left at
    their defaults. ``overrides``: any other ``TrainConfig`` field.

    Raises:
        ValueError: an unknown field.
    """
    from convolab.runs.recipe import run_config

    base = run_config(run)
    defaults = TrainConfig().to_dict()
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"unknown training setting(s) {', '.join(unknown)}; use TrainConfig's field names "
                         "(lr, batch_size, schedule ...)")
    reset = {k: defaults[k] for k in _MODEL_SETTINGS}
    return replace(base, **{**reset, "data_dir": recorded_data_dir(base.data_dir), "model": model,
                            "out": None if out is None else str(out), "overwrite": overwrite, "epochs": epochs,
                            "progress": progress, **({"seed": seed} if seed is not None else {}), **overrides})


def _student(student: str | nn.Module, student_kwargs: dict | None) -> tuple[str, nn.Module | None, dict]:
    """(model name for the config, the given module or None, model kwargs for the config)."""
    if isinstance(student, nn.Module):
        cfg = getattr(student, "convolab_cfg", None)
        if not isinstance(cfg, dict) or "name" not in cfg:
            raise ValueError("a student given as a module must come from convolab.create_model (it carries "
                             "convolab_cfg); or give its registry name")
        if getattr(student, "convolab_build", None) is None:  # a registry model as built: load_run rebuilds it so
            kwargs = {k: v for k, v in cfg.items() if k != "name"}
            student.convolab_build = {"kind": "registry", "name": cfg["name"], "kwargs": kwargs}
        return cfg["name"], student, {}
    if not isinstance(student, str) or not student:
        raise ValueError(f"student must be a model name (see `convolab models`) or a module; got {student!r}")
    return student, None, dict(student_kwargs or {})


def _check_teacher(teacher: Run, trainer) -> None:
    data = trainer.data
    if list(teacher.classes) != list(data.classes):
        raise ValueError(f"teacher {teacher.path} was trained on classes {teacher.classes[:5]}... but "
                         f"{data.name} has {list(data.classes)[:5]}...; distil on the teacher's dataset")
    # (another seed draws another validation split, so the statistics move a little: 1e-5 on digits)
    if any(abs(a - b) > 1e-2 * abs(b) for a, b in zip(teacher.mean + teacher.std, data.mean + data.std)):
        raise ValueError(f"teacher {teacher.path} normalises with mean {teacher.mean}/std {teacher.std}, the data "
                         f"with {data.mean}/{data.std}; distil on the teacher's dataset")


def _fit_student(teacher_run, student, out, *, epochs, seed, student_kwargs, overwrite, progress, overrides,
                 teacher: dict | None) -> TrainResult:
    """Train the student with the teacher run's recipe, with (``teacher`` settings given) or without the teacher."""
    run = _as_run(teacher_run)
    name, module, kwargs = _student(student, student_kwargs)
    if kwargs:
        overrides = {**overrides, "model_kwargs": {**kwargs, **overrides.get("model_kwargs", {})}}
    config = recipe_config(run, out, model=name, epochs=epochs, seed=seed, overwrite=overwrite, progress=progress,
                           **overrides)
    built: dict = {"model": module} if module is not None else {}
    if teacher is not None:
        built["step_rule"] = functools.partial(DistillStep, teacher=run.model, temperature=teacher["temperature"],
                                               alpha=teacher["alpha"], check=functools.partial(_check_teacher, run))
    if progress:
        from convolab._logging import ensure_console

        ensure_console()
    trainer = make_trainer(config, **built)
    record = {"teacher": str(Path(run.path).resolve()), "teacher_model": run.config.get("model"),
              "teacher_test_accuracy": run.summary.get("test_accuracy")}
    extra = ({"distill": {**record, "temperature": teacher["temperature"], "alpha": teacher["alpha"]}}
             if teacher is not None else {"distill_control": record})
    record_in_config(trainer, extra)
    return trainer.fit()


def distill(teacher_run: Run | str | os.PathLike, student: str | nn.Module, out, *, temperature: float = 4.0,
            alpha: float = 0.9, epochs: int, seed: int = 0, student_kwargs: dict | None = None,
            overwrite: bool = False, progress: bool = True, **overrides) -> TrainResult:
    """Train ``student`` by distillation from the trained run ``teacher_run``, with the teacher run's recipe
    (its dataset and split, optimizer, schedule, batch size, augmentation; ``overrides`` change any
    ``TrainConfig`` field, e.g. ``lr=1e-3``), into the new run folder ``out``.

    Args:
        teacher_run: a run folder (or a loaded :class:`Run`) of an image classifier.
        student: a registry model name (``student_kwargs``: its extra arguments) or a module from ``create_model``.
        temperature: ``T`` (> 0).
        alpha: the soft loss's weight in [0, 1] (0: the labels alone; 1: the teacher alone).
        epochs, seed: the student's training length and seed.

    Returns:
        the run (a normal run of the student; config.json's ``"distill"`` names the teacher, ``T`` and ``alpha``).

    Raises:
        ValueError: a bad setting, a teacher run without its recipe, or data the teacher was not trained on.
    """
    check_distill_settings(temperature, alpha)
    return _fit_student(teacher_run, student, out, epochs=epochs, seed=seed, student_kwargs=student_kwargs,
                        overwrite=overwrite, progress=progress, overrides=overrides,
                        teacher={"temperature": temperature, "alpha": alpha})


def distill_control(teacher_run: Run | str | os.PathLike, student: str | nn.Module, out, *, epochs: int,
                    seed: int = 0, student_kwargs: dict | None = None, overwrite: bool = False,
                    progress: bool = True, **overrides) -> TrainResult:
    """The honest control of :func:`distill`: the same student, recipe, seed, epochs and steps, trained on the
    labels alone (config.json's ``"distill_control"`` names the teacher it is the control for)."""
    return _fit_student(teacher_run, student, out, epochs=epochs, seed=seed, student_kwargs=student_kwargs,
                        overwrite=overwrite, progress=progress, overrides=overrides, teacher=None)
