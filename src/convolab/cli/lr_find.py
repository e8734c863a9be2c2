"""``convolab lr-find``: the learning-rate range test (Smith 2017; fastai's lr_find)."""

from __future__ import annotations

import argparse

from convolab.cli._common import HelpFormatter, float_arg, fraction, positive_float, positive_int, print_json
from convolab.train.flags import add_config_options, config_from_args
from convolab.train.lr_finder import RAMPS

HELP = "the learning-rate range test: which --lr to train with"
# TrainConfig's options that lr-find shares with train: what loads the data, builds the model and takes a step
GROUPS = ("data", "output", "optimisation", "augmentation", "tasks")
EXCLUDE = ("epochs", "lr", "plots", "tensorboard")  # one short ramp: no epochs, its own rates, one plot
INCLUDE = ("device",)
# --start-lr and --end-lr when not given: eight decades for the exponential ramp; the linear one spends its steps
# evenly, so across 1e-4 to 0.1 (where Adam's and SGD's useful rates for the small CNNs lie) rather than up to 10
DEFAULT_RANGE = {"exponential": (1e-7, 10.0), "linear": (1e-4, 0.1)}


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``convolab lr-find``: train's data, model, optimizer and augmentation options plus the ramp's own."""
    p = sub.add_parser("lr-find", help=HELP, formatter_class=HelpFormatter,
                       description="Train for a few steps with a growing learning rate (exponentially, or linearly "
                                   "with --ramp linear) and plot the loss against it (Smith 2017; fastai's lr_find). "
                                   "Suggests the rate at the minimum of the smoothed loss / 10. Writes "
                                   "DIR/lr_find.json and DIR/plots/lr_find.png; the model and optimizer are restored "
                                   "afterwards.",
                       epilog="example: convolab lr-find --model tutorial_cnn --data fashion-mnist --optimizer sgd "
                              "--out runs/lr-find")
    g = p.add_argument_group("the range test")
    g.add_argument("--ramp", choices=RAMPS, default="exponential",
                   help="how the rate grows: exponential (evenly spaced on a log axis, fastai's) or linear (evenly "
                        "spaced, Smith's; over a narrower range)")
    g.add_argument("--start-lr", type=positive_float, default=None,
                   help=f"first learning rate of the ramp (default: {DEFAULT_RANGE['exponential'][0]:g} exponential, "
                        f"{DEFAULT_RANGE['linear'][0]:g} linear)")
    g.add_argument("--end-lr", type=positive_float, default=None,
                   help=f"last learning rate of the ramp (default: {DEFAULT_RANGE['exponential'][1]:g} exponential, "
                        f"{DEFAULT_RANGE['linear'][1]:g} linear)")
    g.add_argument("--num-steps", type=positive_int, default=100, help="steps from --start-lr to --end-lr")
    g.add_argument("--smoothing", type=fraction, default=0.9,
                   help="beta of the loss's exponential moving average (0: raw losses)")
    g.add_argument("--diverge", type=float_arg(lambda v: v > 1, "> 1"), default=4.0,
                   help="stop once the smoothed loss exceeds this multiple of its minimum")
    groups = add_config_options(p, groups=GROUPS, exclude=EXCLUDE, include=INCLUDE)
    groups["output"].add_argument("--json", action="store_true",
                                  help="print suggested_lr, the rule and the other figures as JSON (without --out: "
                                       "no folder is written; run_dir and plot are null)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the range test and print the suggested rate, the plot and the train command that uses it."""
    from convolab.runs.session import lr_find

    start_lr, end_lr = (given if given is not None else default
                        for given, default in zip((args.start_lr, args.end_lr), DEFAULT_RANGE[args.ramp]))
    config = config_from_args(args, lr=start_lr, checkpoints=False)
    keep = not (args.json and args.out is None)  # --json alone asks for figures, not for a folder under runs/
    result, path = lr_find(config, start_lr=start_lr, end_lr=end_lr, num_steps=args.num_steps,
                           beta=args.smoothing, diverge=args.diverge, keep=keep, ramp=args.ramp)
    plot = path / "plots" / "lr_find.png" if path is not None else None
    if args.json:
        out = {k: v for k, v in result.to_dict().items() if k not in ("lrs", "losses", "smoothed")}
        print_json({**out, "run_dir": path and str(path), "plot": plot and str(plot)})
        return 0
    stop = "the loss diverged" if result.diverged else "the last rate was reached"
    print(f"suggested learning rate {result.suggested_lr:.3g} ({result.rule}; the minimum is at "
          f"{result.min_loss_lr:.3g}, the steepest descent at {result.steepest_lr:.3g}; {len(result.lrs)} steps "
          f"until {stop})")
    print(f"plot:          {plot}")
    print(f"train with it: convolab train --model {args.model} --data {args.data} --optimizer {args.optimizer} "
          f"--lr {result.suggested_lr:.2g}")
    return 0
