"""Decode once: decoded datasets are kept as safetensors files in the user cache.

The cache key is a fingerprint of the source files (path, size, modification time), so a changed
or replaced file is decoded again. A cache that cannot be written (read-only home) is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from convolab.atomic import atomic_path
from convolab.data.resolve import user_cache_dir

__all__ = ["fingerprint", "load_cached", "save_cached"]

log = logging.getLogger(__name__)
_VERSION = "1"  # bump when the decoded layout changes


def fingerprint(tag: str, files: Iterable[Path], extra: str = "") -> str:
    """A short hash of ``tag``, ``extra`` and each file's path, size and mtime."""
    h = hashlib.sha1(f"{_VERSION}|{tag}|{extra}".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _path(name: str, key: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[-60:]
    return user_cache_dir() / "decoded" / f"{safe}-{key}.safetensors"


def load_cached(name: str, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """The cached arrays and metadata for (name, key), or None."""
    path = _path(name, key)
    if not path.exists():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as f:
            arrays = {k: f.get_tensor(k) for k in f.keys()}
            meta = json.loads((f.metadata() or {}).get("convolab", "{}"))
        log.debug("decoded %s from cache %s", name, path)
        return arrays, meta
    except Exception as e:  # a damaged cache file is only a cache miss
        log.warning("ignoring unreadable cache file %s (%s)", path, e)
        return None


def save_cached(name: str, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Store arrays in the cache, atomically; failures only log."""
    from safetensors.numpy import save_file

    path = _path(name, key)
    try:
        with atomic_path(path) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp),
                      metadata={"convolab": json.dumps(meta)})
    except OSError as e:
        log.debug("not caching %s: %s", name, e)
