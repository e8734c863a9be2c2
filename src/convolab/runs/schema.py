"""What a run directory's files must hold, checked before anything is built from them.

``config.json``, ``summary.json`` and the ``convolab`` metadata of ``model.safetensors`` are read back
by eval, predict, explain, report and resume, and a checkpoint by resume. Any of them may have been
edited, truncated, or written by another version; each is checked here against a small hand-written
schema, so that a bad value is one ``ValueError`` line naming the file, the field and what was
expected — not a ``KeyError`` deep inside, nor a model that allocates gigabytes because a size was
absurd. A schema is a tree of the small spec classes below; :func:`validate` walks a value with one.
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
           "check_weights_metadata", "config_format", "default_build", "probe_model", "CONFIG_SCHEMA", "SUMMARY_SCHEMA",
           "WEIGHTS_META_SCHEMA", "BUILD_SCHEMA", "MODEL_KWARGS_SCHEMA", "FORMAT", "TASKS", "MAX_DEPTH", "MAX_CLASSES",
           "MAX_CHANS", "MAX_SIDE"]

FORMAT = 2  # config.json's "format": 2 adds "task" and "build"; a config.json without "format" is format 1
MAX_DEPTH = 32  # nesting of a run's JSON (convolab writes at most 4 levels)
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; more would be a classifier of gigabytes
MAX_CHANS = 64  # image channels (RGB 3, multispectral a dozen)
MAX_SIDE = 8192  # pixels per side (or frames per clip)
MAX_VALUES = 2**26  # values in one input image or clip (64 Mi: a 8192 x 8192 RGB image is 192 Mi)


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
_SIZE = ListOf(Int(1, MAX_SIDE), 1, 3)  # (H, W), (T, H, W) or one side
_NAMES = ListOf(Str(1000), 1, MAX_CLASSES)

# create_model's keyword arguments, as a run records them (sizes bounded: a model is probed before it is built)
MODEL_KWARGS_SCHEMA = Obj({"num_classes": Int(1, MAX_CLASSES), "in_chans": Int(1, MAX_CHANS),
                           "input_size": AnyOf((Int(1, MAX_SIDE), _SIZE))})

WEIGHTS_META_SCHEMA = Obj(
    fields={
        "format": Int(1, 1),
        "model": Str(200),
        "model_kwargs": MODEL_KWARGS_SCHEMA,
        "classes": _NAMES,
        "mean": ListOf(Num(-1e3, 1e3), 1, MAX_CHANS),
        "std": ListOf(Num(0, 1e3, lo_open=True), 1, MAX_CHANS),
        "input_size": ListOf(Int(1, MAX_SIDE), 3, 4),  # (C, H, W), or (C, T, H, W) for clips
    },
    required=("format", "model", "model_kwargs", "classes", "mean", "std", "input_size"))

# Null is accepted wherever a reader copes with it (``command`` is null when Python, not the CLI, trained the run).
TASKS = ("classification", "segmentation", "clips")  # what config.json's "task" may name

# How the model is rebuilt: {"kind": "registry", "name": ..., "kwargs": {...}}; other kinds ("pruned", "quantized")
# carry their own fields, checked by their builder (convolab.runs.build).
BUILD_SCHEMA = Obj({"kind": Str(100), "name": Str(200), "kwargs": MODEL_KWARGS_SCHEMA}, required=("kind",))

CONFIG_SCHEMA = Obj({
    "format": Int(1, FORMAT),
    "task": AnyOf(tuple(Const(t) for t in TASKS)),
    "build": BUILD_SCHEMA,
    "kind": maybe(Str(100)),
    "model": maybe(Str(200)),
    "model_kwargs": maybe(Obj()),
    "dataset": maybe(Obj({"name": maybe(Str(1000)), "source": maybe(Str()), "data_dir": maybe(Str()),
                          "val_fraction": Num(0, 1), "classes": _NAMES,
                          "sizes": Obj(other=Int(0)), "input_size": ListOf(Int(1, MAX_SIDE), 1, 4),
                          "mean": ListOf(Num(), 1, MAX_CHANS), "std": ListOf(Num(), 1, MAX_CHANS)})),
    "recipe": Obj(),  # (the report lists its items)
    "augment": maybe(Obj()),
    "seed": Int(),  # (explain and eval split the data with it)
    "device": maybe(Str(100)),
    "world_size": maybe(Int(1, 1_000_000)),
    "command": maybe(ListOf(Str())),
    "versions": maybe(Obj(other=maybe(Str(200)))),
    "config": maybe(Obj()),
})

_RATE = maybe(Num(0, 1))
SUMMARY_SCHEMA = Obj({
    "model": Str(200), "dataset": Str(1000), "device": Str(100), "precision": Str(100),
    "test_accuracy": _RATE, "best_val_accuracy": _RATE, "final_val_accuracy": _RATE,
    "test_loss": maybe(Num()), "best_epoch": maybe(Int(0)), "stopped_early": Bool(),
    "epochs": Int(0), "steps": Int(0), "skipped_steps": Int(0), "test_samples": Int(0), "resumes": Int(0),
    "params": Int(0), "world_size": Int(1), "train_seconds": maybe(Num(0)), "samples_per_second": maybe(Num(0)),
})


def probe_model(name: str, kwargs: dict, what: str, fields: str = "'model'/'model_kwargs'") -> torch.nn.Module | None:
    """The model ``create_model(name, **kwargs)`` builds, on the meta device: its tensors' names and shapes without
    allocating them (so that sizes read from a file are compared before anything is allocated). None when the
    model cannot be built there.

    Raises:
        ValueError: ``WHAT: fields 'model'/'model_kwargs' do not build a model (...)`` (``fields`` names them).
    """
    from convolab.models import create_model

    try:
        with torch.device("meta"):
            return create_model(name, **kwargs)
    except (ValueError, TypeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{what}: fields {fields} do not build a model ({first})") from None
    except (RuntimeError, NotImplementedError):  # an op without a meta kernel: the caller goes without the probe
        return None


def check_weights_metadata(meta: object, what: str) -> dict:
    """Validate the ``convolab`` metadata of a weights file: the schema, then what its fields say together
    (class names for every output, one mean and std per channel, an input of sane size)."""
    if isinstance(meta, dict) and isinstance(meta.get("format"), int) and not isinstance(meta["format"], bool) \
            and meta["format"] > 1:
        raise ValueError(f"{what}: field 'format' is {meta['format']}, written by a newer convolab; this one reads "
                         "format 1 (upgrade convolab)")
    validate(meta, WEIGHTS_META_SCHEMA, what)
    c, *spatial = meta["input_size"]
    kw = meta["model_kwargs"]
    if math.prod(meta["input_size"]) > MAX_VALUES:
        raise ValueError(f"{what}: field 'input_size' {meta['input_size']} is {math.prod(meta['input_size']):,} "
                         f"values per input; expected at most {MAX_VALUES:,}")
    for name in ("mean", "std"):
        if len(meta[name]) != c:
            raise ValueError(f"{what}: field '{name}' has {len(meta[name])} value(s) for a {c}-channel input "
                             f"(input_size {meta['input_size']}); expected {c}")
    if kw.get("in_chans", c) != c:
        raise ValueError(f"{what}: field 'model_kwargs.in_chans' is {kw['in_chans']} but input_size "
                         f"{meta['input_size']} has {c} channel(s); expected {c}")
    outputs = kw.get("num_classes")
    if outputs is not None and len(meta["classes"]) != outputs:
        raise ValueError(f"{what}: field 'classes' names {len(meta['classes'])} class(es) for a model with {outputs} "
                         f"outputs (model_kwargs.num_classes); expected {outputs} names")
    return meta


def config_format(config: object, what: str) -> int:
    """The format of a ``config.json`` (1 when it has no ``format`` field, as before format 2 existed).

    Raises:
        ValueError: a format written by a newer convolab (this one reads up to :data:`FORMAT`).
    """
    fmt = config.get("format", 1) if isinstance(config, dict) else 1
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > FORMAT:
        raise ValueError(f"{what}: field 'format' is {fmt}, written by a newer convolab; this one reads formats "
                         f"1 to {FORMAT} (upgrade convolab)")
    return fmt


def default_build(config: dict) -> dict | None:
    """How a run's model is rebuilt when its config.json does not say (format 1): the registry model ``model`` with
    ``model_kwargs``; None when the config names no model."""
    name, kwargs = config.get("model"), config.get("model_kwargs")
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        return None
    return {"kind": "registry", "name": name, "kwargs": dict(kwargs)}
