"""Images for explanation tools: folders of files and the run's own dataset, preprocessed as in training.

Every image goes through the run's ``preprocess`` (:meth:`convolab.runs.Run.preprocess`), so a file of another
size or channel count is converted exactly as the training images were (resized, made grey or RGB, normalised).
The caller (the CLI, the report) loads the run and passes it in: explain sits below the run format in DESIGN.md's
layers and knows a run only by what :class:`RunLike` lists.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from convolab.data.images import IMAGE_EXTENSIONS
from convolab.errors import UnknownNameError


class RunLike(Protocol):
    """What the explanation tools use of a loaded run (``convolab.load_run`` returns one)."""

    path: Path
    model: nn.Module  # in eval mode
    config: dict  # config.json: the dataset it was trained on, the seed of its split
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, ...]  # (C, H, W) the model was trained on

    def to_array(self, image: Any) -> np.ndarray:
        """One image -> uint8 (C, H, W) at the training size."""
        ...

    def preprocess(self, images: Any) -> torch.Tensor:
        """Images -> the normalised float batch (N, C, H, W) the model takes."""
        ...


__all__ = ["RunLike", "image_files", "load_folder", "resolve_class", "run_dataset", "class_images"]

log = logging.getLogger(__name__)


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``folder`` (not its subfolders), sorted by name; hidden files skipped.

    Every entry with an image extension that is not a folder is listed, named pipes and empty files too:
    reading them is what says they are no image (:func:`load_folder` warns and goes on).

    Raises:
        FileNotFoundError: no such folder.
        NotADirectoryError: ``folder`` is a file.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: is a file, not a folder of images")
    return sorted(p for p in folder.iterdir()
                  if not p.is_dir() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def load_folder(run: RunLike, folder: str | os.PathLike, *, min_images: int = 1, what: str = "folder",
                limit: int | None = None) -> torch.Tensor:
    """The images in ``folder`` as the normalised batch (N, C, H, W) ``run``'s model was trained on.

    Files that cannot be read as images (undecodable, empty, named pipes, decompression bombs ...) are
    skipped with one warning naming them; only too few readable images is an error.

    Args:
        min_images: fewer readable images than this is a ``ValueError`` that says how many are needed.
        what: how the error message names the folder ("concept folder", ...).
        limit: use at most this many (the first readable ones in name order).
    """
    files = image_files(folder)
    arrays, bad = [], []
    for f in files:
        if limit and len(arrays) >= limit:
            break
        try:
            arrays.append(torch.from_numpy(run.to_array(f)))  # (C, H, W) uint8
        except (ValueError, OSError) as e:  # one line naming the file
            bad.append(str(e))
    if len(arrays) < min_images:  # the error alone: a warning about the same files before it would be a second line
        found = f"only {len(arrays)}" if arrays else "no"
        unreadable = f" ({len(bad)} more could not be read, e.g. {bad[0]})" if bad else ""
        raise ValueError(f"{what} {folder} has {found} readable image files{unreadable} "
                         f"({', '.join(sorted(IMAGE_EXTENSIONS))}); at least {min_images} are needed")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        log.warning("%s %s: skipped %d unreadable image file%s: %s", what, folder, len(bad),
                    "" if len(bad) == 1 else "s", shown)
    return run.preprocess(torch.stack(arrays))


def resolve_class(classes: list[str], target: str | int) -> int:
    """A class index from a class name or an index (a name wins: a class called "3" is the class named "3").

    Raises:
        ValueError: neither a class name nor an index in range; the message suggests close names.
    """
    if isinstance(target, str) and target in classes:
        return classes.index(target)
    try:
        index = int(target)
    except (TypeError, ValueError):
        raise UnknownNameError("class", str(target), classes,
                               hint=f"give a class name or an index 0..{len(classes) - 1}") from None
    if not 0 <= index < len(classes):
        raise ValueError(f"class index {index} is out of range: the model has {len(classes)} classes "
                         f"(0..{len(classes) - 1})")
    return index


def run_dataset(run: RunLike, *, name: str | None = None, data_dir: str | os.PathLike | None = None,
                download: bool = True):
    """The dataset ``run`` was trained on (as recorded in its config.json, or ``name``), split the same way.

    Raises:
        ValueError: no dataset is named, or the dataset does not fit the model (image size, channels or
            classes differ from the run's).
    """
    from convolab.data import load_dataset
    from convolab.data.resolve import recorded_data_dir

    ds_cfg = run.config.get("dataset") or {}
    name = name or ds_cfg.get("name")
    if not name:
        raise ValueError(f"{run.path}: config.json does not say which dataset the run used")
    from convolab.data.builtin import canonical_name

    data_dir = data_dir or recorded_data_dir(ds_cfg.get("data_dir"))
    c, h, w = run.input_size
    # An image folder is decoded at the size the model takes (a folder of photos needs one, see load_dataset).
    image_size = None if canonical_name(name) else (h, w)
    data = load_dataset(name, data_dir=data_dir, val_fraction=ds_cfg.get("val_fraction", 0.1),
                        seed=run.config.get("seed", 0), download=download, image_size=image_size)
    if (data.in_chans, *data.image_size) != (c, h, w):
        raise ValueError(f"{name} has {data.in_chans}x{data.image_size[0]}x{data.image_size[1]} images but the model "
                         f"was trained on {c}x{h}x{w}")
    if list(data.classes) != list(run.classes):
        raise ValueError(f"{name}'s classes differ from the run's ({len(data.classes)} vs {len(run.classes)} classes)")
    return data


def class_images(run: RunLike, target: int, *, split: str = "test", limit: int | None = None, seed: int = 0,
                 data=None) -> torch.Tensor:
    """Images of class ``target`` from the run's dataset (``split``), normalised; a seeded sample of ``limit``.

    ``data`` is the already-loaded dataset, if the caller has it.

    Raises:
        ValueError: the split holds no image of that class.
    """
    data = data if data is not None else run_dataset(run)
    part = getattr(data, split)
    idx = (part.labels == target).nonzero().squeeze(1)
    if len(idx) == 0:
        raise ValueError(f"the {split} split of {data.name} has no image of class {run.classes[target]!r}")
    if limit is not None and len(idx) > limit:
        gen = torch.Generator().manual_seed(seed)
        idx = idx[torch.randperm(len(idx), generator=gen)[:limit]].sort().values
    return run.preprocess(part.images[idx])


def unique_stem(path: str | os.PathLike, used: set[str]) -> str:
    """The file's stem, made unique among ``used`` (``a``, ``a-2``, ...) and added to it: output file names."""
    stem = Path(path).stem or "image"
    name, k = stem, 2
    while name in used:
        name, k = f"{stem}-{k}", k + 1
    used.add(name)
    return name
