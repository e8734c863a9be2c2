"""Evaluation: loss, accuracy, the confusion matrix and top-5 accuracy over a loader; precision, recall and F1 per
class and their macro means from the confusion matrix.

Conventions (scikit-learn's ``precision_recall_fscore_support(..., zero_division=np.nan)`` and
``top_k_accuracy_score``, which the tests compare against):

- precision_k = TP_k / (TP_k + FP_k): undefined (None in JSON) for a class never predicted;
- recall_k = TP_k / (TP_k + FN_k): undefined for a class with no samples in the split;
- F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k) (the harmonic mean of the two, and 0 where one is 0 and the other
  undefined): undefined only for a class neither present nor predicted;
- a macro mean is the plain mean over the classes where the figure is defined (undefined ones are left out, not
  counted as 0); macro F1 is the mean of the per-class F1s, not the F1 of the macro precision and recall;
- top-5 accuracy: the fraction of samples whose true class is among the 5 highest scores (ties as ``torch.topk``
  breaks them); only where there are more than 5 classes (with 5 or fewer it is 1 by construction: None).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EvalResult", "evaluate", "confusion_matrix", "FlipAverage", "TOP_K", "top_k_correct", "class_scores",
           "class_summary"]

TOP_K = 5  # top-k accuracy is reported for k = 5 where there are more than 5 classes


class FlipAverage(nn.Module):
    """Flip test-time augmentation: the log of the mean of the probabilities for an image and its mirror.

    Returned as logits, so ``cross_entropy`` of the output is the loss of the averaged prediction
    (``log_softmax(log p) = log p`` when ``p`` sums to one) and its argmax the averaged prediction.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.model(x).float().softmax(1) + self.model(x.flip(3)).float().softmax(1)
        return (p / 2).log()


@dataclass
class EvalResult:
    """Figures of one pass over a split.

    ``loss`` and ``accuracy`` exist for every task (accuracy: of labels for classification and clips, of pixels
    for segmentation); ``metrics`` holds a task's others: ``confusion`` ((K, K) counts, row: true class) and
    ``top5_accuracy`` (None with K <= 5) from :func:`evaluate`, ``mean_iou``, ``video_accuracy`` ...
    """

    loss: float  # mean loss per sample
    accuracy: float  # fraction correct, 0..1
    n: int  # samples
    predictions: torch.Tensor | None = None  # (n,) predicted class (or (n, H, W) masks), when asked for
    probabilities: torch.Tensor | None = None  # (n, num_classes) softmax, when asked for
    labels: torch.Tensor | None = None  # (n,) true class (or masks), when asked for
    metrics: dict[str, Any] = field(default_factory=dict)  # the task's other figures


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             keep_predictions: bool = False) -> EvalResult:
    """Mean loss and accuracy of ``model`` (put in eval mode) over ``(images, labels)`` batches, with the confusion
    matrix and the top-5 count accumulated on the model's device (read once, at the end) in ``metrics``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64)
    cm = top_k = None  # (K, K) and 0-d counts on the outputs' device
    n = 0
    preds, probs, labels = [], [], []
    try:
        for x, y in batches:
            logits = model(x).float()  # (B, K)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double().cpu()
            p = logits.argmax(1)
            k = logits.shape[1]
            counts = confusion_matrix(y, p, k)
            cm = counts if cm is None else cm + counts
            if k > TOP_K:
                hits = top_k_correct(logits, y, TOP_K)
                top_k = hits if top_k is None else top_k + hits
            n += len(y)
            if keep_predictions:
                preds.append(p.cpu())
                probs.append(logits.softmax(1).cpu())
                labels.append(y.cpu())
    finally:
        model.train(was_training)
    if n == 0:
        return EvalResult(float("nan"), float("nan"), 0)
    cm = cm.cpu()
    result = EvalResult(float(loss_sum) / n, int(cm.diag().sum()) / n, n, metrics={
        "confusion": cm, "top5_accuracy": int(top_k) / n if top_k is not None else None})
    if keep_predictions:
        result.predictions, result.probabilities, result.labels = torch.cat(preds), torch.cat(probs), torch.cat(labels)
    return result


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    idx = labels.long() * num_classes + predictions.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def top_k_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """How many rows of ``scores`` (N, K) have their label among their ``k`` highest scores: a 0-d count on the
    scores' device (no host sync)."""
    return (scores.topk(k, 1).indices == labels.view(-1, 1)).any(1).sum()


def class_scores(cm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class ``precision``, ``recall`` and ``f1`` (K,) float64, NaN where undefined (see the module's
    conventions), and ``support`` (K,) (true samples per class), from a confusion matrix (row: true class)."""
    cm = cm.double()
    tp = cm.diag()
    predicted, support = cm.sum(0), cm.sum(1)  # TP + FP, TP + FN

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / den.clamp(min=1), torch.nan)

    return {"precision": ratio(tp, predicted), "recall": ratio(tp, support),
            "f1": ratio(2 * tp, predicted + support), "support": support.long()}


def _macro(values: torch.Tensor) -> float | None:
    """The mean of the defined (non-NaN) values; None when none is."""
    defined = values[~values.isnan()]
    return float(defined.mean()) if len(defined) else None


def class_summary(result: EvalResult, classes: list[str] | tuple[str, ...], prefix: str = "test_") -> dict:
    """summary.json's per-class figures of a classification evaluation: ``{prefix}macro_precision``,
    ``macro_recall``, ``macro_f1``, ``top5_accuracy`` (None with 5 classes or fewer) and ``per_class_precision``,
    ``per_class_recall``, ``per_class_f1`` ({class: value or None}).

    Reads ``result.metrics`` (``confusion``, ``top5_accuracy``) as :func:`evaluate` leaves them; an evaluation
    without them (the NumPy engine's) has them counted from its kept labels, predictions and probabilities.
    """
    k = len(classes)
    if result.n == 0:
        cm, top5 = torch.zeros(k, k, dtype=torch.long), None
    elif "confusion" in result.metrics:
        cm, top5 = result.metrics["confusion"], result.metrics.get("top5_accuracy")
    elif result.labels is not None:
        cm = confusion_matrix(result.labels, result.predictions, k)
        top5 = (int(top_k_correct(result.probabilities, result.labels, TOP_K)) / result.n if k > TOP_K else None)
    else:
        raise ValueError("class_summary needs an evaluation with its confusion matrix or its kept predictions")
    scores = class_scores(cm)

    def per_class(values: torch.Tensor) -> dict[str, float | None]:
        return {c: (None if v != v else v) for c, v in zip(classes, values.tolist())}

    return {f"{prefix}macro_precision": _macro(scores["precision"]), f"{prefix}macro_recall": _macro(scores["recall"]),
            f"{prefix}macro_f1": _macro(scores["f1"]), f"{prefix}top5_accuracy": top5,
            f"{prefix}per_class_precision": per_class(scores["precision"]),
            f"{prefix}per_class_recall": per_class(scores["recall"]), f"{prefix}per_class_f1": per_class(scores["f1"])}
