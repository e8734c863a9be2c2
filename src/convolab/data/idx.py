"""Reader for the IDX format of MNIST, Fashion-MNIST and KMNIST (plain or gzip-compressed).

An IDX file is a big-endian header — two zero bytes, a type code, the number of dimensions — then
one 32-bit size per dimension, then the values in C order. Written by hand because it is twenty
lines and lets convolab read the files wherever they are (torchvision's reader wants its own
folder layout); tests check it against torchvision's.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "write_idx"]

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
          np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def _open(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file into a NumPy array of its stored shape and type.

    Raises:
        ValueError: the file is not IDX, or is truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such IDX file")
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read IDX data ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX file (header needs {header} bytes, file has {len(data)})")
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) < expected:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} bytes, header says {expected})")
    arr = np.frombuffer(data, dtype, count=int(np.prod(shape, dtype=np.int64)), offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


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
