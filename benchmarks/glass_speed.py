"""convolab.glass against PyTorch on the CPU, and the vectorised layers against the naive loops, in one run.

1. Training step: tutorial_cnn (conv16-pool-conv32-pool-FC128-FC10), a batch of 64 28x28 float32
   images, forward + cross-entropy + backward + Adam step. torch runs channels-last, as
   ``convolab train`` does (its fastest CPU layout); glass starts from the same weights
   (``from_torch``). The two alternate in rounds of ``--steps`` steps; the medians are compared.
2. Forward pass: the same network with ``convolab.glass.naive``'s four-loop convolution and pooling
   against the vectorised glass layers, on a smaller batch (the loops take seconds).

Threads: torch gets as many as NumPy's BLAS, so neither side has more cores than the other.
``--threads`` lists the counts to measure (default: 1 and BLAS's own count, read with threadpoolctl).
Timings are wall-clock; on a busy machine, expect noise and say so when quoting them.

Usage: python benchmarks/glass_speed.py [--batch-size 64] [--steps 20] [--rounds 7] [--threads N ...]
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
from convolab.glass.train import skip_input_grad, train_step
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


def step_times(threads: int, batch_size: int, steps: int, rounds: int) -> dict[str, list[float]]:
    """ms per training step of torch and glass, alternating rounds, both on ``threads`` threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=28)
    g = glass.from_torch(model)
    skip_input_grad(g)  # as torch skips dL/d(images): the batch does not require grad
    model = model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    xt = torch.from_numpy(rng.standard_normal((batch_size, 1, 28, 28), dtype=np.float32))
    xt = xt.contiguous(memory_format=torch.channels_last)
    yt = torch.from_numpy(rng.integers(0, 10, batch_size))
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

    for fn in (torch_step, glass_step):
        for _ in range(5):
            fn()
    return timed_rounds({"torch": torch_step, "glass": glass_step}, steps, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per engine")
    parser.add_argument("--threads", type=int, nargs="+", help="thread counts, each for both (default: 1 and "
                                                               "NumPy's BLAS count)")
    parser.add_argument("--naive-batch", type=int, default=4, help="batch of the naive-vs-vectorised forward")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    current, limit = blas_threads()
    counts = args.threads or sorted({1, current or os.cpu_count()})
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores visible",
              "blas_threads_default": current, "batch_size": args.batch_size, "steps": []}
    for threads in counts:
        with limit(threads):
            step = step_times(threads, args.batch_size, args.steps, args.rounds)
        med = {k: statistics.median(v) for k, v in step.items()}
        result["steps"].append({"threads": threads, "torch_ms": round(med["torch"], 2),
                                "glass_ms": round(med["glass"], 2),
                                "glass_over_torch": round(med["glass"] / med["torch"], 2),
                                "torch_ms_rounds": [round(v, 2) for v in step["torch"]],
                                "glass_ms_rounds": [round(v, 2) for v in step["glass"]]})

    torch.manual_seed(0)
    g = glass.from_torch(create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=28)).to(np.float64).eval()
    xs = np.random.default_rng(1).standard_normal((args.naive_batch, 1, 28, 28))
    with limit(1):
        want, got = g.forward(xs), naive_forward(g, xs)
        fwd = timed_rounds({"naive": lambda: naive_forward(g, xs), "vectorised": lambda: g.forward(xs)}, 1, 3)
    med = {k: statistics.median(v) for k, v in fwd.items()}
    result.update(naive_batch=args.naive_batch, naive_forward_ms=round(med["naive"], 1),
                  vectorised_forward_ms=round(med["vectorised"], 3),
                  naive_over_vectorised=round(med["naive"] / med["vectorised"], 1),
                  naive_vs_vectorised_max_rel_diff=float(np.abs(got - want).max() / np.abs(want).max()))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['machine']}; NumPy's BLAS defaults to {current} thread(s); torch is given the same count")
    print(f"tutorial_cnn training step, batch {args.batch_size}, float32, Adam (median of {args.rounds} rounds of "
          f"{args.steps} steps):")
    for r in result["steps"]:
        print(f"  {r['threads']} thread(s): torch (channels-last) {r['torch_ms']:7.2f} ms   convolab.glass "
              f"{r['glass_ms']:7.2f} ms   -> glass / torch = {r['glass_over_torch']:.2f}x")
    print(f"tutorial_cnn forward, batch {args.naive_batch}, float64, 1 thread:")
    print(f"  naive loops {result['naive_forward_ms']:9.1f} ms   vectorised glass "
          f"{result['vectorised_forward_ms']:7.3f} ms   -> naive / vectorised = {result['naive_over_vectorised']:.0f}x "
          f"(outputs agree to {result['naive_vs_vectorised_max_rel_diff']:.1e})")


if __name__ == "__main__":
    main()
