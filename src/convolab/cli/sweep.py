"""``convolab sweep NAME --space KEY=DIST(...) ... --trials N [-- COMMON TRAIN FLAGS]``: a hyper-parameter sweep on
Optuna (:mod:`convolab.experiments.sweep`). Every worker started with the same NAME and --storage joins the same
study; --trials is the study's total."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import re
from collections.abc import Sequence

from convolab.cli._common import HelpFormatter, TrainFlagsParser, explicit_options, positive_int, print_json

HELP = "sweep training hyper-parameters with Optuna (every trial a run; many workers share one study)"

_EPILOG = """space grammar (keys are `convolab train` options, dashes or underscores):
  KEY=uniform(LOW,HIGH)  KEY=loguniform(LOW,HIGH)  KEY=int(LOW,HIGH)  KEY=choice(V1,V2,...)

examples:
  convolab sweep lr --space 'lr=loguniform(1e-4,1e-1)' --space 'batch_size=choice(64,128,256)' --trials 20 \\
      -- --data fashion-mnist --epochs 3
  # more workers, here or on other machines, join the same study through one database:
  convolab sweep lr --space ... --trials 20 --storage postgresql://USER:PASSWORD@HOST:5432/DB -- --data ...

--trials counts the study's trials that are complete, pruned, running or waiting (all workers together); a failed
trial (a killed worker's, after --heartbeat x 2 seconds without a heartbeat) does not count and is replaced.
A trial's value is its last epoch's validation --metric; the test figure is kept beside it, never used to choose."""

# options `convolab train` has that the sweep owns
_OWNED = {"out": "--out (the sweep writes OUT/trial-N)", "overwrite": "--overwrite", "resume": "--resume",
          "json": "--json (give it to the sweep)"}


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from convolab.experiments.sweep import METRICS, PRUNERS, SAMPLERS

    p = sub.add_parser("sweep", help=HELP, formatter_class=HelpFormatter, description=HELP[0].upper() + HELP[1:] + ".",
                       epilog=_EPILOG, usage="%(prog)s NAME --space KEY=DIST(...) [--space ...] [options] "
                                            "[-- COMMON TRAIN FLAGS]")
    p.__class__ = TrainFlagsParser  # (argparse makes subparsers of the parent's class)
    p.add_argument("name", metavar="NAME", help="the study's name (workers with the same NAME and --storage join it)")
    p.add_argument("--space", action="append", metavar="KEY=DIST(...)", required=True,
                   help="one dimension of the search space (repeat the option)")
    p.add_argument("--trials", type=positive_int, default=20, help="the study's total number of trials")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="Optuna's TPE, or random search")
    p.add_argument("--sampler-seed", type=int, metavar="SEED",
                   help="seed of the sampler (give each worker its own, or none)")
    p.add_argument("--pruner", choices=PRUNERS, default="median",
                   help="median: stop a trial whose epoch's metric is below the median of the earlier trials at "
                        "that epoch (after 5 trials); none: train every trial to the end")
    p.add_argument("--storage", metavar="URL",
                   help="the study's database (default: sqlite:///OUT/study.db); PostgreSQL for many machines")
    p.add_argument("--out", metavar="DIR", help="the sweep's folder (default: runs/sweep-NAME)")
    p.add_argument("--metric", choices=METRICS, default="val_accuracy",
                   help="validation figure that each trial reports per epoch and is judged on")
    p.add_argument("--direction", choices=("maximize", "minimize"),
                   help="default: minimize a loss, maximize the others")
    p.add_argument("--heartbeat", type=positive_int, default=30, metavar="SECONDS",
                   help="a running trial's heartbeat interval; one silent for twice as long is failed")
    p.add_argument("--json", action="store_true", help="print sweep.json on stdout")
    p.set_defaults(func=run)
    return p


def _common_config(flags: Sequence[str]):
    """The common training flags as a ``TrainConfig``; a flag train refuses is one line naming it."""
    from convolab.cli.train import train_config

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            given = explicit_options(["train", *flags])
            owned = [text for key, text in _OWNED.items() if key in given]
            if owned:
                raise ValueError(f"the common training flags after -- may not set {', '.join(owned)}; the sweep "
                                 "owns it")
            return train_config(list(flags))
    except SystemExit:
        text = said.getvalue().strip().splitlines()
        message = re.sub(r"^convolab( train)?: error: ", "", text[-1]) if text else "refused"
        raise ValueError(f"the common training flags after --: {message}") from None


def run(args: argparse.Namespace) -> int:
    import optuna

    from convolab.experiments.sweep import best_table, sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # convolab says what happens, once
    base = _common_config(args.common)
    quieted = [logging.getLogger(name) for name in ("convolab.train", "convolab.data", "convolab.runs")]
    levels = [logger.level for logger in quieted]
    if not base.progress:  # --quiet among the training flags: one line per trial, none per epoch
        for logger in quieted:
            logger.setLevel(logging.WARNING)
    try:
        result = sweep(args.name, args.space, args.trials, storage=args.storage, out=args.out, common=base,
                       metric=args.metric, direction=args.direction, pruner=args.pruner, sampler=args.sampler,
                       sampler_seed=args.sampler_seed, heartbeat=args.heartbeat)
    finally:
        for logger, level in zip(quieted, levels):
            logger.setLevel(level)
    if args.json:
        print_json(result.to_dict())
        return 0 if result.best is not None else 1
    c = result.counts
    print(f"sweep {result.name}: {sum(c.values())} trials ({c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} "
          f"pruned, {c.get('RUNNING', 0)} running, {c.get('FAIL', 0)} failed) in {result.storage}; this worker "
          f"trained {len(result.ran_here)}")
    best = result.best
    if best is None:
        print("no trial has completed yet")
        return 1
    print(f"best trials by {result.metric} (validation split, last epoch):")
    print(best_table(result))
    flags = " ".join(f"--{k.replace('_', '-')} {format(v, '.6g') if isinstance(v, float) else v}"
                     for k, v in best["params"].items())
    print(f"best: trial {best['number']}, {result.metric} {best['value']:.4f}; parameters: {flags}")
    print(f"run directory: {best['run_dir']}")
    print(f"written: {result.out}/sweep.json, {result.out}/plots/history.png")
    return 0
