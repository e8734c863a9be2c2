"""Training sessions that produce run folders: ``train``, ``resume`` and ``lr_find``.

The loop (:class:`convolab.train.loop.Trainer`) writes through a sink; here the sink is the run folder this
package owns: made (or refused) by :func:`convolab.runs.layout.prepare_run_dir`, written by
:class:`RunFolder`, resumed only from its own checkpoints (the run id of its ``.convolab-run`` marker).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from convolab.atomic import read_jsonl, remove_temporaries, strict_json, write_json, write_jsonl
from convolab.data.resolve import recorded_data_dir
from convolab.data.stream import close_loaders
from convolab.runs.checkpoints import find_checkpoint
from convolab.runs.layout import CONFIG, METRICS, STEPS, own_files, prepare_run_dir, run_id
from convolab.runs.writer import RunWriter
from convolab.train.checkpoint import CHECKPOINTS
from convolab.train.config import RESUME_FREE, TrainConfig
from convolab.train.loop import Trainer, TrainResult, deterministic_algorithms
from convolab.train.lr_finder import LRFindResult, check_range_test, lr_range_test
from convolab.train.optim import add_l1_gradient

__all__ = ["train", "resume", "lr_find", "make_trainer", "RunFolder", "config_differences"]


class RunFolder(RunWriter):
    """A run folder as the loop's sink (:class:`convolab.train.sink.RunSink`)."""

    @property
    def run_id(self) -> str | None:
        return run_id(self.path)

    def read_steps(self) -> list[dict]:
        steps = self.path / STEPS
        return read_jsonl(steps) if steps.exists() else []

    def resume_logs(self, history: list[dict], global_step: int) -> None:
        """Drop what the interrupted session logged after its last checkpoint, so that every epoch and step appears
        once: metrics.jsonl becomes the checkpoint's history, steps.jsonl its first steps. A torn last line (a kill
        mid-append) goes too, and so do the temporary files of writes a kill cut short."""
        import logging

        for leftover in remove_temporaries(self.path, self.path / CHECKPOINTS, self.plots):
            logging.getLogger(__name__).info("removed %s, left by an interrupted write", leftover)
        metrics = self.path / METRICS
        rows = read_jsonl(metrics) if metrics.exists() else []
        if rows != strict_json(history) or metrics.exists() and metrics.read_bytes()[-1:] not in (b"", b"\n"):
            write_jsonl(metrics, history)
        steps = self.path / STEPS
        if steps.exists():
            rows = read_jsonl(steps)
            kept = [r for r in rows if r.get("step", 0) <= global_step]
            if len(kept) != len(rows) or steps.read_bytes()[-1:] not in (b"", b"\n"):
                write_jsonl(steps, kept)

    def remove_made(self, existed: bool) -> None:
        """Remove what a failed call made of this folder: convolab's own files in it, its own sub-folders once
        empty, and the folder itself when the call created it."""
        if not self.path.is_dir() or self.path.is_symlink():
            return
        for f in own_files(self.path)[0]:
            f.unlink(missing_ok=True)
        for sub in (self.path / "plots", self.path / "checkpoints", self.path / "tensorboard", self.path):
            if (sub != self.path or not existed) and sub.is_dir() and not sub.is_symlink() and not any(sub.iterdir()):
                sub.rmdir()


def config_differences(saved: dict, given: dict) -> list[str]:
    """``--name (run: a, given: b)`` for every setting that differs, except those a resume may change."""
    out = []
    for key, value in given.items():
        if key in RESUME_FREE or key not in saved:
            continue
        if saved[key] != value:
            out.append(f"--{key.replace('_', '-')} (run: {saved[key]!r}, given: {value!r})")
    return out


def _console(config: TrainConfig) -> None:
    if config.progress:
        from convolab._logging import ensure_console

        ensure_console()


def make_trainer(config: TrainConfig, resume_from: str | os.PathLike | None = None, **built) -> Trainer:
    """A :class:`Trainer` that writes its run folder (``config.out``, or ``runs/<model>-<data>-<time>``); with
    ``resume_from`` (a run folder or one of its checkpoints) it continues that run. ``built``: objects to use in
    place of what the config would build (``model``, ``data``, ``task``, ``optimizers``, ``step_rule``,
    ``callbacks``; see :class:`Trainer`)."""
    import os as _os

    is_main = int(_os.environ.get("RANK", "0")) == 0
    if resume_from is not None:
        run_dir, resume_file, state = find_checkpoint(resume_from)
        if state.get("run_id") != run_id(run_dir):  # a checkpoint copied in from another run's folder
            raise ValueError(f"refusing to resume {run_dir}: {resume_file.name} was written by another run "
                             f"(its run id {state.get('run_id')!r}, this folder's {run_id(run_dir)!r} in "
                             f"{run_dir}/.convolab-run); resume that run from its own folder")
        differences = config_differences(state["config"], config.to_dict())
        if differences:
            raise ValueError(f"refusing to resume {run_dir}: these options differ from the run's: "
                             f"{', '.join(differences)}; drop them (or train a new run)")
        if not (run_dir / CONFIG).is_file():
            raise FileNotFoundError(f"--resume {run_dir}: no {CONFIG}; is this a convolab run directory?")
        return Trainer(config, open_run=lambda t: RunFolder(run_dir), resume_state=state, resume_file=resume_file,
                       **built)
    if not is_main:  # rank 0 checks and writes the run directory
        return Trainer(config, **built)
    config.validate()
    # Refuse a taken --out before the (slow) data loading; create it only once everything has loaded.
    path = prepare_run_dir(config.out, config.model, config.data, config.overwrite, create=False)

    def open_run(trainer: Trainer) -> RunFolder:
        return RunFolder(prepare_run_dir(path, config.model, config.data, config.overwrite, create=True))

    trainer = Trainer(config, open_run=open_run, **built)
    trainer.run.path = path  # (where it will be, for messages before it exists)
    return trainer


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
    return make_trainer(config).fit()


def _refuse_compressed(run_dir: Path) -> None:
    """A run made by ``convolab compress`` (a distilled student, a pruned or quantization-aware fine-tuning) needs
    more than its config to continue (the teacher, the pruned or prepared model): one line instead of a resume that
    would silently train something else."""
    if not (run_dir / CONFIG).is_file():
        return
    from convolab.runs.schema import CONFIG_SCHEMA
    from convolab.structure import read_json

    cfg = read_json(run_dir / CONFIG, CONFIG_SCHEMA)
    kind = (cfg.get("build") or {}).get("kind", "registry")
    if "distill" in cfg or kind != "registry":
        what = "a distillation" if "distill" in cfg else f"a {kind} model's fine-tuning"
        raise ValueError(f"refusing to resume {run_dir}: {what} (convolab compress) cannot be resumed from its "
                         "checkpoint; run the compress command again")


def resume(path: str | os.PathLike, **overrides) -> TrainResult:
    """Continue an interrupted run from its newest checkpoint (or from the checkpoint file ``path``).

    ``overrides`` may change only what does not affect the numbers (``RESUME_FREE``: device, progress, plots ...);
    any other setting that differs from the run's is refused with the list.

    Example:
        >>> convolab.resume("runs/fm")  # after a crash, a kill or a reboot
    """
    run_dir, _, state = find_checkpoint(path)
    _refuse_compressed(run_dir)
    saved = dict(state["config"])
    differences = config_differences(saved, overrides)
    if differences:
        raise ValueError(f"refusing to resume {path}: these options differ from the run's: "
                         f"{', '.join(differences)}; drop them (or train a new run)")
    saved["data_dir"] = recorded_data_dir(saved.get("data_dir"))  # (a --data-dir given now overrides it)
    config = TrainConfig(**{**saved, **overrides})
    _console(config)
    return make_trainer(config, resume_from=path).fit()


def lr_find(config: TrainConfig, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100,
            beta: float = 0.9, diverge: float = 4.0, keep: bool = True,
            ramp: str = "exponential") -> tuple[LRFindResult, Path | None]:
    """The learning-rate range test with this config's model, optimizer, data and loss (see
    ``convolab.train.lr_finder``); writes ``lr_find.json`` and ``plots/lr_find.png`` into a new run folder and
    returns the result and that folder.

    ``keep=False``: no folder is left at all (the test runs in a temporary one, removed; the returned path is None).
    A test that fails or is interrupted removes what this call made of the folder.
    """
    check_range_test(start_lr, end_lr, num_steps, beta, diverge, ramp)  # before any data loads or folder is made
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("lr-find runs in one process; start it without torchrun")
    scratch = Path(tempfile.mkdtemp(prefix="convolab-lr-find-")) if not keep else None
    if scratch is not None:
        config = TrainConfig(**{**config.to_dict(), "out": str(scratch), "overwrite": True})
    trainer = make_trainer(config)
    path = trainer.run.path
    existed = path.exists()
    trainer._fit_start = 0.0
    try:
        with deterministic_algorithms(config.deterministic):
            trainer._setup(kind="lr-find")
            step = trainer.step
            l1 = (lambda: add_l1_gradient(step.l1_params, config.l1)) if step.l1_params else None  # --l1
            result = lr_range_test(trainer.model, trainer.optimizers[0], trainer.train_loader,
                                   lambda b: step.augmented_forward(*b)[1], start_lr=start_lr, end_lr=end_lr,
                                   num_steps=num_steps, beta=beta, diverge=diverge, ramp=ramp, before_step=l1)
        if scratch is not None:
            return result, None
        write_json(trainer.run.path / "lr_find.json", result.to_dict())
        if config.plots:
            from convolab.plotting import plot_lr_find

            plot_lr_find(result.lrs, result.losses, result.smoothed, result.suggested_lr, result.min_loss_lr,
                         result.rule, trainer.run.plots / "lr_find.png")
    except BaseException:  # a failure or Ctrl-C: no half-made directory
        if scratch is None and isinstance(trainer.run, RunFolder):
            trainer.run.remove_made(existed)
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        close_loaders(getattr(trainer, "train_loader", None))  # a streamed split's decoding processes
        trainer.dist.close()
    return result, trainer.run.path
