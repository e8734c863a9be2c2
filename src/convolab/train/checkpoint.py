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

import logging
import random
import re
from pathlib import Path

import numpy as np
import torch

from convolab.atomic import atomic_path, fsync_dir

__all__ = ["CHECKPOINTS", "FORMAT", "save_checkpoint", "load_checkpoint", "step_checkpoints", "checkpoint_name",
           "find_checkpoint", "rng_state", "set_rng_state", "prune_checkpoints", "check_finite"]

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
FORMAT = 1
_STEP_RE = re.compile(r"^step-(\d+)\.pt$")
_REQUIRED = ("format", "config", "model", "optimizer", "global_step", "epoch", "batch", "rng", "loader", "history")


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
        torch.save(state, tmp)
    return path


def prune_checkpoints(run_dir: str | Path, keep: Path, previous: Path | None) -> None:
    """Delete step checkpoints other than ``keep`` and ``previous`` (call after ``keep`` is on disk)."""
    removed = False
    for p in step_checkpoints(run_dir):
        if p != keep and p != previous:
            p.unlink(missing_ok=True)
            removed = True
    if removed:
        fsync_dir(Path(run_dir) / CHECKPOINTS)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` onto the CPU.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, corrupt, or not a convolab checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged zip or pickle raises many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path}: corrupt or unreadable checkpoint ({first[:200]})") from None
    if not isinstance(state, dict) or any(k not in state for k in _REQUIRED):
        raise ValueError(f"{path}: not a convolab checkpoint (missing keys)")
    if state["format"] != FORMAT:
        raise ValueError(f"{path}: checkpoint format {state['format']} is not the {FORMAT} this convolab reads")
    return state


def find_checkpoint(path: str | Path) -> tuple[Path, Path, dict]:
    """``--resume PATH``: a run directory (its newest step checkpoint) or one checkpoint file inside it.

    Returns (run directory, checkpoint file, its state). A damaged newest checkpoint is not
    skipped silently: the error names the newest readable one and how to resume from it.

    Raises:
        FileNotFoundError: no run directory or no checkpoint in it.
        ValueError: the checkpoint is unreadable.
    """
    path = Path(path).expanduser()
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == CHECKPOINTS else path.parent
        return run_dir, path, load_checkpoint(path)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {path}: no such run directory")
    candidates = step_checkpoints(path)
    if not candidates:
        raise FileNotFoundError(f"--resume {path}: no checkpoints in {path / CHECKPOINTS} (was it trained with "
                                "--no-checkpoints, or stopped before its first epoch ended?)")
    newest = candidates[-1]
    try:
        return path, newest, load_checkpoint(newest)
    except ValueError as e:
        for older in reversed(candidates[:-1]):
            try:
                load_checkpoint(older)
            except ValueError:
                continue
            raise ValueError(f"{e}; the previous checkpoint {older} is intact: resume from it with "
                             f"--resume {older}") from None
        raise ValueError(f"{e}; no older readable checkpoint in {path / CHECKPOINTS}") from None


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
