"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every file convolab writes goes through here: a temporary file in the destination's folder is
written, flushed, fsync'ed and renamed over the destination (rename is atomic on POSIX and on
Windows within one volume), then the folder itself is fsync'ed so the rename survives a crash.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_bytes", "write_text", "write_json", "append_jsonl", "read_jsonl", "fsync_dir",
           "strict_json", "write_jsonl", "remove_temporaries", "NON_FINITE"]

NON_FINITE = "non_finite"  # the field that lists where a NaN or infinity was written as null
# atomic_path's temporary files: ".NAME." + mkstemp's 8 random characters + suffix + ".tmp"
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}[^/]*\.tmp$")


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a directory entry to disk (a no-op where the OS cannot open folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _target_mode(dest: Path) -> int:
    try:
        return os.stat(dest).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on clean exit it is fsync'ed and renamed to ``dest``.

    Use it for writers that want a file name (``savefig``, ``safetensors.torch.save_file``). On an
    exception the temporary file is removed and ``dest`` is left untouched.

    Raises:
        PermissionError: no file can be made in ``dest``'s folder (one line naming ``dest``).
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    except OSError as e:  # name the file the user asked for, not the temporary one
        raise PermissionError(f"cannot write {dest} ({e.strerror or e})") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _naming(dest, tmp_path):
            yield tmp_path
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
            # mkstemp makes the file owner-only; give it the mode a plain open() would (or the old file's).
            os.chmod(tmp_path, _target_mode(dest))
            os.replace(tmp_path, dest)
            fsync_dir(dest.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def _naming(dest: Path, tmp: Path | None = None) -> Iterator[None]:
    """An ``OSError`` from writing (a full disk, an I/O error) names ``dest``, the file the user knows, rather than
    nothing or the temporary file."""
    try:
        yield
    except OSError as e:
        if e.errno is None or (e.filename is not None and str(e.filename) not in (str(tmp), str(dest))):
            raise
        raise OSError(e.errno, e.strerror or str(e), str(dest)) from None


def _write(dest: str | os.PathLike, write: Callable[[Any], None], mode: str) -> None:
    with atomic_path(dest) as tmp, open(tmp, mode) as f:
        write(f)
        f.flush()


def write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    """Atomically replace ``dest`` with ``data``."""
    _write(dest, lambda f: f.write(data), "wb")


def write_text(dest: str | os.PathLike, text: str) -> None:
    """Atomically replace ``dest`` with ``text`` (UTF-8)."""
    write_bytes(dest, text.encode("utf-8"))


def strict_json(obj: Any) -> Any:
    """``obj`` with every NaN and infinity replaced by ``None``, so that it is strict JSON (RFC 8259 has no
    NaN; Python's ``json`` would write a bare ``NaN`` that other readers refuse). A dict that held one gets a
    ``"non_finite"`` field listing where (``"val_loss"``, ``"history.2.loss"``), so a null says why."""
    found: list[str] = []

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            found.append(where)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}.{i}" if where else str(i)) for i, v in enumerate(value)]
        return value

    out = clean(obj, "")
    if found and isinstance(out, dict):
        out[NON_FINITE] = sorted(set(found) | set(out.get(NON_FINITE) or []))
    return out


def write_json(dest: str | os.PathLike, obj: Any) -> None:
    """Atomically replace ``dest`` with ``obj`` as indented, strict JSON (see :func:`strict_json`)."""
    write_text(dest, json.dumps(strict_json(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def _drop_torn_line(f) -> None:
    """Truncate a file opened for reading and writing after its last complete line (a crash mid-append
    leaves a torn one, and a line appended to it would be glued to it and lost to every reader)."""
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return
    f.seek(end - 1)
    if f.read(1) == b"\n":
        return
    keep, chunk = end, 1 << 16
    while keep > 0:  # scan backwards for the last newline
        start = max(0, keep - chunk)
        f.seek(start)
        block = f.read(keep - start)
        i = block.rfind(b"\n")
        if i >= 0:
            keep = start + i + 1
            break
        keep = start
    f.truncate(keep)


def append_jsonl(dest: str | os.PathLike, obj: dict | list[dict]) -> None:
    """Append one strict JSON line (or one per dict of a list) to ``dest`` and fsync it.

    One ``write`` of whole lines: the file grows by complete records or, after a crash mid-write,
    by a torn last line that readers skip and that the next append cuts off first.
    """
    line = "".join(json.dumps(strict_json(o), allow_nan=False) + "\n"
                   for o in (obj if isinstance(obj, list) else [obj]))
    with _naming(Path(dest)), open(dest, "a+b") as f:
        _drop_torn_line(f)
        f.seek(0, os.SEEK_END)
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(dest: str | os.PathLike, rows: list[dict]) -> None:
    """Atomically replace ``dest`` with ``rows`` as strict JSON lines (a log cut back on resume)."""
    write_text(dest, "".join(json.dumps(strict_json(r), allow_nan=False) + "\n" for r in rows))


def remove_temporaries(*folders: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left directly in each of ``folders`` when a process was
    killed mid-write (``.NAME.XXXXXXXX.tmp``; nothing else, and nothing in sub-folders, is touched); returns
    them."""
    removed = []
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for path in sorted(Path(folder).glob(".*.tmp")):
            if _TEMPORARY.match(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file, skipping a torn last line left by a crash."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
