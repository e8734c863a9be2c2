"""Images per second of the in-memory and the streaming data paths on the same folder, side by side in one process.

A temporary folder of ``--images`` JPEGs (``--side`` x ``--side`` RGB, ten class folders, noise over a class
colour) is loaded twice with ``convolab.data.load_dataset``: with a memory budget it fits (decoded once into a
uint8 tensor, served by ``DeviceLoader``) and with a budget of one byte (the split stays on disk as
``FileImages``, served by ``StreamLoader``, which decodes each batch in worker processes). For each path the
load (scan + decode, or scan + the measuring pass) is timed, then ``--epochs`` shuffled epochs of the training
split at ``--batch-size``: the first epoch (which, streamed, starts the worker processes) is printed apart and
the rate is that of the other epochs. Both paths serve the same batches (tests/data/test_stream.py checks it);
the first batch is compared here as well.

Usage: python benchmarks/stream_speed.py [--images 5000] [--side 64] [--epochs 3] [--batch-size 256]
       [--workers N] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def write_jpegs(root: Path, n: int, side: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (10, 3))
    for k in range(10):
        (root / f"class{k}").mkdir(parents=True)
    for i in range(n):
        k = i % 10
        a = np.clip(colours[k] + rng.normal(0, 40, (side, side, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(a, "RGB").save(root / f"class{k}" / f"{i:06d}.jpg", quality=90)


def time_epochs(loader, epochs: int, device: torch.device) -> list[float]:
    """Seconds of each epoch (every batch is touched on the device)."""
    out = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for x, _y in loader:
            x.sum()  # the batch exists on the device (and a lazy pipeline could not skip it)
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per path (the first is printed apart)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=None, help="decoding processes (default: the CPU count)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from convolab.data import load_dataset
    from convolab.data.stream import default_workers, make_loader

    device = torch.device(args.device)
    workers = default_workers() if args.workers is None else args.workers
    print(f"{args.images:,} JPEGs of {args.side}x{args.side} RGB; batch {args.batch_size}; device {device}; "
          f"{os.cpu_count()} CPUs, {workers} decoding workers; torch {torch.__version__}")
    rows, firsts = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jpegs"
        t0 = time.perf_counter()
        write_jpegs(root, args.images, args.side)
        print(f"wrote the folder in {time.perf_counter() - t0:.1f} s")
        for path, budget in (("in memory", 2**40), ("streamed", 1)):
            t0 = time.perf_counter()
            ds = load_dataset(root, max_bytes=budget, cache=False, val_fraction=0.0)
            load_s = time.perf_counter() - t0
            loader = make_loader(ds.train, args.batch_size, mean=ds.mean, std=ds.std, device=device, shuffle=True,
                                 seed=0, num_workers=workers)
            firsts[path] = next(iter(loader))
            loader.load_state_dict(loader.state_dict())  # the peek above started an epoch: start it again
            secs = time_epochs(loader, args.epochs, device)
            n = len(ds.train)
            rest = secs[1:] or secs
            rows[path] = (type(loader).__name__, n, load_s, n / secs[0], n / statistics.mean(rest))
            del loader, ds
    same = all(torch.equal(a, b) for a, b in zip(firsts["in memory"], firsts["streamed"]))
    print(f"\n{'path':<10} {'loader':<13} {'train images':>12} {'load s':>8} {'1st epoch img/s':>16} "
          f"{'img/s (epochs 2+)':>18}")
    for path, (name, n, load_s, first, rate) in rows.items():
        print(f"{path:<10} {name:<13} {n:>12,} {load_s:>8.2f} {first:>16,.0f} {rate:>18,.0f}")
    ratio = rows["in memory"][4] / rows["streamed"][4]
    print(f"\nin memory / streamed: {ratio:.1f}x the images per second (epochs 2+); "
          f"load: {rows['streamed'][2] / rows['in memory'][2]:.2f}x the time streamed; "
          f"first batches identical: {same}")


if __name__ == "__main__":
    main()
