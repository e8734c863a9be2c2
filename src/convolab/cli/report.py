"""``convolab report``: one self-contained HTML page about a trained run."""

from __future__ import annotations

import argparse

from convolab.cli._common import HelpFormatter, positive_int

HELP = "one self-contained HTML page about a trained run"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report", help=HELP, formatter_class=HelpFormatter,
        description="Write RUN/report.html: configuration, learning curves, confusion matrix and per-class "
                    "accuracy, the most-confused pairs, the prediction grid, the model summary, first-layer kernels, "
                    "feature maps per class, Grad-CAM for right and wrong predictions and the attribution sanity "
                    "checks. Images are inline; the page needs no network. RUN/report.html is replaced; a file "
                    "named by --out only with --overwrite.",
        epilog="example: convolab report runs/demo && xdg-open runs/demo/report.html")
    p.add_argument("run", help="run directory")
    p.add_argument("--data-dir", help="folder searched first for the run's dataset")
    p.add_argument("--samples", type=positive_int, default=32,
                   help="test images for the Grad-CAM examples and the sanity checks")
    p.add_argument("--out", help="write the page here instead of RUN/report.html")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Build the page and print where it is."""
    from convolab.report.html import build_report

    path = build_report(args.run, data_dir=args.data_dir, samples=args.samples, out=args.out,
                        overwrite=args.overwrite, progress=not args.quiet)
    print(f"report: {path}")
    return 0
