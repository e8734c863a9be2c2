"""What compression gained and lost, measured the same way for every variant: test accuracy, size on disk, latency
at batch 1 and batch 256, and the speed-up against the honest baselines -- float32 compiled by inductor (freezing on,
as the int8 model is compiled) and float32 in ONNX Runtime -- not against eager float32, which flatters every int8
number (published int8 speed-ups quoted against eager are 8-10x where compiled float32 leaves 5-6x).

A variant is a name, a file, and a function from a normalised float32 batch (a torch tensor) to logits. Latency is
the median over ``repeats`` timings of enough calls to fill ``min_seconds`` each, after warm-up calls, on one batch
of real test images; the thread count is torch's (``torch.get_num_threads()``), which ONNX Runtime is given too.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["freezing", "compile_for_batch", "Variant", "Row", "time_call", "accuracy", "measure", "table", "BASELINES",
           "pareto_figure", "normalise"]

BASELINES = ("fp32 compiled", "fp32 onnxruntime")  # what every speed-up is quoted against
BATCHES = (1, 256)


@contextlib.contextmanager
def freezing():
    """Inductor's freezing on (weights become constants: prepacked for oneDNN, int8 weights folded): the setting
    both the int8 model and its compiled float32 baseline are compiled with."""
    from torch._inductor import config

    with config.patch(freezing=True):
        yield


def compile_for_batch(model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` compiled by inductor (freezing on, static shapes) and run once on ``example`` (the compilation);
    returns the compiled callable, which is used without gradients and always runs with freezing on.

    Always, because a graph compiled earlier can be compiled again later: torchao's ``convert_pt2e`` installs a new
    inductor pass object each time it runs, and the next call of an int8 graph compiled before it compiles again.
    Outside freezing that second compilation silently falls back to float convolutions on dequantized weights,
    2-3x slower; measured here, quantizing a second model made the first one's int8 timing go from 2.7 to 7-9 ms.
    """
    from torch._inductor import config

    with freezing(), torch.no_grad():
        compiled = torch.compile(model, dynamic=False)
        compiled(example)

    def forward(x: torch.Tensor) -> torch.Tensor:
        old = config.freezing  # (set by hand: config.patch costs ~150 us a call, this ~4 us)
        config.freezing = True
        try:
            return compiled(x)
        finally:
            config.freezing = old

    return forward


@dataclass
class Variant:
    """One model to measure: ``forward(batch) -> logits`` for each batch size in ``BATCHES`` (a compiled model is
    compiled per shape, so each size may have its own function), and the file it ships as."""

    name: str
    file: Path | None
    forwards: dict[int, Callable[[torch.Tensor], torch.Tensor]]
    note: str = ""


@dataclass
class Row:
    """The measured figures of one variant (``ms``: milliseconds per batch, by batch size)."""

    name: str
    accuracy: float | None
    size_bytes: int | None
    ms: dict[int, float] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ms"] = {str(k): v for k, v in self.ms.items()}
        return d


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 ``[N,C,H,W]`` -> float32 normalised with the run's statistics."""
    x = images.float().div_(255)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    m, s = (torch.tensor(v, dtype=torch.float32).view(shape) for v in (mean, std))
    return (x - m) / s


def time_call(fn: Callable, x, *, warmup: int = 3, repeats: int = 5, min_seconds: float = 0.2) -> float:
    """Median seconds per call of ``fn(x)`` over ``repeats`` timings of enough calls to last ``min_seconds``."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        start, calls = time.perf_counter(), 0
        while calls == 0 or time.perf_counter() - start < min_seconds / 4:
            fn(x)
            calls += 1
        per = (time.perf_counter() - start) / calls
        n = max(1, int(min_seconds / max(per, 1e-9)))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(n):
                fn(x)
            times.append((time.perf_counter() - t) / n)
    return statistics.median(times)


def accuracy(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, targets: torch.Tensor, mean, std,
             batch: int) -> float:
    """Top-1 accuracy of ``fn`` over uint8 ``images``, fed in batches of exactly ``batch`` (the last one padded by
    repeating its first image; the padding's predictions are dropped): a model compiled for one shape sees only it."""
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = normalise(images[i:i + batch], mean, std)
            n = len(x)
            if n < batch:
                x = torch.cat([x, x[:1].expand(batch - n, *x.shape[1:])])
            logits = fn(x.contiguous())
            correct += int((logits[:n].argmax(1) == targets[i:i + n]).sum())
    return correct / len(images)


def measure(variants: Sequence[Variant], images: torch.Tensor, targets: torch.Tensor, mean, std, *,
            accuracy_batch: int = 256, repeats: int = 5, min_seconds: float = 0.2,
            progress: Callable[[str], None] | None = None) -> list[Row]:
    """Accuracy over the test ``images`` and latency at each batch size of ``BATCHES`` for every variant.

    The latencies are taken in ``repeats`` rounds, each timing every variant once in turn (``min_seconds`` of calls
    each), and the median over the rounds is kept: a machine whose speed drifts moves every variant alike instead of
    favouring the ones timed in a quiet moment."""
    rows = []
    for v in variants:
        if progress:
            progress(f"accuracy of {v.name}")
        acc_fn = v.forwards[accuracy_batch] if accuracy_batch in v.forwards else next(iter(v.forwards.values()))
        acc = accuracy(_as_torch(acc_fn), images, targets, mean, std, accuracy_batch)
        size = v.file.stat().st_size if v.file is not None and Path(v.file).exists() else None
        rows.append(Row(v.name, acc, size, {}, v.note))
    inputs = {b: normalise(images[:b], mean, std).contiguous() for v in variants for b in v.forwards}
    times: dict[tuple[int, int], list[float]] = {}
    for r in range(repeats):
        if progress:
            progress(f"latency, round {r + 1} of {repeats}")
        for i, v in enumerate(variants):
            for b, fn in v.forwards.items():
                warm = 3 if r == 0 else 1
                times.setdefault((i, b), []).append(
                    time_call(_as_torch(fn), inputs[b], warmup=warm, repeats=1, min_seconds=min_seconds))
    for (i, b), ts in times.items():
        rows[i].ms[b] = 1000 * statistics.median(ts)
    return rows


def _as_torch(fn: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    def call(x: torch.Tensor) -> torch.Tensor:
        out = fn(x)
        return out if torch.is_tensor(out) else torch.from_numpy(np.asarray(out))
    return call


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def table(rows: Sequence[Row]) -> str:
    """The rows as a text table: accuracy (and its change against the first row, in points), size (and how many
    times smaller than the first row), milliseconds per batch of 1 and of 256, and the speed-up against each
    baseline present (``BASELINES``), at batch 1 / batch 256."""
    base = rows[0]
    ref = {b.name: b for b in rows if b.name in BASELINES}
    head = ["variant", "accuracy", "size", *[f"ms@{b}" for b in BATCHES],
            *[f"vs {n} ({'/'.join(f'b{b}' for b in BATCHES)})" for n in ref]]
    out = [head]
    for r in rows:
        acc = "-" if r.accuracy is None else f"{r.accuracy:.4f}"
        if r.accuracy is not None and base.accuracy is not None and r is not base:
            acc += f" ({100 * (r.accuracy - base.accuracy):+.2f})"
        size = _size(r.size_bytes)
        if r.size_bytes and base.size_bytes and r is not base:
            size += f" ({base.size_bytes / r.size_bytes:.2f}x smaller)"
        lat = [f"{r.ms[b]:.3f}" if b in r.ms else "-" for b in BATCHES]
        ratios = [" / ".join(f"{ref[n].ms[b] / r.ms[b]:.2f}x" if b in r.ms and b in ref[n].ms else "-"
                             for b in BATCHES) for n in ref]
        out.append([r.name, acc, size, *lat, *ratios])
    widths = [max(len(row[i]) for row in out) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in out]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def pareto_figure(rows: Sequence[Row], title: str = ""):
    """Accuracy against latency at batch 256 and against size on disk, one point per variant; the points no other
    variant beats on both axes (the Pareto front) joined by a line."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], lambda r: r.ms.get(256), "ms per batch of 256"),
                           (axes[1], lambda r: (r.size_bytes or 0) / 1e3, "size on disk (kB)")):
        pts = [(key(r), r.accuracy, r.name) for r in rows if key(r) and r.accuracy is not None]
        for x, y, name in pts:
            ax.scatter([x], [y], s=40)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = sorted((p for p in pts if not any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in pts)),
                       key=lambda p: p[0])
        if len(front) > 1:
            ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="gray", lw=1, label="Pareto front")
            ax.legend(fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
