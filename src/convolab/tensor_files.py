"""Reading tensor files convolab may not have written: the format by content, and pickles that never run code.

A file is safetensors when it starts as one (an 8-byte little-endian header length, then ``{``),
whatever its extension; anything else is handed to ``torch.load(weights_only=True)``. When torch
refuses a pickle because it names a function (``posix.system``, ``builtins.eval`` ...), the error
says that loading it would run code and what it would call — parsed from torch's message or, when
torch does not say, found by walking the pickle's opcodes with :mod:`pickletools` (which reads
them, never executes them). It never suggests ``weights_only=False``.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickletools
import re
import struct
import warnings
import zipfile
from pathlib import Path

import torch

__all__ = ["file_kind", "pickle_calls", "torch_load"]

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_SCAN_LIMIT = 64 * 2**20  # bytes of a pickle walked to name what it calls
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8"}
_MEMO_GETS = {"GET", "BINGET", "LONG_BINGET"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def file_kind(path: str | os.PathLike) -> str:
    """What ``path`` holds, judged by its first bytes: ``safetensors``, ``torch-zip``, ``pickle`` or ``unknown``."""
    with open(path, "rb") as f:
        head = f.read(9)
        size = os.fstat(f.fileno()).st_size
    if len(head) == 9 and head[8:9] == b"{" and 2 <= struct.unpack("<Q", head[:8])[0] <= size - 8:
        return "safetensors"
    if head[:4] in _ZIP_MAGIC:
        return "torch-zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # PROTO 2..5
        return "pickle"
    return "unknown"


def _py3_name(module: str, name: str = "") -> str:
    """``module.name`` as Python 3 imports it (protocol 2 writes ``__builtin__.eval`` for ``builtins.eval``)."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _globals_in(data: bytes) -> list[str]:
    """``module.name`` of every GLOBAL/STACK_GLOBAL/INST in the pickles of ``data`` (one after another, as the
    legacy torch format stores them); stops quietly at the first byte that is no opcode."""
    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        recent: list[str | None] = []  # what the last opcodes pushed (strings, else None)
        memo: dict[int, str | None] = {}
        start = stream.tell()
        try:
            for op, arg, _ in pickletools.genops(stream):
                name = op.name
                if name in ("GLOBAL", "INST"):
                    found.append(_py3_name(*str(arg).split(" ", 1)))
                elif name == "STACK_GLOBAL":
                    module, attr = (recent[-2:] + [None, None])[:2] if len(recent) >= 2 else (None, None)
                    found.append(f"{module}.{attr}" if module and attr else "an unnamed global")
                elif name in _STRING_OPS:
                    recent.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
                elif name in _MEMO_GETS:
                    recent.append(memo.get(arg))
                elif name in _MEMO_PUTS:
                    memo[arg] = recent[-1] if recent else None
                elif name == "MEMOIZE":
                    memo[len(memo)] = recent[-1] if recent else None
                elif name not in ("FRAME", "PROTO", "STOP"):
                    recent.append(None)
        except Exception:  # noqa: BLE001 - not (or no longer) a pickle: what was found so far stands
            break
        if stream.tell() == start:
            break
    return found


def _allowed_globals() -> set[str]:
    """The globals ``torch.load(weights_only=True)`` accepts (its tensor rebuilders, OrderedDict ...)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - a private helper: then torch's and collections' own names pass
        allowed = set()
    extra = torch.serialization.get_safe_globals()  # what the user allowed with add_safe_globals
    return allowed | {f"{g.__module__}.{g.__qualname__}" for g in extra if hasattr(g, "__qualname__")}


def pickle_calls(path: str | os.PathLike) -> list[str]:
    """The functions and classes a pickle (plain, or inside torch's zip format) would import and call on load,
    other than those ``torch.load(weights_only=True)`` allows; read with :mod:`pickletools`, nothing runs."""
    path = Path(path)
    try:
        if file_kind(path) == "torch-zip":
            with zipfile.ZipFile(path) as z:
                data = b"".join(z.read(n)[:_SCAN_LIMIT] for n in z.namelist() if n.endswith(".pkl"))
        else:
            with open(path, "rb") as f:
                data = f.read(_SCAN_LIMIT)
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return []
    allowed = _allowed_globals()
    out: list[str] = []
    for g in _globals_in(data):
        safe = g in allowed or (not allowed and g.split(".")[0] in ("torch", "collections"))
        if not safe and g not in out:
            out.append(g)
    return out


def _refused_global(message: str) -> str | None:
    """The global torch's UnpicklingError names (``posix.system``), if it names one."""
    m = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"global:? ([\w.]+\.[\w]+)", message)
    return m.group(1) if m else None


def torch_load(path: str | os.PathLike, what: str, noun: str = "torch file") -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors that start with ``what``
    and call the file a ``noun`` (``checkpoint`` ...).

    Raises:
        ValueError: the file would run code when loaded (the message names what it would call), is a
            torch archive cut short or damaged, or is no torch file at all.
    """
    path = Path(path)
    kind = file_kind(path)
    try:
        # An open file, not the name: torch.load hands a name ending in .safetensors to safetensors whatever it holds.
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's "pickle protocol 4" notes: the error below says it all
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged zip or pickle raises many types
        message = str(e)
    named = _refused_global(message)
    calls = ([named] if named else []) + [c for c in pickle_calls(path) if c != named]
    if calls:
        raise ValueError(f"{what}: refused: loading this file would run code (it would call {', '.join(calls[:5])}); "
                         "convolab reads only tensors and plain values from a .pt/.pth file, so it is not loaded "
                         "(a safetensors file of the same weights is safe to share)") from None
    if kind == "torch-zip":
        try:
            with zipfile.ZipFile(path) as z:
                complete = any(n.endswith("data.pkl") for n in z.namelist())
        except (zipfile.BadZipFile, OSError):
            complete = False
        detail = ("a torch archive whose data cannot be read" if complete else
                  "a zip archive that is cut short or damaged: an interrupted copy?")
        raise ValueError(f"{what}: corrupt or unreadable {noun} ({detail})") from None
    if kind == "pickle":
        raise ValueError(f"{what}: corrupt or unreadable {noun} (a pickle that is cut short, damaged, or holds "
                         "something other than tensors and plain values)") from None
    with open(path, "rb") as f:
        head = f.read(16)
    raise ValueError(f"{what}: not a {noun} (neither a torch zip archive nor a pickle; it starts with "
                     f"{head!r})") from None
