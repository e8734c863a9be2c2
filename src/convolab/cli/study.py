"""``convolab study NAME``: a built-in study of one of the tutorials' claims -- variants x seeds of ordinary
training runs on Fashion-MNIST (``convolab compare``), then a plain-language verdict that says whether the claim
held at this budget. ``convolab study --list`` lists them."""

from __future__ import annotations

import argparse
import sys

from convolab.cli._common import HelpFormatter, TrainFlagsParser, positive_int, print_json

HELP = "run a built-in study of a tutorial claim (variants x seeds, statistics, a verdict)"

_EPILOG = """examples:
  convolab study --list
  convolab study cnn-vs-mlp                      # 2 variants x 3 seeds, 3 epochs each, into runs/study-cnn-vs-mlp
  convolab study batchnorm --seeds 5 --jobs 2 --out runs/bn
  convolab study losses --epochs 2 -- --batch-size 256   # flags after -- go to every training run

Re-running the same command trains only what is missing (killed runs resume from their checkpoint). The verdict is
in OUT/verdict.txt and OUT/verdict.json, the runs and their statistics in OUT (see `convolab compare`)."""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("study", help=HELP, formatter_class=HelpFormatter, description=HELP[0].upper() + HELP[1:] + ".",
                       epilog=_EPILOG, usage="convolab study NAME [--out DIR] [--seeds N] [--jobs N] [--epochs N] "
                                             "[--json] [-- TRAIN FLAGS] | convolab study --list")
    p.__class__ = TrainFlagsParser  # (flags after -- go to every run: args.common)
    p.add_argument("name", nargs="?", metavar="NAME", help="the study (see --list)")
    p.add_argument("--list", action="store_true", help="list the studies and their claims")
    p.add_argument("--out", metavar="DIR", help="the study's folder (default runs/study-NAME)")
    p.add_argument("--seeds", type=positive_int, default=3, metavar="N", help="seeds per variant")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N", help="training processes at once")
    p.add_argument("--epochs", type=positive_int, metavar="N", help="epochs per run (default: the study's budget)")
    p.add_argument("--json", action="store_true", help="print verdict.json (progress lines go to stderr)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from convolab.experiments.studies import STUDIES, run_study

    if args.list or not args.name:
        if not args.list:
            raise ValueError("name a study (convolab study --list shows them)")
        width = max(map(len, STUDIES))
        for s in STUDIES.values():
            epochs = f"{s.epochs} epoch{'s' if s.epochs > 1 else ''}"
            print(f"{s.name.ljust(width)}  {s.claim} ({epochs} a run)")
        return 0
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    verdict = run_study(args.name, args.out, seeds=args.seeds, jobs=args.jobs, epochs=args.epochs,
                        extra=args.common, say=say)
    if args.json:
        print_json(verdict.to_dict())
    else:
        print(verdict.table)
        print(f"\nclaim: {verdict.claim}")
        for line in verdict.lines:
            print(f"  {line}")
        print(f"\nverdict and runs: {verdict.out}")
    return 0
