"""``convolab models``: the registered models with their sizes."""

from __future__ import annotations

import argparse

from convolab.cli._common import HelpFormatter, print_json

HELP = "list the registered models"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("models", help=HELP, formatter_class=HelpFormatter,
                       description="List the registered models: family, parameters at their usual input, input "
                                   "kind, year and description.",
                       epilog="example: convolab models lenet; your own network: --model 'spec:conv(6,5),relu,"
                              "maxpool(2),flatten,fc' (convolab models --spec-help)")
    p.add_argument("pattern", nargs="?", help="filter: substring or shell pattern (lenet*, *cnn)")
    p.add_argument("--spec-help", action="store_true",
                   help="print the grammar of spec: networks and every layer it knows, with its arguments")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the models matching the pattern, counting each one's parameters on the meta device."""
    import torch

    from convolab.models import create_model, list_models, model_entries, model_options

    if args.spec_help:
        from convolab.models.spec import spec_help

        print(spec_help())
        return 0
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
                     "year": e.year, "description": e.description, "options": model_options(e.name)})
    if args.json:
        print_json(rows)
        return 0
    w = max(len(r["name"]) for r in rows)
    print(f"{'model':<{w}}  {'family':<12} {'params':>12}  {'counted at':<25} {'input':<12} {'year':<5} description")
    for r in rows:
        print(f"{r['name']:<{w}}  {r['family']:<12} {r['params']:>12,}  {r['shown_at']:<25} {r['input']:<12} "
              f"{r['year'] or '':<5} {r['description']}")
    if len(rows) == 1 and rows[0]["options"]:
        print(f"\noptions (--model-arg KEY=VALUE): {', '.join(rows[0]['options'])}")
    print("\n`convolab train --model NAME` adapts a model to the dataset's channels, classes and image size")
    return 0
