"""``convolab explain``: attribution maps (Grad-CAM, integrated gradients ...) for image files."""

from __future__ import annotations

import argparse
import sys

from convolab.cli._common import EXIT_USAGE, HelpFormatter, one_line, print_json

HELP = "attribution maps (Grad-CAM, integrated gradients ...) for images"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from convolab.explain.attribution import METHODS

    p = sub.add_parser(
        "explain", help=HELP, formatter_class=HelpFormatter,
        description="For each image and method write OUT/<image>_<method>.png (input, map, overlay) and the raw "
                    "map as .npy. CAM needs a global-average-pool + linear head; gradcam works with any model. "
                    "deconvnet and guided-backprop need a network whose activations are nn.ReLU modules (others, "
                    "e.g. googlenet's F.relu or mobilenet_v2's ReLU6, are refused). "
                    "Methods use captum except cam and gradcam++ (written here).",
        epilog="examples:\n  convolab explain runs/demo shoe.png --method gradcam integrated-gradients --out expl\n"
               "  convolab explain runs/demo *.png --method occlusion --target Sneaker --out expl --json\n"
               "  convolab explain runs/demo shoe.png --method deconvnet guided-backprop saliency --out expl")
    p.add_argument("run", help="run directory")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size/mode: preprocessed like the "
                                                               "training data)")
    p.add_argument("--method", nargs="+", default=["gradcam"], metavar="METHOD", choices=METHODS,
                   help=f"one or more of: {', '.join(METHODS)}")
    p.add_argument("--target", metavar="CLASS", help="class to explain, by name or index (default: the prediction)")
    p.add_argument("--layer", metavar="NAME", help="layer for the CAM family (default: the last feature stage)")
    p.add_argument("--out", required=True, help="folder for the PNGs and .npy maps")
    p.add_argument("--overwrite", action="store_true", help="replace files of the same names in --out")
    p.add_argument("--json", action="store_true", help="print the paths and map statistics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the maps and print, per image, the prediction and each method's file."""
    from convolab.explain.attribution import CAM_METHODS
    from convolab.explain.images import explain_images
    from convolab.runs import load_run
    from convolab.runs.quantized import refuse_graph

    methods = list(dict.fromkeys(args.method))
    if args.layer is not None and not set(methods) & set(CAM_METHODS):
        raise ValueError(f"--layer picks the layer of {', '.join(CAM_METHODS)}; --method {' '.join(methods)} does "
                         "not use one (drop --layer)")
    run = load_run(args.run)
    refuse_graph(run, "explain")
    records = explain_images(run, args.images, methods, args.out, target=args.target, layer=args.layer,
                             overwrite=args.overwrite, progress=not args.quiet)
    failed = 0
    for r in records:
        if "error" in r:
            failed += 1
            print(f"convolab explain: error: {one_line(r['error'])}", file=sys.stderr)
        elif not args.json:
            head = f"{r['image']}: predicted {r['predicted']} ({100 * r['probability']:.1f}%)"
            if r["target"] != r["predicted"]:
                head += f", explaining {r['target']} ({100 * r['target_probability']:.1f}%)"
            print(head)
            for method, m in r["methods"].items():
                extra = f", completeness gap {100 * m['completeness_gap']:.2f}%" if "completeness_gap" in m else ""
                print(f"  {method:<21} {m['png']}{extra}")
    if args.json:
        print_json(records)
    return EXIT_USAGE if failed else 0
