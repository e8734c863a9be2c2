"""``convolab predict``: the top-k classes of image files."""

from __future__ import annotations

import argparse
import sys

from convolab.cli._common import EXIT_USAGE, USER_ERRORS, HelpFormatter, error_line, one_line, positive_int, print_json

HELP = "top-k classes for image files"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from convolab.device import DEVICE_CHOICES

    p = sub.add_parser("predict", help=HELP, formatter_class=HelpFormatter,
                       description="Classify image files of any size or mode; each is converted exactly as the "
                                   "training images were (channels, size, normalisation).",
                       epilog="example: convolab predict runs/demo shoe.png shirt.jpg --top-k 3")
    p.add_argument("run", help="run directory")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--top-k", type=positive_int, default=3, help="classes to show per image")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="cpu", help="compute device")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print each image's top classes; an image that cannot be read is one error line, the others go on."""
    from convolab.device import resolve_device
    from convolab.runs import load_run

    run = load_run(args.run, device=resolve_device(args.device))
    results, failed = [], 0
    for image in args.images:
        try:
            top = run.predict([image], top_k=args.top_k)[0]
        except USER_ERRORS as e:
            failed += 1
            print(f"convolab predict: error: {one_line(error_line(e))}", file=sys.stderr)
            results.append({"image": image, "error": error_line(e)})
            continue
        results.append({"image": image, "top_k": top})
        if not args.json:
            ranked = ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in top)
            print(f"{image}: {ranked}")
    if args.json:
        print_json(results)
    return EXIT_USAGE if failed else 0
