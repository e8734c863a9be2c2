"""The options table of ``convolab train`` (and which of them ``convolab lr-find`` takes), in Markdown, generated from
the parser that TrainConfig's field metadata builds, so the README cannot drift from the code.

``python -m convolab.cli.docs`` prints the table; ``python -m convolab.cli.docs --write README.md`` replaces what
lies between ``<!-- options:start -->`` and ``<!-- options:end -->`` in README.md (an atomic write).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from convolab.atomic import write_text

__all__ = ["START", "END", "options_table", "replace_table", "write_table", "main"]

START, END = "<!-- options:start -->", "<!-- options:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type(action: argparse.Action) -> str:
    """How the table names what an option takes: switch, one of its choices, or its type's name."""
    if action.nargs == 0:
        return "switch"
    if action.choices is not None:
        return " \\| ".join(f"`{c}`" for c in action.choices)
    name = getattr(action.type, "__name__", None) if action.type is not None else "text"
    return f"{name}, one or more" if action.nargs == "+" else str(name)


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default is None:  # a switch's default is the state it turns over
        return ""
    value = action.default
    return f"`{' '.join(map(str, value)) if isinstance(value, list) else value}`"


def _flag(action: argparse.Action) -> str:
    if action.nargs == 0:
        return " / ".join(f"`{s}`" for s in action.option_strings)
    if action.choices is not None:  # (the choices are in the next column)
        return f"`{action.option_strings[-1]}`"
    metavar = action.metavar or action.dest.upper()
    more = f" [{metavar} ...]" if action.nargs == "+" else ""
    return f"`{action.option_strings[-1]} {metavar}{more}`"


def options_table(parser: argparse.ArgumentParser | None = None) -> str:
    """The Markdown table of train's options by group: option, type, default, lr-find (✓ where lr-find takes the
    option too) and help."""
    if parser is None:
        from convolab.cli import build_parser

        parser = build_parser()
    train, lr_find = parser.verbs["train"], parser.verbs["lr-find"]  # type: ignore[attr-defined]
    shared = {s for a in lr_find._actions for s in a.option_strings}
    lines = ["Generated from `TrainConfig`'s fields by `python -m convolab.cli.docs --write README.md`; "
             "`convolab train --help` prints the same.", ""]
    for group in train._action_groups:
        actions = [a for a in group._group_actions if a.option_strings and a.help != argparse.SUPPRESS
                   and "--help" not in a.option_strings]
        if not actions:
            continue
        lines += [f"**{group.title}**" + (f" ({group.description})" if group.description else ""), "",
                  "| option | takes | default | lr-find | what it does |", "| --- | --- | --- | --- | --- |"]
        for a in actions:
            also = "✓" if a.option_strings[0] in shared else ""
            lines.append(f"| {_flag(a)} | {_type(a)} | {_default(a)} | {also} | {_cell(a.help or '')} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def replace_table(text: str, table: str, name: str = "README.md") -> str:
    """``text`` with what lies between the markers replaced by ``table``; ``name`` is the file's, for the error.

    Raises:
        ValueError: the markers are missing, repeated or out of order.
    """
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{name}: expected one {START} line followed by one {END} line around the options table")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{table}{END}{tail}"


def write_table(path: str | Path) -> bool:
    """Write the current table into the file at ``path`` between the markers; returns whether it changed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--write {path}: no such file")
    text = path.read_text(encoding="utf-8")
    new = replace_table(text, options_table(), str(path))
    if new != text:
        write_text(path, new)
    return new != text


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m convolab.cli.docs [--write FILE]``: print the table, or write it into FILE."""
    from convolab.cli._common import USER_ERRORS, Parser, error_line, one_line

    ap = Parser(prog="python -m convolab.cli.docs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", metavar="FILE", help="replace the table between the markers in FILE (e.g. README.md)")
    args = ap.parse_args(argv)
    if args.write is None:
        sys.stdout.write(options_table())
        return 0
    try:
        changed = write_table(args.write)
    except USER_ERRORS as e:
        print(f"{ap.prog}: error: {one_line(error_line(e))}", file=sys.stderr)
        return 2
    print(f"{args.write}: {'options table updated' if changed else 'options table already up to date'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
