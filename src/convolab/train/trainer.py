"""The training loop: data in memory, model, optimizer, per-epoch validation, run directory.

The engine owns the loop, devices and files; the model and the recipe come from ``TrainConfig``.
"""

from __future__ import annotations

import logging
import math
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from convolab.data import DeviceLoader, ImageDataset, load_dataset
from convolab.device import resolve_device
from convolab.models import create_model, get_model_entry
from convolab.train.allocator import keep_freed_memory
from convolab.train.config import TrainConfig
from convolab.train.init_from import load_initial_weights
from convolab.train.metrics import EvalResult, confusion_matrix, evaluate
from convolab.train.optim import create_optimizer
from convolab.train.rundir import RunDir, prepare_run_dir
from convolab.train.schedule import LRSchedule

__all__ = ["Trainer", "TrainResult", "train", "weights_metadata"]

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


def versions() -> dict:
    """Versions that matter for reproducing a run."""
    from importlib.metadata import PackageNotFoundError, version

    import convolab

    try:
        tv = version("torchvision")
    except PackageNotFoundError:
        tv = None
    return {"convolab": convolab.__version__, "torch": torch.__version__, "torchvision": tv,
            "numpy": np.__version__, "python": platform.python_version()}


def weights_metadata(model: nn.Module, data: ImageDataset) -> dict:
    """What ``model.safetensors`` carries so that it alone rebuilds and feeds the model."""
    cfg = dict(model.convolab_cfg)
    return {"format": 1, "model": cfg.pop("name"), "model_kwargs": cfg, "classes": list(data.classes),
            "mean": list(data.mean), "std": list(data.std),
            "input_size": [data.in_chans, *data.image_size]}


class Trainer:
    """Runs one ``TrainConfig`` end to end. ``fit()`` returns a :class:`TrainResult`."""

    def __init__(self, config: TrainConfig):
        config.validate()
        get_model_entry(config.model)  # an unknown model fails now, not after loading (or downloading) data
        self.config = config
        self.device = resolve_device(config.device)
        # Refuse a taken --out before the (slow) data loading, create it only once everything loaded.
        self.run_path = prepare_run_dir(config.out, config.model, config.data, config.overwrite, create=False)

    # -- setup -------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.config
        seed_everything(cfg.seed)
        keep_freed_memory()
        self.data = load_dataset(cfg.data, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed,
                                 download=cfg.download)
        self.model = create_model(cfg.model, num_classes=self.data.num_classes, in_chans=self.data.in_chans,
                                  input_size=self.data.image_size, **cfg.model_kwargs)
        if cfg.init_from:
            for note in load_initial_weights(self.model, cfg.init_from):
                log.info("--init-from: %s", note)
            log.info("initialised %s from %s", cfg.model, cfg.init_from)
        channels_last = cfg.channels_last and self.device.type != "mps"
        self.model.to(self.device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.optimizer = create_optimizer(self.model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay,
                                          nesterov=cfg.nesterov, decay_norm_and_bias=cfg.decay_norm_and_bias)
        loader_args = dict(mean=self.data.mean, std=self.data.std, device=self.device, channels_last=channels_last)
        self.train_loader = DeviceLoader(self.data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, **loader_args)
        self.val_loader = DeviceLoader(self.data.val, cfg.eval_batch_size, **loader_args)
        self.test_loader = DeviceLoader(self.data.test, cfg.eval_batch_size, **loader_args)
        self.steps_per_epoch = math.ceil(len(self.train_loader) / cfg.accum_steps)
        self.schedule: LRSchedule = cfg.lr_schedule(self.steps_per_epoch)
        self.global_step = 0  # optimizer steps taken
        self._set_lr(self.schedule(0))
        self.params = sum(p.numel() for p in self.model.parameters())
        self.run = RunDir(prepare_run_dir(self.run_path, cfg.model, cfg.data, cfg.overwrite, create=True))
        self.run.write_config({
            "model": cfg.model,
            "model_kwargs": {k: v for k, v in self.model.convolab_cfg.items() if k != "name"},
            "dataset": {"name": self.data.name, "source": self.data.source, "data_dir": cfg.data_dir,
                        "val_fraction": cfg.val_fraction, "classes": self.data.classes,
                        "sizes": {"train": len(self.data.train), "val": len(self.data.val),
                                  "test": len(self.data.test)},
                        "input_size": [self.data.in_chans, *self.data.image_size],
                        "mean": list(self.data.mean), "std": list(self.data.std)},
            "recipe": {k: getattr(cfg, k) for k in ("epochs", "batch_size", "eval_batch_size", "lr", "optimizer",
                                                   "momentum", "weight_decay", "channels_last", "schedule",
                                                   "accum_steps", "label_smoothing", "clip_grad_norm")},
            "seed": cfg.seed,
            "device": str(self.device),
            "command": sys.argv if Path(sys.argv[0]).name in ("convolab", "__main__.py") else None,
            "versions": versions(),
            "config": cfg.to_dict(),
        })
        log.info("model %s: %s parameters; training on %s, %d steps per epoch; run directory %s",
                 cfg.model, f"{self.params:,}", self.device, len(self.train_loader), self.run.path)

    # -- loop --------------------------------------------------------------------------------
    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _group_sizes(self) -> list[int]:
        """Samples in each optimizer step's group of ``accum_steps`` micro-batches, for one epoch."""
        n, b, a = self.train_loader.num_samples, self.train_loader.batch_size, self.config.accum_steps
        sizes = [min(b, n - start) for start in range(0, n, b)]
        return [sum(sizes[i:i + a]) for i in range(0, len(sizes), a)]

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        cfg = self.config
        model, opt, loader = self.model, self.optimizer, self.train_loader
        params = [p for group in opt.param_groups for p in group["params"]]
        group_sizes = self._group_sizes()
        model.train()
        loss_sum = torch.zeros((), device=self.device)  # summed on the device: no sync per step
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        step_loss = torch.zeros((), device=self.device)
        seen = 0
        step_rows: list[dict] = []  # this epoch's steps.jsonl rows (losses as device tensors until written)
        bar = tqdm(total=len(loader), desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch",
                   disable=None if cfg.progress else True, file=sys.stderr, dynamic_ncols=True)
        opt.zero_grad(set_to_none=True)
        for batch, (x, y) in enumerate(loader):
            group = batch // cfg.accum_steps
            logits = model(x)
            loss = self._loss(logits, y)
            # Each micro-batch's mean loss is weighted by its share of the group's samples, so the
            # accumulated gradient is the mean over the whole group (a short last group included).
            weighted = loss if cfg.accum_steps == 1 else loss * (len(y) / group_sizes[group])
            weighted.backward()
            with torch.no_grad():
                loss_sum += loss.detach() * len(y)
                correct += (logits.argmax(1) == y).sum()
                step_loss += weighted.detach()
            seen += len(y)
            if (batch + 1) % cfg.accum_steps == 0 or batch + 1 == len(loader):
                lr = opt.param_groups[0]["lr"]
                row = {"step": self.global_step + 1, "epoch": epoch, "lr": lr, "loss": step_loss.clone()}
                if cfg.clip_grad_norm is not None:
                    row["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm, foreach=True)
                opt.step()
                opt.zero_grad(set_to_none=True)
                step_loss.zero_()
                step_rows.append(row)
                self.global_step += 1
                if self.global_step < self.schedule.total_steps:
                    self._set_lr(self.schedule(self.global_step))
            if not bar.disable:
                bar.update()
                if (batch + 1) % 25 == 0 or batch + 1 == len(loader):
                    bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{int(correct) / seen:.4f}",
                                    refresh=False)
        bar.close()
        self._write_steps(step_rows)
        train_loss = float(loss_sum) / seen
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training diverged in epoch {epoch} (loss is {train_loss}); "
                                     "try a lower --lr")
        return train_loss, int(correct) / seen

    def _write_steps(self, rows: list[dict]) -> None:
        """Append the per-step rows to steps.jsonl: the device values are read in one transfer."""
        if not rows:
            return
        keys = [k for k, v in rows[0].items() if isinstance(v, torch.Tensor)]
        values = torch.stack([torch.stack([r[k].float() for k in keys]) for r in rows]).tolist()
        for r, vals in zip(rows, values):
            r.update(zip(keys, vals))
        self.run.append_steps(rows)

    def fit(self) -> TrainResult:
        self._setup()
        cfg = self.config
        rows = []
        best_val = float("nan")
        train_seconds = 0.0
        fit_start = time.perf_counter()
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            train_loss, train_acc = self._train_epoch(epoch)
            train_seconds += time.perf_counter() - t0
            val = evaluate(self.model, self.val_loader) if len(self.data.val) else None
            row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                   "val_loss": val.loss if val else None, "val_accuracy": val.accuracy if val else None,
                   "lr": self.schedule(self.global_step - 1), "seconds": round(time.perf_counter() - t0, 3)}
            self.run.append_metrics(row)
            rows.append(row)
            if val and (math.isnan(best_val) or val.accuracy > best_val):
                best_val = val.accuracy
            val_text = f"val loss {val.loss:.4f} acc {val.accuracy:.4f}" if val else "no validation split"
            log.info("epoch %d/%d  train loss %.4f acc %.4f  %s  (%.1fs)", epoch, cfg.epochs, train_loss, train_acc,
                     val_text, row["seconds"])
        fit_seconds = time.perf_counter() - fit_start
        test = evaluate(self.model, self.test_loader, keep_predictions=True)
        self.run.save_model(self.model, weights_metadata(self.model, self.data))
        summary = {
            "model": cfg.model, "dataset": self.data.name,
            "test_accuracy": test.accuracy, "test_loss": test.loss,
            "best_val_accuracy": None if math.isnan(best_val) else best_val,
            "final_val_accuracy": rows[-1]["val_accuracy"],
            "epochs": cfg.epochs, "train_seconds": round(fit_seconds, 3),
            "samples_per_second": round(len(self.data.train) * cfg.epochs / train_seconds, 1),
            "params": self.params, "device": str(self.device),
            "test_samples": test.n,
        }
        self.run.write_summary(summary)
        if cfg.plots:
            self._plots(rows, test)
        # The CLI prints this figure as its result; Python callers have it in the returned summary.
        log.debug("test accuracy %.4f (loss %.4f) on %s %s test images after %d epochs, %.1fs of training",
                 test.accuracy, test.loss, f"{test.n:,}", self.data.name, cfg.epochs, fit_seconds)
        return TrainResult(self.run.path, summary, self.model)

    def _plots(self, rows: list[dict], test: EvalResult) -> None:
        from convolab.report import plot_confusion, plot_curves, plot_predictions

        plot_curves(rows, self.run.plots)
        plot_predictions(self.data.test.images, test.labels, test.predictions, test.probabilities,
                         self.data.classes, self.run.plots / "predictions.png", seed=self.config.seed)
        cm = confusion_matrix(test.labels, test.predictions, self.data.num_classes)
        plot_confusion(cm, self.data.classes, self.run.plots / "confusion.png")


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
    if config.progress:
        from convolab._logging import ensure_console

        ensure_console()
    return Trainer(config).fit()
