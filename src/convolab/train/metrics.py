"""Evaluation: loss, accuracy, predictions and the confusion matrix over a loader."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EvalResult", "evaluate", "confusion_matrix", "FlipAverage"]


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
    for segmentation); ``metrics`` holds a task's others (``mean_iou``, ``video_accuracy`` ...).
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
    """Mean loss and accuracy of ``model`` (put in eval mode) over ``(images, labels)`` batches."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = 0
    n = 0
    preds, probs, labels = [], [], []
    try:
        for x, y in batches:
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double().cpu()
            p = logits.argmax(1)
            correct += int((p == y).sum())
            n += len(y)
            if keep_predictions:
                preds.append(p.cpu())
                probs.append(logits.softmax(1).cpu())
                labels.append(y.cpu())
    finally:
        model.train(was_training)
    if n == 0:
        return EvalResult(float("nan"), float("nan"), 0)
    result = EvalResult(float(loss_sum) / n, correct / n, n)
    if keep_predictions:
        result.predictions, result.probabilities, result.labels = torch.cat(preds), torch.cat(probs), torch.cat(labels)
    return result


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    idx = labels.long() * num_classes + predictions.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)
