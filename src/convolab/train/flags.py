"""``TrainConfig``'s options as command-line flags, generated from its fields' metadata (defined once, in
``convolab.train.config``): one function adds them to a parser, one builds the config from the parsed arguments
(``convolab train`` and ``convolab lr-find`` share both), and :func:`read_flags` / :func:`config_from_flags` read
a list of ``convolab train`` flags without the command line -- what the experiments (``compare``, ``sweep``,
``search``, the studies) train their variants and trials from.

It lives in the training layer, not in ``convolab.cli``, so that the library reads flags exactly as the command
line does without importing it."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import MISSING, Field, fields
from typing import TYPE_CHECKING, Any

from convolab.train.config import TrainConfig
from convolab.train.options import GROUPS
from convolab.train.recipes import RECIPES
from convolab.train.recipes import describe as describe_recipes

if TYPE_CHECKING:
    from argparse import _ArgumentGroup

__all__ = ["option_fields", "flag_of", "opposite_flag", "add_config_options", "config_from_args", "given_fields",
           "arg_type", "read_flags", "config_from_flags", "recipe_settings", "recipe_config"]


def arg_type(parse: Callable[[str], Any], name: str | None = None) -> Callable[[str], Any]:
    """An argparse type from a parser that raises ``ValueError`` (``convolab.train.config``'s ``TextType``): its
    message becomes argparse's (``argument --lr: must be > 0, got 0``) instead of ``invalid value``."""

    def parse_arg(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse_arg.__name__ = name or getattr(parse, "name", None) or getattr(parse, "__name__", "value")
    parse_arg.__wrapped__ = parse  # type: ignore[attr-defined]  (the docs table reads the type's name)
    return parse_arg


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


class _Switch(argparse.Action):
    """A switch and its opposite, one destination: the field's flag turns the default over (``--tta`` on,
    ``--no-plots`` off); the opposite (``--no-tta``, ``--plots``) sets the default's value, which undoes a
    recipe's setting (``--recipe speedrun-cpu --plots``) or an earlier flag (the last one typed wins)."""

    def __init__(self, option_strings: list[str], dest: str, default: bool = False, help: str | None = None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)
        self.off = bool(default)  # (kept apart: explicit_options() replaces .default to see what was typed)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, (not self.off) if option_string == self.option_strings[0] else self.off)


def opposite_flag(flag: str) -> str:
    """The flag that sets a switch back to its default: ``--no-plots`` -> ``--plots``, ``--tta`` -> ``--no-tta``."""
    return "--" + flag[len("--no-"):] if flag.startswith("--no-") else "--no-" + flag[2:]


def _add(group: _ArgumentGroup, f: Field) -> None:
    """Add field ``f`` as an option; its destination is the field's name (``--no-plots`` sets ``plots``)."""
    meta, default = f.metadata, _default(f)
    kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"], "default": default}
    if f.type == "bool":  # a switch: --flag turns the default over (--nesterov on, --no-plots off), its opposite
        back = opposite_flag(flag_of(f))  # sets the default
        kwargs["help"] = f"{meta['help']} ({back}: the default, over a --recipe or an earlier flag)"
        group.add_argument(flag_of(f), back, action=_Switch, **kwargs)
        return
    if f.type == "bool | None":  # on, off or the default's (None: decided elsewhere, e.g. by a preset)
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


def config_from_args(args: argparse.Namespace, given: Collection[str] | None = None, **overrides: Any) -> TrainConfig:
    """The ``TrainConfig`` of parsed arguments: each field the verb has an option for takes the option's value
    (its default when not given), the others keep TrainConfig's defaults; ``overrides`` come last.

    With ``--recipe NAME`` the recipe's settings fill the fields not in ``given`` (the options on the command
    line); without ``given``, the fields left at their defaults."""
    values = {f.name: getattr(args, f.name) for f in option_fields() if hasattr(args, f.name)}
    if isinstance(values.get("model_kwargs"), list):  # --model-arg KEY=VALUE ...: (key, value) pairs
        values["model_kwargs"] = dict(values["model_kwargs"])
    name = overrides.get("recipe", values.get("recipe"))
    if name:
        if given is None:
            defaults = {f.name: _default(f) for f in option_fields()}
            given = {k for k, v in values.items() if k in defaults and v != defaults[k]}
        values.update({k: v for k, v in recipe_settings(name).items() if k not in given})
    return TrainConfig(**{**values, **overrides})


def recipe_settings(name: str) -> dict[str, Any]:
    """The fields recipe ``name`` sets and their values (its flags read as ``convolab train`` reads them)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {describe_recipes()}")
    config, given = read_flags(RECIPES[name].flags)
    return {k: getattr(config, k) for k in given}


def recipe_config(name: str, **overrides: Any) -> TrainConfig:
    """``convolab train --recipe NAME``'s ``TrainConfig`` in Python; ``overrides`` (TrainConfig fields) win over
    the recipe, as flags given beside ``--recipe`` do: ``recipe_config("speedrun-cpu", seed=1, out="runs/s1")``."""
    config = TrainConfig(**{**recipe_settings(name), "recipe": name, **overrides})
    config.validate()
    return config


def given_fields(explicit: Collection[str]) -> set[str]:
    """The ``TrainConfig`` fields among ``explicit`` (the destinations given on the command line)."""
    return {f.name for f in option_fields()} & set(explicit)


class _Refused(Exception):
    pass


class _FlagParser(argparse.ArgumentParser):
    def error(self, message: str):  # (argparse would print the usage and exit)
        raise _Refused(message)


def _parser(suppress: bool = False) -> argparse.ArgumentParser:
    p = _FlagParser(prog="convolab train", add_help=False)  # (abbreviations as the command line takes them)
    add_config_options(p)
    if suppress:  # only what the flags give
        for action in p._actions:
            action.default = argparse.SUPPRESS
    return p


def read_flags(argv: Sequence[str]) -> tuple[TrainConfig, set[str]]:
    """``convolab train ARGV``'s ``TrainConfig`` and the fields ARGV sets, read by the same options the command
    line has (the verb's own ``--json`` and ``--resume`` are not training settings and are refused). A flag train
    would refuse is a one-line ``ValueError`` (``argument --lr: must be > 0, got 0 (flags of `convolab train`;
    see `convolab train --help`)``)."""
    argv = [str(a) for a in argv]
    if any(a in ("-h", "--help") for a in argv):
        raise ValueError("--help is not a training flag (flags of `convolab train`; see `convolab train --help`)")
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = _parser().parse_args(argv)
            given = set(vars(_parser(suppress=True).parse_args(argv)))
        config = config_from_args(args, given)
    except _Refused as e:
        message = re.sub(r"^convolab( train)?: error: ", "", str(e))
        raise ValueError(f"{message} (flags of `convolab train`; see `convolab train --help`)") from None
    return config, given


def config_from_flags(argv: Sequence[str]) -> TrainConfig:
    """``convolab train ARGV``'s ``TrainConfig`` (:func:`read_flags` without the set of given fields)."""
    return read_flags(argv)[0]
