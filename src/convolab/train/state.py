"""The loop's full state for a checkpoint, and its restoration (what is in it: :mod:`convolab.train.checkpoint`)."""

from __future__ import annotations

import copy
import logging
import time

import torch

from convolab.train.checkpoint import FORMAT, rng_state, set_rng_state
from convolab.train.distributed import gather_objects

__all__ = ["training_state", "restore_training_state", "first_line"]

log = logging.getLogger(__name__)


def first_line(e: BaseException) -> str:
    """An exception's first line (torch's size-mismatch texts run to pages), at most 200 characters."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def optimizer_state(trainer, optimizer: torch.optim.Optimizer) -> dict:
    """An optimizer's state dict, with learning rates as numbers (a recorded step keeps them on the device)."""
    state = trainer.engine.optimizer_state(optimizer.state_dict())
    state["param_groups"] = [{**g, "lr": float(g["lr"])} if isinstance(g["lr"], torch.Tensor) else g
                             for g in state["param_groups"]]
    return state


def training_state(trainer, epoch_sums: dict | None = None) -> dict | None:
    """Everything the next step depends on. With data parallelism each process's generators and partial sums are
    gathered under ``ranks`` (rank 0 gets the state, the others None)."""
    t = trainer
    own = {"rng": rng_state(), "augment": t.augment.state_dict() if t.augment is not None else None,
           "epoch_sums": epoch_sums}
    ranks = gather_objects(own, t.dist) if t.dist.enabled else None
    if not t.dist.is_main:
        return None
    cpu = {k: v.detach().to("cpu", copy=True) for k, v in t.model.state_dict().items()}
    scaler = t.step.scaler
    state = {
        "ranks": ranks, "run_id": t.run.run_id,  # resume refuses a checkpoint of another run
        "format": FORMAT, "config": t.config.to_dict(),
        "epoch": t.epoch, "batch": t.batch, "global_step": t.global_step,
        "model": cpu, "optimizer": optimizer_state(t, t.optimizers[0]),
        "rng": own["rng"], "loader": t.train_loader.state_dict(), "augment": own["augment"],
        "ema": None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "overflow_steps": t.overflow_steps,
        "epoch_sums": epoch_sums,
        "history": copy.deepcopy(t.history),
        "nan": {"streak": t.nan_streak, "skipped": t.skipped_steps},
        "train_seconds": t.train_seconds, "elapsed": t.elapsed + time.perf_counter() - t._fit_start,
        "resumes": t.resumes,
        "glass_rng": t.engine.state_dict(),
        "step_rule": t.step.extra_state(),
    }
    state.update(t.callbacks.state_dict())  # each callback's own fields: best, bad_epochs, ema ...
    return state


def restore_part(trainer, field: str, part, state: dict) -> None:
    """Load ``state[field]`` into ``part`` (a generator holder, the EMA, the scaler ...): one line if it does not
    fit."""
    try:
        part.load_state_dict(state[field])
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{trainer.resume_file}: field {field!r} cannot be restored ({first_line(e)})") from None


def restore_training_state(trainer, state: dict) -> None:
    """Continue from a checkpoint: weights, optimizers, generators, position, bookkeeping, callbacks, files."""
    t = trainer
    try:
        t.model.load_state_dict(state["model"])
        t.optimizers[0].load_state_dict(t.engine.load_optimizer_state(state["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f"{t.resume_file}: its weights do not fit {t.config.model} on {t.config.data} "
                         f"({first_line(e)})") from None
    ranks = state.get("ranks")
    if ranks is not None and len(ranks) != t.dist.world_size:
        raise ValueError(f"the checkpoint was written by {len(ranks)} processes; resume it with "
                         f"torchrun --nproc-per-node {len(ranks)} (this job has {t.dist.world_size})")
    if ranks is not None:  # this process's own generators and partial sums
        state = {**state, **ranks[t.dist.rank]}
    set_rng_state(state["rng"])
    t.epoch, t.batch, t.global_step = state["epoch"], state["batch"], state["global_step"]
    t.train_loader.load_state_dict(state["loader"], skip_batches=t.batch)
    # The augmentation's generator lives on the training device, so the checkpoint reader could not try its state.
    for field, part in (("augment", t.augment), ("scaler", t.step.scaler)):
        if part is not None:
            restore_part(t, field, part, state)
    t.engine.load_state_dict(state.get("glass_rng"))
    t.step.load_extra_state(state.get("step_rule"))
    t.overflow_steps = state["overflow_steps"]
    t._last_scale = t.step.scaler.get_scale() if t.step.scaler is not None else None
    t.set_lr(t.schedule(min(t.global_step, t.schedule.total_steps - 1)))
    t.history = list(state["history"])
    t.nan_streak, t.skipped_steps = state["nan"]["streak"], state["nan"]["skipped"]
    t.train_seconds, t.elapsed = state["train_seconds"], state["elapsed"]
    t.resumes = state["resumes"] + 1
    t.epoch_sums = state["epoch_sums"]
    t.callbacks.load_state_dict(state, t)
    if t.dist.is_main:
        t.run.resume_logs(t.history, t.global_step)
    log.info("resuming %s from %s: epoch %d, step %d of %d", t.run.path, t.resume_file.name, t.epoch,
             t.global_step, t.schedule.total_steps)
