"""``TrainConfig``'s options on the command line, generated from its fields' metadata (defined once, in
``convolab.train.config``): one function adds them to a verb's parser, one builds the config from the parsed
arguments. ``convolab train`` and ``convolab lr-find`` share both."""

from __future__ import annotations

import argparse
from collections.abc import Collection
from dataclasses import MISSING, Field, fields
from typing import TYPE_CHECKING, Any

from convolab.cli._common import arg_type
from convolab.train.config import TrainConfig
from convolab.train.options import GROUPS

if TYPE_CHECKING:
    from argparse import _ArgumentGroup

__all__ = ["option_fields", "flag_of", "add_config_options", "config_from_args", "given_fields"]


def option_fields(*, groups: Collection[str] | None = None, exclude: Collection[str] = (),
                  include: Collection[str] = ()) -> list[Field]:
    """The ``TrainConfig`` fields that are command-line options (``cli`` not False), in ``GROUPS`` order and
    field order within a group: those of ``groups`` (all when None) and ``include``, less ``exclude``."""
    unknown = (set(exclude) | set(include)) - {f.name for f in fields(TrainConfig)}
    if unknown or (groups is not None and set(groups) - set(GROUPS)):  # a programming error, said plainly
        raise ValueError(f"unknown TrainConfig fields or groups: {sorted(unknown or set(groups or ()) - set(GROUPS))}")
    chosen = [f for f in fields(TrainConfig) if f.metadata.get("cli", True) and f.name not in exclude
              and (groups is None or f.metadata["group"] in groups or f.name in include)]
    order = list(GROUPS)
    return sorted(chosen, key=lambda f: order.index(f.metadata["group"]))  # (sorted is stable: field order kept)


def flag_of(f: Field) -> str:
    """The option of field ``f``: its ``flag`` metadata, else ``--`` and its name with dashes."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _default(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]


def _add(group: _ArgumentGroup, f: Field) -> None:
    """Add field ``f`` as an option; its destination is the field's name (``--no-plots`` sets ``plots``)."""
    meta, default = f.metadata, _default(f)
    kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"], "default": default}
    if f.type == "bool":  # a switch: --flag turns the default over (--nesterov on, --no-plots off)
        kwargs["action"] = "store_false" if default else "store_true"
    elif f.type == "bool | None":  # on, off or the default's (None: decided elsewhere, e.g. by a preset)
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        for key in ("metavar", "choices", "nargs"):
            if key in meta:
                kwargs[key] = meta[key]
        if "type" in meta:
            kwargs["type"] = arg_type(meta["type"])
    group.add_argument(flag_of(f), **kwargs)


def add_config_options(parser: argparse.ArgumentParser, *, groups: Collection[str] | None = None,
                       exclude: Collection[str] = (), include: Collection[str] = ()) -> dict[str, _ArgumentGroup]:
    """Add the options of ``option_fields(groups=..., exclude=..., include=...)`` to ``parser``, one argument group
    per ``GROUPS`` entry; returns the groups by key, so that a verb can add its own options to them."""
    chosen = option_fields(groups=groups, exclude=exclude, include=include)
    out: dict[str, _ArgumentGroup] = {}
    for key, (title, description) in GROUPS.items():
        members = [f for f in chosen if f.metadata["group"] == key]
        if not members and (groups is None or key not in groups):
            continue
        out[key] = parser.add_argument_group(title, description)
        for f in members:
            _add(out[key], f)
    return out


def config_from_args(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    """The ``TrainConfig`` of parsed arguments: each field the verb has an option for takes the option's value
    (its default when not given), the others keep TrainConfig's defaults; ``overrides`` come last."""
    values = {f.name: getattr(args, f.name) for f in option_fields() if hasattr(args, f.name)}
    if isinstance(values.get("model_kwargs"), list):  # --model-arg KEY=VALUE ...: (key, value) pairs
        values["model_kwargs"] = dict(values["model_kwargs"])
    return TrainConfig(**{**values, **overrides})


def given_fields(explicit: Collection[str]) -> set[str]:
    """The ``TrainConfig`` fields among ``explicit`` (the destinations given on the command line)."""
    return {f.name for f in option_fields()} & set(explicit)
