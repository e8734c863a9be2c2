"""The run directory: one folder holds everything a run produced (DESIGN.md, "Run directory")."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from convolab.atomic import append_jsonl, atomic_path, write_json

__all__ = ["RunDir", "NullRunDir", "prepare_run_dir", "save_weights", "WEIGHTS", "CONFIG", "METRICS", "SUMMARY",
           "STEPS"]

WEIGHTS, CONFIG, METRICS, SUMMARY = "model.safetensors", "config.json", "metrics.jsonl", "summary.json"
STEPS = "steps.jsonl"  # one JSON object per optimizer step: step, epoch, lr, loss (and grad_norm, scale ...)


def _is_run_dir(path: Path) -> bool:
    return (path / CONFIG).is_file()


def prepare_run_dir(out: str | Path | None, model: str, data: str, overwrite: bool = False,
                    create: bool = True) -> Path:
    """Check (and create) a fresh run directory.

    ``out=None`` picks ``runs/<model>-<data>-<YYYYmmdd-HHMMSS>``. An existing, non-empty ``out`` is
    refused unless ``overwrite`` — and even then only a previous run directory (one with
    ``config.json``) is replaced, never an unrelated folder.

    Raises:
        FileExistsError: ``out`` exists and may not be replaced.
        NotADirectoryError, PermissionError: ``out`` cannot be made (a file on its path, no permission).
    """
    if out is None:
        stem = Path(str(data).rstrip("/")).name or "data"
        path = Path("runs") / f"{model}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    else:
        path = Path(out).expanduser()
    if path.exists():
        if path.is_file():
            raise FileExistsError(f"--out {path}: is a file; choose a folder name")
        if any(path.iterdir()):
            if not overwrite:
                raise FileExistsError(f"--out {path}: already exists; choose another folder or pass --overwrite")
            if not _is_run_dir(path):
                raise FileExistsError(f"--out {path}: exists and is not a convolab run directory (no {CONFIG}); "
                                      "refusing to replace it, choose another folder")
            if create:
                shutil.rmtree(path)
    else:  # refuse now, before any data loads, a place where the folder cannot be made
        ancestor = path.absolute().parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise NotADirectoryError(f"--out {path}: {ancestor} is a file, not a folder; choose another place")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise PermissionError(f"--out {path}: no permission to create folders in {ancestor}; choose another place")
    if create:
        try:
            (path / "plots").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PermissionError(f"--out {path}: cannot create the run directory ({e.strerror})") from None
    return path


def save_weights(model: nn.Module, path: str | Path, metadata: dict) -> None:
    """Write the model's state dict as safetensors, atomically, with ``metadata`` as JSON."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ValueError(f"refusing to save non-finite weights ({k} has NaN or inf); training diverged")
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"convolab": json.dumps(metadata)})


class NullRunDir:
    """The run directory as seen by a data-parallel process other than rank 0: it writes nothing."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.plots = self.path / "plots"

    def __getattr__(self, name):  # write_config, append_metrics, append_steps, write_summary, save_model
        return lambda *args, **kwargs: None


class RunDir:
    """Writers for the files of one run directory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.plots = self.path / "plots"

    def write_config(self, config: dict) -> None:
        write_json(self.path / CONFIG, config)

    def append_metrics(self, row: dict) -> None:
        append_jsonl(self.path / METRICS, row)

    def append_steps(self, rows: list[dict]) -> None:
        append_jsonl(self.path / STEPS, rows)

    def write_summary(self, summary: dict) -> None:
        write_json(self.path / SUMMARY, summary)

    def save_model(self, model: nn.Module, metadata: dict) -> None:
        save_weights(model, self.path / WEIGHTS, metadata)
