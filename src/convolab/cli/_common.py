"""What every verb shares: the parser class with one-line errors, the help formatter, the argparse types, the text
of a user error, JSON output, and which options the command line gave."""

from __future__ import annotations

import argparse
import errno
import json
from collections.abc import Callable, Sequence
from typing import Any

# (every command builds the whole parser, train's options included, so importing TrainConfig here costs nothing more)
from convolab.train import options as config_types
from convolab.train.flags import arg_type  # noqa: F401  (the verbs' option types use it)

__all__ = ["EXIT_USAGE", "USER_ERRORS", "Parser", "HelpFormatter", "arg_type", "float_arg", "positive_int",
           "positive_float", "fraction", "error_line", "one_line", "print_json", "explicit_options",
           "refuse_unused"]

EXIT_USAGE = 2
# OSError covers the path errors (FileNotFoundError, PermissionError ...) and the I/O ones (a full disk, a read-only
# folder, a network that is down): each becomes one line naming the path (see error_line)
USER_ERRORS = (ValueError, OSError, FloatingPointError)
# errnos that can only come from writing (the others may come from reading or writing)
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG, errno.EEXIST})


def error_line(e: BaseException) -> str:
    """The text of a user error: the library's own message, or for an ``OSError`` raised by the operating system
    on a path, ``cannot read/write PATH (reason)`` instead of ``[Errno 13] Permission denied: 'PATH'``."""
    if isinstance(e, OSError) and e.strerror:
        if e.filename is None:  # no path to name (a socket ...): the reason without the errno
            return e.strerror
        what = "cannot write" if e.errno in _WRITE_ERRNOS else "cannot read/write"
        where = f"{e.filename} or {e.filename2}" if e.filename2 is not None else f"{e.filename}"
        return f"{what} {where} ({e.strerror})"
    return str(e) or type(e).__name__


def one_line(text: str) -> str:
    """``text`` on one line and inert on a terminal: newlines and other control characters (a file named
    ``a\\nb.png``, an escape sequence in a name) are shown escaped, as Python writes them."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``convolab train: error: ... (see convolab train --help)``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see `{self.prog} --help`)\n")


class TrainFlagsParser(Parser):
    """A verb that passes training flags on: everything after the first ``--`` is ``args.common`` (``convolab
    train`` flags), never the verb's own options. Set as a subparser's ``__class__`` (argparse builds subparsers
    of the parent's class)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        import sys

        args = list(sys.argv[1:] if args is None else args)
        head, tail = (args[:args.index("--")], args[args.index("--") + 1:]) if "--" in args else (args, [])
        namespace, extra = super().parse_known_args(head, namespace)
        namespace.common = tail
        return namespace, extra


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the uninformative None and False of optional values and the state of switches."""

    def _get_help_string(self, action):  # type: ignore[override]
        if action.default is None or action.default is False or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)

    def _fill_text(self, text, width, indent):  # type: ignore[override]
        """A description or epilog written on several lines (examples, one command a line) keeps its lines; a
        one-paragraph text is filled to the terminal's width."""
        if "\n" in text.strip():
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def float_arg(ok: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    """An argparse type: a finite float for which ``ok(value)`` holds, else a usage error saying ``rule``."""
    return arg_type(config_types.number(ok, rule))


# the types the verbs' own options share with TrainConfig's fields
positive_int = arg_type(config_types.positive_int)
positive_float = arg_type(config_types.positive_float)
fraction = arg_type(config_types.fraction)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def explicit_options(argv: Sequence[str]) -> set[str]:
    """The destinations of the options given on ``argv`` (``VERB ...``), not left at their defaults."""
    from convolab.cli import build_parser

    parser = build_parser()
    verb = parser.parse_known_args(list(argv))[0].verb
    for action in parser.verbs[verb]._actions:  # type: ignore[attr-defined]
        action.default = argparse.SUPPRESS
    given, _ = parser.parse_known_args(list(argv))
    return set(vars(given)) - {"verb"}


def refuse_unused(args: argparse.Namespace, needs: dict[str, str]) -> None:
    """A ValueError for an option given on the command line whose switch is off (``needs``: option -> switch,
    argparse destinations), instead of dropping it silently."""
    given = explicit_options(args.argv)
    for option, switch in needs.items():
        if option in given and not getattr(args, switch):
            flag, on = (f"--{name.replace('_', '-')}" for name in (option, switch))
            raise ValueError(f"{flag} only applies with {on}; add {on} or drop {flag}")
