"""Image classification: one label per image, ``--loss`` on the logits (cross-entropy by default); accuracy, the
confusion matrix, precision, recall and F1 per class and macro, top-5 accuracy with more than 5 classes
(``convolab.train.metrics``)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from convolab.data.augment import BatchAugment, flips_keep_class, resolve_augment
from convolab.train.losses import LOSSES
from convolab.train.metrics import FlipAverage, class_summary, confusion_matrix, evaluate
from convolab.train.tasks.base import EvalResult, Task

__all__ = ["Classification"]

log = logging.getLogger(__name__)


class Classification(Task):
    """Image classifiers (``[N, C, H, W] -> [N, K]`` logits) on labelled images."""

    name = "classification"
    input_kind = "image"
    data_task = "classification"
    losses = LOSSES
    jitters = True

    def check(self) -> None:
        super().check()
        if self.config.tta and flips_keep_class(self.data.name) is False:
            log.warning("--tta averages over mirror images, which are other symbols (or none) for %s", self.data.name)

    def build_augment(self, device: torch.device, seed: int):
        cfg = self.config
        spec = resolve_augment(cfg.augment, self.data.name, self.data.image_size, crop_pad=cfg.crop_pad,
                               hflip=cfg.hflip, rotate=cfg.rotate, cutout=cfg.cutout, mixup=cfg.mixup,
                               cutmix=cfg.cutmix, jitter=cfg.jitter)
        black = -torch.tensor(self.data.mean) / torch.tensor(self.data.std)  # a 0 pixel after normalisation
        augment = BatchAugment(spec, black, device, seed=seed, mean=self.data.mean,
                               std=self.data.std) if spec.active else None
        return augment, spec

    def augment(self, augment, x, y):
        x, mix = augment(x, y)  # (mixup/cutmix blend the batch with a shuffled copy: the loss mixes too)
        return x, y, mix

    def eval_model(self, model: nn.Module, tta: bool) -> nn.Module:
        return FlipAverage(model) if tta else model

    def evaluate(self, model: nn.Module, loader, keep: bool = False) -> EvalResult:
        return evaluate(model, loader, keep_predictions=keep)

    def summary_fields(self, test: EvalResult) -> dict:
        return class_summary(test, self.data.classes)

    def plots(self, rows: list[dict], test: EvalResult, out: Path) -> None:
        from convolab.plotting import plot_confusion, plot_curves, plot_predictions

        cfg = self.config
        # (another --loss than cross-entropy: the curve is named the training objective, with no smoothing floor)
        smoothing = cfg.label_smoothing if cfg.loss == "cross_entropy" else None
        plot_curves(rows, out, label_smoothing=smoothing, num_classes=self.data.num_classes,
                    mixed=bool(cfg.mixup or cfg.cutmix))
        plot_predictions(self.data.test.images, test.labels, test.predictions, test.probabilities,
                         self.data.classes, out / "predictions.png", seed=cfg.seed)
        cm = confusion_matrix(test.labels, test.predictions, self.data.num_classes)
        plot_confusion(cm, self.data.classes, out / "confusion.png")
