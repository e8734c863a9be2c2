"""``convolab compress RUN --method ptq|qat|distill|prune --out RUN2``: make a trained run smaller or faster, and
print one table of what that gained and lost -- test accuracy, size on disk, latency at batch 1 and 256, and the
speed-up against float32 compiled by inductor and float32 in ONNX Runtime (the honest baselines, not eager float32).

The new run is a normal run folder (``eval``, ``predict``, ``explain`` and ``report`` use it); its summary.json's
``compress`` holds the table, compress.txt the text, plots/pareto.png the accuracy against latency and size."""

from __future__ import annotations

import argparse
from pathlib import Path

from convolab.cli._common import HelpFormatter, float_arg, positive_int, print_json

HELP = "make a trained run smaller or faster (int8, distillation, pruning) and measure the cost"

METHODS = ("ptq", "qat", "distill", "prune")

_EPILOG = """examples:
  convolab compress runs/demo --method ptq --out runs/demo-int8
  convolab compress runs/demo --method qat --epochs 1 --out runs/demo-qat
  convolab compress runs/teacher --method distill --student tutorial_cnn --epochs 5 --out runs/student
  convolab compress runs/demo --method prune --macs-fraction 0.5 --epochs 3 --out runs/demo-pruned"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("compress", help=HELP, formatter_class=HelpFormatter,
                       description=HELP[0].upper() + HELP[1:] + ".", epilog=_EPILOG)
    p.add_argument("run", help="the trained run directory")
    p.add_argument("--method", choices=METHODS, required=True,
                   help="ptq: int8 after training (torchao PT2E, and ONNX Runtime's static quantization); qat: "
                        "int8 by quantization-aware fine-tuning; distill: train --student from this run as teacher; "
                        "prune: remove channels (torch-pruning) and fine-tune")
    p.add_argument("--out", required=True, help="the new run directory")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it is a convolab run")
    g = p.add_argument_group("ptq and qat")
    g.add_argument("--calibration", type=positive_int, default=512, metavar="N",
                   help="ptq: training images that calibrate the int8 ranges (at least 32)")
    g.add_argument("--keep-float", nargs="+", metavar="LAYER",
                   help="layers left in float32 (default: convolutions on at most 3 input channels)")
    g.add_argument("--no-rewrite", action="store_true",
                   help="ptq: quantize the model as it is, without the exact rewrites that make int8 faster")
    g.add_argument("--no-ort", action="store_true", help="ptq: skip ONNX Runtime (no ORT rows, no model.int8.onnx)")
    g = p.add_argument_group("training (qat, distill, prune)")
    g.add_argument("--epochs", type=positive_int, default=None,
                   help="fine-tuning epochs (qat 1, prune 3) or the student's epochs (distill: the teacher's)")
    g.add_argument("--lr", type=float_arg(lambda v: v > 0, "> 0"), default=None,
                   help="peak rate (default: a tenth of the run's for fine-tuning, the run's for a student)")
    g.add_argument("--seed", type=int, default=None, help="training seed (default: the run's)")
    g.add_argument("--control", action="store_true",
                   help="also train the honest control into OUT-control and put it in the table: fp32 fine-tuned "
                        "for the same steps (qat, prune) or the student alone for the same steps (distill)")
    g = p.add_argument_group("distill")
    g.add_argument("--student", metavar="MODEL", help="the student model's name (see `convolab models`)")
    g.add_argument("--temperature", type=float_arg(lambda v: v > 0, "> 0"), default=4.0, help="softmax temperature T")
    g.add_argument("--alpha", type=float_arg(lambda v: 0 <= v <= 1, "in [0, 1]"), default=0.9,
                   help="weight of the teacher's soft targets (1 - alpha: the labels')")
    g = p.add_argument_group("prune")
    g.add_argument("--macs-fraction", type=float_arg(lambda v: 0 < v < 1, "in (0, 1)"), default=0.5,
                   help="fraction of the multiply-accumulates to remove")
    g.add_argument("--importance", choices=("l2", "l1", "taylor"), default="l2", help="how channels are ranked")
    g = p.add_argument_group("measurement")
    g.add_argument("--test-limit", type=positive_int, metavar="N", help="measure accuracy on the first N test images")
    g.add_argument("--repeats", type=positive_int, default=5, help="latency timings per figure (the median is shown)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars while training")
    g.add_argument("--json", action="store_true", help="print the table's rows as JSON")
    p.set_defaults(func=run)
    return p


def _refuse_misplaced(args: argparse.Namespace) -> None:
    """Options of another method: one line saying which method takes them."""
    from convolab.cli._common import explicit_options

    given = explicit_options(args.argv) if hasattr(args, "argv") else set()
    owners = {"student": ("distill",), "temperature": ("distill",), "alpha": ("distill",),
              "macs_fraction": ("prune",), "importance": ("prune",), "calibration": ("ptq",), "no_ort": ("ptq",),
              "no_rewrite": ("ptq",),
              "keep_float": ("ptq", "qat"), "epochs": ("qat", "distill", "prune"), "lr": ("qat", "distill", "prune"),
              "control": ("qat", "distill", "prune"), "seed": ("qat", "distill", "prune")}
    for dest, methods in owners.items():
        if dest in given and args.method not in methods:
            flag = "--" + dest.replace("_", "-")
            raise ValueError(f"{flag} applies to --method {' or '.join(methods)}, not {args.method}")
    if args.method == "distill" and not args.student:
        raise ValueError("--method distill needs --student MODEL (the smaller model to train; see `convolab models`)")


def run(args: argparse.Namespace) -> int:
    """Compress the run, measure the result against its baselines, print the table."""
    import logging

    from convolab.compress import methods

    _refuse_misplaced(args)
    if not Path(args.run).expanduser().exists():
        raise FileNotFoundError(f"{args.run}: no such run directory")
    say = (lambda s: None) if args.json else print
    logging.getLogger("torch").setLevel(logging.ERROR)
    common = dict(overwrite=args.overwrite, test_limit=args.test_limit, repeats=args.repeats, say=say)
    training = dict(epochs=args.epochs, lr=args.lr, seed=args.seed, control=args.control,
                    progress=not args.no_progress and not args.json)
    if args.method == "ptq":
        rows = methods.ptq(args.run, args.out, calibration=args.calibration, keep_float=args.keep_float,
                           rewrite=not args.no_rewrite, ort=not args.no_ort, **common)
    elif args.method == "qat":
        rows = methods.qat(args.run, args.out, keep_float=args.keep_float, **training, **common)
    elif args.method == "distill":
        rows = methods.distill(args.run, args.out, student=args.student, temperature=args.temperature,
                               alpha=args.alpha, **training, **common)
    else:
        rows = methods.prune(args.run, args.out, macs_fraction=args.macs_fraction, importance=args.importance,
                             **training, **common)
    if args.json:
        print_json({"run": str(args.out), "method": args.method, "rows": [r.to_dict() for r in rows]})
    else:
        print(f"run: {args.out} (table in {Path(args.out) / 'compress.txt'}, plot in "
              f"{Path(args.out) / 'plots' / 'pareto.png'})")
    return 0
