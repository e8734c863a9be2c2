"""``convolab lr-find``: the learning-rate range test (Smith 2017; fastai's lr_find)."""

from __future__ import annotations

import argparse

from convolab.cli._common import HelpFormatter, float_arg, fraction, positive_float, positive_int, print_json
from convolab.cli.options import add_config_options, config_from_args

HELP = "the learning-rate range test: which --lr to train with"
# TrainConfig's options that lr-find shares with train: what loads the data, builds the model and takes a step
GROUPS = ("data", "output", "optimisation", "augmentation", "tasks")
EXCLUDE = ("epochs", "lr", "plots", "tensorboard")  # one short ramp: no epochs, its own rates, one plot
INCLUDE = ("device",)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``convolab lr-find``: train's data, model, optimizer and augmentation options plus the ramp's own."""
    p = sub.add_parser("lr-find", help=HELP, formatter_class=HelpFormatter,
                       description="Train for a few steps with an exponentially growing learning rate and plot the "
                                   "loss against it (Smith 2017; fastai's lr_find). Suggests the rate at the minimum "
                                   "of the smoothed loss / 10. Writes DIR/lr_find.json and DIR/plots/lr_find.png; "
                                   "the model and optimizer are restored afterwards.",
                       epilog="example: convolab lr-find --model tutorial_cnn --data fashion-mnist --optimizer sgd "
                              "--out runs/lr-find")
    g = p.add_argument_group("the range test")
    g.add_argument("--start-lr", type=positive_float, default=1e-7, help="first learning rate of the ramp")
    g.add_argument("--end-lr", type=positive_float, default=10.0, help="last learning rate of the ramp")
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

    config = config_from_args(args, lr=args.start_lr, checkpoints=False)
    keep = not (args.json and args.out is None)  # --json alone asks for figures, not for a folder under runs/
    result, path = lr_find(config, start_lr=args.start_lr, end_lr=args.end_lr, num_steps=args.num_steps,
                           beta=args.smoothing, diverge=args.diverge, keep=keep)
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
