"""How much memory and disk the data layer may take before it refuses (or evicts), and how to change it.

* ``$CONVOLAB_MAX_DATA_BYTES`` (default 2 GiB): the largest decoded dataset (N x C x H x W bytes, uint8)
  loaded into memory — an image folder over it is streamed from disk instead (:mod:`convolab.data.stream`;
  ``load_dataset(max_bytes=...)``, ``--max-memory``, overrides it per call) — and the most an IDX file may
  promise in its header (a gzip bomb is refused before it is decompressed);
* ``$CONVOLAB_CACHE_MAX_BYTES`` (default 4 GiB): the total size of the decoded-data cache; the least
  recently used files are evicted past it.

Both take a number of bytes with an optional K, M, G or T suffix (powers of 1024): ``8G``, ``500M``.
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_MAX_DATA_BYTES", "DEFAULT_CACHE_MAX_BYTES", "parse_bytes", "format_bytes", "max_data_bytes",
           "max_cache_bytes"]

DEFAULT_MAX_DATA_BYTES = 2 * 1024**3
DEFAULT_CACHE_MAX_BYTES = 4 * 1024**3
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_bytes(text: str, what: str) -> int:
    """``"8G"`` -> 8589934592; ``what`` names the setting in the error.

    Raises:
        ValueError: not a non-negative number with an optional K/M/G/T suffix.
    """
    t = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{what}={text!r}: expected a number of bytes such as 2000000000, 500M or 8G")
    return int(value * _UNITS[unit])


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _env_bytes(name: str, default: int) -> int:
    text = os.environ.get(name)
    return default if text is None or not text.strip() else parse_bytes(text, f"${name}")


def max_data_bytes() -> int:
    """The decoded-dataset memory budget: ``$CONVOLAB_MAX_DATA_BYTES`` or 2 GiB (folders over it are streamed)."""
    return _env_bytes("CONVOLAB_MAX_DATA_BYTES", DEFAULT_MAX_DATA_BYTES)


def max_cache_bytes() -> int:
    """The decoded-data cache's size cap: ``$CONVOLAB_CACHE_MAX_BYTES`` or 4 GiB (0 turns the cache off)."""
    return _env_bytes("CONVOLAB_CACHE_MAX_BYTES", DEFAULT_CACHE_MAX_BYTES)
