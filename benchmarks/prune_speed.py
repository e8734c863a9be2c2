"""Structured pruning of a trained run, measured: half of the MACs removed (torch-pruning), fine-tuned on the run's
data with its recipe, then test accuracy, MACs, parameters and latency at batch 256 (eager and torch.compile,
float32, this CPU) of the original and the pruned model side by side, with the ratios.

Both models are evaluated by the same code on the same test split (and the fine-tuned run's own summary.json
figure is printed beside it). Latency: the median of ``--repeats`` timed forwards of one batch of 256 test images,
the two models alternated so that a busy machine slows both alike, on one thread and on torch's default number.

    .venv/bin/python benchmarks/prune_speed.py [--run runs/demo] [--fraction 0.5] [--epochs 3] [--lr LR]
        [--out DIR] [--repeats 30] [--threads N] [--no-compile]
    .venv/bin/python benchmarks/prune_speed.py --pruned RUN2   # measure a pruned run made before (no fine-tuning)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from convolab.compress.prune import count_macs, prune_run
from convolab.runs import load_run
from convolab.runs.recipe import load_data, run_config


def normalised(images: torch.Tensor, run) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    return (images.float() / 255 - torch.tensor(run.mean).view(shape)) / torch.tensor(run.std).view(shape)


@torch.inference_mode()
def accuracy(model, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    right = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return right / len(x)


@torch.inference_mode()
def latencies(models: dict, x: torch.Tensor, repeats: int, warmup: int = 5) -> dict[str, float]:
    """Median seconds per forward of batch ``x`` for each model, the models alternated repeat by repeat."""
    for m in models.values():
        for _ in range(warmup):  # (and torch.compile's compilation)
            m(x)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for k, m in models.items():
            t0 = time.perf_counter()
            m(x)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--fraction", type=float, default=0.5, help="fraction of MACs to remove")
    ap.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
    ap.add_argument("--lr", type=float, default=None, help="fine-tuning peak rate (default: a tenth of the run's)")
    ap.add_argument("--importance", default="l2")
    ap.add_argument("--out", default=None, help="the pruned run's folder (default: a temporary folder)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the latency (default: torch's)")
    ap.add_argument("--pruned", default=None, help="a pruned run made before: measure it instead of pruning")
    args = ap.parse_args()

    run = load_run(args.run)
    tmp = tempfile.TemporaryDirectory() if args.out is None else None
    out = Path(args.out) if args.out else Path(tmp.name) / "pruned"
    if args.pruned is None:
        t0 = time.perf_counter()
        res = prune_run(run, out, macs_fraction=args.fraction, epochs=args.epochs, lr=args.lr,
                        importance=args.importance, progress=False, seed=args.seed)
        print(res.prune.format())
        path, summary_acc = res.path, (res.accuracy_before, res.accuracy_after)
        print(f"fine-tuning: {args.epochs} epochs, prune + fine-tune {time.perf_counter() - t0:.0f} s -> {path}")
    else:
        path = Path(args.pruned)
    pruned = load_run(path)
    summary_acc = (run.summary.get("test_accuracy"), pruned.summary.get("test_accuracy"))
    print(f"fine-tuning rate {pruned.config['recipe']['lr']:g}, {pruned.config['recipe']['epochs']} epochs")

    data = load_data(run, run_config(run))
    x, y = normalised(data.test.images, run), data.test.labels
    acc0, acc1 = accuracy(run.model, x, y), accuracy(pruned.model, x, y)
    sample = x[:1]
    macs0, macs1 = count_macs(run.model, sample), count_macs(pruned.model, sample)
    params0, params1 = (sum(t.numel() for t in m.parameters()) for m in (run.model, pruned.model))
    print(f"{'':24}{'original':>12}{'pruned':>12}{'ratio':>9}")
    print(f"{'test accuracy':24}{acc0:>12.4f}{acc1:>12.4f}{acc1 - acc0:>+9.4f}  (difference; summary.json: "
          f"{summary_acc[0]} -> {summary_acc[1]})")
    print(f"{'MACs per image':24}{macs0:>12,}{macs1:>12,}{macs1 / macs0:>9.3f}")
    print(f"{'parameters':24}{params0:>12,}{params1:>12,}{params1 / params0:>9.3f}")
    batch = x[:args.batch].contiguous()
    models = {"original": run.model.eval(), "pruned": pruned.model.eval()}
    compiled = {k: torch.compile(m) for k, m in models.items()} if not args.no_compile else {}
    default = torch.get_num_threads()
    for threads in ([args.threads] if args.threads else sorted({1, default})):  # one thread: steadier on a busy host
        torch.set_num_threads(threads)
        for how, ms in (("eager", models), ("compiled", compiled)):
            if not ms:
                continue
            t = latencies(ms, batch, args.repeats)
            label = f"{how}, {threads} thr. (ms)"
            print(f"{label:24}{t['original'] * 1e3:>12.2f}{t['pruned'] * 1e3:>12.2f}"
                  f"{t['original'] / t['pruned']:>8.2f}x faster")
    print(f"batch {args.batch}, median of {args.repeats}; accuracy lost: {100 * (acc0 - acc1):.2f} points")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
