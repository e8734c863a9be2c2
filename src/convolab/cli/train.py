"""``convolab train``: train a model and write a run directory, or continue one (``--resume``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from convolab.cli._common import HelpFormatter, explicit_options, print_json
from convolab.train.config import TrainConfig
from convolab.train.flags import add_config_options, config_from_args, given_fields

HELP = "train a model on a dataset, writing a run directory"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``convolab train``: every TrainConfig option, grouped, plus --resume and --json."""
    p = sub.add_parser("train", help=HELP, formatter_class=HelpFormatter,
                       description="Train a model and write a run directory (config.json, metrics.jsonl, "
                                   "summary.json, model.safetensors, plots/).",
                       epilog="example: convolab train --model tutorial_cnn --data fashion-mnist --epochs 5 "
                              "--out runs/demo")
    groups = add_config_options(p)
    groups["output"].add_argument("--json", action="store_true",
                                  help="print summary.json (plus run_dir) on stdout at the end")
    groups["checkpoints"].add_argument(
        "--resume", metavar="RUN",
        help="continue the run in RUN from its newest checkpoint (or from the checkpoint file RUN/checkpoints/"
             "step-N.pt), exactly where it stopped; options that would change the results must be left out or "
             "equal the run's")
    p.set_defaults(func=run)
    return p


def train_config(argv: Sequence[str]) -> TrainConfig:
    """The ``TrainConfig`` that ``convolab train ARGV...`` trains with (benchmarks build recipes from flags)."""
    from convolab.cli import build_parser

    args = build_parser().parse_args(["train", *argv])
    return config_from_args(args, given_fields(explicit_options(["train", *argv])))


def run(args: argparse.Namespace) -> int:
    """Train (or resume) and print the test figures and where the run is."""
    from convolab.runs.session import resume, train

    given = given_fields(explicit_options(args.argv))
    config = config_from_args(args, given)  # (a --recipe fills the fields not given)
    if args.resume:
        if args.out or args.overwrite:
            raise ValueError("--resume continues in the run's own directory; drop --out/--overwrite")
        # only what the command line gave overrides the run's settings; resume() refuses any that would change
        # the results (all but RESUME_FREE)
        result = resume(args.resume, **{k: v for k, v in config.to_dict().items() if k in given})
    else:
        result = train(config)
    s, path = result.summary, result.run_dir
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports for the job
        return 0
    if args.json:
        print_json({**s, "run_dir": str(path)})
    else:
        from convolab.train.tasks import TASKS

        task = TASKS[s.get("task", "classification")]
        figures = ", ".join(f"{label.removeprefix('test ')} {'-' if s.get(key) is None else format(s[key], '.4f')}"
                            for label, key, _ in task.headline)
        print(f"test {figures} (loss {s['test_loss']:.4f}) on {s['test_samples']:,} {s['dataset']} test {task.unit} "
              f"after {s['epochs']} epoch{'' if s['epochs'] == 1 else 's'} ({s['train_seconds']:.1f}s of training)")
        print(f"run directory: {path}")
        pictures = sorted(p.stem for p in (path / "plots").glob("*.png"))
        if "loss" in pictures:
            print(f"pictures:      {path / 'plots'}/{{{','.join(pictures)}}}.png")
    return 0
