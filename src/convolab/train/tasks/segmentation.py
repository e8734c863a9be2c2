"""Semantic segmentation: a class per pixel. Per-pixel cross-entropy (optionally plus soft Dice) with an ignore
index; pixel accuracy, per-class IoU and mean IoU from one confusion matrix accumulated on the device.

As in torchvision's ``references/segmentation``: IoU_k = TP_k / (TP_k + FP_k + FN_k) over the whole split
(not averaged per image), pixels marked ``ignore_index`` count nowhere, and the mean IoU averages the
classes that occur in the split's masks or predictions.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from convolab.data.augment import AugmentSpec
from convolab.train.tasks.base import NOT_AN_IMAGE_CLASSIFIER, EvalResult, PerClass, Task

__all__ = ["Segmentation", "soft_dice_loss", "iou_from_confusion"]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """1 - mean over classes of the soft Dice coefficient 2|P∩G| / (|P| + |G|) (Milletari et al. 2016), with P the
    softmax probabilities and G the one-hot masks, over the batch's pixels that are not ``ignore_index``."""
    k = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)  # (B, 1, H, W)
    p = logits.float().softmax(1) * valid
    g = F.one_hot(torch.where(valid.squeeze(1), target, 0), k).permute(0, 3, 1, 2) * valid  # (B, K, H, W)
    inter = (p * g).sum((0, 2, 3))
    denom = p.sum((0, 2, 3)) + g.sum((0, 2, 3))
    return 1 - ((2 * inter + 1) / (denom + 1)).mean()  # +1: a class absent from batch and prediction scores 1


def iou_from_confusion(cm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class IoU (K,) from a confusion matrix (row: true class, column: predicted) and which classes occur
    (in the masks or the predictions): IoU_k = cm[k, k] / (row_k + col_k - cm[k, k])."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.nan), union > 0


class Segmentation(Task):
    """Segmentation models (``[N, C, H, W] -> [N, K, H, W]``) on images with class-index masks."""

    name = "segmentation"
    input_kind = "segmentation"
    data_task = "segmentation"
    monitors = {"val_mean_iou": "max", "val_accuracy": "max", "val_loss": "min"}
    headline = (("pixel accuracy", "test_pixel_accuracy", "%"), ("mean IoU", "test_mean_iou", ""))
    predicts_masks = True
    report_skipped = {
        "gradcam": f"Grad-CAM is left out: {NOT_AN_IMAGE_CLASSIFIER}; a segmentation model scores every pixel.",
        "sanity": f"The attribution sanity checks are left out: {NOT_AN_IMAGE_CLASSIFIER}; a segmentation model "
                  "scores every pixel.",
    }
    one_class_images = False  # an image holds several classes
    report_first_images = ("one image per class does not fit masks (an image holds several classes): the first test "
                           "images.")
    report_confused_pairs = False  # the confusion counts pixels
    report_note = ("IoU of a class = TP / (TP + FP + FN) over all test pixels (not averaged per image); pixels marked "
                   "ignore count nowhere; the mean is over the classes that occur in the masks or the predictions.")
    report_columns = ("pixels", "IoU")

    @property
    def ignore_index(self) -> int:
        return self.config.ignore_index

    def build_augment(self, device: torch.device, seed: int):
        cfg = self.config
        light = cfg.augment != "none"
        # Shifts and mirrors move image and mask together; rotations, cutout and mixing are for labels only.
        spec = AugmentSpec(crop_pad=cfg.crop_pad if cfg.crop_pad is not None else (4 if light else 0),
                           hflip=cfg.hflip if cfg.hflip is not None else light)
        if not spec.active:
            return None, spec
        from convolab.data.pair_augment import PairAugment

        black = -torch.tensor(self.data.mean) / torch.tensor(self.data.std)  # a 0 pixel after normalisation
        return PairAugment(spec.crop_pad, spec.hflip, self.ignore_index, device, seed, fill=black), spec

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y = targets.long()
        loss = F.cross_entropy(outputs, y, ignore_index=self.ignore_index, label_smoothing=self.config.label_smoothing)
        if self.config.dice_weight:
            loss = loss + self.config.dice_weight * soft_dice_loss(outputs, y, self.ignore_index)
        return loss

    def batch_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        valid = targets != self.ignore_index
        # (max(1).indices: the same classes as argmax(1), several times faster on (N, K, H, W) outputs on a CPU)
        return {"correct": ((outputs.max(1).indices == targets) & valid).sum(), "pixels": valid.sum()}

    def stat_dtypes(self) -> dict[str, torch.dtype]:
        return {"correct": torch.long, "pixels": torch.long}

    def train_figures(self, sums: dict[str, float], seen: int) -> tuple[float, float]:
        return sums["loss_sum"] / seen, sums["correct"] / max(sums["pixels"], 1)

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, loader, keep: bool = False) -> EvalResult:
        k = self.data.num_classes
        was_training = model.training
        model.eval()
        cm = None
        loss_sum, n = torch.zeros((), dtype=torch.float64), 0
        kept_pred, kept_true = [], []
        try:
            for x, y in loader:
                logits = model(x).float()  # (B, K, H, W)
                y = y.long()
                loss_sum += (self.loss(logits, y) * len(y)).double().cpu()
                pred = logits.max(1).indices  # (B, H, W)
                valid = y != self.ignore_index
                counts = torch.bincount(y[valid] * k + pred[valid], minlength=k * k).view(k, k)
                cm = counts if cm is None else cm + counts
                n += len(y)
                if keep:
                    kept_pred.append(pred.to(torch.uint8).cpu())
                    kept_true.append(y.to(torch.uint8).cpu())
        finally:
            model.train(was_training)
        if n == 0:
            return EvalResult(float("nan"), float("nan"), 0)
        cm = cm.cpu()
        iou, present = iou_from_confusion(cm)
        total = int(cm.sum())
        result = EvalResult(float(loss_sum) / n, float(cm.diag().sum()) / max(total, 1), n, metrics={
            "mean_iou": float(iou[present].mean()) if bool(present.any()) else float("nan"),
            "per_class_iou": {c: (None if torch.isnan(v) else round(float(v), 6)) for c, v in zip(self.data.classes,
                                                                                             iou)},
            "confusion": cm})
        if keep:
            result.predictions, result.labels = torch.cat(kept_pred), torch.cat(kept_true)
        return result

    def row_fields(self, val: EvalResult | None) -> dict:
        return {"val_mean_iou": val.metrics["mean_iou"] if val is not None else None}

    def summary_fields(self, test: EvalResult) -> dict:
        return {"test_pixel_accuracy": test.accuracy, "test_mean_iou": test.metrics["mean_iou"],
                "test_per_class_iou": test.metrics["per_class_iou"]}

    def describe(self, result: EvalResult) -> str:
        return f"loss {result.loss:.4f} pixel acc {result.accuracy:.4f} mIoU {result.metrics['mean_iou']:.4f}"

    def plots(self, rows: list[dict], test: EvalResult, out: Path) -> None:
        from convolab.plotting import plot_curves, save_figure

        plot_curves(rows, out, label_smoothing=self.config.label_smoothing, num_classes=self.data.num_classes)
        save_figure(masks_figure(self.data.test.images[:6], test.labels[:6], test.predictions[:6], self.data.classes,
                                 self.ignore_index), out / "masks.png")

    def report_per_class(self, test: EvalResult) -> PerClass:
        """The pixel confusion matrix and, per class, its test pixels and its IoU (None: it occurs nowhere)."""
        cm = test.metrics["confusion"]
        iou = [test.metrics["per_class_iou"][c] for c in self.data.classes]
        return cm, [(c, int(cm[i].sum()), iou[i]) for i, c in enumerate(self.data.classes)]

    def report_figures(self, test: EvalResult) -> dict:
        """Bars of the per-class IoU, and the masks of the first 4 test images over them."""
        from convolab.plotting import iou_figure

        classes, shown = list(self.data.classes), min(4, test.n)
        return {"iou": iou_figure(classes, [test.metrics["per_class_iou"][c] for c in classes]),
                "masks": masks_figure(self.data.test.images[:shown], test.labels[:shown], test.predictions[:shown],
                                      classes, self.ignore_index)}


def masks_figure(images: torch.Tensor, truth: torch.Tensor, predicted: torch.Tensor, classes: list[str],
                 ignore_index: int):
    """Rows of image | true mask over the image | predicted mask over the image, one colour per class (class 0,
    the background, left uncoloured; ignored pixels grey)."""
    import matplotlib.pyplot as plt
    import numpy as np

    k = len(classes)
    colours = plt.get_cmap("tab20" if k > 10 else "tab10")(np.arange(k) % 20)[:, :3]  # (K, 3)

    def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        rgb = np.repeat(image, 3, -1) if image.shape[-1] == 1 else image[..., :3]
        out = rgb.astype(np.float32) / 255
        coloured = (mask > 0) & (mask != ignore_index)
        out[coloured] = 0.45 * out[coloured] + 0.55 * colours[np.minimum(mask[coloured], k - 1)]
        out[mask == ignore_index] = 0.5
        return out

    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
    for i in range(n):
        image = images[i].permute(1, 2, 0).numpy()  # (H, W, C) uint8
        for ax, (title, shown) in zip(axes[i], (("image", image.astype(np.float32) / 255),
                                                ("true", overlay(image, truth[i].numpy())),
                                                ("predicted", overlay(image, predicted[i].numpy())))):
            ax.imshow(shown.squeeze(-1) if shown.shape[-1] == 1 else shown, cmap="gray")
            ax.set_axis_off()
            if i == 0:
                ax.set_title(title, fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[c]) for c in range(1, k)]
    fig.legend(handles, classes[1:], loc="lower center", ncol=min(5, k - 1), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
