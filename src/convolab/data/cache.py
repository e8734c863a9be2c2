"""Decode once: decoded datasets are kept as safetensors files in the user cache (``decoded/``).

The cache key is a fingerprint of the source files (path, size, modification time), so a changed
or replaced file is decoded again. A cache that cannot be written (read-only home) is skipped.

The cache is bounded: its files together stay under ``$CONVOLAB_CACHE_MAX_BYTES`` (default 4 GiB,
see :mod:`convolab.data.limits`; 0 turns caching off). After each write the least recently used
files (oldest modification time; a cache hit refreshes it) are deleted until the total fits; a
dataset larger than the cap on its own is not cached. Only convolab's ``*.safetensors`` files in
``decoded/`` are ever deleted.
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
from convolab.data.limits import format_bytes, max_cache_bytes
from convolab.data.resolve import user_cache_dir

__all__ = ["fingerprint", "load_cached", "save_cached", "evict"]

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
        _touch(path)
        return arrays, meta
    except Exception as e:  # a damaged cache file is only a cache miss
        log.warning("ignoring unreadable cache file %s (%s)", path, e)
        return None


def save_cached(name: str, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Store arrays in the cache, atomically; failures only log."""
    from safetensors.numpy import save_file

    path = _path(name, key)
    cap = max_cache_bytes()
    size = sum(np.asarray(v).nbytes for v in arrays.values())
    if size > cap:
        log.info("not caching %s: %s decoded is more than the cache's cap of %s ($CONVOLAB_CACHE_MAX_BYTES)",
                 name, format_bytes(size), format_bytes(cap))
        return
    try:
        with atomic_path(path) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp),
                      metadata={"convolab": json.dumps(meta)})
    except OSError as e:
        log.debug("not caching %s: %s", name, e)
        return
    evict(cap, keep=path)


def _touch(path: Path) -> None:
    try:
        os.utime(path)  # a hit makes the file recent: eviction takes the least recently used first
    except OSError:
        pass


def evict(cap: int | None = None, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used cache files until their total is at most ``cap`` bytes; returns them.

    ``cap`` defaults to ``$CONVOLAB_CACHE_MAX_BYTES`` (4 GiB); ``keep`` (the file just written) is never deleted.
    """
    cap = max_cache_bytes() if cap is None else cap
    folder = user_cache_dir() / "decoded"
    entries = []
    for p in folder.glob("*.safetensors") if folder.is_dir() else ():
        try:
            st = p.lstat()
        except OSError:
            continue
        if p.is_file() and not p.is_symlink():
            entries.append((st.st_mtime_ns, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, p in sorted(entries):  # oldest first
        if total <= cap:
            break
        if keep is not None and p == keep:
            continue
        try:
            p.unlink()
        except OSError as e:
            log.debug("could not evict %s: %s", p, e)
            continue
        total -= size
        removed.append(p)
    if removed:
        log.info("decode cache over its cap of %s: removed %d least recently used file%s", format_bytes(cap),
                 len(removed), "" if len(removed) == 1 else "s")
    return removed
