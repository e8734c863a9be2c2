"""The built-in datasets as arrays: which one a name stands for, where its files are, decoding them (cached).

``convolab.data.dataset.load_dataset`` turns these arrays into splits; the offline datasets made from
Fashion-MNIST (``convolab.data.scenes``, ``convolab.data.moving``) read its items through here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from convolab.data import cache
from convolab.data.named import DATASETS, DatasetSpec, decode, download, find_files, source_files
from convolab.data.resolve import search_places, user_cache_dir
from convolab.errors import DataNotFoundError

__all__ = ["canonical_name", "locate_dataset", "load_builtin"]

log = logging.getLogger("convolab.data.dataset")


def canonical_name(name: str) -> str | None:
    """The built-in dataset ``name`` stands for (aliases, case and ``_`` allowed), or None."""
    return _canonical(name)


def _canonical(name: str) -> str | None:
    key = name.strip().lower().replace("_", "-")
    aliases = {"fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10",
               "cifar-100": "cifar100", "k-mnist": "kmnist"}
    key = aliases.get(key, key)
    return key if key in DATASETS else None


def locate_dataset(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> tuple[Path | None, list[str]]:
    """The folder holding ``spec``'s files (or None) and the places searched, in order, as text.

    Raises:
        DataNotFoundError: ``data_dir`` is given but is no folder (a typo would otherwise be searched past).
    """
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataNotFoundError(f"--data-dir {data_dir}: no such folder")
    looked = []
    for place in search_places(data_dir, spec.system_dirs):
        looked.append(place.describe())
        if place.path is not None:
            found = find_files(spec, place.path)
            if found is not None:
                return found, looked
    return None, looked


def _not_found(spec: DatasetSpec, looked: list[str], download_error: str | None) -> DataNotFoundError:
    files = ", ".join(f"{f}[.gz]" if spec.kind == "idx" else f for f in spec.files)
    ways = list(spec.how_to_get)
    ways.append(f"download: `convolab datasets --download {spec.name}` (needs internet; torchvision fetches it)")
    ways.append(f"--data-dir DIR (or $CONVOLAB_DATA) pointing to a folder with {files}")
    dl = f"download failed ({download_error})" if download_error else "download not attempted"
    return DataNotFoundError(
        f"dataset {spec.name!r} not found. Looked in: {'; '.join(looked)}; {dl}. To get it: " + "; or ".join(ways)
    )


def load_builtin(spec: DatasetSpec, data_dir, download_ok: bool, use_cache: bool):
    """``(train_x, train_y, test_x, test_y, classes, source)`` of a built-in dataset: uint8 images (N, C, H, W)
    and int64 labels as arrays, found (or downloaded when ``download_ok``) and decoded once (cached).

    Raises:
        DataNotFoundError: not found anywhere (the message lists every place searched and how to get it).
    """
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():  # a typo, even where it is not needed
        raise DataNotFoundError(f"--data-dir {data_dir}: no such folder")
    if spec.kind == "digits":
        tr_x, tr_y, te_x, te_y = decode(spec, None)
        return tr_x, tr_y, te_x, te_y, list(spec.classes), "scikit-learn (sklearn.datasets.load_digits)"
    folder, looked = locate_dataset(spec, data_dir)
    if folder is None:
        if not download_ok:
            raise _not_found(spec, looked, None)
        try:
            folder = download(spec, user_cache_dir())
        except Exception as e:  # download() says why in one line (e.reason); anything else is passed on briefly
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            raise _not_found(spec, looked, reason) from None
    key = cache.fingerprint(spec.name, source_files(spec, folder)) if use_cache else None
    hit = cache.load_cached(spec.name, key) if key else None
    if hit is not None:
        a, _ = hit
        return a["train_x"], a["train_y"], a["test_x"], a["test_y"], list(spec.classes), str(folder)
    log.info("decoding %s from %s", spec.name, folder)
    tr_x, tr_y, te_x, te_y = decode(spec, folder)
    if key:
        cache.save_cached(spec.name, key, dict(train_x=tr_x, train_y=tr_y, test_x=te_x, test_y=te_y), {})
    return tr_x, tr_y, te_x, te_y, list(spec.classes), str(folder)
