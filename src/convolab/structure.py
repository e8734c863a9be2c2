"""Checking plain data (JSON values, a checkpoint's dicts of tensors) against a small declared structure.

Files a user may have edited, truncated, or had written by another version are checked before anything is built
from them, so that a bad value is one ``ValueError`` line naming the file, the field and what was expected — not
a ``KeyError`` deep inside, nor a model that allocates gigabytes because a size was absurd. A structure is a tree
of the small spec classes below; :func:`validate` walks a value with one. The run format's schemas
(:mod:`convolab.runs.schema`) and the checkpoint's (:mod:`convolab.train.checkpoint`) are written with them.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["Int", "Num", "Str", "Bool", "Null", "Const", "AnyOf", "ListOf", "Obj", "AnyValue", "AnyDict", "Plain",
           "Tensor", "TensorDict", "maybe", "validate", "describe_value", "parse_json", "read_json", "read_json_text",
           "MAX_DEPTH"]

MAX_DEPTH = 32  # nesting of a file's values (convolab writes at most 4 levels)

class _Bad(Exception):
    """A value that does not fit its spec: where in the value, what it is, what was expected."""

    def __init__(self, where: str, problem: str, expected: str):
        super().__init__(where, problem, expected)
        self.where, self.problem, self.expected = where, problem, expected


def describe_value(v: object) -> str:
    """``is 3``, ``is a list of 2 items``, ``is null`` ... for an error message."""
    if v is None:
        return "is null"
    if isinstance(v, bool):
        return f"is {str(v).lower()}"
    if isinstance(v, (int, float)):
        return f"is {v!r}"
    if isinstance(v, str):
        return f"is the string {v[:40]!r}" + ("..." if len(v) > 40 else "")
    if isinstance(v, (list, tuple)):
        return f"is a list of {len(v)} item{'s' * (len(v) != 1)}"
    if isinstance(v, dict):
        return "is an object"
    if isinstance(v, torch.Tensor):
        kind = "sparse " if v.is_sparse else ""
        return f"is a {kind}{str(v.dtype).removeprefix('torch.')} tensor of shape {list(v.shape)} on {v.device.type}"
    return f"is a {type(v).__name__}"


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


@dataclass(frozen=True)
class Int:
    """An integer (not a bool) from ``lo`` to ``hi``."""

    lo: int = -(2**63)
    hi: int = 2**63 - 1

    def describe(self) -> str:
        if self.lo == self.hi:
            return f"{self.lo}"
        if self.hi >= 2**62:
            return f"an integer >= {self.lo}"
        return f"an integer from {self.lo:,} to {self.hi:,}"

    def check(self, v: object, where: str, depth: int) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or not self.lo <= v <= self.hi:
            raise _Bad(where, describe_value(v), self.describe())


@dataclass(frozen=True)
class Num:
    """A finite number (int or float, not a bool) from ``lo`` to ``hi``; ``lo_open`` excludes ``lo``."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    finite: bool = True  # False: NaN and inf pass too (a diverged epoch's loss)

    def describe(self) -> str:
        if not self.finite:
            return "a number"
        if self.lo == -math.inf and self.hi == math.inf:
            return "a finite number"
        if self.hi == math.inf:
            return f"a number {'>' if self.lo_open else '>='} {self.lo:g}"
        return f"a number from {self.lo:g}{' (excluded)' if self.lo_open else ''} to {self.hi:g}"

    def check(self, v: object, where: str, depth: int) -> None:
        number = not isinstance(v, bool) and isinstance(v, (int, float))
        ok = number and (not self.finite and not math.isfinite(v) or math.isfinite(v) and v <= self.hi
                         and (v > self.lo if self.lo_open else v >= self.lo))
        if not ok:
            raise _Bad(where, describe_value(v), self.describe())


@dataclass(frozen=True)
class Str:
    """A string of at most ``max_len`` characters."""

    max_len: int = 100_000

    def describe(self) -> str:
        return "a string"

    def check(self, v: object, where: str, depth: int) -> None:
        if not isinstance(v, str):
            raise _Bad(where, describe_value(v), self.describe())
        if len(v) > self.max_len:
            raise _Bad(where, f"is a string of {len(v):,} characters", f"at most {self.max_len:,}")


@dataclass(frozen=True)
class Bool:
    def describe(self) -> str:
        return "true or false"

    def check(self, v: object, where: str, depth: int) -> None:
        if not isinstance(v, bool):
            raise _Bad(where, describe_value(v), self.describe())


@dataclass(frozen=True)
class Null:
    def describe(self) -> str:
        return "null"

    def check(self, v: object, where: str, depth: int) -> None:
        if v is not None:
            raise _Bad(where, describe_value(v), self.describe())


@dataclass(frozen=True)
class AnyValue:
    """Anything, nested at most :data:`MAX_DEPTH` levels (JSON values, or a checkpoint's plain values)."""

    def describe(self) -> str:
        return "a value"

    def check(self, v: object, where: str, depth: int) -> None:
        stack = [(v, depth)]
        while stack:
            x, d = stack.pop()
            if isinstance(x, (list, tuple, dict)):
                if d >= MAX_DEPTH:
                    raise _Bad(where, f"is nested more than {MAX_DEPTH} levels deep", f"at most {MAX_DEPTH} levels")
                stack.extend((y, d + 1) for y in (x.values() if isinstance(x, dict) else x))


@dataclass(frozen=True)
class Plain:
    """A JSON value: null, true/false, a number, a string, or lists and string-keyed objects of them, nested at
    most :data:`MAX_DEPTH` levels (no tensors: a config or a metrics row)."""

    def describe(self) -> str:
        return "a plain value (null, a number, a string, a list or an object)"

    def check(self, v: object, where: str, depth: int) -> None:
        AnyValue().check(v, where, depth)
        stack = [(v, where)]
        while stack:
            x, at = stack.pop()
            if isinstance(x, dict):
                for k, y in x.items():
                    if not isinstance(k, str):
                        raise _Bad(_join(at, k), f"has a key of type {type(k).__name__}", "string keys")
                    stack.append((y, _join(at, k)))
            elif isinstance(x, (list, tuple)):
                stack.extend((y, f"{at}[{i}]") for i, y in enumerate(x))
            elif x is not None and not isinstance(x, (bool, int, float, str)):
                raise _Bad(at, describe_value(x), self.describe())


@dataclass(frozen=True)
class AnyDict:
    """A dict with keys of any type (an optimizer's state is keyed by parameter index), nested at most
    :data:`MAX_DEPTH` levels; each value checked by ``values`` where given."""

    values: object = None

    def describe(self) -> str:
        return "an object"

    def check(self, v: object, where: str, depth: int) -> None:
        if not isinstance(v, dict):
            raise _Bad(where, describe_value(v), self.describe())
        AnyValue().check(v, where, depth)
        if self.values is not None:
            for k, x in v.items():
                self.values.check(x, _join(where, k), depth + 1)


@dataclass(frozen=True)
class AnyOf:
    options: tuple

    def describe(self) -> str:
        return " or ".join(o.describe() for o in self.options)

    def check(self, v: object, where: str, depth: int) -> None:
        bad = None
        for o in self.options:
            try:
                o.check(v, where, depth)
                return
            except _Bad as e:
                bad = bad or (e if e.where != where else None)  # a problem inside a matching container
        if bad is not None:
            raise bad
        raise _Bad(where, describe_value(v), self.describe())


@dataclass(frozen=True)
class Const:
    """Exactly ``value`` (a string or a number)."""

    value: object

    def describe(self) -> str:
        return repr(self.value) if isinstance(self.value, str) else f"{self.value}"

    def check(self, v: object, where: str, depth: int) -> None:
        if isinstance(v, bool) != isinstance(self.value, bool) or v != self.value:
            raise _Bad(where, describe_value(v), self.describe())


def maybe(spec) -> AnyOf:
    """``spec`` or null."""
    return AnyOf((spec, Null()))


@dataclass(frozen=True)
class ListOf:
    """A list (or tuple) of ``min_len`` to ``max_len`` items, each matching ``item``."""

    item: object
    min_len: int = 0
    max_len: int = 10_000_000

    def describe(self) -> str:
        n = (f"{self.min_len}" if self.min_len == self.max_len else
             f"{self.min_len} to {self.max_len:,}" if self.max_len < 10_000_000 else
             f"at least {self.min_len}" if self.min_len else "")
        return f"a list of {n + ' ' if n else ''}{_plural(self.item.describe())}"

    def check(self, v: object, where: str, depth: int) -> None:
        if not isinstance(v, (list, tuple)) or not self.min_len <= len(v) <= self.max_len:
            raise _Bad(where, describe_value(v), self.describe())
        if depth >= MAX_DEPTH:
            raise _Bad(where, f"is nested more than {MAX_DEPTH} levels deep", f"at most {MAX_DEPTH} levels")
        for i, x in enumerate(v):
            self.item.check(x, f"{where}[{i}]", depth + 1)


def _plural(description: str) -> str:
    """``an integer from 1 to 9`` -> ``integers from 1 to 9`` (for ``a list of ...``)."""
    for article in ("an ", "a "):
        if description.startswith(article):
            head, _, rest = description[len(article):].partition(" ")
            return f"{head}s {rest}".strip()
    return f"values: {description}"


@dataclass(frozen=True)
class Obj:
    """A dict with string keys: ``fields`` checked by their spec, those in ``required`` present, any other key
    checked by ``other`` (None: other keys are refused)."""

    fields: dict = field(default_factory=dict)
    required: tuple = ()
    other: object = AnyValue()

    def describe(self) -> str:
        return "an object"

    def check(self, v: object, where: str, depth: int) -> None:
        if not isinstance(v, dict):
            raise _Bad(where, describe_value(v), self.describe())
        if depth >= MAX_DEPTH:
            raise _Bad(where, f"is nested more than {MAX_DEPTH} levels deep", f"at most {MAX_DEPTH} levels")
        for k in self.required:
            if k not in v:
                raise _Bad(_join(where, k), "is missing", self.fields[k].describe())
        for k, x in v.items():
            if not isinstance(k, str):
                raise _Bad(_join(where, k), f"has a key of type {type(k).__name__}", "string keys")
            spec = self.fields.get(k, self.other)
            if spec is None:
                raise _Bad(_join(where, k), "is not a field this convolab knows",
                           f"only {', '.join(sorted(self.fields))}")
            spec.check(x, _join(where, k), depth + 1)


@dataclass(frozen=True)
class Tensor:
    """A dense tensor on the CPU, of ``dtype`` and ``ndim`` where given."""

    dtype: torch.dtype | None = None
    ndim: int | None = None

    def describe(self) -> str:
        parts = ["a dense CPU tensor"]
        if self.dtype is not None:
            parts.append(f"of {str(self.dtype).removeprefix('torch.')}")
        if self.ndim is not None:
            parts.append(f"with {self.ndim} dimension{'s' * (self.ndim != 1)}")
        return " ".join(parts)

    def check(self, v: object, where: str, depth: int) -> None:
        ok = (isinstance(v, torch.Tensor) and v.layout == torch.strided and v.device.type == "cpu"
              and (self.dtype is None or v.dtype == self.dtype) and (self.ndim is None or v.dim() == self.ndim))
        if not ok:
            raise _Bad(where, describe_value(v), self.describe())


@dataclass(frozen=True)
class TensorDict:
    """A state dict: tensor names (strings) to dense CPU tensors."""

    def describe(self) -> str:
        return "a state dict (tensor names to tensors)"

    def check(self, v: object, where: str, depth: int) -> None:
        if not isinstance(v, dict):
            raise _Bad(where, describe_value(v), self.describe())
        for k, t in v.items():
            if not isinstance(k, str):
                raise _Bad(where, f"has a key of type {type(k).__name__} ({k!r})", "tensor names (strings)")
            Tensor().check(t, _join(where, k), depth + 1)


def validate(value: object, spec, what: str, prefix: str = "") -> None:
    """Check ``value`` against ``spec``; ``prefix`` names where ``value`` sits in its file (``config``).

    Raises:
        ValueError: ``WHAT: field 'a.b' is ...; expected ...`` (or ``WHAT: is ...; expected ...`` at the top).
    """
    try:
        spec.check(value, prefix, 0)
    except _Bad as e:
        place = f"field '{e.where}' " if e.where else ""
        raise ValueError(f"{what}: {place}{e.problem}; expected {e.expected}") from None


def parse_json(text: str, what: str) -> object:
    """``json.loads`` whose errors name ``what`` (a file, or a file's metadata field) and what was expected."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what}: not valid JSON ({e.msg.lower()} at line {e.lineno}, column {e.colno}); expected "
                         "the JSON object convolab writes") from None
    except RecursionError:
        raise ValueError(f"{what}: nested too deeply to read; expected at most {MAX_DEPTH} levels") from None


def read_json(path: str | os.PathLike, spec) -> object:
    """Read and validate the JSON file ``path`` (errors name the file)."""
    value = read_json_text(path)
    validate(value, spec, str(path))
    return value


def read_json_text(path: str | os.PathLike) -> object:
    """Read the JSON file ``path``, not yet validated (errors name the file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; expected the JSON object convolab writes") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder; expected the JSON file convolab writes") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    return parse_json(text, str(path))


# -- the schemas ---------------------------------------------------------------------------------
