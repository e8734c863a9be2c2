"""``convolab models``: the registered models with their sizes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from convolab.cli._common import HelpFormatter, print_json

if TYPE_CHECKING:
    from convolab.models._registry import ModelEntry

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


def _count(entry: ModelEntry) -> int:
    """``entry``'s parameters at its usual input, counted on the meta device (nothing is allocated)."""
    import torch

    from convolab.models import create_model

    shape, classes = entry.default_input, entry.default_num_classes
    with torch.device("meta"):  # shapes only: counting ResNet-152's parameters allocates nothing
        model = create_model(entry.name, num_classes=classes, in_chans=shape[0],
                             input_size=shape[1:] if entry.input_kind == "clip" else shape[-2:])
    return sum(p.numel() for p in model.parameters())


def _source_key() -> str:
    """What the counts depend on: every source file of convolab (about 10 ms to hash) and torch's version."""
    import hashlib

    import torch

    digest = hashlib.sha256(torch.__version__.encode())
    for path in sorted(Path(__file__).resolve().parents[1].rglob("*.py")):  # src/convolab/**
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def parameter_counts(entries: list[ModelEntry], cache_file: Path | None = None) -> dict[str, int]:
    """Each entry's parameter count at its usual input, by name.

    Building all the registered models, even on the meta device, takes seconds (3.5 s of a 5.5 s ``convolab
    models`` on the 2-core development CPU), so the counts are kept in ``cache_file`` (default: ``models.json`` in
    convolab's user cache folder) under a key of convolab's source and torch's version: any change to either counts
    afresh. Models registered from outside convolab are always counted afresh (the key does not cover their code).
    A cache that cannot be read is counted afresh; one that cannot be written is left alone.
    """
    import json

    from convolab.atomic import write_json
    from convolab.data.resolve import user_cache_dir

    path = user_cache_dir() / "models.json" if cache_file is None else cache_file
    key = _source_key()
    try:
        saved = json.loads(path.read_text())
        known = saved["counts"] if saved.get("key") == key else {}
        known = {k: v for k, v in known.items() if isinstance(v, int) and not isinstance(v, bool)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        known = {}
    ours = {e.name for e in entries if e.fn.__module__.startswith("convolab.")}  # what the key covers
    counts = {e.name: known[e.name] if e.name in known and e.name in ours else _count(e) for e in entries}
    if any(name in ours and name not in known for name in counts):
        known.update({name: n for name, n in counts.items() if name in ours})
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, {"key": key, "counts": dict(sorted(known.items()))})
        except OSError:  # a read-only home: the counts are right, only the next listing is slower
            pass
    return counts


def run(args: argparse.Namespace) -> int:
    """Print the models matching the pattern with their parameter counts (:func:`parameter_counts`)."""
    from convolab.models import list_models, model_entries, model_options

    if args.spec_help:
        from convolab.models.spec import spec_help

        print(spec_help())
        return 0
    names = set(list_models(args.pattern))
    if not names:
        raise ValueError(f"no model matches {args.pattern!r}; `convolab models` lists them all")
    entries = [e for e in model_entries() if e.name in names]
    counts = parameter_counts(entries)
    rows = [{"name": e.name, "family": e.family, "params": counts[e.name], "input": e.input_kind,
             "shown_at": f"{'x'.join(map(str, e.default_input))}, {e.default_num_classes} classes",  # clips: CxTxHxW
             "year": e.year, "description": e.description, "options": model_options(e.name)} for e in entries]
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
