"""The figures convolab draws, with matplotlib: learning curves, a prediction grid, the confusion matrix, per-class
IoU bars, the learning-rate plots, and :func:`save_figure` for everyone's figures (training's plots, explain's, the
report's).

It sits low in the layers of DESIGN.md (it imports nothing of convolab but :mod:`convolab.atomic`), so that the
training loop, the explanation tools and the report draw with the same code. Every figure is written atomically
(temp file + rename) with matplotlib's Agg backend, so plotting works without a display and a crash never leaves
half a PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from convolab.atomic import atomic_path  # noqa: E402

__all__ = ["plt", "plot_curves", "curve_figures", "loss_labels", "smoothed_loss_floor", "plot_predictions",
           "predictions_figure", "plot_confusion", "confusion_figure", "iou_figure", "save_figure", "plot_lr_find",
           "plot_lr_steps", "lr_steps_figure", "reliability_figure"]

_WRONG = "#d62728"
_RIGHT = "#2ca02c"


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save and close ``fig`` as a PNG, atomically."""
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)  # also when the write fails: no figure left open
    return path


def smoothed_loss_floor(label_smoothing: float, num_classes: int) -> float:
    """The smallest cross-entropy against label-smoothed targets: the entropy of the smoothed target.

    With smoothing ``eps`` over ``K`` classes the target puts ``1 - eps + eps/K`` on the true class
    and ``eps/K`` on each other one; no prediction scores below its entropy (0.50 for 0.1 and 10 classes).
    """
    eps, k = float(label_smoothing), int(num_classes)
    if eps <= 0 or k < 2:
        return 0.0
    hi, lo = 1 - eps + eps / k, eps / k
    return float(-hi * math.log(hi) - (k - 1) * lo * math.log(lo))


def loss_labels(label_smoothing: float | None = None, mixed: bool = False) -> tuple[str, str]:
    """Legend labels of the training and validation losses, saying what each loss is.

    The training loss is the objective optimised: cross-entropy against label-smoothed targets (with
    ``label_smoothing``) and on mixup/cutmix-mixed images (``mixed``), averaged over the epoch while the
    weights change. The validation loss is plain cross-entropy at the end of the epoch. ``None``: the
    recipe is not known, and the training curve is named as the objective without saying which.
    """
    if label_smoothing is None:
        train = "train: the training objective (mean over the epoch)"
    else:
        what = [f"label smoothing {label_smoothing:g}"] if label_smoothing else []
        what += ["mixup/cutmix targets"] if mixed else []
        train = ("train: cross-entropy" + (f" with {' and '.join(what)}" if what else "")
                 + " (mean over the epoch)")
    return train, "val: plain cross-entropy (end of epoch)"


def curve_figures(rows: Sequence[dict], *, label_smoothing: float | None = None, num_classes: int | None = None,
                  mixed: bool = False) -> list[tuple[str, object]]:
    """``[("loss.png", fig), ("accuracy.png", fig)]``: train and validation curves per epoch from metrics rows.

    The loss curves are labelled for what they are (:func:`loss_labels`); with label smoothing the
    lowest training loss it allows is drawn as a dashed line, so a training loss above the validation
    loss is not mistaken for a bug.
    """
    epochs = [r["epoch"] for r in rows]
    train_loss, val_loss = loss_labels(label_smoothing, mixed)
    figures = []
    for key, fname in (("loss", "loss.png"), ("accuracy", "accuracy.png")):
        fig, ax = plt.subplots(figsize=(6, 4))
        for split, style in (("train", "-o"), ("val", "-s")):
            ys = [r.get(f"{split}_{key}") for r in rows]
            if any(y is not None for y in ys):
                if key == "loss":
                    name = train_loss if split == "train" else val_loss
                else:
                    name = "train (mean over the epoch)" if split == "train" else "val (end of epoch)"
                ax.plot(epochs, [np.nan if y is None else y for y in ys], style, label=name, markersize=4)
        if key == "loss" and label_smoothing and num_classes and not mixed:
            floor = smoothed_loss_floor(label_smoothing, num_classes)
            ax.axhline(floor, color="C0", linestyle="--", linewidth=0.8,
                       label=f"lowest train loss smoothing {label_smoothing:g} allows ({floor:.2f})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(f"{key} per epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
        figures.append((fname, fig))
    return figures


def plot_curves(rows: Sequence[dict], out_dir: str | Path, *, label_smoothing: float | None = None,
                num_classes: int | None = None, mixed: bool = False) -> list[Path]:
    """``loss.png`` and ``accuracy.png`` in ``out_dir`` (see :func:`curve_figures` for the arguments)."""
    out_dir = Path(out_dir)
    return [save_figure(fig, out_dir / fname) for fname, fig in
            curve_figures(rows, label_smoothing=label_smoothing, num_classes=num_classes, mixed=mixed)]


def _mosaic(images: np.ndarray, cols: int, pad: int) -> np.ndarray:
    """(n, C, H, W) uint8 -> one (rows*(H+pad), cols*(W+pad), C) image with white gutters."""
    n, c, h, w = images.shape
    rows = math.ceil(n / cols)
    canvas = np.full((rows * (h + pad), cols * (w + pad), c), 255, np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        canvas[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = images[k].transpose(1, 2, 0)
    return canvas


def plot_predictions(images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor,
                     probabilities: torch.Tensor | None, classes: Sequence[str], path: str | Path,
                     n: int = 36, seed: int = 0) -> Path:
    """:func:`predictions_figure` saved as ``path``."""
    return save_figure(predictions_figure(images, labels, predictions, probabilities, classes, n, seed), path)


def predictions_figure(images: torch.Tensor, labels: torch.Tensor, predictions: torch.Tensor,
                       probabilities: torch.Tensor | None, classes: Sequence[str], n: int = 36, seed: int = 0):
    """A grid of test images, each titled with its predicted class; mistakes framed in red with the true class.

    The images are a seeded random sample of the split, so the grid shows the model's typical
    behaviour, mistakes in their real proportion. Drawn as one mosaic image (one axes instead of
    one per image), which is several times faster to render.
    """
    from matplotlib.patches import Rectangle

    total = len(labels)
    n = min(n, total)
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].sort().values
    cols = min(6, n)
    rows = math.ceil(n / cols)
    sample = images[idx].numpy()  # (n, C, H, W)
    _, c, h, w = sample.shape
    pad = max(2, h // 2)  # gutter below each image holds its caption
    canvas = _mosaic(sample, cols, pad)
    fig, ax = plt.subplots(figsize=(cols * 1.75, rows * 2.0))
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None, vmin=0, vmax=255,
              interpolation="nearest")
    wrong = 0
    for k, i in enumerate(idx.tolist()):
        r, q = divmod(k, cols)
        t, p = int(labels[i]), int(predictions[i])
        ok = t == p
        wrong += not ok
        x0, y0 = q * (w + pad), r * (h + pad)
        conf = f" {100 * float(probabilities[i, p]):.0f}%" if probabilities is not None else ""
        caption = f"{classes[p]}{conf}" if ok else f"{classes[p]}{conf}\ntrue: {classes[t]}"
        ax.text(x0 + w / 2, y0 + h + 0.5, caption, ha="center", va="top", fontsize=6.5,
                color=_RIGHT if ok else _WRONG, fontweight="normal" if ok else "bold")
        if not ok:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, edgecolor=_WRONG, linewidth=2.5))
    ax.set_axis_off()
    ax.set_title(f"test predictions: {n - wrong} right, {wrong} wrong (red, with the true class) "
                 f"of {n} random test images", fontsize=9)
    return fig


def plot_confusion(cm: torch.Tensor, classes: Sequence[str], path: str | Path) -> Path:
    """:func:`confusion_figure` saved as ``path``."""
    return save_figure(confusion_figure(cm, classes), path)


def confusion_figure(cm: torch.Tensor, classes: Sequence[str]):
    """The confusion matrix: counts in each cell, colour by the share of the true class (row)."""
    cm_np = cm.numpy().astype(np.int64)
    k = len(classes)
    row_share = cm_np / np.maximum(cm_np.sum(1, keepdims=True), 1)
    size = max(4.5, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if cm_np[i, j]:
                    ax.text(j, i, str(cm_np[i, j]), ha="center", va="center", fontsize=7 if k > 12 else 8,
                            color="white" if row_share[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = np.trace(cm_np) / max(cm_np.sum(), 1)
    ax.set_title(f"confusion matrix (test accuracy {100 * acc:.2f}%)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    return fig


def iou_figure(classes: Sequence[str], iou: Sequence[float | None]):
    """Horizontal bars of each class's IoU (0..1); a class absent from masks and predictions gets no bar and 'n/a'."""
    k = len(classes)
    fig, ax = plt.subplots(figsize=(5.5, 0.6 + 0.28 * k))
    values = [np.nan if v is None else float(v) for v in iou]
    y = np.arange(k)
    ax.barh(y, np.nan_to_num(values), color="#4a90d9")
    for i, v in enumerate(values):
        ax.text(0.01 if np.isnan(v) else min(v, 0.85) + 0.01, i, "n/a" if np.isnan(v) else f"{v:.3f}",
                va="center", fontsize=7)
    ax.set_yticks(y, list(classes), fontsize=8)
    ax.invert_yaxis()  # class 0 on top, as in the table
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU = TP / (TP + FP + FN) over the test split")
    ax.set_title("per-class IoU", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float], suggested_lr: float,
                 min_loss_lr: float, rule: str, path: str | Path) -> Path:
    """The learning-rate range test: loss against the (log-scaled) rate, with the suggestion marked."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(lrs, losses, color="0.75", linewidth=0.8, label="loss per batch")
    ax.plot(lrs, smoothed, color="C0", linewidth=2, label="smoothed loss")
    ax.axvline(min_loss_lr, color="0.4", linestyle=":", label=f"minimum of the smoothed loss ({min_loss_lr:.2g})")
    ax.axvline(suggested_lr, color=_WRONG, linestyle="--", label=f"suggested lr {suggested_lr:.2g}")
    ax.set_xscale("log")
    low = min(min(smoothed), min(losses))
    high = max(smoothed[0], min(max(smoothed), 3 * min(smoothed)))
    ax.set_ylim(low - 0.1 * (high - low), high + 0.25 * (high - low))
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(f"learning-rate range test\nsuggestion: {rule}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_lr_steps(steps: Sequence[dict], path: str | Path) -> Path:
    """``lr.png``: :func:`lr_steps_figure` saved as ``path``."""
    return save_figure(lr_steps_figure(steps), path)


def lr_steps_figure(steps: Sequence[dict]):
    """The learning rate of every optimizer step (from steps.jsonl), epochs marked."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    x = [s["step"] for s in steps]
    ax.plot(x, [s["lr"] for s in steps], color="C0")
    ends = [a["step"] for a, b in zip(steps, steps[1:]) if a["epoch"] != b["epoch"]]
    for e in ends:
        ax.axvline(e, color="0.85", linewidth=0.8, zorder=0)
    ax.set_xlabel("optimizer step (grey lines: epoch ends)")
    ax.set_ylabel("learning rate")
    ax.set_title("learning-rate schedule, per step")
    ax.grid(alpha=0.3)
    return fig


def reliability_figure(edges: Sequence[float], series: Sequence[tuple[str, Sequence[float], Sequence[float],
                                                                      Sequence[int], float]]):
    """Reliability diagrams side by side, one column per set of predictions (e.g. plain and MC dropout).

    ``edges``: the (M + 1,) bin edges of the confidence; each series is ``(label, accuracy, confidence, counts,
    ece)`` with (M,) per-bin accuracy and mean confidence (NaN for an empty bin) and prediction counts. Top row:
    accuracy per bin as bars, the bin's mean confidence as a dot, and the diagonal of perfect calibration (a bar
    below it: over-confident); bottom row: the predictions per bin (log scale).
    """
    edges = np.asarray(edges, dtype=np.float64)
    left, width = edges[:-1], np.diff(edges)
    fig, axes = plt.subplots(2, len(series), figsize=(4.2 * len(series), 5.6), squeeze=False,
                             gridspec_kw=dict(height_ratios=(3, 1)), sharex=True)
    for (label, acc, conf, counts, ece), top, bottom in zip(series, axes[0], axes[1]):
        acc, conf = np.asarray(acc, dtype=np.float64), np.asarray(conf, dtype=np.float64)
        counts = np.asarray(counts, dtype=np.int64)
        top.bar(left, np.nan_to_num(acc), width=width, align="edge", color="#4a90d9", edgecolor="white",
                label="accuracy in the bin")
        top.plot(conf, acc, "o", color=_WRONG, markersize=3.5, label="(mean confidence, accuracy)")
        top.plot([0, 1], [0, 1], "--", color="0.3", linewidth=1, label="perfect calibration")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy")
        top.set_title(f"{label}\nECE {ece:.4f} ({len(left)} bins)", fontsize=10)
        top.grid(alpha=0.3)
        top.legend(fontsize=7, loc="upper left")
        bottom.bar(left, counts, width=width, align="edge", color="0.55", edgecolor="white")
        if counts.max(initial=0) > 0:
            bottom.set_yscale("log")
        bottom.set_xlabel("confidence (top probability)")
        bottom.set_ylabel("predictions")
        bottom.grid(alpha=0.3)
    fig.tight_layout()
    return fig
