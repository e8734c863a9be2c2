"""``convolab viz``: pictures of a model (first-layer kernels, feature maps, activation maximization)."""

from __future__ import annotations

import argparse

from convolab.cli._common import HelpFormatter, positive_float, positive_int, print_json, refuse_unused

HELP = "pictures of a model: first-layer kernels, feature maps, activation maximization"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "viz", help=HELP, formatter_class=HelpFormatter,
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
    p.add_argument("--max-channels", type=positive_int, default=32, help="channels drawn per layer")
    p.add_argument("--filters", action="store_true", help="activation maximization for units of --layer")
    p.add_argument("--layer", metavar="NAME", help="layer for --filters (default: the last feature stage)")
    p.add_argument("--units", type=positive_int, default=8, help="with --filters: the first N units (channels)")
    p.add_argument("--steps", type=positive_int, default=200, help="with --filters: gradient-ascent steps")
    p.add_argument("--lr", type=positive_float, default=0.05, help="with --filters: Adam's learning rate")
    p.add_argument("--seed", type=int, default=0, help="with --filters: seed of the starting noise and jitter")
    p.add_argument("--out", required=True, help="folder for the PNGs")
    p.add_argument("--overwrite", action="store_true", help="replace files of the same names in --out")
    p.add_argument("--json", action="store_true", help="print the files and what each shows as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Draw what was asked for and print one line per file."""
    from convolab.explain.viz import viz_run
    from convolab.runs import load_run
    from convolab.runs.quantized import refuse_graph

    if not (args.kernels or args.feature_maps or args.filters):
        raise ValueError("nothing to draw: choose --kernels, --feature-maps IMAGE or --filters")
    refuse_unused(args, {"diverging": "kernels", "layers": "feature_maps", "max_channels": "feature_maps",
                         "layer": "filters", "units": "filters", "steps": "filters", "lr": "filters",
                         "seed": "filters"})
    run = load_run(args.run)
    refuse_graph(run, "viz")
    records = viz_run(run, args.out, kernels=args.kernels, diverging=args.diverging,
                      feature_map_images=args.feature_maps or (), layers=args.layers,
                      max_channels=args.max_channels, filters=args.filters, layer=args.layer, units=args.units,
                      steps=args.steps, lr=args.lr, seed=args.seed, overwrite=args.overwrite, progress=not args.quiet)
    if args.json:
        print_json({"run": str(run.path), "out": str(args.out), "files": records})
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
