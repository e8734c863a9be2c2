"""The ``convolab`` command: one verb per capability, each a thin layer over the library.

User mistakes print one line (what is wrong, what would be right) and exit with code 2; set
``CONVOLAB_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports torch-heavy modules only inside the verbs that need them
    from convolab.train import TrainConfig

__all__ = ["main", "build_parser", "train_config"]

EXIT_USAGE = 2
# OSError covers the path errors (FileNotFoundError, PermissionError ...) and the I/O ones (a full disk, a read-only
# folder, a network that is down): each becomes one line naming the path (see _error_line)
_USER_ERRORS = (ValueError, OSError, FloatingPointError)
# errnos that can only come from writing (the others may come from reading or writing)
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG, errno.EEXIST})


def _error_line(e: BaseException) -> str:
    """The text of a user error: the library's own message, or for an ``OSError`` raised by the operating system
    on a path, ``cannot read/write PATH (reason)`` instead of ``[Errno 13] Permission denied: 'PATH'``."""
    if isinstance(e, OSError) and e.strerror:
        if e.filename is None:  # no path to name (a socket ...): the reason without the errno
            return e.strerror
        what = "cannot write" if e.errno in _WRITE_ERRNOS else "cannot read/write"
        where = f"{e.filename} or {e.filename2}" if e.filename2 is not None else f"{e.filename}"
        return f"{what} {where} ({e.strerror})"
    return str(e) or type(e).__name__


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


def _one_line(text: str) -> str:
    """``text`` on one line and inert on a terminal: newlines and other control characters (a file named
    ``a\\nb.png``, an escape sequence in a name) are shown escaped, as Python writes them."""
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in text)


def _interrupted(args: argparse.Namespace, e: KeyboardInterrupt) -> str:
    """The line printed after Ctrl-C; for train, the command that continues the run."""
    line = f"convolab {args.verb}: interrupted"
    if args.verb != "train":
        return line
    if getattr(args, "no_checkpoints", False):
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


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``convolab train: error: ... (see convolab train --help)``."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} (see `{self.prog} --help`)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the uninformative None and False of optional values and switches."""

    def _get_help_string(self, action):  # type: ignore[override]
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _float_arg(ok, rule: str):
    """An argparse type: a finite float for which ``ok(value)`` holds, else a usage error saying ``rule``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):  # inf passes "> 0"; --lr inf diverged at step 4 and left a half run
            raise argparse.ArgumentTypeError(f"must be a finite number {rule}, got {text}")
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _image_size(text: str) -> list[int]:
    """``HxW`` or one side ``S`` (a square) -> [H, W]."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW or one side in pixels (e.g. 64x64 or 64), got {text!r}") \
            from None
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2 or not all(1 <= v <= 8192 for v in sides):
        raise argparse.ArgumentTypeError(f"expected HxW or one side, each from 1 to 8192 pixels, got {text!r}")
    return sides


_IMAGE_SIZE_HELP = ("resize every image of a folder dataset to HxW (or SxS) pixels; needed for folders of large "
                    "photos (longer side over 1,024), which are refused at full size; named datasets keep their size")
_positive_float = _float_arg(lambda v: v > 0, "> 0")
_nonneg_float = _float_arg(lambda v: v >= 0, ">= 0")
_fraction = _float_arg(lambda v: 0 <= v < 1, "in [0, 1)")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2))


# -- train ---------------------------------------------------------------------------------------
_RECIPE_FIELDS = ("optimizer", "momentum", "nesterov", "weight_decay", "decay_norm_and_bias", "clip_grad_norm",
                  "accum_steps", "label_smoothing", "schedule", "warmup_epochs", "warmup_steps", "min_lr", "gamma",
                  "decay_epochs", "milestones", "pct_start", "cycle_epochs", "restart_epochs", "restart_mult")
_RUN_FIELDS = ("checkpoint_every", "deterministic", "on_nan", "nan_patience", "early_stopping", "monitor",
               "min_delta", "augment", "crop_pad", "hflip", "rotate", "cutout", "mixup", "cutmix", "precision",
               "grad_checkpointing", "ema", "tta", "compile", "cuda_graphs", "tensorboard")


def _recipe_kwargs(args: argparse.Namespace) -> dict:
    """The TrainConfig fields that `_add_recipe_args` and `_add_run_args` parsed (same names, where present)."""
    kwargs = {name: getattr(args, name) for name in _RECIPE_FIELDS + _RUN_FIELDS if hasattr(args, name)}
    if hasattr(args, "no_checkpoints"):
        kwargs["checkpoints"] = not args.no_checkpoints
    return kwargs


def _add_augment_args(p: argparse.ArgumentParser, d) -> None:
    """Augmentation options of train and lr-find."""
    from convolab.data.augment import PRESETS

    g = p.add_argument_group("augmentation (whole batches on the training device; see convolab.data.augment)")
    g.add_argument("--augment", choices=PRESETS, default=d.augment,
                   help="preset, adapted to the dataset: light = shifts of up to 1/14 of the side + flips where "
                        "they keep the class; standard = shifts of up to 1/8 + flips + cutout 0.5 (+ rotations of "
                        "10° for digits and characters, which are never flipped)")
    g.add_argument("--crop-pad", type=_nonneg_int, metavar="PIXELS",
                   help="random crop of the image padded by PIXELS (shifts of up to PIXELS; 0: off)")
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="mirror half of the images left-right (default: the preset's)")
    g.add_argument("--rotate", type=_float_arg(lambda v: 0 <= v <= 180, "in [0, 180]"), metavar="DEGREES",
                   help="random rotations of up to DEGREES")
    g.add_argument("--cutout", type=_fraction, metavar="FRACTION",
                   help="erase a square of FRACTION of the image side from half of the images (0: off)")
    g.add_argument("--mixup", type=_nonneg_float, default=d.mixup, metavar="ALPHA",
                   help="mixup with Beta(ALPHA, ALPHA) weights (0.2 is common; 0: off)")
    g.add_argument("--cutmix", type=_nonneg_float, default=d.cutmix, metavar="ALPHA",
                   help="cutmix with Beta(ALPHA, ALPHA) areas (1.0 is common; 0: off); with --mixup, each batch "
                        "gets one of the two")


def _add_speed_args(p: argparse.ArgumentParser, d) -> None:
    """Precision, memory, weight averaging, test-time augmentation, compilation and logging options."""
    from convolab.train.config import PRECISIONS

    g = p.add_argument_group("precision, memory, averaging, evaluation, logging")
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="auto (default): bf16 on a CPU with bfloat16 instructions, 32 elsewhere; 32: float32; bf16: "
                        "bf16 autocast (CPUs with AVX512-BF16/AMX, recent GPUs); fp16: autocast with a dynamic loss "
                        "scaler (CUDA only; scale and overflow steps logged)")
    g.add_argument("--grad-checkpointing", action="store_true",
                   help="recompute activations during the backward pass: less memory, more time (models with "
                        "set_grad_checkpointing: resnet, densenet, vgg, mobilenet ...); on a GPU each epoch's line "
                        "shows the peak memory")
    g.add_argument("--ema", type=_float_arg(lambda v: 0 < v < 1, "in (0, 1)"), metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999), evaluate and save it; the "
                        "decay warms up as min(DECAY, (1 + t) / (10 + t)) at step t, so short runs do not keep the "
                        "initial weights")
    g.add_argument("--tta", action="store_true",
                   help="evaluate each image and its mirror image, averaging the probabilities (not for digits)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow first steps)")
    g.add_argument("--cuda-graphs", action="store_true",
                   help="record the training step as a CUDA graph (the whole step with SGD, else the model's "
                        "forward and backward pass) and replay it: one launch instead of hundreds per step, for "
                        "small models whose GPU steps wait on the CPU (CUDA only)")
    g.add_argument("--tensorboard", action="store_true",
                   help="also log to RUN/tensorboard/ (pip install tensorboard)")


def _add_run_args(p: argparse.ArgumentParser, d) -> None:
    """Checkpoint, resume, divergence and early-stopping options of `convolab train`."""
    from convolab.train.config import MONITORS, ON_NAN

    g = p.add_argument_group("checkpoints, resuming, divergence, early stopping")
    g.add_argument("--resume", metavar="RUN",
                   help="continue the run in RUN from its newest checkpoint (or from the checkpoint file RUN/"
                        "checkpoints/step-N.pt), exactly where it stopped; options that would change the results "
                        "must be left out or equal the run's")
    g.add_argument("--checkpoint-every", type=_nonneg_int, default=d.checkpoint_every, metavar="N",
                   help="also checkpoint every N optimizer steps (0: only at the end of each epoch)")
    g.add_argument("--no-checkpoints", action="store_true", help="write no RUN/checkpoints/ (no --resume then)")
    g.add_argument("--deterministic", action="store_true",
                   help="use only deterministic algorithms (torch.use_deterministic_algorithms; slower on GPUs)")
    g.add_argument("--on-nan", choices=ON_NAN, default=d.on_nan,
                   help="a step with a NaN/inf loss is skipped; stop: stop the run after --nan-patience in a row; "
                        "skip: never stop for it")
    g.add_argument("--nan-patience", type=_positive_int, default=d.nan_patience, metavar="N",
                   help="consecutive non-finite steps that stop the run (--on-nan stop)")
    g.add_argument("--early-stopping", type=_positive_int, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without improvement of --monitor and keep the best epoch's "
                        "weights")
    g.add_argument("--monitor", choices=MONITORS, default=d.monitor,
                   help="validation figure that picks checkpoints/best.pt and the early-stopping epoch")
    g.add_argument("--min-delta", type=_nonneg_float, default=d.min_delta,
                   help="smallest change of --monitor that counts as an improvement")


def _add_recipe_args(p: argparse.ArgumentParser, d, schedule: bool = True) -> None:
    """Optimizer (and learning-rate schedule) options of train and lr-find; ``d`` holds the defaults."""
    from convolab.train.config import OPTIMIZERS, SCHEDULES

    g = p.add_argument_group("optimizer")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="optimizer")
    g.add_argument("--momentum", type=_fraction, default=d.momentum, help="momentum of sgd and rmsprop")
    g.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd)")
    g.add_argument("--weight-decay", type=_nonneg_float, default=d.weight_decay,
                   help="weight decay: L2 for sgd/adam/rmsprop, decoupled for adamw; biases and norm layers are "
                        "left out")
    g.add_argument("--decay-norm-and-bias", action="store_true",
                   help="apply --weight-decay to biases and normalisation parameters too")
    g.add_argument("--clip-grad-norm", type=_positive_float, metavar="MAX",
                   help="clip the gradients' global L2 norm to MAX (logged per step in steps.jsonl)")
    g.add_argument("--accum-steps", type=_positive_int, default=d.accum_steps, metavar="N",
                   help="accumulate the gradients of N batches per optimizer step (effective batch N x --batch-size)")
    g.add_argument("--label-smoothing", type=_fraction, default=d.label_smoothing, metavar="EPS",
                   help="cross-entropy against (1 - EPS) one-hot + EPS / classes")

    if not schedule:
        return
    g = p.add_argument_group("learning-rate schedule (stepped every optimizer step; rates in steps.jsonl)")
    g.add_argument("--schedule", choices=SCHEDULES, default=d.schedule,
                   help="constant; step (x gamma every --decay-epochs); multistep (x gamma at --milestones); "
                        "cosine (to --min-lr); onecycle (up for --pct-start of the run, then down); cyclic "
                        "(triangles between --min-lr and --lr, --cycle-epochs long); sgdr (cosine restarting after "
                        "--restart-epochs, x --restart-mult longer each time)")
    g.add_argument("--warmup-epochs", type=_nonneg_float, default=d.warmup_epochs,
                   help="linear warmup from lr/(W+1) over this many epochs (any schedule but onecycle)")
    g.add_argument("--warmup-steps", type=_nonneg_int, default=d.warmup_steps, help="the warmup in optimizer steps")
    g.add_argument("--min-lr", type=_nonneg_float, help="floor of cosine and sgdr (default 0); bottom of cyclic "
                                                         "(default lr/10)")
    g.add_argument("--gamma", type=_float_arg(lambda v: 0 < v <= 1, "in (0, 1]"), default=d.gamma,
                   help="decay factor of step and multistep")
    g.add_argument("--decay-epochs", type=_positive_float, help="step: period in epochs (default: a third of the run)")
    g.add_argument("--milestones", type=_positive_float, nargs="+", metavar="EPOCH",
                   help="multistep: epochs at which the rate is multiplied by --gamma (default: 1/2 and 3/4 "
                        "of the run)")
    g.add_argument("--pct-start", type=_float_arg(lambda v: 0 < v < 1, "in (0, 1)"), default=d.pct_start,
                   help="onecycle: share of the run spent raising the rate from lr/25 to --lr")
    g.add_argument("--cycle-epochs", type=_positive_float, help="cyclic: one triangle, up and down, in epochs "
                                                                 "(default 4)")
    g.add_argument("--restart-epochs", type=_positive_float,
                   help="sgdr: first period in epochs (default: a quarter of the run)")
    g.add_argument("--restart-mult", type=_positive_int, default=d.restart_mult,
                   help="sgdr: each period is this many times longer than the previous")


def _explicit_options(argv: Sequence[str], verb: str) -> set[str]:
    """The destinations of the options given on the command line (not left at their defaults)."""
    parser = build_parser()
    for action in parser.verbs[verb]._actions:
        action.default = argparse.SUPPRESS
    given, _ = parser.parse_known_args(list(argv))
    return set(vars(given))


def _refuse_unused(args: argparse.Namespace, verb: str, needs: dict[str, str]) -> None:
    """A ValueError for an option given on the command line whose switch is off (``needs``: option -> switch,
    argparse destinations), instead of dropping it silently."""
    given = _explicit_options(args.argv, verb)
    for option, switch in needs.items():
        if option in given and not getattr(args, switch):
            flag, on = (f"--{name.replace('_', '-')}" for name in (option, switch))
            raise ValueError(f"{flag} only applies with {on}; add {on} or drop {flag}")


# argparse destinations whose TrainConfig field has another name (and the inverse meaning)
_NEGATED = {"no_download": "download", "quiet": "progress", "no_plots": "plots", "no_checkpoints": "checkpoints"}


def train_config(argv: Sequence[str]) -> TrainConfig:
    """The ``TrainConfig`` that ``convolab train ARGV...`` trains with (benchmarks build recipes from flags)."""
    args = build_parser().parse_args(["train", *argv])
    return _train_config(args)


def _train_config(args: argparse.Namespace) -> TrainConfig:
    from convolab.train import TrainConfig

    return TrainConfig(
        model=args.model, data=args.data, data_dir=args.data_dir, out=args.out, overwrite=args.overwrite,
        epochs=args.epochs, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, lr=args.lr,
        seed=args.seed, device=args.device, val_fraction=args.val_fraction, download=not args.no_download,
        progress=not args.quiet, plots=not args.no_plots, init_from=args.init_from, engine=args.engine,
        image_size=args.image_size, **_recipe_kwargs(args),
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from convolab.train import resume, train

    config = _train_config(args)
    if args.resume:
        if args.out or args.overwrite:
            raise ValueError("--resume continues in the run's own directory; drop --out/--overwrite")
        fields = config.to_dict()
        given = {_NEGATED.get(dest, dest) for dest in _explicit_options(args.argv, "train")}
        result = resume(args.resume, **{k: v for k, v in fields.items() if k in given})
    else:
        result = train(config)
    s, path = result.summary, result.run_dir
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports for the job
        return 0
    if args.json:
        _print_json({**s, "run_dir": str(path)})
    else:
        print(f"test accuracy {s['test_accuracy']:.4f} (loss {s['test_loss']:.4f}) on {s['test_samples']:,} "
              f"{s['dataset']} test images after {s['epochs']} epochs ({s['train_seconds']:.1f}s of training)")
        print(f"run directory: {path}")
        pictures = sorted(p.stem for p in (path / "plots").glob("*.png"))
        if "loss" in pictures:
            print(f"pictures:      {path / 'plots'}/{{{','.join(pictures)}}}.png")
    return 0


# -- lr-find -------------------------------------------------------------------------------------
def _cmd_lr_find(args: argparse.Namespace) -> int:
    from convolab.train import TrainConfig, Trainer

    config = TrainConfig(
        model=args.model, data=args.data, data_dir=args.data_dir, out=args.out, overwrite=args.overwrite,
        batch_size=args.batch_size, lr=args.start_lr, seed=args.seed, device=args.device,
        val_fraction=args.val_fraction, download=not args.no_download, progress=not args.quiet,
        init_from=args.init_from, checkpoints=False, image_size=args.image_size, **_recipe_kwargs(args),
    )
    keep = not (args.json and args.out is None)  # --json alone asks for figures, not for a folder under runs/
    result, path = Trainer(config).lr_find(start_lr=args.start_lr, end_lr=args.end_lr, num_steps=args.num_steps,
                                           beta=args.smoothing, diverge=args.diverge, keep=keep)
    plot = path / "plots" / "lr_find.png" if path is not None else None
    if args.json:
        out = {k: v for k, v in result.to_dict().items() if k not in ("lrs", "losses", "smoothed")}
        _print_json({**out, "run_dir": path and str(path), "plot": plot and str(plot)})
        return 0
    stop = "the loss diverged" if result.diverged else "the last rate was reached"
    print(f"suggested learning rate {result.suggested_lr:.3g} ({result.rule}; the minimum is at "
          f"{result.min_loss_lr:.3g}, the steepest descent at {result.steepest_lr:.3g}; {len(result.lrs)} steps "
          f"until {stop})")
    print(f"plot:          {plot}")
    print(f"train with it: convolab train --model {args.model} --data {args.data} --optimizer {args.optimizer} "
          f"--lr {result.suggested_lr:.2g}")
    return 0


# -- eval ----------------------------------------------------------------------------------------
def _cmd_eval(args: argparse.Namespace) -> int:
    from convolab.data import DeviceLoader
    from convolab.device import resolve_device
    from convolab.explain.inputs import run_dataset
    from convolab.run import load_run
    from convolab.train import evaluate

    device = resolve_device(args.device)
    run = load_run(args.run, device=device)
    if not (args.data or (run.config.get("dataset") or {}).get("name")):
        raise ValueError(f"{args.run}: config.json does not say which dataset the run used; pass --data")
    data = run_dataset(run, name=args.data, data_dir=args.data_dir, download=not args.no_download)
    split = getattr(data, args.split)
    loader = DeviceLoader(split, args.batch_size, mean=run.mean, std=run.std, device=device)
    res = evaluate(run.model, loader)
    out = {"run": str(run.path), "dataset": data.name, "split": args.split, "samples": res.n,
           "accuracy": res.accuracy, "loss": res.loss}
    recorded = run.summary.get("test_accuracy") if args.split == "test" else None
    if args.json:
        _print_json({**out, "recorded_accuracy": recorded})
    else:
        note = f" (summary.json recorded {recorded:.4f})" if recorded is not None else ""
        print(f"{args.split} accuracy {res.accuracy:.4f}, loss {res.loss:.4f} on {res.n:,} {data.name} images{note}")
    return 0


# -- predict -------------------------------------------------------------------------------------
def _cmd_predict(args: argparse.Namespace) -> int:
    from convolab.device import resolve_device
    from convolab.run import load_run

    run = load_run(args.run, device=resolve_device(args.device))
    results, failed = [], 0
    for image in args.images:
        try:
            top = run.predict([image], top_k=args.top_k)[0]
        except _USER_ERRORS as e:
            failed += 1
            print(f"convolab predict: error: {_one_line(_error_line(e))}", file=sys.stderr)
            results.append({"image": image, "error": _error_line(e)})
            continue
        results.append({"image": image, "top_k": top})
        if not args.json:
            ranked = ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in top)
            print(f"{image}: {ranked}")
    if args.json:
        _print_json(results)
    return EXIT_USAGE if failed else 0


# -- viz -----------------------------------------------------------------------------------------
def _cmd_viz(args: argparse.Namespace) -> int:
    from convolab.explain.viz import viz_run
    from convolab.run import load_run

    if not (args.kernels or args.feature_maps or args.filters):
        raise ValueError("nothing to draw: choose --kernels, --feature-maps IMAGE or --filters")
    _refuse_unused(args, "viz", {"diverging": "kernels", "layers": "feature_maps", "max_channels": "feature_maps",
                                 "layer": "filters", "units": "filters", "steps": "filters", "lr": "filters",
                                 "seed": "filters"})
    run = load_run(args.run)
    records = viz_run(run, args.out, kernels=args.kernels, diverging=args.diverging,
                      feature_map_images=args.feature_maps or (), layers=args.layers,
                      max_channels=args.max_channels, filters=args.filters, layer=args.layer, units=args.units,
                      steps=args.steps, lr=args.lr, seed=args.seed, overwrite=args.overwrite, progress=not args.quiet)
    if args.json:
        _print_json({"run": str(run.path), "out": str(args.out), "files": records})
        return 0
    for r in records:
        if r["kind"] == "kernels":
            o, c, kh, kw = r["weight_shape"][:4]
            what = f"{r['layer']}: {o} filters of {c}x{kh}x{kw}"
        elif r["kind"] == "feature_maps":
            what = f"{r['image']}: " + ", ".join(r["layers"])
        else:
            reached = ", ".join(f"{a:.3g}" for a in r["activations"])
            what = f"{r['layer']}, units {', '.join(map(str, r['units']))}: activations {reached}"
        print(f"{r['kind'].replace('_', ' '):<13} {r['path']}  ({what})")
    return 0


# -- tcav ----------------------------------------------------------------------------------------
def _cmd_tcav(args: argparse.Namespace) -> int:
    from convolab.explain.tcav import tcav_run
    from convolab.run import load_run

    run = load_run(args.run)
    result = tcav_run(run, args.concept, args.random, args.target, args.layer, inputs=args.inputs,
                      max_inputs=args.max_inputs, alpha=args.alpha, seed=args.seed, progress=not args.quiet)
    if args.json:
        _print_json({"run": str(run.path), **result.to_dict()})
        return 0
    tests = len(result.scores)
    print(f"TCAV for class {result.target_name!r}: {result.n_inputs} inputs, {len(result.random_sets)} random folders, "
          f"significance level {result.alpha:g}" + (f" / {tests} tests = {result.alpha_corrected:.3g} (Bonferroni)"
                                                    if tests > 1 else ""))
    w = max(len("concept"), *(len(s.concept) for s in result.scores))
    lw = max(len("layer"), *(len(s.layer) for s in result.scores))
    print(f"  {'concept':<{w}}  {'layer':<{lw}}  {'score':>11}  {'random':>11}  {'p-value':>8}  {'CAV acc':>7}")
    for s in result.scores:
        accuracy = sum(s.cav_accuracies) / len(s.cav_accuracies)
        verdict = "significant" if s.significant else "not significant"
        if not s.separable:
            verdict += (f" (but the layer tells this concept from random images no better than random folders "
                        f"from each other: CAV accuracy {accuracy:.2f} vs {s.random_mean_accuracy:.2f}; likely "
                        "spurious)")
        print(f"  {s.concept:<{w}}  {s.layer:<{lw}}  {s.mean:.2f} ± {s.std:.2f}  {s.random_mean:.2f} ± "
              f"{s.random_std:.2f}  {s.p_value:8.2g}  {accuracy:7.2f}  {verdict}")
    return 0


# -- explain -------------------------------------------------------------------------------------
def _cmd_explain(args: argparse.Namespace) -> int:
    from convolab.explain.attribution import CAM_METHODS
    from convolab.explain.images import explain_images
    from convolab.run import load_run

    methods = list(dict.fromkeys(args.method))
    if args.layer is not None and not set(methods) & set(CAM_METHODS):
        raise ValueError(f"--layer picks the layer of {', '.join(CAM_METHODS)}; --method {' '.join(methods)} does "
                         "not use one (drop --layer)")
    run = load_run(args.run)
    records = explain_images(run, args.images, methods, args.out, target=args.target, layer=args.layer,
                             overwrite=args.overwrite, progress=not args.quiet)
    failed = 0
    for r in records:
        if "error" in r:
            failed += 1
            print(f"convolab explain: error: {_one_line(r['error'])}", file=sys.stderr)
        elif not args.json:
            head = f"{r['image']}: predicted {r['predicted']} ({100 * r['probability']:.1f}%)"
            if r["target"] != r["predicted"]:
                head += f", explaining {r['target']} ({100 * r['target_probability']:.1f}%)"
            print(head)
            for method, m in r["methods"].items():
                extra = f", completeness gap {100 * m['completeness_gap']:.2f}%" if "completeness_gap" in m else ""
                print(f"  {method:<21} {m['png']}{extra}")
    if args.json:
        _print_json(records)
    return EXIT_USAGE if failed else 0


# -- report --------------------------------------------------------------------------------------
def _cmd_report(args: argparse.Namespace) -> int:
    from convolab.report.html import build_report

    path = build_report(args.run, data_dir=args.data_dir, samples=args.samples, out=args.out,
                        overwrite=args.overwrite, progress=not args.quiet)
    print(f"report: {path}")
    return 0


# -- summary -------------------------------------------------------------------------------------
def _cmd_summary(args: argparse.Namespace) -> int:
    from convolab.analysis import format_side_by_side, parse_input, summarize

    _refuse_unused(args, "summary", {"verify_all": "verify"})
    input_shape = parse_input(args.input) if args.input else None
    summaries = []
    for target in args.models:
        summaries.append(summarize(target, input_shape, num_classes=args.num_classes, verify=args.verify,
                                   rf_rows="all" if args.verify_all else "stages"))
    if args.json:
        docs = [s.to_dict(depth=args.depth) for s in summaries]
        _print_json(docs[0] if len(docs) == 1 else docs)
    elif len(summaries) == 1:
        print(summaries[0].format(depth=args.depth))
    else:
        for s in summaries:
            print(s.format(depth=args.depth))
            print()
        print(format_side_by_side(summaries))
    return 1 if any(s.verification is not None and not s.verification.ok for s in summaries) else 0


# -- models --------------------------------------------------------------------------------------
def _cmd_models(args: argparse.Namespace) -> int:
    import torch

    from convolab.models import create_model, list_models, model_entries

    names = set(list_models(args.pattern))
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}; `convolab models` lists them all")
    rows = []
    for e in model_entries():
        if e.name not in names:
            continue
        shape, classes = e.default_input, e.default_num_classes
        with torch.device("meta"):  # shapes only: counting ResNet-152's parameters allocates nothing
            model = create_model(e.name, num_classes=classes, in_chans=shape[0],
                                 input_size=shape[1:] if e.input_kind == "clip" else shape[-2:])
        params = sum(p.numel() for p in model.parameters())
        rows.append({"name": e.name, "family": e.family, "params": params, "input": e.input_kind,
                     "shown_at": f"{'x'.join(map(str, shape))}, {classes} classes",  # clips: CxTxHxW
                     "year": e.year, "description": e.description})
    if args.json:
        _print_json(rows)
        return 0
    w = max(len(r["name"]) for r in rows)
    print(f"{'model':<{w}}  {'family':<12} {'params':>12}  {'counted at':<25} {'input':<12} {'year':<5} description")
    for r in rows:
        print(f"{r['name']:<{w}}  {r['family']:<12} {r['params']:>12,}  {r['shown_at']:<25} {r['input']:<12} "
              f"{r['year'] or '':<5} {r['description']}")
    print("\n`convolab train --model NAME` adapts a model to the dataset's channels, classes and image size")
    return 0


# -- datasets ------------------------------------------------------------------------------------
def _cmd_datasets(args: argparse.Namespace) -> int:
    from convolab.data import DATASETS, locate_dataset
    from convolab.data.named import download
    from convolab.data.resolve import user_cache_dir
    from convolab.errors import DataNotFoundError, UnknownNameError

    if args.download:
        for name in args.download:
            spec = DATASETS.get(name.lower())
            if spec is None:
                raise UnknownNameError("dataset", name, DATASETS)
            if spec.kind == "digits":
                print("digits ships with scikit-learn; nothing to download")
                continue
            found, _ = locate_dataset(spec, args.data_dir)
            if found:
                print(f"{name}: already present in {found}")
                continue
            try:
                folder = download(spec, user_cache_dir())
            except DataNotFoundError:  # already one line with the way out (--data-dir)
                raise
            except Exception as e:  # network failures come in many types
                raise ValueError(f"downloading {name} failed ({type(e).__name__}: {_error_line(e)}); "
                                 f"without internet, put the files in a folder and pass --data-dir") from None
            print(f"{name}: downloaded into {folder}")
        return 0
    rows = []
    for spec in DATASETS.values():
        if spec.kind == "digits":
            where, status = "scikit-learn", "available"
        else:
            found, _ = locate_dataset(spec, args.data_dir)
            where = str(found) if found else None
            status = "available" if found else "not found (downloadable)"
        rows.append({"name": spec.name, "classes": len(spec.classes),
                     "shape": f"{spec.in_chans}x{spec.image_size[0]}x{spec.image_size[1]}",
                     "status": status, "location": where, "description": spec.description})
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'dataset':<14} {'classes':>7}  {'shape':<8} {'status':<25} location")
    for r in rows:
        print(f"{r['name']:<14} {r['classes']:>7}  {r['shape']:<8} {r['status']:<25} {r['location'] or '-'}")
    print("\nany folder of images in class subfolders works too: convolab train --data PATH "
          "(PATH/<class>/... or PATH/train/<class>/... + PATH/test/<class>/...)")
    return 0


# -- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from convolab import __version__
    from convolab.device import DEVICE_CHOICES
    from convolab.train.config import ENGINES, TrainConfig

    d = TrainConfig()
    parser = _Parser(prog="convolab", description="Learn, build, train and inspect convolutional neural networks.",
                     epilog="Run `convolab VERB --help` for a verb's options.")
    parser.add_argument("--version", action="version", version=f"convolab {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    fmt = _HelpFormatter

    p = sub.add_parser("train", help="train a model on a dataset, writing a run directory", formatter_class=fmt,
                       description="Train a model and write a run directory (config.json, metrics.jsonl, "
                                   "summary.json, model.safetensors, plots/).",
                       epilog="example: convolab train --model tutorial_cnn --data fashion-mnist --epochs 5 "
                              "--out runs/demo")
    p.add_argument("--model", default=d.model, help="model name (see `convolab models`)")
    p.add_argument("--data", default=d.data, help="dataset name (see `convolab datasets`) or image-folder path")
    p.add_argument("--data-dir", help="folder searched first for the dataset's files")
    p.add_argument("--out", help="run directory to create (default: runs/MODEL-DATA-TIME)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory at --out")
    p.add_argument("--epochs", type=_positive_int, default=d.epochs, help="passes over the training split")
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="training batch size")
    p.add_argument("--eval-batch-size", type=_positive_int, default=d.eval_batch_size,
                   help="batch size for validation and test")
    p.add_argument("--lr", type=_positive_float, default=d.lr, help="learning rate (the peak of a schedule)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for weights, data order and the val split")
    p.add_argument("--device", choices=DEVICE_CHOICES, default=d.device, help="compute device")
    p.add_argument("--engine", choices=ENGINES, default=d.engine,
                   help="torch, or numpy: convolab.glass computes every forward and backward pass with NumPy "
                        "(CPU; tutorial_cnn, lenet5, mnist_cnn, the basic-block ResNets, DenseNets)")
    p.add_argument("--val-fraction", type=_fraction, default=d.val_fraction,
                   help="share of the training split held out for validation")
    p.add_argument("--image-size", type=_image_size, metavar="HxW",
                   help=_IMAGE_SIZE_HELP)
    p.add_argument("--init-from", metavar="FILE",
                   help="start from the weights in a .safetensors or .pth file (e.g. a run's model.safetensors or "
                        "torchvision weights on disk); the classifier is replaced when the class count differs")
    p.add_argument("--no-download", action="store_true", help="never download; fail if the data is not on disk")
    p.add_argument("--no-plots", action="store_true", help="skip plots/*.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--json", action="store_true", help="print summary.json (plus run_dir) on stdout at the end")
    _add_recipe_args(p, d)
    _add_augment_args(p, d)
    _add_speed_args(p, d)
    _add_run_args(p, d)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("lr-find", help="the learning-rate range test: which --lr to train with", formatter_class=fmt,
                       description="Train for a few steps with an exponentially growing learning rate and plot the "
                                   "loss against it (Smith 2017; fastai's lr_find). Suggests the rate at the minimum "
                                   "of the smoothed loss / 10. Writes DIR/lr_find.json and DIR/plots/lr_find.png; "
                                   "the model and optimizer are restored afterwards.",
                       epilog="example: convolab lr-find --model tutorial_cnn --data fashion-mnist --optimizer sgd "
                              "--out runs/lr-find")
    p.add_argument("--model", default=d.model, help="model name (see `convolab models`)")
    p.add_argument("--data", default=d.data, help="dataset name or image-folder path")
    p.add_argument("--data-dir", help="folder searched first for the dataset's files")
    p.add_argument("--out", help="directory to create (default: runs/MODEL-DATA-TIME)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing convolab directory at --out")
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="batch size")
    p.add_argument("--start-lr", type=_positive_float, default=1e-7, help="first learning rate of the ramp")
    p.add_argument("--end-lr", type=_positive_float, default=10.0, help="last learning rate of the ramp")
    p.add_argument("--num-steps", type=_positive_int, default=100, help="steps from --start-lr to --end-lr")
    p.add_argument("--smoothing", type=_fraction, default=0.9,
                   help="beta of the loss's exponential moving average (0: raw losses)")
    p.add_argument("--diverge", type=_float_arg(lambda v: v > 1, "> 1"), default=4.0,
                   help="stop once the smoothed loss exceeds this multiple of its minimum")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for weights and data order")
    p.add_argument("--device", choices=DEVICE_CHOICES, default=d.device, help="compute device")
    p.add_argument("--val-fraction", type=_fraction, default=d.val_fraction,
                   help="share of the training split held out (as in train, so the same images are used)")
    p.add_argument("--image-size", type=_image_size, metavar="HxW", help=_IMAGE_SIZE_HELP)
    p.add_argument("--init-from", metavar="FILE", help="start from the weights in a .safetensors or .pth file")
    p.add_argument("--no-download", action="store_true", help="never download; fail if the data is not on disk")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true",
                   help="print suggested_lr, the rule and the other figures as JSON (without --out: no folder is "
                        "written; run_dir and plot are null)")
    _add_recipe_args(p, d, schedule=False)
    _add_augment_args(p, d)
    p.set_defaults(func=_cmd_lr_find, no_plots=False)

    p = sub.add_parser("eval", help="recompute a run's test metrics from its saved weights", formatter_class=fmt,
                       epilog="example: convolab eval runs/demo")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="which split to evaluate")
    p.add_argument("--data", help="evaluate on this dataset instead of the run's own")
    p.add_argument("--data-dir", help="folder searched first for the dataset's files")
    p.add_argument("--batch-size", type=_positive_int, default=1000, help="evaluation batch size")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device")
    p.add_argument("--no-download", action="store_true", help="never download")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="top-k classes for image files", formatter_class=fmt,
                       description="Classify image files of any size or mode; each is converted exactly as the "
                                   "training images were (channels, size, normalisation).",
                       epilog="example: convolab predict runs/demo shoe.png shirt.jpg --top-k 3")
    p.add_argument("run", help="run directory")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--top-k", type=_positive_int, default=3, help="classes to show per image")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="cpu", help="compute device")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("models", help="list the registered models", formatter_class=fmt,
                       epilog="example: convolab models lenet")
    p.add_argument("pattern", nargs="?", help="filter: substring or shell pattern (lenet*, *cnn)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_models)

    from convolab.explain.attribution import METHODS

    p = sub.add_parser(
        "explain", help="attribution maps (Grad-CAM, integrated gradients ...) for images", formatter_class=fmt,
        description="For each image and method write OUT/<image>_<method>.png (input, map, overlay) and the raw "
                    "map as .npy. CAM needs a global-average-pool + linear head; gradcam works with any model. "
                    "Methods use captum except cam and gradcam++ (written here).",
        epilog="examples:\n  convolab explain runs/demo shoe.png --method gradcam integrated-gradients --out expl\n"
               "  convolab explain runs/demo *.png --method occlusion --target Sneaker --out expl --json")
    p.add_argument("run", help="run directory")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size/mode: preprocessed like the "
                                                               "training data)")
    p.add_argument("--method", nargs="+", default=["gradcam"], metavar="METHOD", choices=METHODS,
                   help=f"one or more of: {', '.join(METHODS)} (default gradcam)")
    p.add_argument("--target", metavar="CLASS", help="class to explain, by name or index (default: the prediction)")
    p.add_argument("--layer", metavar="NAME", help="layer for the CAM family (default: the last feature stage)")
    p.add_argument("--out", required=True, help="folder for the PNGs and .npy maps")
    p.add_argument("--overwrite", action="store_true", help="replace files of the same names in --out")
    p.add_argument("--json", action="store_true", help="print the paths and map statistics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser(
        "report", help="one self-contained HTML page about a trained run", formatter_class=fmt,
        description="Write RUN/report.html: configuration, learning curves, confusion matrix and per-class "
                    "accuracy, the most-confused pairs, the prediction grid, the model summary, first-layer kernels, "
                    "feature maps per class, Grad-CAM for right and wrong predictions and the attribution sanity "
                    "checks. Images are inline; the page needs no network. RUN/report.html is replaced; a file "
                    "named by --out only with --overwrite.",
        epilog="example: convolab report runs/demo && xdg-open runs/demo/report.html")
    p.add_argument("run", help="run directory")
    p.add_argument("--data-dir", help="folder searched first for the run's dataset")
    p.add_argument("--samples", type=_positive_int, default=32,
                   help="test images for the Grad-CAM examples and the sanity checks")
    p.add_argument("--out", help="write the page here instead of RUN/report.html")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_report)

    from convolab.analysis.summary import STACK_HELP

    p = sub.add_parser(
        "summary", help="per-layer shapes, parameters, MACs, memory and receptive fields", formatter_class=fmt,
        description="Trace one forward pass and print every layer's output shape, parameters, MACs and receptive "
                    "field (size, effective stride, centre of the first unit), with totals: parameters, MACs "
                    "(FLOPs = 2 x MACs), peak activation memory at batch 1 and the feature map's receptive field. "
                    "Several models print side by side. --verify checks every figure against execution.",
        epilog="examples:\n  convolab summary resnet50 --input 3,224,224\n"
               "  convolab summary conv5 conv3,conv3 --input 64,32,32   # one 5x5 against two 3x3\n"
               "  convolab summary runs/demo --verify\n  convolab summary vgg16 --depth 1 --json")
    p.add_argument("models", nargs="+", metavar="MODEL_OR_RUN",
                   help=f"a model name (convolab models), a run directory, or {STACK_HELP}")
    p.add_argument("--input", metavar="C,H,W", help="input shape without the batch (C,T,H,W for clips); default: "
                                                   "the input the model is made for (as `convolab models` counts "
                                                   "it, e.g. 1,28,28 for tutorial_cnn), or the size a run was "
                                                   "trained on")
    p.add_argument("--num-classes", type=_positive_int, default=None,
                   help="classifier size for models built by name (default: the model's own, as `convolab models` "
                        "counts it)")
    p.add_argument("--depth", type=_positive_int, metavar="N", help="fold layers deeper than N into their parent")
    p.add_argument("--json", action="store_true",
                   help='print {"layers": [...], "totals": {...}} (a list of them for several models)')
    p.add_argument("--verify", action="store_true",
                   help="check shapes against a real forward, MACs against torch.utils.flop_counter and receptive "
                        "fields against gradient impulses; exit code 1 on any mismatch")
    p.add_argument("--verify-all", action="store_true",
                   help="with --verify: measure the receptive field of every layer, not only each stage's last")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser(
        "viz", help="pictures of a model: first-layer kernels, feature maps, activation maximization",
        formatter_class=fmt,
        description="Write PNGs into --out: kernels.png (the first convolution's filters, each normalised on its "
                    "own), feature_maps_<image>.png (every channel of the chosen layers for one image) and "
                    "filters_<layer>.png (inputs optimised from noise to excite units of a layer, with L2, "
                    "total-variation and jitter regularisation). Existing files are not replaced without "
                    "--overwrite.",
        epilog="examples:\n  convolab viz runs/demo --kernels --out viz\n"
               "  convolab viz runs/demo --feature-maps shoe.png --layers features.relu1 features.relu2 --out viz\n"
               "  convolab viz runs/demo --filters --layer features.relu2 --units 8 --steps 200 --out viz")
    p.add_argument("run", help="run directory")
    p.add_argument("--kernels", action="store_true", help="draw the first convolution's filters")
    p.add_argument("--diverging", action="store_true",
                   help="with --kernels: scale weights symmetrically about zero (0 is white/grey)")
    p.add_argument("--feature-maps", nargs="+", metavar="IMAGE",
                   help="draw the feature maps of these images (any size/mode: preprocessed like the training data)")
    p.add_argument("--layers", nargs="+", metavar="NAME",
                   help="layers for --feature-maps (default: the model's feature_info stages)")
    p.add_argument("--max-channels", type=_positive_int, default=32, help="channels drawn per layer")
    p.add_argument("--filters", action="store_true", help="activation maximization for units of --layer")
    p.add_argument("--layer", metavar="NAME", help="layer for --filters (default: the last feature stage)")
    p.add_argument("--units", type=_positive_int, default=8, help="with --filters: the first N units (channels)")
    p.add_argument("--steps", type=_positive_int, default=200, help="with --filters: gradient-ascent steps")
    p.add_argument("--lr", type=_positive_float, default=0.05, help="with --filters: Adam's learning rate")
    p.add_argument("--seed", type=int, default=0, help="with --filters: seed of the starting noise and jitter")
    p.add_argument("--out", required=True, help="folder for the PNGs")
    p.add_argument("--overwrite", action="store_true", help="replace files of the same names in --out")
    p.add_argument("--json", action="store_true", help="print the files and what each shows as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_viz)

    from convolab.explain.tcav import MIN_CONCEPT_IMAGES, MIN_RANDOM_SETS

    p = sub.add_parser(
        "tcav", help="TCAV: does a concept (a folder of images) drive a class? with a significance test",
        formatter_class=fmt,
        description="Testing with Concept Activation Vectors (Kim et al. 2018): a linear classifier separates the "
                    "layer's activations for concept images from those for each random folder; the TCAV score is "
                    "the share of the target class's inputs whose class logit grows along that direction. A "
                    "two-sided t-test compares the concept's scores with random-vs-random scores (Bonferroni over "
                    f"concepts x layers). Folders need at least {MIN_CONCEPT_IMAGES} images; images of any size/"
                    "mode are preprocessed like the training data.",
        epilog="example: convolab tcav runs/demo --concept concepts/stripes --random random/0 --random random/1 "
               "--random random/2 --layer features.relu2 --target Shirt")
    p.add_argument("run", help="run directory")
    p.add_argument("--concept", action="append", required=True, metavar="DIR",
                   help="folder of concept images (repeat for several concepts)")
    p.add_argument("--random", action="append", required=True, metavar="DIR",
                   help=f"folder of random images (repeat; at least {MIN_RANDOM_SETS})")
    p.add_argument("--layer", action="append", metavar="NAME",
                   help="layer to test (repeat for several; default: the last feature stage)")
    p.add_argument("--target", required=True, metavar="CLASS", help="class by name or index")
    p.add_argument("--inputs", metavar="DIR",
                   help="images of the target class to score (default: its test images in the run's dataset)")
    p.add_argument("--max-inputs", type=_positive_int, default=200, help="at most this many inputs (a seeded sample)")
    p.add_argument("--alpha", type=_float_arg(lambda v: 0 < v < 1, "in (0, 1)"), default=0.05,
                   help="significance level before the Bonferroni correction")
    p.add_argument("--seed", type=int, default=0, help="seed of the linear classifiers and the input sample")
    p.add_argument("--json", action="store_true", help="print the scores, p-values and CAV accuracies as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_tcav)

    p = sub.add_parser("datasets", help="list the datasets and where they are found", formatter_class=fmt,
                       epilog="example: convolab datasets --download mnist")
    p.add_argument("--data-dir", help="folder searched first")
    p.add_argument("--download", nargs="+", metavar="NAME", help="download these datasets through torchvision")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_datasets)
    parser.verbs = dict(sub.choices)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``convolab`` command; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # report it as the verb's error, with the verb's --help
        parser.verbs[args.verb].error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # which options were given (train --resume)
    from convolab._logging import ensure_console

    ensure_console(logging.WARNING if getattr(args, "quiet", False) else logging.INFO)
    logger, notice = logging.getLogger("convolab"), _ResumeNotice()
    logger.addHandler(notice)
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`convolab models --json | head`): no error to report
        _silence_stdout()
        return 128 + 13  # as if killed by SIGPIPE, like other command-line tools
    except _USER_ERRORS as e:
        if os.environ.get("CONVOLAB_DEBUG"):
            raise
        print(f"convolab {args.verb}: error: {_one_line(_error_line(e))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        print(f"convolab {args.verb}: interrupted" if notice.said else _interrupted(args, e), file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(notice)
