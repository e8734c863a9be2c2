"""``convolab compare OUT --variant NAME='FLAGS' ... --seeds N [-- COMMON TRAIN FLAGS]``: variants x seeds of
``convolab train``, each its own process and run directory, then a table of the statistics (mean, std, 95 %
interval, Welch's t-test against the first variant); re-running the command trains only what is missing."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from convolab.cli._common import HelpFormatter, TrainFlagsParser, positive_int, print_json

if TYPE_CHECKING:
    pass

HELP = "train variants x seeds of `convolab train` and compare them with statistics"

_EPILOG = """examples:
  convolab compare runs/act --variant relu='--act relu' --variant tanh='--act tanh' --seeds 3 \\
      -- --data digits --epochs 2
  convolab compare runs/zoo --variant tutorial_cnn --variant lenet5 --seeds 5 --jobs 2 -- --data fashion-mnist
  (a bare NAME is a model: --variant lenet5 = --variant lenet5='--model lenet5')

Each run is OUT/<variant>/seed-<s> (a normal run directory; its output in OUT/<variant>/seed-<s>.log); the results
are in OUT/results.csv, OUT/results.json and OUT/plots/compare.png. Run the same command again after an interruption:
finished runs are kept, killed ones resume from their checkpoint, only the rest train."""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help=HELP, formatter_class=HelpFormatter,
                       description=HELP[0].upper() + HELP[1:] + ".", epilog=_EPILOG,
                       usage="convolab compare OUT --variant NAME[=FLAGS] [--variant ...] [--seeds N] [--jobs N] "
                             "[--metric FIELD] [--json] [-- COMMON TRAIN FLAGS]")
    p.__class__ = TrainFlagsParser  # (add_parser builds the subparsers' class; only the parsing of `--` differs)
    p.add_argument("out", metavar="OUT", help="the comparison's folder (new, empty, or made by convolab compare)")
    p.add_argument("--variant", action="append", metavar="NAME[=FLAGS]",
                   help="a variant: its name and its `convolab train` flags as one shell word; a bare NAME is the "
                        "model NAME (repeat for each variant; the first is the reference of Welch's test)")
    p.add_argument("--seeds", type=positive_int, default=3, metavar="N", help="seeds 0 .. N-1 per variant")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N", help="training processes at once")
    p.add_argument("--metric", default="test_accuracy", metavar="FIELD",
                   help="the figure of summary.json to compare (test_loss, test_macro_f1, test_mean_iou ...)")
    p.add_argument("--json", action="store_true", help="print results.json (progress lines go to stderr)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from convolab.experiments.compare import compare, variant_from_text

    variants: dict[str, list[str]] = {}
    for text in args.variant or []:
        name, flags = variant_from_text(text)
        if name in variants:
            raise ValueError(f"variant {name} is given twice; give each variant a name of its own")
        variants[name] = flags
    if not variants:
        raise ValueError("no variants; give two or more, e.g. --variant relu='--act relu' --variant tanh='--act tanh'")

    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    result = compare(args.out, variants, args.seeds, common=args.common, jobs=args.jobs, metric=args.metric, say=say)
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.table())
        for r in result.failed:
            print(f"failed: {r.variant} seed {r.seed}: {r.error} (log: {r.run_dir.parent / (r.run_dir.name + '.log')})")
        print(f"results: {result.out / 'results.csv'}, {result.out / 'results.json'}, "
              f"{result.out / 'plots' / 'compare.png'}")
    return 1 if result.failed else 0
