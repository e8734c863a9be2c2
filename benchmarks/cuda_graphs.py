"""Training epochs with and without ``--cuda-graphs``, side by side in one process (CUDA GPU only).

Two trainers with the same settings and seed (default: the speed-run recipe's fastcnn, Fashion-
MNIST, bf16, batch 512, light augmentation) each train ``--epochs`` epochs, eager first; every epoch
is timed between ``torch.cuda.synchronize()`` calls. The first epoch of each holds one-time work
(the eager side's holds cuDNN's algorithm search, which the process keeps for the graphs' side; the
graphs' side's holds the capture) and is printed apart; the ratio is that of the mean of the other
epochs. The training loss and accuracy of every epoch are printed for both: the graphs replay the
same kernels, so the two columns agree (to within cuDNN's algorithm choices, which may differ
between the two trainers). With this recipe (SGD, no clipping or mixing) the whole step is recorded.

Usage: python benchmarks/cuda_graphs.py [--epochs 4] [--batch-size 512] [--precision bf16] [--model fastcnn]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def train_epochs(args, graphs: bool, out: str) -> list[tuple[float, float, float]]:
    """(seconds, train loss, train accuracy) of each epoch."""
    from time_to_accuracy import FAST_RECIPE

    from convolab.cli import train_config
    from convolab.train import Trainer

    # the speed-run recipe as time_to_accuracy.py passes it to `convolab train`, with this script's settings after it
    cfg = train_config([*FAST_RECIPE, "--data", args.data, "--model", args.model, "--epochs", str(args.epochs),
                        "--batch-size", str(args.batch_size), "--precision", args.precision, "--device", "cuda",
                        "--seed", str(args.seed), "--out", out, "--no-checkpoints", "--no-plots", "--quiet",
                        *(["--cuda-graphs"] if graphs else [])])
    trainer = Trainer(cfg)
    trainer._setup()
    rows = []
    for epoch in range(1, args.epochs + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, acc = trainer._train_epoch(epoch)
        torch.cuda.synchronize()
        rows.append((time.perf_counter() - t0, loss, acc))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="fastcnn")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per side (the first is printed apart)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--precision", default="bf16", choices=("32", "bf16", "fp16"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/cuda_graphs.py needs a CUDA GPU (CUDA graphs exist only there)")
    if args.epochs < 2:
        sys.exit("--epochs must be >= 2 (the first epoch is printed apart)")
    print(f"{args.model} on {args.data}, batch {args.batch_size}, {args.precision}, {torch.cuda.get_device_name(0)}")
    with tempfile.TemporaryDirectory() as tmp:
        eager = train_epochs(args, False, f"{tmp}/eager")
        graphed = train_epochs(args, True, f"{tmp}/graphs")
    print(f"{'epoch':<6}{'eager s':>9}{'graphs s':>10}{'eager loss':>12}{'graphs loss':>13}{'eager acc':>11}"
          f"{'graphs acc':>12}")
    for i, (e, g) in enumerate(zip(eager, graphed), start=1):
        print(f"{i:<6}{e[0]:>9.3f}{g[0]:>10.3f}{e[1]:>12.4f}{g[1]:>13.4f}{e[2]:>11.4f}{g[2]:>12.4f}")
    e_mean = statistics.mean(r[0] for r in eager[1:])
    g_mean = statistics.mean(r[0] for r in graphed[1:])
    print(f"epochs 2-{args.epochs}: eager {e_mean:.3f} s, graphs {g_mean:.3f} s per epoch: {e_mean / g_mean:.2f}x")
    print(f"first epoch: eager {eager[0][0]:.2f} s (with cuDNN's algorithm search, which this process then keeps "
          f"for the graphs' side too), graphs {graphed[0][0]:.2f} s (with the capture)")


if __name__ == "__main__":
    main()
