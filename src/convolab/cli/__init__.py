"""The ``convolab`` command: one verb per capability, each a thin module over the library.

Each verb is a module here with ``register(subparsers)`` and ``run(args)``. The training options of ``train`` and
``lr-find`` are generated from ``TrainConfig``'s field metadata (``convolab.train.flags``). User mistakes print one
line (what is wrong, what would be right) and exit with code 2; set ``CONVOLAB_DEBUG=1`` to see the traceback
instead.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from convolab.cli import (
    compare,
    compress,
    datasets,
    explain,
    export,
    landscape,
    lr_find,
    models,
    predict,
    report,
    search,
    serve,
    study,
    summary,
    sweep,
    tcav,
    train,
    viz,
)
from convolab.cli import eval as eval_  # (the verb's name; the alias keeps the builtin eval unshadowed)
from convolab.cli._common import EXIT_USAGE, USER_ERRORS, Parser, error_line, one_line
from convolab.cli._common import float_arg as _float_arg  # noqa: F401  (tests build types with it)
from convolab.cli.train import train_config

__all__ = ["main", "command", "build_parser", "train_config", "VERBS"]

# the verbs in the order `convolab --help` lists them
VERBS = (train, lr_find, eval_, predict, models, explain, report, summary, viz, tcav, datasets, compress, export,
         compare, study, sweep, search, landscape, serve)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at exit does not raise a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind sys.stdout (captured in tests)
        pass


class _ResumeNotice(logging.Handler):
    """Notices the trainer's own line after Ctrl-C ("interrupted; ... --resume RUN"), so it is not said twice."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.said = False

    def emit(self, record: logging.LogRecord) -> None:
        self.said = self.said or record.getMessage().startswith("interrupted")


def _interrupted(args: argparse.Namespace, e: KeyboardInterrupt) -> str:
    """The line printed after Ctrl-C; for train, the command that continues the run."""
    line = f"convolab {args.verb}: interrupted"
    if args.verb != "train":
        return line
    if not args.checkpoints:
        return line + " (--no-checkpoints: the run cannot be resumed)"
    run = getattr(e, "run_dir", None)  # the trainer may attach the run's folder
    if run is None and args.resume:
        run = Path(args.resume)
        run = run.parent.parent if run.is_file() else run  # RUN/checkpoints/step-N.pt -> RUN
    elif run is None and args.out and Path(args.out).is_dir():
        run = Path(args.out)
    if run is not None:
        return line + f"; continue with `convolab train --resume {shlex.quote(str(run))}`"
    return line + "; if a checkpoint was written, continue with `convolab train --resume` and the run directory"


def build_parser() -> argparse.ArgumentParser:
    """The ``convolab`` parser: one subparser per verb (``parser.verbs`` maps each name to its subparser)."""
    from convolab import __version__

    parser = Parser(prog="convolab", description="Learn, build, train and inspect convolutional neural networks.",
                    epilog="Run `convolab VERB --help` for a verb's options.")
    parser.add_argument("--version", action="version", version=f"convolab {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        verb.register(sub)
    parser.verbs = dict(sub.choices)  # type: ignore[attr-defined]
    return parser


def command() -> int:
    """The ``convolab`` executable and ``python -m convolab``: :func:`main` on the process's arguments.

    Both ends move the objects that exist by then out of the cyclic garbage collector's reach (``gc.freeze``;
    reference counting still frees them). At the start those are the ~190,000 objects of the imports (torch's, mostly),
    which each full collection during the run would walk again. At the end it is everything: Python's teardown runs
    full collections over every object left, 300,000 and more after a training run, and that took 0.9-1.3 s of
    each ``convolab train``'s exit on the 2-core development CPU (0.2-0.3 s frozen; ``benchmarks/exit_time.py``). Only
    the command does this: a process that calls :func:`main` and goes on (a test session) keeps its collector whole.
    """
    gc.freeze()
    try:
        return main()
    finally:
        gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``convolab`` command; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # report it as the verb's error, with the verb's --help
        parser.verbs[args.verb].error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # which options were given (train --resume)
    from convolab._logging import ensure_console

    quiet = getattr(args, "quiet", False) or getattr(args, "progress", True) is False  # (train's --quiet)
    ensure_console(logging.WARNING if quiet else logging.INFO)
    logger, notice = logging.getLogger("convolab"), _ResumeNotice()
    logger.addHandler(notice)
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`convolab models --json | head`): no error to report
        _silence_stdout()
        return 128 + 13  # as if killed by SIGPIPE, like other command-line tools
    except USER_ERRORS as e:
        if os.environ.get("CONVOLAB_DEBUG"):
            raise
        print(f"convolab {args.verb}: error: {one_line(error_line(e))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        print(f"convolab {args.verb}: interrupted" if notice.said else _interrupted(args, e), file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(notice)

