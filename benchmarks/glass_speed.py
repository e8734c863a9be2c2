"""convolab.glass against PyTorch on the CPU, and the vectorised layers against the naive loops, in one run.

1. Training step: tutorial_cnn (conv16-pool-conv32-pool-FC128-FC10), a batch of 64 28x28 float32
   images, forward + cross-entropy + backward + Adam step. torch runs channels-last, as
   ``convolab train`` does (its fastest CPU layout); glass starts from the same weights
   (``from_torch``). The two alternate in rounds of ``--steps`` steps; the medians are compared.
2. Forward pass: the same network with ``convolab.glass.naive``'s four-loop convolution and pooling
   against the vectorised glass layers, on a smaller batch (the loops take seconds).

Threads: torch gets as many as NumPy's BLAS (``--threads`` sets both; default: BLAS's own count,
read with threadpoolctl), so neither side has more cores than the other. Timings are wall-clock;
on a busy machine, expect noise and say so when quoting them.

Usage: python benchmarks/glass_speed.py [--batch-size 64] [--steps 20] [--rounds 7] [--threads N]
                                        [--naive-batch 4] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from convolab import glass
from convolab.glass import naive
from convolab.glass.train import train_step
from convolab.models import create_model


def blas_threads() -> tuple[int | None, contextlib.AbstractContextManager]:
    """NumPy's BLAS thread count, and a context manager that sets it (threadpoolctl, when installed)."""
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return None, contextlib.nullcontext
    counts = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    return (counts[0] if counts else None), (lambda n: threadpool_limits(limits=n, user_api="blas"))


def timed_rounds(fns: dict, steps: int, rounds: int) -> dict[str, list[float]]:
    """Alternate the functions, ``steps`` calls per round: ms per call of each round."""
    out = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            out[name].append((time.perf_counter() - start) / steps * 1e3)
    return out


def naive_forward(g: glass.Module, x: np.ndarray) -> np.ndarray:
    """tutorial_cnn's forward with the loop reference for convolution and pooling (same weights as ``g``)."""
    f, c = g.features, g.classifier
    x = naive.conv2d(x, f.conv1.params["weight"], f.conv1.params["bias"], padding=1)
    x = np.maximum(naive.max_pool2d(x, 2), 0)
    x = naive.conv2d(x, f.conv2.params["weight"], f.conv2.params["bias"], padding=1)
    x = np.maximum(naive.max_pool2d(x, 2), 0).reshape(len(x), -1)
    x = np.maximum(x @ c.fc1.params["weight"].T + c.fc1.params["bias"], 0)
    return x @ c.fc2.params["weight"].T + c.fc2.params["bias"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per engine")
    parser.add_argument("--threads", type=int, help="threads for both (default: NumPy's BLAS count)")
    parser.add_argument("--naive-batch", type=int, default=4, help="batch of the naive-vs-vectorised forward")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    current, limit = blas_threads()
    threads = args.threads or current or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=28)
    g = glass.from_torch(model)
    model = model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    xt = torch.from_numpy(rng.standard_normal((args.batch_size, 1, 28, 28), dtype=np.float32))
    xt = xt.contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(rng.integers(0, 10, args.batch_size))
    x, y = xt.numpy(), yt.numpy()  # the same batch, in the same (channels-last) memory

    t_opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g_opt, criterion = glass.Adam(g.parameters(), lr=1e-3), glass.CrossEntropyLoss()

    def torch_step():
        loss = F.cross_entropy(model(xt), yt)
        t_opt.zero_grad(set_to_none=True)
        loss.backward()
        t_opt.step()

    def glass_step():
        train_step(g, criterion, g_opt, x, y)

    with limit(threads):
        for fn in (torch_step, glass_step):
            for _ in range(5):
                fn()
        step = timed_rounds({"torch": torch_step, "glass": glass_step}, args.steps, args.rounds)

        xs = x[:args.naive_batch].astype(np.float64)
        g.to(np.float64).eval()
        want = g.forward(xs)
        got = naive_forward(g, xs)
        agree = float(np.abs(got - want).max() / np.abs(want).max())
        fwd = timed_rounds({"naive": lambda: naive_forward(g, xs), "vectorised": lambda: g.forward(xs)}, 1, 3)

    med = {k: statistics.median(v) for k, v in {**step, **fwd}.items()}
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible",
        "threads": threads, "blas_threads_before": current, "batch_size": args.batch_size,
        "torch_step_ms": round(med["torch"], 2), "glass_step_ms": round(med["glass"], 2),
        "glass_over_torch": round(med["glass"] / med["torch"], 2),
        "torch_step_ms_rounds": [round(v, 2) for v in step["torch"]],
        "glass_step_ms_rounds": [round(v, 2) for v in step["glass"]],
        "naive_batch": args.naive_batch, "naive_forward_ms": round(med["naive"], 1),
        "vectorised_forward_ms": round(med["vectorised"], 3),
        "naive_over_vectorised": round(med["naive"] / med["vectorised"], 1),
        "naive_vs_vectorised_max_rel_diff": agree,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['machine']}; torch and NumPy's BLAS both on {threads} thread(s)")
    print(f"tutorial_cnn training step, batch {args.batch_size}, float32 (median of {args.rounds} rounds of "
          f"{args.steps} steps):")
    print(f"  torch (channels-last) {med['torch']:7.2f} ms")
    print(f"  convolab.glass        {med['glass']:7.2f} ms   -> glass / torch = {result['glass_over_torch']:.2f}x")
    print(f"tutorial_cnn forward, batch {args.naive_batch}, float64:")
    print(f"  naive loops           {med['naive']:9.1f} ms")
    print(f"  vectorised glass      {med['vectorised']:9.3f} ms   -> naive / vectorised = "
          f"{result['naive_over_vectorised']:.0f}x (outputs agree to {agree:.1e})")


if __name__ == "__main__":
    main()
