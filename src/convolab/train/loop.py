"""The training loop: epochs of optimizer steps, evaluation, resume. One loop for every task and engine.

What varies per problem is the task's (:mod:`convolab.train.tasks`), the arithmetic is the engine's
(:mod:`convolab.train.engines`), how batches become optimizer steps is the step rule's
(:mod:`convolab.train.step`), and checkpoints, the best epoch, EMA, TensorBoard and plots are callbacks
(:mod:`convolab.train.callbacks`). The run folder is a sink the caller hands in (``convolab.runs`` writes
the format); without one the loop writes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from convolab.data import load_dataset
from convolab.data.loader import memory_format
from convolab.data.stream import close_loaders
from convolab.data.stream import make_loader as data_loader
from convolab.device import resolve_device
from convolab.models import create_model, get_model_entry, init_weights, list_models
from convolab.models.spec import resolve_model_name
from convolab.train import state as state_io
from convolab.train.allocator import keep_freed_memory
from convolab.train.callbacks import Callback, CallbackList, Checkpointing, check_tensorboard, default_callbacks
from convolab.train.config import MAX_AUTO_EPOCHS, STEP_BUDGET, TrainConfig, auto_epochs
from convolab.train.cuda_graphs import cuda_graph_conflicts
from convolab.train.distributed import init_distributed
from convolab.train.engines import create_engine
from convolab.train.epoch import EpochRunner
from convolab.train.freeze import prepare_transfer
from convolab.train.metrics import EvalResult
from convolab.train.optim import create_optimizer
from convolab.train.pipeline_step import PipelineStep, build_runner, check_pipeline
from convolab.train.record import run_record, weights_metadata
from convolab.train.schedule import LRSchedule
from convolab.train.sink import NullSink, RunSink
from convolab.train.step import StandardStep, check_precision, resolve_precision, settle_precision
from convolab.train.tasks import Task, task_for_model

__all__ = ["Trainer", "TrainResult", "seed_everything", "deterministic_algorithms", "make_loader"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What ``train`` returns."""

    run_dir: Path
    summary: dict
    model: nn.Module


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` (and cuDNN's switches) for the duration of a run."""
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for deterministic GEMMs
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def make_loader(split, batch_size: int, **kwargs):
    """The loader of a split: served from memory, or streamed from disk when the split was too large to decode
    into memory (``convolab.data.stream``)."""
    loader = data_loader(split, batch_size, **kwargs)
    loader.groups = getattr(split, "groups", None)  # clips: the video of each clip, for per-video accuracy
    return loader


class Trainer:
    """Runs one ``TrainConfig`` end to end; ``fit()`` returns a :class:`TrainResult`.

    Everything the config would build can be given built instead: ``model``, ``data`` (a loaded dataset),
    ``task`` (a :class:`Task` subclass), ``optimizers`` (a function of the model returning a list),
    ``step_rule`` (a function ``(trainer, optimizers) -> StandardStep``, e.g. an :class:`AlternatingStep` for
    two optimizers) and extra ``callbacks``.

    Args:
        config: the run.
        open_run: called once the data has loaded, with the trainer: returns the run folder's sink (rank 0 only;
            None: nothing is written).
        resume_state, resume_file: a validated checkpoint and its file: continue that run (the caller checks that
            it belongs to the run and that ``config`` matches).
    """

    PROGRESS_EVERY = 30.0  # seconds between two progress lines when there is no progress bar
    NAN_CHECK_EVERY = 25  # steps between two reads of the deferred finiteness flags (one host sync each)

    def __init__(self, config: TrainConfig, *, open_run: Callable[[Trainer], RunSink] | None = None,
                 resume_state: dict | None = None, resume_file: Path | None = None, model: nn.Module | None = None,
                 data=None, task: type[Task] | None = None, optimizers: Callable | None = None,
                 step_rule: Callable | None = None, callbacks: list[Callback] | None = None):
        if model is None:  # a spec file, or spec text, as the run records it
            config = replace(config, model=resolve_model_name(config.model))
        config.validate()
        self.config = config
        self.engine = create_engine(config.engine)
        if model is None:  # an unknown model fails now, not after loading (or downloading) data
            entry = get_model_entry(config.model)
            self.task_class = task or task_for_model(entry.input_kind)
        else:  # a registry model says its kind through its name; another one may carry ``input_kind``
            name = getattr(model, "convolab_cfg", {}).get("name")
            kind = (get_model_entry(name).input_kind if name in list_models() else
                    getattr(model, "input_kind", "image"))
            self.task_class = task or task_for_model(kind)
        self.engine.check(config)
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        check_precision(self.precision, self.device)
        check_pipeline(self, resume_state)  # --pipeline-stages N: refuse what it cannot do, before the data loads
        self.dist, self.device = init_distributed(self.device)  # torchrun: join the process group
        self.device = self.engine.device or self.device
        self.precision = self.engine.precision or self.precision
        if config.cuda_graphs:  # (the flags it cannot go with are refused by config.validate)
            conflict = cuda_graph_conflicts(self.device, self.dist.world_size)
            if conflict:
                raise ValueError(conflict)
        if config.tensorboard:
            check_tensorboard()
        self.open_run, self.resume_state, self.resume_file = open_run, resume_state, resume_file
        self._given = {"model": model, "data": data, "optimizers": optimizers, "step_rule": step_rule,
                       "callbacks": callbacks or []}
        self.run: RunSink = NullSink(config.out or ".")
        self.improved, self.stop_reason = False, None

    # -- setup -------------------------------------------------------------------------------
    def memory_format(self, ndim: int) -> torch.memory_format:
        """The layout of a batch of ``ndim`` dimensions (--channels-last: NHWC, NDHWC)."""
        return memory_format(self.channels_last, ndim)

    def _setup(self, kind: str = "train") -> None:
        cfg, given = self.config, self._given
        seed_everything(cfg.seed)
        keep_freed_memory()
        self.data = given["data"] or load_dataset(
            cfg.data, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed, download=cfg.download,
            image_size=tuple(cfg.image_size) if cfg.image_size is not None else None, max_bytes=cfg.max_memory,
            frames=cfg.frames)
        if given["data"] is None and cfg.train_size is not None:  # (a caller's data is the caller's to cut)
            self.data = self.data.with_train_size(cfg.train_size, cfg.seed)
            log.info("--train-size %d: training on %s", cfg.train_size, self.data.describe())
        self.task = self.task_class(cfg, self.data)
        self.task.check()
        self.model = given["model"] or create_model(cfg.model, num_classes=self.data.num_classes,
                                                    in_chans=self.data.in_chans,
                                                    input_size=cfg.input_size or self.data.input_size[1:],
                                                    **cfg.model_args())  # --input-size: resized in the model
        if given["model"] is None and cfg.model_kwargs:  # an argument naming a file (darts_net's genotype=PATH) is
            recorded = getattr(self.model, "convolab_cfg", None) or {}  # kept as what the model read from it, so
            self.config = cfg = replace(cfg, model_kwargs={  # the checkpoints resume without the file
                k: recorded.get(k, v) for k, v in cfg.model_kwargs.items()})
        if given["model"] is None and self.resume_state is None:  # --init, drawn after the seed like the model's own
            init_weights(self.model, cfg.init)
        self.param_counts = prepare_transfer(self.model, cfg, fresh=self.resume_state is None)  # --init-from, --freeze
        self.precision, self.precision_text = settle_precision(self.precision, cfg.precision, self.device, self.model)
        self.channels_last = cfg.channels_last and self.device.type != "mps"
        ndim = self.data.train.images.ndim
        self.model.to(self.device, memory_format=self.memory_format(ndim) if self.channels_last
                      else torch.preserve_format)
        if self.device.type == "cuda" and not cfg.deterministic:
            torch.backends.cudnn.benchmark = True
        if cfg.grad_checkpointing:
            if not hasattr(self.model, "set_grad_checkpointing"):
                raise ValueError(f"{cfg.model} has no gradient checkpointing; the deep families do (resnet, densenet, "
                                 "vgg, mobilenet, shufflenet, efficientnet, convnext ...)")
            self.model.set_grad_checkpointing(True)
        self.pipeline, trained = build_runner(self)  # --pipeline-stages N > 1: this stage's runner and module
        self.optimizers = (given["optimizers"] or self._default_optimizers)(trained)
        self.net = self.model  # what the training steps call
        if self.dist.enabled and self.pipeline is None:
            self.net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                               else None)
            if self.dist.rank:  # the same weights everywhere (DDP broadcast them), other dropout masks per process
                torch.manual_seed(cfg.seed + 7919 * self.dist.rank)
        if cfg.compile:
            self.net = torch.compile(self.net)
        self.step = (given["step_rule"] or (PipelineStep if self.pipeline else StandardStep))(self, self.optimizers)
        self.overflow_steps, self._last_scale = 0, None  # fp16 steps skipped by the loss scaler
        self.deferred_nan_check = self._use_deferred_nan_check()
        if self.deferred_nan_check:
            self.step.prepare_deferred()
        self.train_peak_mb: float | None = None  # CUDA: the largest training-step memory peak of any epoch
        loader_args = dict(mean=self.data.mean, std=self.data.std, device=self.device,
                           channels_last=self.channels_last)
        # Pipeline stages all read the same batches; data parallelism gives each process its slice
        data_rank, data_world = (self.dist.rank, self.dist.world_size) if self.pipeline is None else (0, 1)
        self.train_loader = make_loader(self.data.train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                        rank=data_rank, world_size=data_world, **loader_args)
        self.val_loader = make_loader(self.data.val, cfg.eval_batch_size, **loader_args)
        self.test_loader = make_loader(self.data.test, cfg.eval_batch_size, **loader_args)
        self.augment, self.augment_spec = self.task.build_augment(self.device, cfg.seed + 7919 * self.dist.rank)
        # A batch larger than the training split is one batch of the whole split: say so, record what was used
        self.batch_size_used = min(cfg.batch_size, len(self.data.train)) if data_world == 1 \
            else cfg.batch_size
        if self.batch_size_used < cfg.batch_size:
            log.warning("--batch-size %d is larger than the training split (%s samples): every epoch is one batch of "
                        "%d (config.json records it as the batch size used)", cfg.batch_size,
                        f"{len(self.data.train):,}", self.batch_size_used)
        self.steps_per_epoch = math.ceil(len(self.train_loader) / cfg.accum_steps)
        if cfg.epochs is None:  # no --epochs: the data sets the length (config.json records the epochs chosen)
            self.config = cfg = replace(cfg, epochs=auto_epochs(self.steps_per_epoch))
            cfg.validate()
            capped = cfg.epochs * self.steps_per_epoch < STEP_BUDGET  # a tiny split: MAX_AUTO_EPOCHS cut it short
            log.info("%d epochs of %d optimizer %s: the default budget of about %s steps%s (%s training samples at "
                     "batch %d); --epochs N sets it", cfg.epochs, self.steps_per_epoch,
                     "step" if self.steps_per_epoch == 1 else "steps", f"{STEP_BUDGET:,}",
                     f", at most {MAX_AUTO_EPOCHS} epochs" if capped else "", f"{len(self.data.train):,}",
                     self.batch_size_used * cfg.accum_steps)
        self.schedule: LRSchedule = cfg.lr_schedule(self.steps_per_epoch)
        self.params = sum(p.numel() for p in self.model.parameters())
        # The loop's position and bookkeeping: all of it goes into every checkpoint.
        self.epoch, self.batch, self.global_step = 1, 0, 0  # epoch in progress (1-based), batches done in it
        self.history: list[dict] = []  # metrics rows of the finished epochs
        self.nan_streak = self.skipped_steps = 0
        self.train_seconds = 0.0  # time spent in training epochs (summary's samples_per_second)
        self.elapsed = 0.0  # wall time of fit() in earlier sessions of this run
        self.resumes = 0
        self.epoch_sums: dict | None = None  # partial sums of a resumed epoch
        self.callbacks = CallbackList(default_callbacks(cfg, self.task.monitors) + list(given["callbacks"]))
        self.engine.attach(self)
        if self.dist.is_main and self.open_run is not None:
            self.run = self.open_run(self)
        if self.resume_state is None:
            self.set_lr(self.schedule(0))
        self.callbacks.call("setup", self)
        if self.resume_state is not None:
            state_io.restore_training_state(self, self.resume_state)
            self.resume_state = None
            return
        self.run.write_config(self.run_record(kind))
        log.info("model %s: %s parameters; %s on %s in %s, %d steps per epoch; augmentation: %s; run directory %s",
                 cfg.model, f"{self.params:,}", "training" if kind == "train" else kind, self.device,
                 self.precision_text, len(self.train_loader),
                 self.augment_spec.describe(), self.run.path)

    def _default_optimizers(self, model: nn.Module) -> list[torch.optim.Optimizer]:
        cfg = self.config
        return [create_optimizer(model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov,
                                 cfg.decay_norm_and_bias, lr_decay_per_stage=cfg.lr_decay_per_stage)]

    def run_record(self, kind: str) -> dict:
        """What config.json records of this run (the sink adds the format's own fields)."""
        return run_record(self, kind)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self, epoch_sums: dict | None = None) -> dict | None:
        """The full training state (rank 0; None on the others): see :mod:`convolab.train.state`."""
        return state_io.training_state(self, epoch_sums)

    def restore_part(self, field: str, part, state: dict) -> None:
        state_io.restore_part(self, field, part, state)

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of the scheduled optimizer (the first): ``lr`` x each group's ``lr_mult`` (1 unless
        --lr-decay-per-stage)."""
        self.lr_now = lr
        for group in self.optimizers[0].param_groups:
            if isinstance(group["lr"], torch.Tensor):  # a recorded step reads it from the device (--cuda-graphs)
                group["lr"].fill_(lr * group.get("lr_mult", 1.0))
            else:
                group["lr"] = lr * group.get("lr_mult", 1.0)

    def _use_deferred_nan_check(self) -> bool:
        return self.step.use_deferred_nan_check()

    def _capture_graphs(self) -> None:
        self.step.capture_graphs()

    def kept_model(self) -> nn.Module:
        """The weights a run evaluates and saves: the EMA's with --ema, else the model's."""
        return self.callbacks.eval_model(self.model)

    def evaluate(self, loader, keep: bool = False, tta: bool | None = None) -> EvalResult:
        """The task's figures for the kept weights over ``loader`` (flip-averaged with --tta where the task has it)."""
        kept = self.kept_model() if self.pipeline is None else self.step.eval_module  # (pipeline: every process)
        model = self.task.eval_model(kept, self.config.tta if tta is None else tta)
        return self.engine.evaluate(self.task, model, loader, keep)

    # -- the run -------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        return EpochRunner(self).run(epoch)

    def fit(self) -> TrainResult:
        try:
            with deterministic_algorithms(self.config.deterministic):
                return self._fit()
        except KeyboardInterrupt:
            self._say_how_to_resume()  # (an interrupted checkpoint write has removed its temporary file by now)
            raise
        finally:
            if hasattr(self, "callbacks"):
                self.callbacks.call("teardown", self)
            close_loaders(*(getattr(self, f"{split}_loader", None) for split in ("train", "val", "test")))
            self.dist.close()

    def _say_how_to_resume(self) -> None:
        """After Ctrl-C: which checkpoint holds the run, and the command that continues it."""
        if isinstance(self.run, NullSink) or not self.dist.is_main:
            return
        saver = self.callbacks.find(Checkpointing) if hasattr(self, "callbacks") else None
        saved = saver.last if saver is not None else None
        if saved is not None and saved.is_file():
            log.warning("interrupted; the run is saved up to %s: continue it with `convolab train --resume %s`",
                        saved, shlex.quote(str(self.run.path)))
        elif not self.config.checkpoints:
            log.warning("interrupted; %s has no checkpoints (--no-checkpoints), so it cannot be resumed", self.run.path)
        else:
            log.warning("interrupted before the first checkpoint of %s, so there is nothing to resume "
                        "(--checkpoint-every N saves every N steps)", self.run.path)

    def _fit(self) -> TrainResult:
        self._fit_start = time.perf_counter()
        self._setup()
        cfg = self.config
        while self.epoch <= cfg.epochs and self.stop_reason is None:
            epoch = self.epoch
            t0 = time.perf_counter()
            overflows = self.overflow_steps
            if self.device.type == "cuda":  # the peak of the training steps only, not of evaluation at its batch size
                torch.cuda.reset_peak_memory_stats(self.device)
            train_loss, train_acc = self._train_epoch(epoch)
            peak_mb = (round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
                       if self.device.type == "cuda" else None)
            val = self.evaluate(self.val_loader) if len(self.data.val) else None
            row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                   "val_loss": val.loss if val else None, "val_accuracy": val.accuracy if val else None,
                   **self.task.row_fields(val),
                   "lr": self.schedule(self.global_step - 1), "seconds": round(time.perf_counter() - t0, 3)}
            if self.step.scaler is not None:
                row["loss_scale"], row["overflow_steps"] = self._last_scale, self.overflow_steps - overflows
            if peak_mb is not None:
                row["peak_memory_mb"] = peak_mb
                self.train_peak_mb = max(self.train_peak_mb or 0.0, peak_mb)
            self.run.append_metrics(row)
            self.history.append(row)
            self.epoch, self.batch = epoch + 1, 0
            self.callbacks.call("on_epoch_end", self, row, val)  # best epoch, TensorBoard, checkpoint ...
            val_text = f"val {self.task.describe(val)}" if val else "no validation split"
            extra = "".join(f"  {k.replace('_', ' ')} {row[k]:g}" for k in ("loss_scale", "overflow_steps",
                                                                          "peak_memory_mb") if k in row)
            log.info("epoch %d/%d  train loss %.4f acc %.4f  %s  lr %.3g%s  (%.1fs)", epoch, cfg.epochs, train_loss,
                     train_acc, val_text, row["lr"], extra, row["seconds"])
            if self.stop_reason is not None:
                log.info("%s", self.stop_reason)
        self.callbacks.call("on_train_end", self)
        return self._finish(self.stop_reason is not None)

    def _finish(self, stopped_early: bool) -> TrainResult:
        cfg, rows = self.config, self.history
        fit_seconds = self.elapsed + time.perf_counter() - self._fit_start
        test = self.evaluate(self.test_loader, keep=True)
        if test.n and not math.isfinite(test.loss):  # finite weights can still overflow to inf or NaN outputs
            raise FloatingPointError(f"training diverged: the final weights give non-finite outputs on the test set "
                                     f"({test.n:,} samples), so {self.run.path} got no model.safetensors or "
                                     f"summary.json; try a lower --lr")
        if self.pipeline is not None:  # rank 0's model gets every stage's weights
            self.step.gather_model()
        self.run.save_model(self.kept_model(), weights_metadata(self.kept_model(), self.data))
        val_accs = [r["val_accuracy"] for r in rows if r["val_accuracy"] is not None]
        best = self.callbacks.state_dict().get("best", {})
        summary = {
            "model": cfg.model, "dataset": self.data.name, "task": self.task.name,
            "test_accuracy": test.accuracy, "test_loss": test.loss,
            "best_val_accuracy": max(val_accs) if val_accs else None,
            "final_val_accuracy": rows[-1]["val_accuracy"],
            "best_epoch": best.get("epoch"), "stopped_early": stopped_early, "stop_reason": self.stop_reason,
            "epochs": len(rows), "steps": self.global_step, "skipped_steps": self.skipped_steps,
            "train_seconds": round(fit_seconds, 3),
            "samples_per_second": round(len(self.data.train) * len(rows) / max(self.train_seconds, 1e-9), 1),
            "params": self.params, **self.param_counts, "device": str(self.device),
            "test_samples": test.n, "resumes": self.resumes, "precision": self.precision,
            "world_size": self.dist.world_size, **self.task.summary_fields(test),
        }
        if cfg.tta:  # test_accuracy is the flip-averaged one; the saved model alone gives this
            plain = self.evaluate(self.test_loader, tta=False)
            summary.update(test_accuracy_without_tta=plain.accuracy, test_loss_without_tta=plain.loss)
        if self.step.scaler is not None:
            summary["overflow_steps"] = self.overflow_steps
        if self.train_peak_mb is not None:
            summary["peak_memory_mb"] = self.train_peak_mb  # the largest epoch's training-step peak
        self.run.write_summary(summary)
        self.callbacks.call("on_fit_end", self, summary, test)
        log.debug("test %s on %s %s test samples after %d epochs, %.1fs of training", self.task.describe(test),
                  f"{test.n:,}", self.data.name, len(rows), fit_seconds)
        return TrainResult(self.run.path, summary, self.model)
