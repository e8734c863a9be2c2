"""Checkpoints: the full training state in ``RUN/checkpoints/``, written atomically, read without pickled code.

A checkpoint holds everything the next optimizer step depends on — model, optimizer, schedule
position, loss scaler, EMA weights, every random generator (Python, NumPy, torch's CPU and CUDA
ones, the data order, the augmentation) and the partial sums of the epoch in progress — so a run
resumed from it continues with the very numbers the uninterrupted run would have produced.

Files: ``step-00001234.pt`` after optimizer step 1234 (at each epoch's end and every
``--checkpoint-every`` steps; the newest two are kept, an older one is deleted only once a newer
one is on disk) and ``best.pt`` at the best validation epoch. Each is written to a temporary file
in the same folder, fsync'ed and renamed (``convolab.atomic``), so a crash mid-save leaves the
previous checkpoint untouched. Everything in them is a tensor or a plain Python value:
``torch.load(path, weights_only=True)`` reads them.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from convolab.atomic import atomic_path, fsync_dir
from convolab.structure import (
    AnyDict,
    AnyOf,
    AnyValue,
    Bool,
    Int,
    ListOf,
    Null,
    Num,
    Obj,
    Plain,
    Str,
    Tensor,
    TensorDict,
    maybe,
    validate,
)
from convolab.tensor_files import file_kind, torch_load

__all__ = ["CHECKPOINTS", "FORMAT", "save_checkpoint", "load_checkpoint", "step_checkpoints", "checkpoint_name",
           "check_checkpoint", "rng_state", "set_rng_state", "prune_checkpoints",
           "check_finite"]

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
FORMAT = 1
_STEP_RE = re.compile(r"^step-(\d+)\.pt$")
MAX_EPOCHS = 10**7  # an epoch count beyond this is no run's
MAX_STEPS = 10**12  # nor a step count beyond this

_GENERATOR = Tensor(torch.uint8, 1)  # a torch.Generator's state
_LOSS = maybe(Num(finite=False))
_HISTORY_ROW = Obj({"epoch": Int(1, MAX_EPOCHS), "train_loss": _LOSS, "train_accuracy": maybe(Num(0, 1)),
                    "val_loss": _LOSS, "val_accuracy": maybe(Num(0, 1))},
                   required=("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"), other=Plain())
# (a task may add sums of its own: segmentation's pixel count ...)
_EPOCH_SUMS = maybe(Obj({"loss_sum": Tensor(ndim=0), "correct": Tensor(ndim=0), "seen": Int(0, MAX_STEPS),
                         "seconds": Num(0)}, required=("loss_sum", "correct", "seen", "seconds"), other=Tensor(ndim=0)))
# What ``Trainer._state`` writes (and ``_restore`` reads): a checkpoint is checked against it before the data loads.
_SCHEMA = Obj(
    fields={
        "format": Int(1, FORMAT),
        "run_id": maybe(Str(200)),  # the run that wrote it (convolab.runs.layout); absent before run markers
        "ranks": maybe(ListOf(Obj({"rng": AnyDict(), "augment": maybe(AnyDict()), "epoch_sums": _EPOCH_SUMS}), 1)),
        "config": Obj(other=Plain()),
        "model": TensorDict(),
        "optimizer": Obj({"state": AnyDict(values=Obj()), "param_groups": ListOf(Obj(), 1)},
                         required=("state", "param_groups")),
        "global_step": Int(0, MAX_STEPS),
        "epoch": Int(1, MAX_EPOCHS),
        "batch": Int(0, MAX_STEPS),
        "rng": Obj({"python": ListOf(AnyValue(), 3, 3), "torch": _GENERATOR,
                    "numpy": Obj({"keys": Tensor(torch.int64, 1), "pos": Int(0, 624), "has_gauss": Int(0, 1),
                                  "cached_gaussian": Num()}, required=("keys", "pos", "has_gauss", "cached_gaussian")),
                    "cuda": ListOf(_GENERATOR)}, required=("python", "torch", "numpy"), other=None),
        "loader": Obj({"generator": _GENERATOR}, required=("generator",)),
        # the augmentation's generators (classification's also has a NumPy one)
        "augment": maybe(Obj({"torch": _GENERATOR, "numpy": AnyDict()}, required=("torch",))),
        "ema": maybe(Obj({"module": TensorDict(), "updates": Int(0)}, required=("module", "updates"))),
        "scaler": maybe(AnyDict()),
        "overflow_steps": Int(0, MAX_STEPS),
        "epoch_sums": _EPOCH_SUMS,
        "history": ListOf(_HISTORY_ROW, 0, MAX_EPOCHS),
        "best": Obj({"value": maybe(Num()), "epoch": maybe(Int(1, MAX_EPOCHS))}, required=("value", "epoch")),
        "bad_epochs": Int(0, MAX_EPOCHS),
        "nan": Obj({"streak": Int(0, MAX_STEPS), "skipped": Int(0, MAX_STEPS)}, required=("streak", "skipped")),
        "train_seconds": Num(0),
        "elapsed": Num(0),
        "resumes": Int(0, MAX_STEPS),
        "glass_rng": maybe(AnyDict()),  # --engine numpy's generator
        "step_rule": maybe(AnyDict()),  # a step rule's own state (a second optimizer, its loader's position ...)
        "callbacks": maybe(AnyDict()),  # the state of callbacks other than convolab's own (under their fields)
    },
    required=("format", "config", "model", "optimizer", "global_step", "epoch", "batch", "rng", "loader", "augment",
              "ema", "scaler", "overflow_steps", "epoch_sums", "history", "best", "bad_epochs", "nan",
              "train_seconds", "elapsed", "resumes"),
    other=None)


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def step_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's step checkpoints, oldest (fewest steps) first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def check_finite(state: dict[str, torch.Tensor], what: str) -> None:
    """Raise ``FloatingPointError`` if a floating tensor of ``state`` holds NaN or inf."""
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise FloatingPointError(f"refusing to save non-finite {what} ({k} has NaN or inf); training diverged")


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename, fsync of the folder).

    Raises:
        FloatingPointError: the model (or EMA) weights are not finite; nothing is written.
    """
    check_finite(state["model"], "weights")
    if state.get("ema") is not None:
        check_finite(state["ema"]["module"], "EMA weights")
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as e:  # torch's writer reports a failed write (a full disk ...) as an enforce failure
            full = shutil.disk_usage(path.parent).free < (1 << 20) + _tensor_bytes(state)
            reason = "No space left on device" if full else f"write failed: {str(e).splitlines()[0][:160]}"
            raise OSError(errno.ENOSPC if full else errno.EIO, reason, str(path)) from None
    return path


def _tensor_bytes(obj) -> int:
    """Bytes of the tensors in a nested state (what a checkpoint file needs at least)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def prune_checkpoints(run_dir: str | Path, keep: Path, previous: Path | None) -> None:
    """Delete step checkpoints other than ``keep`` and ``previous`` (call after ``keep`` is on disk)."""
    removed = False
    for p in step_checkpoints(run_dir):
        if p != keep and p != previous:
            p.unlink(missing_ok=True)
            removed = True
    if removed:
        fsync_dir(Path(run_dir) / CHECKPOINTS)


def _check_generators(state: dict, what: str) -> None:
    """Try the checkpoint's generator states on fresh generators (the global ones are not touched)."""
    rng = state["rng"]
    trials = [("rng.python", lambda: random.Random().setstate(rng["python"])),
              ("rng.numpy", lambda: np.random.RandomState().set_state(_numpy_state(rng["numpy"]))),
              ("rng.torch", lambda: torch.Generator().set_state(rng["torch"])),
              ("loader.generator", lambda: torch.Generator().set_state(state["loader"]["generator"]))]
    # NumPy generators of the augmentation and of --engine numpy (default_rng: PCG64). The augmentation's torch
    # generator lives on the training device, whose state layout differs: not tried here.
    for name, numpy_state in (("augment.numpy", (state["augment"] or {}).get("numpy")),
                              ("glass_rng", state.get("glass_rng"))):
        if numpy_state is not None:
            trials.append((name, lambda s=numpy_state: setattr(np.random.default_rng().bit_generator, "state", s)))
    for name, trial in trials:
        try:
            trial()
        except (TypeError, ValueError, RuntimeError, OverflowError, IndexError, KeyError) as e:
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise ValueError(f"{what}: field '{name}' is not a valid generator state ({first[:120]}); expected "
                             "the state convolab saved") from None


def _numpy_state(n: dict) -> tuple:
    return ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])


def check_checkpoint(state: object, what: str) -> dict:
    """Validate a checkpoint's contents (the keys, their types, counts that make sense, generator states).

    Raises:
        ValueError: one line naming ``what``, the field and what was expected.
    """
    if not isinstance(state, dict):
        raise ValueError(f"{what}: not a convolab checkpoint (it holds a {type(state).__name__}; expected the "
                         "dict of training state convolab saves)")
    if isinstance(state.get("format"), int) and not isinstance(state["format"], bool) and state["format"] > FORMAT:
        raise ValueError(f"{what}: checkpoint format {state['format']} was written by a newer convolab; this one "
                         f"reads format {FORMAT} (upgrade convolab to resume it)")
    known = set(_SCHEMA.fields)
    unknown = sorted(str(k) for k in state if k not in known)
    if unknown and "model" in state and "format" in state:
        raise ValueError(f"{what}: the checkpoint has fields this convolab does not know ({', '.join(unknown[:5])}); "
                         "it was probably written by a newer convolab (upgrade convolab to resume it)")
    missing = [k for k in ("model", "optimizer", "format") if k not in state]
    if missing:
        raise ValueError(f"{what}: not a convolab checkpoint (no {', '.join(missing)}; expected the training state "
                         "convolab train saves in RUN/checkpoints/)")
    validate(state, _SCHEMA, what)
    _check_config(state, what)
    epochs = state["config"].get("epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool) and state["epoch"] > epochs + 1:
        raise ValueError(f"{what}: field 'epoch' is {state['epoch']:,} in a run of {epochs} epochs; expected at most "
                         f"{epochs + 1}")
    if len(state["history"]) != state["epoch"] - 1:
        raise ValueError(f"{what}: field 'history' has {len(state['history'])} epochs before epoch {state['epoch']}; "
                         f"expected {state['epoch'] - 1} (one per finished epoch)")
    for i, row in enumerate(state["history"]):
        if row["epoch"] != i + 1:
            raise ValueError(f"{what}: field 'history[{i}].epoch' is {row['epoch']}; expected {i + 1} (each epoch "
                             "once, in order)")
    _check_generators(state, what)
    for k, v in state["model"].items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{what}: field 'model.{k}' holds NaN or inf; convolab never saves non-finite weights, "
                             "so the file was altered or damaged")
    return state


_SPEC_OF_TYPE = {"bool": Bool(), "int": Int(), "float": Num(finite=False), "str": Str(), "dict": Obj(other=Plain()),
                 "None": Null(), "list[float]": ListOf(Num(finite=False))}


def _spec_of(annotation: str):
    """The spec of a TrainConfig field from its annotation (``float | None`` ...); None for one it cannot read."""
    parts = [_SPEC_OF_TYPE.get(t.strip()) for t in str(annotation).split("|")]
    if not parts or any(p is None for p in parts):
        return None
    return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))


def _check_config(state: dict, what: str) -> None:
    """The saved TrainConfig: options this convolab has, each of its annotated type, and the state its options
    imply."""
    fields = {f.name: f for f in dataclasses.fields(_train_config())}
    config = state["config"]
    strange = sorted(k for k in config if k not in fields)
    if strange:
        raise ValueError(f"{what}: field 'config' has options this convolab does not know ({', '.join(strange[:5])}); "
                         "it was probably written by a newer convolab (upgrade convolab to resume it)")
    # What the run is cannot fall back to a default (a missing 'data' would resume on Fashion-MNIST); options added
    # to convolab later may be missing from older checkpoints and take their defaults.
    missing = [k for k in ("model", "data", "epochs", "seed") if k not in config]
    if missing:
        raise ValueError(f"{what}: field 'config' lacks {', '.join(repr(k) for k in missing)}; every convolab "
                         "checkpoint records them, so this file is damaged or was not written by convolab")
    validate(config, Obj({name: spec for name, f in fields.items() if (spec := _spec_of(f.type)) is not None},
                         other=Plain()), what, prefix="config")
    if config.get("ema") and state["ema"] is None:
        raise ValueError(f"{what}: field 'ema' is null in a run with --ema {config['ema']}; expected the EMA weights")
    if config.get("precision") == "fp16" and state["scaler"] is None:
        raise ValueError(f"{what}: field 'scaler' is null in a run with --precision fp16; expected the loss scaler's "
                         "state")


def _train_config():
    from convolab.train.config import TrainConfig  # (imported here: the config module imports much of train/)

    return TrainConfig


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` onto the CPU and validate it (:func:`check_checkpoint`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, corrupt, would run code when loaded, or is not a convolab checkpoint
            (wrong keys or types, absurd counts, a bad generator state, a newer format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if file_kind(path) == "safetensors":
        raise ValueError(f"{path}: a safetensors weights file, not a checkpoint (a checkpoint is RUN/checkpoints/"
                         f"step-*.pt); to start a new run from these weights use convolab train --init-from {path}")
    state = torch_load(path, str(path), noun="checkpoint")
    return check_checkpoint(state, str(path))


# -- random generators ---------------------------------------------------------------------------
def rng_state() -> dict:
    """Python's, NumPy's and torch's (CPU and every CUDA device's) global generator states."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            log.warning("the checkpoint has %d CUDA generator states, this machine %d GPUs: CUDA randomness "
                        "is not restored", len(state["cuda"]), torch.cuda.device_count())
