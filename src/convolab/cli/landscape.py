"""``convolab landscape RUN [RUN2]``: the loss around a trained run, and between two runs.

One run: the 1-D filter-normalised slice ``L(theta + a*d)`` (Li et al. 2018), and with ``--2d`` the 2-D slice
``L(theta + a*d1 + b*d2)`` on a grid (its b = 0 row is the 1-D slice). Two runs of one architecture: the loss along
``(1 - t) * theta1 + t * theta2``, t from -0.25 to 1.25, with BatchNorm statistics recomputed on training images
at each point unless ``--no-bn-reset``. Everything is evaluated on the first ``--images`` of a split, and written
to OUT/landscape.json and OUT/plots/ (see :mod:`convolab.experiments.landscape`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from convolab.cli._common import HelpFormatter, explicit_options, positive_float, positive_int, print_json

HELP = "loss landscape slices around a run, and the loss between two runs"

_EPILOG = """examples:
  convolab landscape runs/demo                           # 1-D slice: runs/demo/landscape/
  convolab landscape runs/demo --2d --points 21          # and the 21x21 2-D slice
  convolab landscape runs/a runs/b --out landscape-ab    # mode connectivity: loss along the line from a to b"""


def _points(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from convolab.device import DEVICE_CHOICES

    p = sub.add_parser("landscape", help=HELP, formatter_class=HelpFormatter,
                       description=HELP[0].upper() + HELP[1:] + ".", epilog=_EPILOG,
                       usage="%(prog)s RUN [RUN2] [options]")
    p.add_argument("run", help="the trained run directory")
    p.add_argument("run2", nargs="?", help="a second run of the same architecture: the loss along the line between "
                                           "the two instead of slices")
    p.add_argument("--points", type=_points, default=21,
                   help="points along each axis (an odd number puts the trained weights on the grid)")
    p.add_argument("--span", type=positive_float, default=1.0,
                   help="slices: coordinates from -SPAN to SPAN (1 moves every filter by its own norm)")
    p.add_argument("--2d", dest="two_d", action="store_true", help="also the 2-D slice (points x points)")
    p.add_argument("--images", type=positive_int, default=2048, help="evaluate on the first N images of the split")
    p.add_argument("--split", choices=("train", "val", "test"), default="train", help="which split")
    p.add_argument("--seed", type=int, default=0, help="slices: seed of the random directions")
    p.add_argument("--no-bn-reset", dest="bn_reset", action="store_false",
                   help="RUN2: interpolate BatchNorm's running statistics instead of recomputing them on the first "
                        "N training images at each point")
    p.add_argument("--batch-size", type=positive_int, default=1000, help="images per forward pass")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device")
    p.add_argument("--out", help="output folder (default RUN/landscape)")
    p.add_argument("--overwrite", action="store_true", help="replace a landscape already in OUT")
    p.add_argument("--json", action="store_true", help="print landscape.json")
    p.set_defaults(func=run)
    return p


def _check_options(args: argparse.Namespace) -> None:
    """Options that do nothing in this mode are refused, not dropped silently."""
    given = explicit_options(args.argv)
    if args.run2:
        for dest, flag in (("two_d", "--2d"), ("span", "--span"), ("seed", "--seed")):
            if dest in given:
                raise ValueError(f"{flag} is for slices around one run; with RUN2 the landscape is the line between "
                                 f"two runs (drop {flag} or RUN2)")
    elif "bn_reset" in given:
        raise ValueError("--no-bn-reset is for the interpolation between two runs; give RUN2 or drop --no-bn-reset")


def _table(xs, losses, accs, name: str) -> list[str]:
    lines = [f"{name:>8}  {'loss':>10}  {'accuracy':>8}"]
    lines += [f"{x:>8.3f}  {loss:>10.4f}  {acc:>8.4f}" for x, loss, acc in zip(xs, losses, accs)]
    return lines


def run(args: argparse.Namespace) -> int:
    from convolab.device import resolve_device
    from convolab.experiments import landscape as ls
    from convolab.runs import load_run

    _check_options(args)
    device = resolve_device(args.device)
    run_a = load_run(args.run, device=device)
    ls.check_run(run_a)
    run_b = None
    if args.run2:
        run_b = load_run(args.run2, device=device)
        ls.check_run(run_b)
        ls.check_same_architecture(run_a, run_b)
    out = Path(args.out) if args.out else run_a.path / "landscape"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a folder")
    found = ls.existing_outputs(out)
    if found and not args.overwrite:  # before any work
        raise FileExistsError(f"{found[0]} exists; pass --overwrite to replace the landscape in {out}, or choose "
                              "another --out")
    sub = ls.eval_images(run_a, images=args.images, split=args.split)
    common = dict(points=args.points, data=sub, batch_size=args.batch_size, progress=not args.json)
    s1 = s2 = interp = None
    if run_b is not None:
        interp = ls.interpolate(run_a, run_b, bn_reset=args.bn_reset, **common)
    elif args.two_d:
        s2 = ls.landscape_2d(run_a, span=args.span, seed=args.seed, **common)
        s1 = s2.slice_1d() if args.points % 2 else ls.landscape_1d(run_a, span=args.span, seed=args.seed, **common)
    else:
        s1 = ls.landscape_1d(run_a, span=args.span, seed=args.seed, **common)
    record = {
        "kind": "landscape", "run": str(run_a.path), "run2": str(run_b.path) if run_b is not None else None,
        "dataset": sub.dataset, "split": sub.split, "images": len(sub),
        "settings": {"points": args.points, "span": None if run_b else args.span, "seed": None if run_b else args.seed,
                     "two_d": bool(args.two_d), "bn_reset": args.bn_reset if run_b else None,
                     "batch_size": args.batch_size, "device": str(device),
                     "loss": "mean cross-entropy (no label smoothing), evaluation mode",
                     "direction": None if run_b else "Gaussian, filter-normalised (Li et al. 2018); biases and "
                                                     "normalisation parameters 0"},
        "slice_1d": s1.to_json() if s1 else None,
        "slice_2d": s2.to_json() if s2 else None,
        "interpolation": interp.to_json() if interp else None,
    }
    written = ls.write_outputs(out, record, s1, s2, interp, overwrite=args.overwrite)
    if args.json:
        print_json(record)
        return 0
    what = f"{len(sub):,} {sub.dataset} {sub.split} images"
    if interp is not None:
        bn = ("BatchNorm statistics recomputed at each point" if interp.bn_reset else
              "BatchNorm statistics interpolated" if interp.bn_layers else "no BatchNorm layers")
        print(f"interpolation from {run_a.path} (t=0) to {run_b.path} (t=1) on {what} ({bn}):")
        print("\n".join(_table(interp.ts, interp.losses, interp.accuracies, "t")))
        print(f"loss barrier {interp.barrier:.4f}, accuracy drop {interp.accuracy_drop:.4f} "
              f"({interp.seconds:.1f} s)")
    else:
        print(f"1-D filter-normalised slice of {run_a.path} on {what} (seed {args.seed}):")
        print("\n".join(_table(s1.alphas, s1.losses, s1.accuracies, "a")))
        if s2 is not None:
            lo = min(min(row) for row in s2.losses)
            print(f"2-D slice: {args.points}x{args.points} points, loss {lo:.4f} .. "
                  f"{max(max(row) for row in s2.losses):.4f}, cos(d1, d2) {s2.cosine:+.4f} ({s2.seconds:.1f} s)")
        else:
            print(f"({s1.seconds:.1f} s)")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
