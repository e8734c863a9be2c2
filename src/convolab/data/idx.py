"""Reader for the IDX format of MNIST, Fashion-MNIST and KMNIST (plain or gzip-compressed).

An IDX file is a big-endian header — two zero bytes, a type code, the number of dimensions — then
one 32-bit size per dimension, then the values in C order. Written by hand because it is twenty
lines and lets convolab read the files wherever they are (torchvision's reader wants its own
folder layout); tests check it against torchvision's.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from convolab.data.limits import format_bytes, max_data_bytes

__all__ = ["read_idx", "write_idx"]

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
          np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def _open(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb"), gz


# DEFLATE expands at most ~1032:1, so a gzip file promising more than this many bytes per compressed byte
# cannot hold what its header says (checked before any buffer is allocated).
_MAX_GZIP_RATIO = 1100


def _read_exactly(f, n: int) -> bytearray:
    """Up to ``n`` bytes from ``f`` into one buffer, never more: a gzip bomb is not decompressed past ``n``."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = f.readinto(view[got:])
        if not k:
            break
        got += k
    return buf if got == n else buf[:got]


def read_idx(path: str | os.PathLike, max_bytes: int | None = None) -> np.ndarray:
    """Read an IDX file into a NumPy array of its stored shape and type.

    The header is read first; the data is read (decompressed) only up to the size the header promises
    (one byte more says whether the file holds more than that, which is refused),
    and a header promising more than ``max_bytes`` (default ``$CONVOLAB_MAX_DATA_BYTES`` or 2 GiB, see
    :mod:`convolab.data.limits`), or more than the file could hold, is refused before any data is read.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not IDX, is truncated, holds more than its header says, or promises more
            data than the limit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such IDX file")
    limit = max_data_bytes() if max_bytes is None else max_bytes
    try:
        f, gz = _open(path)
        with f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
                raise ValueError(f"{path}: not an IDX file (bad magic number)")
            ndim = head[3]
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise ValueError(f"{path}: truncated IDX file (header needs {4 + 4 * ndim} bytes, "
                                 f"file has {4 + len(dims)})")
            shape = tuple(int(v) for v in np.frombuffer(dims, ">u4", count=ndim))
            dtype = np.dtype(_DTYPES[head[2]])
            count = math.prod(shape)  # Python ints: no overflow
            nbytes = count * dtype.itemsize
            promised = f"the header promises {'x'.join(map(str, shape))} values ({format_bytes(nbytes)})"
            if nbytes > limit:
                raise ValueError(f"{path}: {promised}, more than the limit of {format_bytes(limit)} "
                                 f"($CONVOLAB_MAX_DATA_BYTES); refused before reading (a damaged file or a gzip bomb?)")
            size = path.stat().st_size
            if (nbytes > _MAX_GZIP_RATIO * size) if gz else (4 + 4 * ndim + nbytes > size):
                raise ValueError(f"{path}: truncated IDX file ({promised}, more than its {size:,} bytes can hold)")
            data = _read_exactly(f, nbytes)
            extra = f.read(1)  # one byte more, never the rest: a bomb's tail is not decompressed
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: cannot read IDX data ({e})") from None
    if len(data) < nbytes:
        raise ValueError(f"{path}: truncated IDX file ({len(data):,} data bytes, header says {nbytes:,})")
    if extra:
        raise ValueError(f"{path}: more data than the header promises ({nbytes:,} data bytes for "
                         f"{'x'.join(map(str, shape))} values); damaged, or not one IDX array")
    arr = np.frombuffer(data, dtype, count=count).reshape(shape)
    return arr if dtype.isnative else arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in ``.gz`` or ``compress``)."""
    path = Path(path)
    arr = np.asarray(array)
    if arr.dtype.kind in "ui" and arr.dtype.itemsize == 1:
        arr = arr.astype(np.uint8 if arr.dtype.kind == "u" else np.int8)
    else:
        arr = arr.astype(arr.dtype.newbyteorder(">"))
    if arr.dtype not in _CODES:
        raise ValueError(f"IDX has no type for {array.dtype}; use uint8, int8, int16, int32, float32 or float64")
    code = _CODES[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    payload = header + arr.tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        payload = gzip.compress(payload)
    from convolab.atomic import write_bytes

    write_bytes(path, payload)
