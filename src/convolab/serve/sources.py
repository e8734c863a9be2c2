"""What the explorer serves: the runs found under the folders it was given, and models by reference.

A model reference (``ref``) is one string:

- ``run:<id>``: a run discovered under a served folder; ``<id>`` is its path relative to that folder (POSIX). It is
  looked up in the discovered index only, never joined to the filesystem, so no reference reaches another file.
- ``zoo:<name>``: a registry model with fresh weights (``torch.manual_seed(0)``).
- ``spec:<spec>``: a network from the spec grammar, fresh weights.

Zoo and spec models take an input size (``CxHxW``, default ``1x28x28``) and a class count (default 10; Fashion-MNIST's
names when 10). Loaded models are kept in a small LRU cache; a run whose ``model.safetensors`` changed is reloaded.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from convolab.runs.layout import CONFIG, METRICS, STEPS, SUMMARY, WEIGHTS

__all__ = ["RunEntry", "Model", "ModelNotFoundError", "discover_runs", "is_run_dir", "run_status", "run_listing",
           "parse_input_size", "ModelCache", "FASHION_CLASSES", "DEFAULT_INPUT", "DEFAULT_CLASSES", "MAX_DEPTH",
           "RUNNING_SECONDS"]

MAX_DEPTH = 4  # run folders are looked for at most this deep below a served folder
RUNNING_SECONDS = 60.0  # a run whose logs changed this recently (and has no summary) is running
DEFAULT_INPUT = (1, 28, 28)
DEFAULT_CLASSES = 10
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
MAX_INPUT_SIDE = 1024  # zoo/spec inputs: sides above this would only exhaust the server's memory
MAX_CLASSES = 10_000


class ModelNotFoundError(LookupError):
    """A reference that names no served run or no model (the API answers 404)."""

    def __str__(self) -> str:  # KeyError-like classes quote their message; this one does not
        return str(self.args[0]) if self.args else "not found"


@dataclass(frozen=True)
class RunEntry:
    """One discovered run: its id (path relative to the served folder, POSIX) and where it is."""

    id: str
    path: Path
    root: Path

    @property
    def ref(self) -> str:
        return f"run:{self.id}"


def is_run_dir(path: Path) -> bool:
    """A run folder holds config.json or model.safetensors."""
    return (path / CONFIG).is_file() or (path / WEIGHTS).is_file()


def _walk(folder: Path, depth: int) -> list[Path]:
    """Run folders below ``folder`` (not itself), at most ``depth`` levels down; hidden folders and symbolic links
    are not followed, and a run's own subfolders (checkpoints, plots) are not searched."""
    found = []
    try:
        children = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return found
    for entry in children:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        child = Path(entry.path)
        if is_run_dir(child):
            found.append(child)
        elif depth > 1:
            found += _walk(child, depth - 1)
    return found


def discover_runs(folders: list[Path]) -> dict[str, RunEntry]:
    """The runs under each served folder, by id.

    A folder that is a run is served under its own name; otherwise the runs below it (depth <= :data:`MAX_DEPTH`)
    are served under their paths relative to it. Two runs that would get the same id (two served folders with a
    ``demo`` each) are told apart by the served folder's name in front.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: a folder is neither a run nor holds any (one line).
    """
    index: dict[str, RunEntry] = {}
    for folder in folders:
        folder = Path(folder).expanduser().resolve()
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such folder")
        if is_run_dir(folder):
            pairs = [(folder.name, folder)]
            root = folder.parent
        else:
            if not folder.is_dir():
                raise ValueError(f"{folder} is not a run directory and holds none")
            pairs = [(p.relative_to(folder).as_posix(), p) for p in _walk(folder, MAX_DEPTH)]
            root = folder
        for rid, path in pairs:
            if rid in index and index[rid].path != path:
                rid = f"{folder.name}/{rid}"
            if rid in index and index[rid].path != path:  # still taken: number it
                k = 2
                while f"{rid}~{k}" in index:
                    k += 1
                rid = f"{rid}~{k}"
            index[rid] = RunEntry(rid, path, root)
    return index


def check_folders(folders: list[Path]) -> dict[str, RunEntry]:
    """:func:`discover_runs`, but each folder must be a run or hold one (what ``convolab serve RUN`` checks).

    Raises:
        ValueError: ``X is not a run directory and holds none``.
    """
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such folder")
        if not is_run_dir(folder) and (not folder.is_dir() or not _walk(folder, MAX_DEPTH)):
            raise ValueError(f"{folder} is not a run directory and holds none")
    return discover_runs(folders)


def run_status(path: Path, now: float | None = None) -> str:
    """``finished`` (summary.json), ``running`` (its logs changed in the last minute) or ``interrupted``."""
    if (path / SUMMARY).is_file():
        return "finished"
    now = time.time() if now is None else now
    for name in (METRICS, STEPS):
        try:
            if now - (path / name).stat().st_mtime < RUNNING_SECONDS:
                return "running"
        except OSError:
            continue
    return "interrupted"


def _read_json(path: Path) -> dict:
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def run_listing(entry: RunEntry) -> dict:
    """One run of ``GET /api/runs``: what config.json and summary.json say, read without building the model."""
    config = _read_json(entry.path / CONFIG)
    summary = _read_json(entry.path / SUMMARY)
    dataset = config.get("dataset") or {}
    recipe = config.get("recipe") or {}
    input_size = dataset.get("input_size")
    return {
        "id": entry.id,
        "ref": entry.ref,
        "path": str(entry.path),
        "model": config.get("model") or summary.get("model"),
        "dataset": dataset.get("name") if isinstance(dataset, dict) else dataset,
        "task": config.get("task", "classification"),
        "status": run_status(entry.path),
        "epochs_done": _count_lines(entry.path / METRICS),
        "epochs": recipe.get("epochs") or summary.get("epochs"),
        "summary": summary,
        "input_size": input_size,
        "classes": dataset.get("classes") if isinstance(dataset, dict) else None,
    }


def parse_input_size(text: str | None) -> tuple[int, int, int]:
    """``"1x28x28"`` -> ``(1, 28, 28)``; ``None`` -> the default.

    Raises:
        ValueError: not ``CxHxW`` with C 1 or 3 and sides 1..1024.
    """
    if text is None or text == "":
        return DEFAULT_INPUT
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        c, h, w = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"input {text!r}: expected CxHxW, e.g. 1x28x28 or 3x224x224") from None
    if c not in (1, 3):
        raise ValueError(f"input {text!r}: channels must be 1 or 3")
    if not (1 <= h <= MAX_INPUT_SIDE and 1 <= w <= MAX_INPUT_SIDE):
        raise ValueError(f"input {text!r}: height and width must be 1..{MAX_INPUT_SIDE}")
    return c, h, w


def _class_names(n: int) -> list[str]:
    if not 1 <= n <= MAX_CLASSES:
        raise ValueError(f"classes {n}: expected 1..{MAX_CLASSES}")
    return list(FASHION_CLASSES) if n == 10 else [f"class {i}" for i in range(n)]


@dataclass
class Model:
    """A model the explorer computes with: a run's (``convolab.load_run``) or a fresh zoo/spec model.

    ``run`` is a :class:`convolab.runs.Run` (for zoo/spec models one built here, without a folder): it gives
    ``preprocess``/``to_array``/``predict`` exactly as ``convolab predict`` uses them.
    """

    ref: str
    kind: str  # "run", "zoo" or "spec"
    name: str  # registry name or spec text
    run: object  # convolab.runs.Run
    entry: RunEntry | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # hooks and attributions: one computation at a time
    cache: dict = field(default_factory=dict)  # what is computed once per model (its summary, its graph)

    @property
    def model(self) -> torch.nn.Module:
        return self.run.model  # type: ignore[attr-defined]

    @property
    def input_size(self) -> tuple[int, ...]:
        return tuple(self.run.input_size)  # type: ignore[attr-defined]

    @property
    def classes(self) -> list[str]:
        return list(self.run.classes)  # type: ignore[attr-defined]

    @property
    def task(self) -> str:
        return getattr(self.run, "task", "classification")


def _fresh_model(kind: str, name: str, input_size: tuple[int, int, int], num_classes: int) -> object:
    """A registry or spec model with seed-0 weights wrapped as a :class:`convolab.runs.Run` without a folder."""
    from convolab.models import create_model, get_model_entry
    from convolab.runs.reader import Run

    model_name = name if kind == "zoo" else f"spec:{name}"
    try:
        entry = get_model_entry(model_name)
    except ValueError as e:
        raise ModelNotFoundError(str(e)) from None
    if entry.input_kind == "clip":
        raise ValueError(f"{name} takes video clips; the explorer shows image models")
    classes = _class_names(num_classes)
    c, h, w = input_size
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=num_classes, in_chans=c, input_size=(h, w)).eval()
    task = "segmentation" if entry.input_kind == "segmentation" else "classification"
    config = {"model": model_name, "task": task}
    return Run(Path("."), model, config, classes, (0.5,) * c, (0.5,) * c, (c, h, w), {}, task=task,
               build={"kind": "registry", "name": model_name, "kwargs": {}})


class ModelCache:
    """Loaded models by reference, least recently used dropped past ``size``; thread-safe.

    A run's model is reloaded when its ``model.safetensors`` changed (modification time and size).
    """

    def __init__(self, size: int = 8):
        self.size = size
        self._items: OrderedDict[tuple, tuple[object, Model]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many models were built or loaded (tests read it)

    def get(self, ref: str, runs: dict[str, RunEntry], input_size: str | None = None,
            classes: int | str | None = None) -> Model:
        """The model ``ref`` names (see the module docstring).

        Raises:
            ModelNotFoundError: an unknown run id or model name, or a reference of no known kind.
            ValueError: a bad input size or class count, or a model that cannot take that input.
        """
        if not isinstance(ref, str) or ":" not in ref:
            raise ModelNotFoundError(f"model reference {ref!r}: expected run:<id>, zoo:<name> or spec:<spec>")
        kind, _, name = ref.partition(":")
        if kind == "run":
            entry = runs.get(name)
            if entry is None:
                raise ModelNotFoundError(f"no served run has the id {name!r} (GET /api/runs lists them)")
            key: tuple = ("run", entry.id, str(entry.path))
            stamp: object = _weights_stamp(entry.path)
        elif kind in ("zoo", "spec"):
            if not name:
                raise ModelNotFoundError(f"model reference {ref!r} names no model")
            size = parse_input_size(input_size)
            try:
                n = DEFAULT_CLASSES if classes in (None, "") else int(classes)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ValueError(f"classes {classes!r}: expected a whole number of classes") from None
            _class_names(n)  # checks the range
            key, stamp, entry = (kind, name, size, n), None, None
        else:
            raise ModelNotFoundError(f"model reference {ref!r}: expected run:<id>, zoo:<name> or spec:<spec>")
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == stamp:
                self._items.move_to_end(key)
                return hit[1]
        # build outside the lock: a large model must not hold up the others (two builds of one key may race; the
        # last one is kept, both are correct)
        if kind == "run":
            from convolab.runs import load_run

            assert entry is not None
            loaded = Model(ref, "run", entry.id, load_run(entry.path), entry)
        else:
            loaded = Model(ref, kind, name, _fresh_model(kind, name, size, n))
        with self._lock:
            self.loads += 1
            self._items[key] = (stamp, loaded)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return loaded


def _weights_stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = (path / WEIGHTS).stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
