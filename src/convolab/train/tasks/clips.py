"""Clip classification: a label per clip of T frames (``[N, C, T, H, W]``), ``--loss`` (cross-entropy by default);
clip accuracy and video accuracy (the softmax of a video's clips averaged, as torchvision's
``references/video_classification`` does); precision, recall, F1 and top-5 accuracy per clip
(``convolab.train.metrics.class_summary``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from convolab.data.augment import AugmentSpec
from convolab.train.losses import LOSSES
from convolab.train.metrics import class_summary, confusion_matrix, evaluate
from convolab.train.tasks.base import NOT_AN_IMAGE_CLASSIFIER, EvalResult, Task

__all__ = ["ClipClassification", "video_accuracy"]


def video_accuracy(probabilities: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> float:
    """Accuracy per video: each video's clip probabilities (n, K) averaged, argmax against its label."""
    videos, index = torch.unique(groups, return_inverse=True)
    k = probabilities.shape[1]
    mean = torch.zeros(len(videos), k, dtype=torch.float64).index_add_(0, index, probabilities.double())
    label = torch.zeros(len(videos), dtype=torch.long).scatter_(0, index, labels.long())
    return float((mean.argmax(1) == label).double().mean())


class ClipClassification(Task):
    """Clip models (3D CNNs: ``[N, C, T, H, W] -> [N, K]``) on labelled clips."""

    name = "clips"
    input_kind = "clip"
    data_task = "clips"
    losses = LOSSES
    monitors = {"val_accuracy": "max", "val_loss": "min", "val_video_accuracy": "max"}
    unit = "clips"
    headline = (("clip accuracy", "test_clip_accuracy", "%"), ("video accuracy", "test_video_accuracy", "%"))
    report_note = "video accuracy: each video's clip probabilities averaged, then the top class."
    report_columns = ("clips", "clip accuracy")
    report_skipped = {
        "kernels": "First-layer kernels are left out: a clip model's first convolution is 3-D (time x height x "
                   "width) and the kernel mosaic draws 2-D filters.",
        "features": "Feature maps are left out: a clip model's maps are 3-D (time x height x width) and the "
                    "report draws 2-D maps.",
        "gradcam": f"Grad-CAM is left out: {NOT_AN_IMAGE_CLASSIFIER}; a clip model takes [N, C, T, H, W] clips.",
        "sanity": f"The attribution sanity checks are left out: {NOT_AN_IMAGE_CLASSIFIER}; a clip model takes "
                  "[N, C, T, H, W] clips.",
    }
    one_class_images = False  # a clip has no one picture to show

    def build_augment(self, device: torch.device, seed: int):
        cfg = self.config
        # No flip unless asked: mirroring turns a leftward motion into a rightward one.
        spec = AugmentSpec(crop_pad=cfg.crop_pad if cfg.crop_pad is not None else (2 if cfg.augment != "none" else 0),
                           hflip=bool(cfg.hflip))
        if not spec.active:
            return None, spec
        from convolab.data.clip_augment import ClipAugment

        black = -torch.tensor(self.data.mean) / torch.tensor(self.data.std)  # a 0 pixel after normalisation
        return ClipAugment(spec.crop_pad, spec.hflip, device, seed, fill=black), spec

    def evaluate(self, model: nn.Module, loader, keep: bool = False) -> EvalResult:
        result = evaluate(model, loader, keep_predictions=True)
        groups = getattr(loader, "groups", None)
        if result.n:
            groups = groups.cpu() if groups is not None else torch.arange(result.n)
            result.metrics["video_accuracy"] = video_accuracy(result.probabilities, result.labels, groups)
        if not keep:
            result.predictions = result.probabilities = result.labels = None
        return result

    def row_fields(self, val: EvalResult | None) -> dict:
        return {"val_video_accuracy": val.metrics.get("video_accuracy") if val is not None else None}

    def summary_fields(self, test: EvalResult) -> dict:
        return {"test_clip_accuracy": test.accuracy, "test_video_accuracy": test.metrics.get("video_accuracy"),
                **class_summary(test, self.data.classes)}

    def describe(self, result: EvalResult) -> str:
        return (f"loss {result.loss:.4f} clip acc {result.accuracy:.4f} video acc "
                f"{result.metrics.get('video_accuracy', float('nan')):.4f}")

    def plots(self, rows: list[dict], test: EvalResult, out: Path) -> None:
        from convolab.plotting import plot_confusion, plot_curves

        cfg = self.config  # (another --loss than cross-entropy: the curve is named the training objective)
        smoothing = cfg.label_smoothing if cfg.loss == "cross_entropy" else None
        plot_curves(rows, out, label_smoothing=smoothing, num_classes=self.data.num_classes)
        cm = confusion_matrix(test.labels, test.predictions, self.data.num_classes)
        plot_confusion(cm, self.data.classes, out / "confusion.png")
