"""``convolab eval``: recompute a run's metrics from its saved weights."""

from __future__ import annotations

import argparse

from convolab.cli._common import HelpFormatter, positive_int, print_json

HELP = "recompute a run's test metrics from its saved weights"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from convolab.device import DEVICE_CHOICES

    p = sub.add_parser("eval", help=HELP, formatter_class=HelpFormatter, description=HELP[0].upper() + HELP[1:] + ".",
                       epilog="example: convolab eval runs/demo")
    p.add_argument("run", help="run directory")
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="which split to evaluate")
    p.add_argument("--data", help="evaluate on this dataset instead of the run's own")
    p.add_argument("--data-dir", help="folder searched first for the dataset's files")
    p.add_argument("--batch-size", type=positive_int, default=1000, help="evaluation batch size")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="compute device")
    p.add_argument("--no-download", action="store_true", help="never download")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate the run's model on the chosen split and print accuracy and loss."""
    from convolab.data import DeviceLoader
    from convolab.device import resolve_device
    from convolab.explain.inputs import run_dataset
    from convolab.runs import load_run
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
        print_json({**out, "recorded_accuracy": recorded})
    else:
        note = f" (summary.json recorded {recorded:.4f})" if recorded is not None else ""
        print(f"{args.split} accuracy {res.accuracy:.4f}, loss {res.loss:.4f} on {res.n:,} {data.name} images{note}")
    return 0
