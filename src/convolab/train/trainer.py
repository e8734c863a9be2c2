"""The training loop: data in memory, model, optimizer, schedule, validation, checkpoints, run directory.

The engine owns the loop, devices and files; the model and the recipe come from ``TrainConfig``.
One optimizer step is: ``accum_steps`` forward/backward passes (gradients added, each micro-batch
weighted by its share of the step's images), a finiteness check of the loss, gradient clipping,
the optimizer step, and the learning rate of the next step from the schedule.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import math
import os
import platform
import random
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from convolab.atomic import read_jsonl, remove_temporaries, strict_json, write_json, write_jsonl
from convolab.data import DeviceLoader, ImageDataset, load_dataset
from convolab.data.augment import BatchAugment, flips_keep_class, resolve_augment
from convolab.device import resolve_device
from convolab.models import create_model, get_model_entry
from convolab.train.allocator import keep_freed_memory
from convolab.train.checkpoint import (
    CHECKPOINTS,
    FORMAT,
    check_finite,
    checkpoint_name,
    find_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from convolab.train.config import RESUME_FREE, TrainConfig
from convolab.train.cuda_graphs import GraphedForward, StepGraph, cuda_graph_conflicts
from convolab.train.distributed import all_min, all_min_on_device, all_reduce_sum, gather_objects, init_distributed
from convolab.train.ema import ModelEma
from convolab.train.init_from import load_initial_weights
from convolab.train.lr_finder import LRFindResult, check_range_test, lr_range_test
from convolab.train.metrics import EvalResult, FlipAverage, confusion_matrix, evaluate
from convolab.train.optim import create_optimizer
from convolab.train.rundir import CONFIG, METRICS, STEPS, NullRunDir, RunDir, prepare_run_dir, run_id
from convolab.train.rundir import own_files as own_run_files
from convolab.train.schedule import LRSchedule

__all__ = ["Trainer", "TrainResult", "weights_metadata", "config_differences"]

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


def config_differences(saved: dict, given: dict) -> list[str]:
    """``--name (run: a, given: b)`` for every setting that differs, except those a resume may change."""
    out = []
    for key, value in given.items():
        if key in RESUME_FREE or key not in saved:
            continue
        if saved[key] != value:
            out.append(f"--{key.replace('_', '-')} (run: {saved[key]!r}, given: {value!r})")
    return out


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX), rather than emulating it."""
    has = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(f is not None and f() for f in has)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision ``auto`` means on ``device``: bf16 on a CPU with native bfloat16 instructions (the
    training steps run about 1.5x faster there; see the README's figures), else 32. GPUs stay at 32
    unless asked: for the small models convolab trains by default, autocast's casts cost more there
    than they save. Any other value is returned as given."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "32"


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run (one line saying what works instead)."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"--precision fp16 needs a CUDA GPU (float16 training needs loss scaling, which convolab does "
                         f"there); on {device.type} use --precision bf16 or 32")
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("--precision bf16: this GPU has no bfloat16 support; use --precision fp16 or 32")
        if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            raise ValueError("--precision bf16: this CPU has no bfloat16 instructions (AVX512-BF16, AMX or AVX-NE), "
                             "so it would be emulated and slower; use --precision 32")
        if device.type == "mps":
            raise ValueError("--precision bf16 is not supported on MPS here; use --precision 32")


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


class Trainer:
    """Runs one ``TrainConfig`` end to end. ``fit()`` returns a :class:`TrainResult`.

    Args:
        config: the run.
        resume_from: a run directory (its newest checkpoint) or a checkpoint file: continue that run.
            ``config`` must then equal the run's own, except for the settings in ``RESUME_FREE``.
    """

    def __init__(self, config: TrainConfig, resume_from: str | os.PathLike | None = None):
        config.validate()
        entry = get_model_entry(config.model)  # an unknown model fails now, not after loading (or downloading) data
        if entry.input_kind != "image":
            raise ValueError(f"{config.model} is a {entry.input_kind} model; the trainer trains image classifiers "
                             f"only for now: choose a model of input kind 'image' (`convolab models` lists them)")
        self.config = config
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        check_precision(self.precision, self.device)
        self.dist, self.device = init_distributed(self.device)  # torchrun: join the process group
        if config.cuda_graphs:  # (the flags it cannot go with are refused by config.validate)
            conflict = cuda_graph_conflicts(self.device, self.dist.world_size)
            if conflict:
                raise ValueError(conflict)
        if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard "
                             "(metrics.jsonl and steps.jsonl hold the same figures)")
        self.resume_state: dict | None = None
        if resume_from is not None:
            run_dir, self.resume_file, state = find_checkpoint(resume_from)
            if state.get("run_id") != run_id(run_dir):  # a checkpoint copied in from another run's folder
                raise ValueError(f"refusing to resume {run_dir}: {self.resume_file.name} was written by another run "
                                 f"(its run id {state.get('run_id')!r}, this folder's {run_id(run_dir)!r} in "
                                 f"{run_dir}/.convolab-run); resume that run from its own folder")
            differences = config_differences(state["config"], config.to_dict())
            if differences:
                raise ValueError(f"refusing to resume {run_dir}: these options differ from the run's: "
                                 f"{', '.join(differences)}; drop them (or train a new run)")
            if not (run_dir / CONFIG).is_file():
                raise FileNotFoundError(f"--resume {run_dir}: no {CONFIG}; is this a convolab run directory?")
            self.resume_state, self.run_path = state, run_dir
        elif self.dist.is_main:
            # Refuse a taken --out before the (slow) data loading, create it only once everything loaded.
            self.run_path = prepare_run_dir(config.out, config.model, config.data, config.overwrite, create=False)
        else:  # rank 0 checks and writes the run directory
            self.run_path = Path(config.out or "runs/rank-0-names-it")

    # -- setup -------------------------------------------------------------------------------
    def _setup(self, kind: str = "train") -> None:
        cfg = self.config
        seed_everything(cfg.seed)
        keep_freed_memory()
        self.data = load_dataset(cfg.data, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed,
                                 download=cfg.download,
                                 image_size=tuple(cfg.image_size) if cfg.image_size is not None else None)
        self.model = create_model(cfg.model, num_classes=self.data.num_classes, in_chans=self.data.in_chans,
                                  input_size=self.data.image_size, **cfg.model_kwargs)
        if cfg.init_from and self.resume_state is None:
            for note in load_initial_weights(self.model, cfg.init_from):
                log.info("--init-from: %s", note)
            log.info("initialised %s from %s", cfg.model, cfg.init_from)
        self.channels_last = cfg.channels_last and self.device.type != "mps"
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self.model.to(self.device, memory_format=memory_format)
        if self.device.type == "cuda" and not cfg.deterministic:
            torch.backends.cudnn.benchmark = True
        if cfg.grad_checkpointing:
            if not hasattr(self.model, "set_grad_checkpointing"):
                raise ValueError(f"{cfg.model} has no gradient checkpointing; the deep families do (resnet, densenet, "
                                 "vgg, mobilenet, shufflenet, efficientnet, convnext ...)")
            self.model.set_grad_checkpointing(True)
        self.optimizer = create_optimizer(self.model, cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay,
                                          nesterov=cfg.nesterov, decay_norm_and_bias=cfg.decay_norm_and_bias)
        self.ema = ModelEma(self.model, cfg.ema, warmup=True) if cfg.ema else None
        self.net = self.model  # what the training steps call
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                               else None)
            if self.dist.rank:  # the same weights everywhere (DDP broadcast them), other dropout masks per process
                torch.manual_seed(cfg.seed + 7919 * self.dist.rank)
        if cfg.compile:
            self.net = torch.compile(self.net)
        # --cuda-graphs, captured at the first training step: the whole step, or the model's passes only
        self.step_graph: StepGraph | None = None
        self.graphed: GraphedForward | None = None
        self.autocast_dtype = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self.overflow_steps, self._last_scale = 0, None  # fp16 steps skipped by the loss scaler
        self.deferred_nan_check = self._use_deferred_nan_check()
        if self.deferred_nan_check and isinstance(self.optimizer, torch.optim.SGD):
            # A skipped first step would leave torch's fused SGD a momentum buffer of uninitialised memory;
            # zeros give the same first step (buffer = 0 * momentum + grad) and a clean skip. (A resumed run's
            # buffers replace these when its optimizer state is loaded.)
            for group in self.optimizer.param_groups:
                if group["momentum"]:
                    for p in group["params"]:
                        self.optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)
        self.train_peak_mb: float | None = None  # CUDA: the largest training-step memory peak of any epoch
        loader_args = dict(mean=self.data.mean, std=self.data.std, device=self.device,
                           channels_last=self.channels_last)
        self.train_loader = DeviceLoader(self.data.train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                         rank=self.dist.rank, world_size=self.dist.world_size, **loader_args)
        self.val_loader = DeviceLoader(self.data.val, cfg.eval_batch_size, **loader_args)
        self.test_loader = DeviceLoader(self.data.test, cfg.eval_batch_size, **loader_args)
        self.augment_spec = resolve_augment(cfg.augment, self.data.name, self.data.image_size, crop_pad=cfg.crop_pad,
                                            hflip=cfg.hflip, rotate=cfg.rotate, cutout=cfg.cutout, mixup=cfg.mixup,
                                            cutmix=cfg.cutmix)
        black = -torch.tensor(self.data.mean) / torch.tensor(self.data.std)  # a 0 pixel after normalisation
        self.augment = (BatchAugment(self.augment_spec, black, self.device, seed=cfg.seed + 7919 * self.dist.rank)
                        if self.augment_spec.active else None)
        if cfg.tta and flips_keep_class(self.data.name) is False:
            log.warning("--tta averages over mirror images, which are other symbols (or none) for %s", self.data.name)
        # A batch larger than the training split is one batch of the whole split: say so, record what was used
        self.batch_size_used = min(cfg.batch_size, len(self.data.train)) if self.dist.world_size == 1 \
            else cfg.batch_size
        if self.batch_size_used < cfg.batch_size:
            log.warning("--batch-size %d is larger than the training split (%s images): every epoch is one batch of "
                        "%d (config.json records it as the batch size used)", cfg.batch_size,
                        f"{len(self.data.train):,}", self.batch_size_used)
        self.steps_per_epoch = math.ceil(len(self.train_loader) / cfg.accum_steps)
        self.schedule: LRSchedule = cfg.lr_schedule(self.steps_per_epoch)
        self.params = sum(p.numel() for p in self.model.parameters())
        # The loop's position and bookkeeping: all of it goes into every checkpoint.
        self.epoch, self.batch, self.global_step = 1, 0, 0  # epoch in progress (1-based), batches done in it
        self.history: list[dict] = []  # metrics rows of the finished epochs
        self.best: dict = {"value": None, "epoch": None}  # of cfg.monitor
        self.bad_epochs = 0  # epochs since the last improvement
        self.nan_streak = self.skipped_steps = 0
        self.train_seconds = 0.0  # time spent in training epochs (summary's samples_per_second)
        self.elapsed = 0.0  # wall time of fit() in earlier sessions of this run
        self.resumes = 0
        self.epoch_sums: dict | None = None  # partial sums of a resumed epoch
        self.best_state: dict | None = None  # weights of the best epoch, kept for early stopping
        if self.resume_state is not None:
            self.run = RunDir(self.run_path) if self.dist.is_main else NullRunDir(self.run_path)
            self._restore(self.resume_state)
            self.resume_state = None
            self._open_tensorboard()
            return
        self._set_lr(self.schedule(0))
        if not self.dist.is_main:
            self.run = NullRunDir(self.run_path)
            self._open_tensorboard()
            return
        self.run = RunDir(prepare_run_dir(self.run_path, cfg.model, cfg.data, cfg.overwrite, create=True))
        self.run.write_config({
            "kind": kind,
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
                                                   "accum_steps", "label_smoothing", "clip_grad_norm", "augment")}
            | ({"batch_size": self.batch_size_used, "batch_size_given": cfg.batch_size}
               if self.batch_size_used != cfg.batch_size else {}),
            "augment": asdict(self.augment_spec),
            "seed": cfg.seed,
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "command": sys.argv if Path(sys.argv[0]).name in ("convolab", "__main__.py") else None,
            "versions": versions(),
            "config": cfg.to_dict(),
        })
        log.info("model %s: %s parameters; %s on %s in %s, %d steps per epoch; augmentation: %s; run directory %s",
                 cfg.model, f"{self.params:,}", "training" if kind == "train" else kind, self.device,
                 self._describe_precision(), len(self.train_loader), self.augment_spec.describe(), self.run.path)
        self._open_tensorboard()

    def _describe_precision(self) -> str:
        text = {"32": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast, loss scaling"}[self.precision]
        if self.config.precision == "auto" and self.precision == "bf16":
            text += " (--precision auto: this CPU has bfloat16 instructions; --precision 32 for float32)"
        return text

    def _open_tensorboard(self) -> None:
        self.tensorboard = None
        if self.config.tensorboard and self.dist.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard "
                                 "(metrics.jsonl and steps.jsonl hold the same figures)") from None
            self.tensorboard = SummaryWriter(log_dir=str(self.run.path / "tensorboard"))

    # -- checkpoints ---------------------------------------------------------------------------
    def _state(self, epoch_sums: dict | None = None) -> dict | None:
        """Everything the next step depends on (see convolab.train.checkpoint). With data parallelism each
        process's generators and partial sums are gathered under ``ranks`` (rank 0 gets the state, the
        others None)."""
        own = {"rng": rng_state(), "augment": self.augment.state_dict() if self.augment is not None else None,
               "epoch_sums": epoch_sums}
        ranks = gather_objects(own, self.dist) if self.dist.enabled else None
        if not self.dist.is_main:
            return None
        cpu = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        return {
            "ranks": ranks, "run_id": run_id(self.run.path),  # resume refuses a checkpoint of another run
            "format": FORMAT, "config": self.config.to_dict(),
            "epoch": self.epoch, "batch": self.batch, "global_step": self.global_step,
            "model": cpu, "optimizer": self._optimizer_state(),
            "rng": own["rng"], "loader": self.train_loader.state_dict(), "augment": own["augment"],
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "overflow_steps": self.overflow_steps,
            "epoch_sums": epoch_sums,
            "history": copy.deepcopy(self.history), "best": dict(self.best), "bad_epochs": self.bad_epochs,
            "nan": {"streak": self.nan_streak, "skipped": self.skipped_steps},
            "train_seconds": self.train_seconds, "elapsed": self.elapsed + time.perf_counter() - self._fit_start,
            "resumes": self.resumes,
        }

    def _save_checkpoint(self, epoch_sums: dict | None = None, best: bool = False) -> None:
        """The step checkpoint (and ``best.pt`` too when ``best``); every process calls it, rank 0 writes."""
        if not self.config.checkpoints:
            return
        state = self._state(epoch_sums)
        if state is None:
            return
        for index, tensors in state["optimizer"]["state"].items():  # Adam's moments, momentum buffers ...
            check_finite({f"parameter {index} {k}": v for k, v in tensors.items()}, "optimizer state")
        path = save_checkpoint(self.run.path / CHECKPOINTS / checkpoint_name(self.global_step), state)
        if path != self._last_checkpoint:  # an epoch end can rewrite the checkpoint --checkpoint-every just wrote
            prune_checkpoints(self.run.path, keep=path, previous=self._last_checkpoint)
            self._last_checkpoint = path
        if best:  # the same state, kept under its own name
            save_checkpoint(self.run.path / CHECKPOINTS / "best.pt", state)

    def _optimizer_state(self) -> dict:
        """The optimizer's state dict, with learning rates as numbers (a recorded step keeps them on the device)."""
        state = self.optimizer.state_dict()
        state["param_groups"] = [{**g, "lr": float(g["lr"])} if isinstance(g["lr"], torch.Tensor) else g
                                 for g in state["param_groups"]]
        return state

    def _restore(self, state: dict) -> None:
        """Continue from a checkpoint: weights, optimizer, generators, position, bookkeeping, files."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:  # torch's long size-mismatch text, cut to its first line
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ValueError(f"{self.resume_file}: its weights do not fit {self.config.model} on "
                             f"{self.config.data} ({reason})") from None
        ranks = state.get("ranks")
        if ranks is not None and len(ranks) != self.dist.world_size:
            raise ValueError(f"the checkpoint was written by {len(ranks)} processes; resume it with "
                             f"torchrun --nproc-per-node {len(ranks)} (this job has {self.dist.world_size})")
        if ranks is not None:  # this process's own generators and partial sums
            state = {**state, **ranks[self.dist.rank]}
        set_rng_state(state["rng"])
        self.epoch, self.batch, self.global_step = state["epoch"], state["batch"], state["global_step"]
        self.train_loader.load_state_dict(state["loader"], skip_batches=self.batch)
        # The augmentation's generator lives on the training device, so the checkpoint reader could not try its state.
        for field, part in (("augment", self.augment), ("ema", self.ema), ("scaler", self.scaler)):
            if part is None:
                continue
            try:
                part.load_state_dict(state[field])
            except (RuntimeError, ValueError, TypeError, KeyError) as e:
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise ValueError(f"{self.resume_file}: field {field!r} cannot be restored ({reason})") from None
        self.overflow_steps = state["overflow_steps"]
        self._last_scale = self.scaler.get_scale() if self.scaler is not None else None
        self._set_lr(self.schedule(min(self.global_step, self.schedule.total_steps - 1)))
        self.history = list(state["history"])
        self.best, self.bad_epochs = dict(state["best"]), state["bad_epochs"]
        self.nan_streak, self.skipped_steps = state["nan"]["streak"], state["nan"]["skipped"]
        self.train_seconds, self.elapsed = state["train_seconds"], state["elapsed"]
        self.resumes = state["resumes"] + 1
        self.epoch_sums = state["epoch_sums"]
        self._last_checkpoint = self.resume_file  # kept as the previous one until the next is on disk
        best_file = self.run.path / CHECKPOINTS / "best.pt"
        if self.config.early_stopping and self.best["epoch"] is not None and best_file.is_file():
            self.best_state = load_checkpoint(best_file)["model"]
        if self.dist.is_main:
            self._truncate_logs()
        log.info("resuming %s from %s: epoch %d, step %d of %d", self.run.path, self.resume_file.name, self.epoch,
                 self.global_step, self.schedule.total_steps)

    def _truncate_logs(self) -> None:
        """Drop what the interrupted session logged after its last checkpoint, so that every epoch and step
        appears once: metrics.jsonl becomes the checkpoint's history, steps.jsonl its first steps. A torn last
        line (a kill mid-append) goes too, and so do the temporary files of writes a kill cut short."""
        for leftover in remove_temporaries(self.run.path, self.run.path / CHECKPOINTS, self.run.plots):
            log.info("removed %s, left by an interrupted write", leftover)
        metrics = self.run.path / METRICS
        rows = read_jsonl(metrics) if metrics.exists() else []
        if rows != strict_json(self.history) or metrics.exists() and metrics.read_bytes()[-1:] not in (b"", b"\n"):
            write_jsonl(metrics, self.history)
        steps = self.run.path / STEPS
        if steps.exists():
            rows = read_jsonl(steps)
            kept = [r for r in rows if r.get("step", 0) <= self.global_step]
            if len(kept) != len(rows) or steps.read_bytes()[-1:] not in (b"", b"\n"):
                write_jsonl(steps, kept)

    # -- loop --------------------------------------------------------------------------------
    def _set_lr(self, lr: float) -> None:
        self.lr_now = lr
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):  # a recorded step reads it from the device (--cuda-graphs)
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def _group_sizes(self) -> list[int]:
        """Samples in each optimizer step's group of ``accum_steps`` micro-batches, for one epoch."""
        sizes, a = self.train_loader.batch_sizes(), self.config.accum_steps
        return [sum(sizes[i:i + a]) for i in range(0, len(sizes), a)]

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)

    # _forward, _clip_grad_norm and _evaluate are what convolab.train.numpy_engine.GlassTrainer does in NumPy instead.
    def _clip_grad_norm(self, params: list, max_norm: float) -> torch.Tensor:
        """Scale the gradients so that their joint L2 norm is at most ``max_norm``; returns the norm before."""
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)

    def _evaluate(self, loader: DeviceLoader, keep_predictions: bool = False, tta: bool | None = None) -> EvalResult:
        """Loss and accuracy of the weights that are kept (the EMA's with --ema), flip-averaged with --tta."""
        model = self.ema.module if self.ema is not None else self.model
        if self.config.tta if tta is None else tta:
            model = FlipAverage(model)
        return evaluate(model, loader, keep_predictions=keep_predictions)

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One training batch's logits and mean loss."""
        logits = (self.graphed or self.net)(x)
        return logits, self._loss(logits, y)

    def _autocast(self):
        """bf16/fp16 autocast for the forward pass and the loss (--precision), else nothing."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        # CUDA graphs record the casts themselves: autocast's cache of cast weights would go stale
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, cache_enabled=not self.config.cuda_graphs)

    def _augmented_forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augment a training batch, then :meth:`_forward`: logits, mean loss, and the labels the batch's
        accuracy is counted against (for a mixed batch, those of the larger share)."""
        mix = None
        if self.augment is not None:
            x, mix = self.augment(x, y)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            logits, loss = self._forward(x, y)
            if mix is None:
                return logits, loss, y
            loss = mix.lam * loss + (1 - mix.lam) * self._loss(logits, mix.y2)
        return logits, loss, y if mix.lam >= 0.5 else mix.y2

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        cfg = self.config
        model, opt, loader = self.model, self.optimizer, self.train_loader
        params = [p for group in opt.param_groups for p in group["params"]]
        group_sizes = self._group_sizes()
        model.train()
        sums, self.epoch_sums = self.epoch_sums, None
        # Epoch sums stay on the device (no host sync per step); a resumed epoch starts from its saved sums.
        loss_sum = sums["loss_sum"].to(self.device) if sums else torch.zeros((), device=self.device)
        correct = sums["correct"].to(self.device) if sums else torch.zeros((), device=self.device, dtype=torch.long)
        seen = sums["seen"] if sums else 0
        seconds = sums["seconds"] if sums else 0.0
        # The step in progress: its weighted loss (the value optimised), and its share of the epoch sums,
        # added only if the step is taken.
        step_loss = torch.zeros((), device=self.device)
        step_sum = torch.zeros((), device=self.device)
        step_correct = torch.zeros((), device=self.device, dtype=torch.long)
        step_seen = 0
        step_rows: list[dict] = []  # steps.jsonl rows not yet written (losses stay on the device until then)
        # With the deferred check: the steps whose finiteness is still on the device, (row, flag, samples)
        pending: list[tuple[dict, torch.Tensor, int]] = []
        bar = tqdm(total=len(loader), initial=self.batch, desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                   unit="batch", disable=None if cfg.progress and self.dist.is_main else True, file=sys.stderr,
                   dynamic_ncols=True)
        t0 = time.perf_counter()
        first_batch = self.batch  # (a resumed epoch starts mid-way)
        next_note = t0 + self.PROGRESS_EVERY  # without a progress bar: a log line at least this often
        if cfg.cuda_graphs and self.graphed is None and self.step_graph is None:
            self._capture_graphs()
        graph = self.step_graph
        if graph is not None:  # the recorded steps add to their own sums on the device
            self.graph_sums[0].zero_(), self.graph_sums[1].zero_()

        def totals() -> tuple[torch.Tensor, torch.Tensor]:
            return (loss_sum, correct) if graph is None else (loss_sum + self.graph_sums[0],
                                                               correct + self.graph_sums[1])

        opt.zero_grad(set_to_none=True)
        for batch, (x, y) in enumerate(loader, start=self.batch):
            step_ends = (batch + 1) % cfg.accum_steps == 0 or batch + 1 == len(loader)
            recorded = graph is not None and len(y) == len(self.graph_inputs[1])
            if recorded:  # --cuda-graphs: the whole step in one launch (see _graph_step)
                self.graph_inputs[0].copy_(x), self.graph_inputs[1].copy_(y)
                graph_loss, graph_ok = graph.replay()
                row = {"step": self.global_step + 1, "epoch": epoch, "lr": self.lr_now, "loss": graph_loss.clone()}
                pending.append((row, graph_ok.clone(), len(y)))
            else:
                # DDP averages the gradients across processes in the backward pass: only once per step
                sync = contextlib.nullcontext() if step_ends or not self.dist.enabled else self.net.no_sync()
                with sync:
                    logits, loss, y = self._augmented_forward(x, y)
                    # Each micro-batch's mean loss is weighted by its share of the group's samples, so the
                    # accumulated gradient is the mean over the whole group (a short last group included).
                    weighted = loss if cfg.accum_steps == 1 else loss * (len(y) / group_sizes[batch // cfg.accum_steps])
                    (weighted if self.scaler is None else self.scaler.scale(weighted)).backward()
                with torch.no_grad():
                    step_sum += loss.detach() * len(y)
                    step_correct += (logits.argmax(1) == y).sum()
                    step_loss += weighted.detach()
                step_seen += len(y)
            if step_ends:
                if not recorded:
                    row = {"step": self.global_step + 1, "epoch": epoch, "lr": self.lr_now, "loss": step_loss.clone()}
                    if self.deferred_nan_check:
                        ok = self._deferred_step(step_loss, row, params)
                        loss_sum += torch.where(ok, step_sum, 0.0)
                        correct += torch.where(ok, step_correct, 0)
                        pending.append((row, ok, step_seen))
                    else:
                        finite = bool(torch.isfinite(step_loss))
                        if self.dist.enabled:  # every process takes the step, or none does
                            finite = all_min(finite, self.device)
                        if finite:
                            if self.scaler is not None and cfg.clip_grad_norm is not None:
                                self.scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
                            if cfg.clip_grad_norm is not None:
                                row["grad_norm"] = self._clip_grad_norm(params, cfg.clip_grad_norm)
                            if self.scaler is None:
                                opt.step()
                            else:  # skips the step if a gradient overflowed, and adapts the scale
                                self.scaler.step(opt)
                                self.scaler.update()
                                row["scale"] = self.scaler._scale.detach().clone()
                            if self.ema is not None:
                                self.ema.update(self.model)
                            loss_sum += step_sum
                            correct += step_correct
                            seen += step_seen
                            self.nan_streak = 0
                        else:
                            self._nonfinite_step(row, epoch, step_rows)
                    step_loss.zero_(), step_sum.zero_(), step_correct.zero_()
                opt.zero_grad(set_to_none=True)
                step_seen = 0
                step_rows.append(row)
                self.global_step += 1
                self.batch = batch + 1
                if self.global_step < self.schedule.total_steps:
                    self._set_lr(self.schedule(self.global_step))
                checkpoint_now = cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0
                if pending and (checkpoint_now or len(pending) >= self.NAN_CHECK_EVERY):
                    seen += self._resolve_deferred(pending, epoch, step_rows)
                    pending = []
                if checkpoint_now:
                    self._write_steps(step_rows)
                    step_rows = []
                    so_far = totals()
                    self._save_checkpoint({"loss_sum": so_far[0].cpu(), "correct": so_far[1].cpu(), "seen": seen,
                                           "seconds": seconds + time.perf_counter() - t0})
            if not bar.disable:
                bar.update()
                # Deferred check: right after each read of the flags, when loss_sum and seen agree.
                if (not pending if self.deferred_nan_check else
                        (batch + 1) % 25 == 0 or batch + 1 == len(loader)):
                    so_far = totals()
                    bar.set_postfix(loss=f"{float(so_far[0]) / max(seen, 1):.4f}",
                                    acc=f"{int(so_far[1]) / max(seen, 1):.4f}", refresh=False)
            # No bar (no terminal, or --quiet: then logging shows warnings only): a line with the step, the
            # running loss and the time left. Under the deferred check, only when loss_sum and seen agree.
            elif self.dist.is_main and time.perf_counter() >= next_note and not pending:
                now = time.perf_counter()
                next_note = now + self.PROGRESS_EVERY
                so_far = totals()
                left = (len(loader) - batch - 1) + (cfg.epochs - epoch) * len(loader)  # batches, this run
                eta = (now - t0) / (batch + 1 - first_batch) * left
                log.info("epoch %d/%d  batch %d/%d  step %d/%d  loss %.4f  acc %.4f  ETA %s (training)", epoch,
                         cfg.epochs, batch + 1, len(loader), self.global_step, self.schedule.total_steps,
                         float(so_far[0]) / max(seen, 1), int(so_far[1]) / max(seen, 1),
                         time.strftime("%H:%M:%S", time.gmtime(eta)) if eta < 86400 else f"{eta / 3600:.0f} h")
        bar.close()
        if pending:
            seen += self._resolve_deferred(pending, epoch, step_rows)
        self._write_steps(step_rows)
        self.train_seconds += seconds + time.perf_counter() - t0
        loss_sum, correct = totals()
        if self.dist.enabled:  # the epoch's figures over every process's share
            seen_t = torch.tensor(seen, device=self.device)
            all_reduce_sum(loss_sum, correct, seen_t)
            seen = int(seen_t)
        if seen == 0:
            raise FloatingPointError(f"training diverged in epoch {epoch}: every step had a non-finite loss; "
                                     "try a lower --lr")
        return float(loss_sum) / seen, int(correct) / seen

    def _records_whole_steps(self) -> bool:
        """Whether --cuda-graphs can record the whole training step (augmentation, forward pass, loss, backward
        pass, optimizer step, the epoch's sums) rather than only the model's passes: with the finiteness check on
        the device and torch's fused SGD (which reads a learning rate from the device), one batch per step, no
        gradient clipping, and no mixup or cutmix (their shares are drawn on the host, once per batch)."""
        cfg = self.config
        return (self.deferred_nan_check and isinstance(self.optimizer, torch.optim.SGD) and cfg.accum_steps == 1
                and cfg.clip_grad_norm is None and not self.augment_spec.mixes and not self.dist.enabled)

    step_graph_class = StepGraph  # tests without a GPU put convolab.train.cuda_graphs.EagerStep here

    def _capture_graphs(self) -> None:
        """--cuda-graphs: record the whole step (or else the model's forward and backward pass) for training
        batches of the full size; an epoch's short last batch runs as usual."""
        loader = self.train_loader
        size = loader.batch_sizes()[0]
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        sample = loader.normalize(loader.images[:size]).contiguous(memory_format=memory_format)
        t0 = time.perf_counter()
        if not self._records_whole_steps():
            self.graphed = GraphedForward(self.model, sample, self._autocast())
            log.info("--cuda-graphs: forward and backward pass captured for batches of %d in %.2f s", size,
                     time.perf_counter() - t0)
            return
        opt = self.optimizer
        for group in opt.param_groups:  # the recorded optimizer step reads the rate the schedule writes here
            group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
        self.graph_inputs = (sample, loader.labels[:size].clone())
        self.graph_sums = (torch.zeros((), device=self.device), torch.zeros((), device=self.device, dtype=torch.long))
        state = [*self.model.parameters(), *self.model.buffers(),
                 *(v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor))]
        generators = (self.augment.generator,) if self.augment is not None else ()
        self.step_graph = self.step_graph_class(self._graph_step, state, generators)
        log.info("--cuda-graphs: whole training step captured for batches of %d in %.2f s", size,
                 time.perf_counter() - t0)

    def _graph_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One training step on ``graph_inputs``, written to be recorded (no host reads; every output and
        sum in a fixed tensor): what the epoch loop does for a batch with the deferred finiteness check.
        Returns the loss and whether the step was taken (both on the device)."""
        self.optimizer.zero_grad(set_to_none=True)  # the recorded backward pass writes (not adds) the gradients
        logits, loss, y = self._augmented_forward(*self.graph_inputs)
        loss.backward()
        loss = loss.detach()
        ok = self._deferred_step(loss, {}, [])  # no clipping and one process here: nothing goes into the row
        with torch.no_grad():
            self.graph_sums[0].add_(torch.where(ok, loss * len(y), 0.0))
            self.graph_sums[1].add_(torch.where(ok, (logits.argmax(1) == y).sum(), 0))
        return loss, ok

    PROGRESS_EVERY = 30.0  # seconds between two progress lines when there is no progress bar

    # -- the finiteness check without a host sync per step --------------------------------------------
    NAN_CHECK_EVERY = 25  # steps between two reads of the deferred finiteness flags (one host sync each)

    def _use_deferred_nan_check(self) -> bool:
        """Whether steps are skipped on the device (see :meth:`_deferred_step`): on a GPU, where reading each
        step's loss would stall the queue of kernels, with a fused optimizer that takes the skip flag (torch's
        Adam, AdamW, SGD), no fp16 loss scaler (it skips steps its own way) and no weight average."""
        supported = getattr(self.optimizer, "_step_supports_amp_scaling", False) and \
            self.optimizer.defaults.get("fused")
        return self.device.type == "cuda" and bool(supported) and self.scaler is None and self.ema is None

    def _deferred_step(self, step_loss: torch.Tensor, row: dict, params: list) -> torch.Tensor:
        """Take the optimizer step unless the loss is non-finite, decided on the device: the fused kernels skip
        the update (and undo their step count) where ``found_inf`` is 1, as they do for torch's loss scaler.
        Returns the device flag (True: the step was taken); :meth:`_resolve_deferred` reads it later."""
        ok = torch.isfinite(step_loss)
        if self.dist.enabled:  # every process takes the step, or none does
            ok = all_min_on_device(ok)
        if self.config.clip_grad_norm is not None:
            row["grad_norm"] = self._clip_grad_norm(params, self.config.clip_grad_norm)
        opt = self.optimizer
        opt.found_inf = (~ok).float()
        try:
            opt.step()
        finally:
            del opt.found_inf
        return ok

    def _resolve_deferred(self, pending: list[tuple[dict, torch.Tensor, int]], epoch: int,
                          step_rows: list[dict]) -> int:
        """Read the deferred flags (one transfer), mark and count the skipped steps, stop as --on-nan says
        (at the step where the streak reached its limit); returns the samples of the steps taken."""
        flags = torch.stack([ok for _, ok, _ in pending]).tolist()
        taken = 0
        for (row, _, samples), ok in zip(pending, flags):
            if ok:
                taken += samples
                self.nan_streak = 0
            else:
                row.pop("grad_norm", None)  # a skipped step's rows say nothing of its gradients, as without deferral
                self._nonfinite_step(row, epoch, step_rows, recorded=True)
        return taken

    def _nonfinite_step(self, row: dict, epoch: int, step_rows: list[dict], recorded: bool = False) -> None:
        """A step whose loss is NaN or inf: skip it (no update), count it, and stop when --on-nan says so.
        ``recorded``: the row is in ``step_rows`` already (a deferred check), and rows after it are dropped
        when the run stops."""
        cfg = self.config
        self.nan_streak += 1
        self.skipped_steps += 1
        row["skipped"] = True
        loss = float(row["loss"])
        if cfg.on_nan == "stop" and self.nan_streak >= cfg.nan_patience:
            if recorded:
                del step_rows[next(i for i, r in enumerate(step_rows) if r is row) + 1:]
            else:
                step_rows.append(row)
            self._write_steps(step_rows)
            step_rows.clear()
            raise FloatingPointError(
                f"training diverged in epoch {epoch} (loss is {loss} at step {row['step']}, "
                f"{self.nan_streak} non-finite step(s) in a row); try a lower --lr")
        log.info("step %d: non-finite loss (%s); step skipped", row["step"], loss)

    def _write_steps(self, rows: list[dict]) -> None:
        """Append the per-step rows to steps.jsonl: the device values are read in one transfer."""
        if not rows:
            return
        keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, torch.Tensor)})
        nan = torch.tensor(float("nan"), device=self.device)
        values = torch.stack([torch.stack([r.get(k, nan).float() for k in keys]) for r in rows])  # (steps, keys)
        if self.dist.enabled:  # each process's loss is that of its share: log their mean
            losses = values[:, keys.index("loss")].contiguous()
            all_reduce_sum(losses)
            values[:, keys.index("loss")] = losses / self.dist.world_size
            if not self.dist.is_main:
                return
        values = values.tolist()
        for r, vals in zip(rows, values):
            r.update((k, v if math.isfinite(v) else None) for k, v in zip(keys, vals) if k in r)
            if r.get("scale") is not None:  # fp16: a lower scale than the step before means an overflow, skipped
                if self._last_scale is not None and r["scale"] < self._last_scale:
                    r["overflow"] = True
                    self.overflow_steps += 1
                self._last_scale = r["scale"]
        self.run.append_steps(rows)
        if self.tensorboard is not None:
            for r in rows:
                for k in ("loss", "lr", "grad_norm", "scale"):
                    if r.get(k) is not None:
                        self.tensorboard.add_scalar(f"step/{k}", r[k], r["step"])

    def _improved(self, val: EvalResult | None) -> bool:
        if val is None:
            return False
        value = val.accuracy if self.config.monitor == "val_accuracy" else val.loss
        best, delta = self.best["value"], self.config.min_delta
        if best is None or (value > best + delta if self.config.monitor == "val_accuracy" else value < best - delta):
            self.best = {"value": value, "epoch": self.epoch}
            return True
        return False

    def fit(self) -> TrainResult:
        try:
            with deterministic_algorithms(self.config.deterministic):
                return self._fit()
        except KeyboardInterrupt:
            self._say_how_to_resume()  # (an interrupted checkpoint write has removed its temporary file by now)
            raise
        finally:
            self.dist.close()

    def _say_how_to_resume(self) -> None:
        """After Ctrl-C: which checkpoint holds the run, and the command that continues it."""
        run = getattr(self, "run", None)
        if run is None or not self.dist.is_main:
            return
        saved = getattr(self, "_last_checkpoint", None)
        if saved is not None and saved.is_file():
            log.warning("interrupted; the run is saved up to %s: continue it with `convolab train --resume %s`",
                        saved, shlex.quote(str(run.path)))
        elif not self.config.checkpoints:
            log.warning("interrupted; %s has no checkpoints (--no-checkpoints), so it cannot be resumed", run.path)
        else:
            log.warning("interrupted before the first checkpoint of %s, so there is nothing to resume "
                        "(--checkpoint-every N saves every N steps)", run.path)

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100, beta: float = 0.9,
                diverge: float = 4.0, keep: bool = True) -> tuple[LRFindResult, Path | None]:
        """The learning-rate range test with this run's model, optimizer, data and loss (see
        ``convolab.train.lr_finder``); writes ``lr_find.json`` and ``plots/lr_find.png`` into the run
        directory and returns the result and that directory. The model and optimizer are left as they were.

        ``keep=False``: no directory is left at all (the test runs in a temporary one, removed; the returned
        path is None). A test that fails or is interrupted removes the directory this call made."""
        check_range_test(start_lr, end_lr, num_steps, beta, diverge)  # before any data loads or folder is made
        if self.resume_state is not None:
            raise ValueError("lr-find starts a new directory; it cannot --resume a run")
        if self.dist.enabled:
            self.dist.close()
            raise ValueError("lr-find runs in one process; start it without torchrun")
        if not keep:
            self.run_path = Path(tempfile.mkdtemp(prefix="convolab-lr-find-"))
        existed = self.run_path.exists()
        self._fit_start = time.perf_counter()
        try:
            with deterministic_algorithms(self.config.deterministic):
                self._setup(kind="lr-find")
                result = lr_range_test(self.model, self.optimizer, self.train_loader,
                                       lambda b: self._augmented_forward(*b)[1], start_lr=start_lr, end_lr=end_lr,
                                       num_steps=num_steps, beta=beta, diverge=diverge)
            if not keep:
                return result, None
            write_json(self.run.path / "lr_find.json", result.to_dict())
            if self.config.plots:
                from convolab.report import plot_lr_find

                plot_lr_find(result.lrs, result.losses, result.smoothed, result.suggested_lr, result.min_loss_lr,
                             result.rule, self.run.plots / "lr_find.png")
        except BaseException:  # a failure or Ctrl-C: no half-made directory
            if keep:
                self._remove_made_run_dir(existed)
            raise
        finally:
            if not keep:
                shutil.rmtree(self.run_path, ignore_errors=True)
        return result, self.run.path

    def _remove_made_run_dir(self, existed: bool) -> None:
        """Remove what this call made of the run directory: convolab's own files in it (all made now: a folder
        --overwrite reused was cleared of the old run's first), its own sub-folders once empty, and the folder
        itself when this call created it. Nothing, if the call stopped before the directory was made
        (``self.run`` is set only once it is)."""
        run = getattr(self, "run", None)
        if run is None or not run.path.is_dir() or run.path.is_symlink():
            return
        for f in own_run_files(run.path)[0]:
            f.unlink(missing_ok=True)
        for sub in (run.path / "plots", run.path / "checkpoints", run.path / "tensorboard", run.path):
            if (sub != run.path or not existed) and sub.is_dir() and not sub.is_symlink() and not any(sub.iterdir()):
                sub.rmdir()

    def _fit(self) -> TrainResult:
        self._fit_start = time.perf_counter()
        self._last_checkpoint: Path | None = None
        self._setup()
        cfg = self.config
        stopped_early = False
        while self.epoch <= cfg.epochs and not stopped_early:
            epoch = self.epoch
            t0 = time.perf_counter()
            overflows = self.overflow_steps
            if self.device.type == "cuda":  # the peak of the training steps only, not of evaluation at its batch size
                torch.cuda.reset_peak_memory_stats(self.device)
            train_loss, train_acc = self._train_epoch(epoch)
            peak_mb = (round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
                       if self.device.type == "cuda" else None)
            val = self._evaluate(self.val_loader) if len(self.data.val) else None
            row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                   "val_loss": val.loss if val else None, "val_accuracy": val.accuracy if val else None,
                   "lr": self.schedule(self.global_step - 1), "seconds": round(time.perf_counter() - t0, 3)}
            if self.scaler is not None:
                row["loss_scale"], row["overflow_steps"] = self._last_scale, self.overflow_steps - overflows
            if peak_mb is not None:
                row["peak_memory_mb"] = peak_mb
                self.train_peak_mb = max(self.train_peak_mb or 0.0, peak_mb)
            self.run.append_metrics(row)
            if self.tensorboard is not None:
                for k, v in row.items():
                    if k != "epoch" and isinstance(v, (int, float)):
                        self.tensorboard.add_scalar(f"epoch/{k}", v, epoch)
                self.tensorboard.flush()
            self.history.append(row)
            improved = self._improved(val)
            if improved:
                self.bad_epochs = 0
                if cfg.early_stopping:
                    self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self._kept().state_dict().items()}
            elif val is not None:
                self.bad_epochs += 1
            stopped_early = bool(cfg.early_stopping and self.bad_epochs >= cfg.early_stopping and epoch < cfg.epochs)
            self.epoch, self.batch = epoch + 1, 0
            self._save_checkpoint(best=improved)
            val_text = f"val loss {val.loss:.4f} acc {val.accuracy:.4f}" if val else "no validation split"
            extra = "".join(f"  {k.replace('_', ' ')} {row[k]:g}" for k in ("loss_scale", "overflow_steps",
                                                                          "peak_memory_mb") if k in row)
            log.info("epoch %d/%d  train loss %.4f acc %.4f  %s  lr %.3g%s  (%.1fs)", epoch, cfg.epochs, train_loss,
                     train_acc, val_text, row["lr"], extra, row["seconds"])
            if stopped_early:
                log.info("early stopping: %s has not improved for %d epochs; keeping epoch %d's weights",
                         cfg.monitor, self.bad_epochs, self.best["epoch"])
        if self.best_state is not None and self.best["epoch"] != self.history[-1]["epoch"]:
            self._kept().load_state_dict(self.best_state)
        return self._finish(stopped_early)

    def _kept(self) -> nn.Module:
        """The weights a run evaluates and saves: the EMA's with --ema, else the model's."""
        return self.ema.module if self.ema is not None else self.model

    def _finish(self, stopped_early: bool) -> TrainResult:
        cfg, rows = self.config, self.history
        fit_seconds = self.elapsed + time.perf_counter() - self._fit_start
        test = self._evaluate(self.test_loader, keep_predictions=True)
        if test.n and not math.isfinite(test.loss):  # finite weights can still overflow to inf or NaN outputs
            raise FloatingPointError(f"training diverged: the final weights give non-finite outputs on the test set "
                                     f"({test.n:,} images), so {self.run.path} got no model.safetensors or "
                                     f"summary.json; try a lower --lr")
        self.run.save_model(self._kept(), weights_metadata(self._kept(), self.data))
        val_accs = [r["val_accuracy"] for r in rows if r["val_accuracy"] is not None]
        summary = {
            "model": cfg.model, "dataset": self.data.name,
            "test_accuracy": test.accuracy, "test_loss": test.loss,
            "best_val_accuracy": max(val_accs) if val_accs else None,
            "final_val_accuracy": rows[-1]["val_accuracy"],
            "best_epoch": self.best["epoch"], "stopped_early": stopped_early,
            "epochs": len(rows), "steps": self.global_step, "skipped_steps": self.skipped_steps,
            "train_seconds": round(fit_seconds, 3),
            "samples_per_second": round(len(self.data.train) * len(rows) / max(self.train_seconds, 1e-9), 1),
            "params": self.params, "device": str(self.device),
            "test_samples": test.n, "resumes": self.resumes, "precision": self.precision,
            "world_size": self.dist.world_size,
        }
        if cfg.tta:  # test_accuracy is the flip-averaged one; the saved model alone gives this
            plain = self._evaluate(self.test_loader, tta=False)
            summary.update(test_accuracy_without_tta=plain.accuracy, test_loss_without_tta=plain.loss)
        if self.scaler is not None:
            summary["overflow_steps"] = self.overflow_steps
        if self.train_peak_mb is not None:
            summary["peak_memory_mb"] = self.train_peak_mb  # the largest epoch's training-step peak
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.run.write_summary(summary)
        if cfg.plots:
            self._plots(rows, test)
        # The CLI prints this figure as its result; Python callers have it in the returned summary.
        log.debug("test accuracy %.4f (loss %.4f) on %s %s test images after %d epochs, %.1fs of training",
                  test.accuracy, test.loss, f"{test.n:,}", self.data.name, len(rows), fit_seconds)
        return TrainResult(self.run.path, summary, self.model)

    def _plots(self, rows: list[dict], test: EvalResult) -> None:
        from convolab.report import plot_confusion, plot_curves, plot_predictions

        plot_curves(rows, self.run.plots, label_smoothing=self.config.label_smoothing,
                    num_classes=self.data.num_classes, mixed=bool(self.config.mixup or self.config.cutmix))
        plot_predictions(self.data.test.images, test.labels, test.predictions, test.probabilities,
                         self.data.classes, self.run.plots / "predictions.png", seed=self.config.seed)
        cm = confusion_matrix(test.labels, test.predictions, self.data.num_classes)
        plot_confusion(cm, self.data.classes, self.run.plots / "confusion.png")
        if self.config.schedule != "constant" or self.schedule.warmup_steps:
            from convolab.report import plot_lr_steps

            plot_lr_steps(read_jsonl(self.run.path / STEPS), self.run.plots / "lr.png")
