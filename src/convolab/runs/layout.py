"""The run directory: one folder holds everything a run produced (DESIGN.md, "Run directory").

What convolab may delete is decided here and nowhere else. A run directory carries a marker file,
``.convolab-run``, written when convolab creates the folder; ``--overwrite`` replaces only a folder
with that marker (or a run made before markers existed whose every entry is a file convolab writes),
and even then removes only the files convolab writes (:data:`OWN_FILES`), never the folder's other
contents. The working directory, its parents, the home folder, ``/`` and symbolic links are never a
run directory. Every refusal happens in :func:`prepare_run_dir` with ``create=False``, which the
trainer calls before any data loads.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import time
import uuid
from pathlib import Path

from convolab.atomic import write_json

__all__ = ["prepare_run_dir", "is_run_dir", "has_convolab_config", "read_marker", "run_id", "own_files", "WEIGHTS",
           "CONFIG", "METRICS", "SUMMARY", "STEPS", "CHECKPOINTS", "PLOTS", "MARKER", "OWN_FILES"]

log = logging.getLogger(__name__)

WEIGHTS, CONFIG, METRICS, SUMMARY = "model.safetensors", "config.json", "metrics.jsonl", "summary.json"
CHECKPOINTS, PLOTS = "checkpoints", "plots"  # folders: full training state, figures
STEPS = "steps.jsonl"  # one JSON object per optimizer step: step, epoch, lr, loss (and grad_norm, scale ...)
MARKER = ".convolab-run"  # {"kind": "convolab-run", "run_id": ..., "created": ...}: convolab made this folder
_MARKER_KIND = "convolab-run"

# Every file convolab writes into a run directory, as patterns relative to it (fnmatch, '/' separated). Only
# these are ever deleted by --overwrite; `.NAME.*.tmp` are atomic writes interrupted by a kill.
OWN_FILES = (
    MARKER, CONFIG, METRICS, STEPS, SUMMARY, WEIGHTS, "lr_find.json", "report.html",
    "compress.txt", "model.int8.onnx", "plots/pareto.png",  # convolab compress's table, ORT int8 model, plot
    "checkpoints/step-*.pt", "checkpoints/best.pt",
    *(f"plots/{name}.png" for name in ("loss", "accuracy", "lr", "predictions", "confusion", "lr_find")),
    "tensorboard/events.out.tfevents.*",
    ".*.tmp", "checkpoints/.*.tmp", "plots/.*.tmp",
)
_OWN_FOLDERS = ("plots", "checkpoints", "tensorboard")  # made by convolab; removed when --overwrite empties them


def _matches_own(rel: str) -> bool:
    return any(fnmatch.fnmatchcase(rel, pattern) for pattern in OWN_FILES)


def own_files(path: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """``(convolab's files, everything else)`` directly inside the run folder and its own sub-folders.

    Symbolic links are never convolab's (deleting one would follow nothing, but a link named like a checkpoint
    is something the user made).
    """
    root = Path(path)
    ours, others = [], []
    for entry in sorted(root.iterdir()):
        if entry.name in _OWN_FOLDERS and entry.is_dir() and not entry.is_symlink():
            for sub in sorted(entry.iterdir()):
                rel = f"{entry.name}/{sub.name}"
                (ours if sub.is_file() and not sub.is_symlink() and _matches_own(rel) else others).append(sub)
            continue
        (ours if entry.is_file() and not entry.is_symlink() and _matches_own(entry.name) else others).append(entry)
    return ours, others


def read_marker(path: str | os.PathLike) -> dict | None:
    """The run's marker (``{"kind", "run_id", "created", "convolab"}``), or None when there is none."""
    f = Path(path) / MARKER
    if not f.is_file() or f.is_symlink():
        return None
    try:
        marker = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # deep nesting: not ours
        return None
    if not isinstance(marker, dict) or marker.get("kind") != _MARKER_KIND or not isinstance(marker.get("run_id"), str):
        return None
    return marker


def run_id(path: str | os.PathLike) -> str | None:
    """The identity convolab gave the run in ``path`` when it created it (None for runs made before markers)."""
    marker = read_marker(path)
    return marker["run_id"] if marker else None


def has_convolab_config(path: str | os.PathLike) -> bool:
    """Whether ``path/config.json`` is one convolab wrote (it records convolab's version), not any config.json."""
    try:
        config = json.loads((Path(path) / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # deep nesting: not ours
        return False
    return isinstance(config, dict) and isinstance(config.get("versions"), dict) and "convolab" in config["versions"]


def _legacy_run(path: Path) -> bool:
    """A run made before markers existed: a convolab config.json and nothing but files convolab writes."""
    return has_convolab_config(path) and not own_files(path)[1]


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether convolab made ``path`` (its marker, or a pre-marker run of convolab's files only)."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and (read_marker(path) is not None or _legacy_run(path))


def _write_marker(path: Path) -> None:
    from convolab import __version__

    write_json(path / MARKER, {"kind": _MARKER_KIND, "run_id": uuid.uuid4().hex,
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "convolab": __version__})


def _forbidden(path: Path) -> str | None:
    """Why ``path`` can never be a run directory (None when it can be)."""
    if path.is_symlink():
        return "is a symbolic link; give the folder it points to, or another name"
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd:
        return "is the working directory; a run needs a folder of its own (e.g. --out runs/NAME)"
    if resolved in cwd.parents:
        return "is a parent of the working directory; a run needs a folder of its own (e.g. --out runs/NAME)"
    if resolved == Path(resolved.anchor):
        return "is the root of the file system; a run needs a folder of its own (e.g. --out runs/NAME)"
    home = Path.home().resolve()
    if resolved == home:
        return "is the home folder; a run needs a folder of its own (e.g. --out runs/NAME)"
    return None


def _clear_run(path: Path) -> None:
    """Delete convolab's own files in the run ``path`` (and its own folders once empty); keep the rest."""
    ours, others = own_files(path)
    for f in ours:
        f.unlink()
    for name in _OWN_FOLDERS:
        sub = path / name
        if sub.is_dir() and not sub.is_symlink() and not any(sub.iterdir()):
            sub.rmdir()
    if others:
        shown = ", ".join(str(p.relative_to(path)) for p in others[:5]) + (" ..." if len(others) > 5 else "")
        log.warning("--overwrite %s: removed the previous run's files; kept %d entr%s convolab did not write (%s)",
                    path, len(others), "y" if len(others) == 1 else "ies", shown)


def prepare_run_dir(out: str | Path | None, model: str, data: str, overwrite: bool = False,
                    create: bool = True) -> Path:
    """Check (and create) a fresh run directory.

    ``out=None`` picks ``runs/<model>-<data>-<YYYYmmdd-HHMMSS>``. An existing, non-empty ``out`` is
    refused unless ``overwrite`` — and even then only a run directory convolab made (:func:`is_run_dir`)
    is replaced, and only convolab's own files in it are deleted (:data:`OWN_FILES`). Call it with
    ``create=False`` before any work to refuse early, then with ``create=True`` to clear and create.

    Raises:
        FileExistsError: ``out`` exists and may not be replaced, or may never be a run directory.
        NotADirectoryError, PermissionError: ``out`` cannot be made (a file on its path, no permission).
    """
    if out is None:
        stem = Path(str(data).rstrip("/")).name or "data"
        path = Path("runs") / f"{model}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    else:
        path = Path(out).expanduser()
    why = _forbidden(path)
    if why:
        raise FileExistsError(f"--out {path}: {why}")
    if path.exists():
        if not path.is_dir():
            raise FileExistsError(f"--out {path}: is a file; choose a folder name")
        if any(path.iterdir()):
            if not overwrite:
                raise FileExistsError(f"--out {path}: already exists; choose another folder or pass --overwrite")
            if not is_run_dir(path):
                raise FileExistsError(
                    f"--out {path}: exists and is not a run directory made by convolab (no {MARKER} marker); "
                    "--overwrite deletes only convolab's own runs, so nothing was touched: choose another folder")
            if create:
                _clear_run(path)
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
            _write_marker(path)
        except OSError as e:
            raise PermissionError(f"--out {path}: cannot create the run directory ({e.strerror or e})") from None
    return path
