"""The command-line side of ``TrainConfig``'s fields: the option groups, the text types and ``option()``.

A field declared with :func:`option` carries its command-line option in its metadata (``help``, ``group``,
``flag``, ``metavar``, ``choices``, ``type``, ``nargs``, ``cli``); ``convolab.train.flags`` builds the parsers
from it and ``convolab.cli.docs`` the README's table. A :class:`TextType` reads a value from its text and raises
``ValueError`` with one line saying what it expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from convolab.data.limits import parse_bytes

__all__ = ["GROUPS", "TextType", "integer", "number", "hxw", "byte_size", "model_arg", "option", "positive_int",
           "nonneg_int", "positive_float", "nonneg_float", "fraction", "open_fraction"]

# The option groups, in the order `convolab train --help` and the README list them: key -> (title, description).
GROUPS: dict[str, tuple[str, str | None]] = {
    "data": ("model, data and seed", None),
    "output": ("run directory and output", None),
    "optimisation": ("optimisation", None),
    "schedule": ("learning-rate schedule", "stepped every optimizer step; the rates are in steps.jsonl"),
    "augmentation": ("augmentation", "whole batches on the training device; see convolab.data.augment"),
    "evaluation": ("weight averaging and evaluation", None),
    "speed": ("device, precision and speed", None),
    "checkpoints": ("checkpoints, resuming, divergence, early stopping", None),
    "tasks": ("segmentation and clips", "read only by those tasks"),
}


# -- reading a field's value from text (the command line's types) --------------------------------
@dataclass(frozen=True)
class TextType:
    """Reads a field's value from text; raises ``ValueError`` saying what was expected.

    ``name`` is how ``--help`` errors and the options table name the type (``int >= 1``).
    """

    name: str
    parse: Callable[[str], Any]

    def __call__(self, text: str) -> Any:
        return self.parse(text)


def integer(low: int | None = None, high: int | None = None) -> TextType:
    """An integer in ``[low, high]`` (either end may be open)."""
    if high is None and low is None:
        name, want, rule = "int", "an integer", ""
    elif high is None:
        name = f"int >= {low}"
        want, rule = ("a positive integer",) * 2 if low == 1 else (f"an integer >= {low}", f">= {low}")
    elif low is None:
        name, want, rule = f"int <= {high}", f"an integer <= {high}", f"<= {high}"
    else:
        name, want, rule = f"int {low}..{high}", f"an integer from {low} to {high}", f"from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected {want}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(f"must be {rule}, got {value}")
        return value

    return TextType(name, parse)


def number(ok: Callable[[float], bool], rule: str) -> TextType:
    """A finite float for which ``ok(value)`` holds; ``rule`` says which (``"> 0"``, ``"in [0, 1)"``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):  # inf passes "> 0"; --lr inf diverged at step 4 and left a half run
            raise ValueError(f"must be a finite number {rule}, got {text}")
        if not ok(value):
            raise ValueError(f"must be {rule}, got {text}")
        return value

    return TextType(f"float {rule}", parse)


def _image_size(text: str) -> list[int]:
    """``HxW`` or one side ``S`` (a square) -> [H, W]."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"expected HxW or one side in pixels (e.g. 64x64 or 64), got {text!r}") from None
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2 or not all(1 <= v <= 8192 for v in sides):
        raise ValueError(f"expected HxW or one side, each from 1 to 8192 pixels, got {text!r}")
    return sides


def _memory_size(text: str) -> int:
    """``2GiB``, ``500MB``, ``500M`` or a number of bytes -> bytes (K, M, G, T are powers of 1024)."""
    try:
        value = parse_bytes(text, "size")
    except ValueError:
        raise ValueError(f"expected a size such as 2GiB, 500MB or 2000000000 (bytes), got {text!r}") from None
    if value < 1:
        raise ValueError(f"must be a size > 0, got {text!r}")
    return value


hxw = TextType("HxW", _image_size)
byte_size = TextType("size", _memory_size)


def _model_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``: VALUE read as JSON where it is JSON (16, 0.2, true, [8, 16]), else kept as text."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise ValueError(f"expected KEY=VALUE with a model argument name as KEY (base_channels=16); got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


model_arg = TextType("KEY=VALUE", _model_arg)
positive_int = integer(1)
nonneg_int = integer(0)
positive_float = number(lambda v: v > 0, "> 0")
nonneg_float = number(lambda v: v >= 0, ">= 0")
fraction = number(lambda v: 0 <= v < 1, "in [0, 1)")


def option(default: Any = None, *, help: str, group: str, default_factory: Callable[[], Any] | None = None,
           **meta: Any) -> Any:
    """A dataclass field with its command-line option: ``help`` and ``group`` (a key of ``GROUPS``), and
    optionally ``flag`` (default ``--field-name``), ``metavar``, ``choices``, ``type`` (a ``TextType``),
    ``nargs`` and ``cli`` (False: no option)."""
    if group not in GROUPS:
        raise ValueError(f"unknown option group {group!r}; choose one of {', '.join(GROUPS)}")
    metadata = {"help": help, "group": group, **meta}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


open_fraction = number(lambda v: 0 < v < 1, "in (0, 1)")
