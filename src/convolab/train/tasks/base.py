"""The task seam: what differs between problems (classification, segmentation, clips) lives in a ``Task``.

The training loop knows nothing of labels, masks or clips: it asks its task for the loss of a batch,
the batch's share of the epoch's figures (kept on the device, summed across processes), the evaluation
of a split, the fields of the metrics rows and of the summary, and the plots; ``convolab report`` asks it
which sections apply, the test section's per-class table and its figures. Adding a problem is one
module with a ``Task`` subclass and one ``@register_task`` (see ``convolab.train.tasks``).

Modelled on Lightning's split between what varies per problem (``LightningModule.training_step``) and
the loop that is the same for all.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from convolab.train.losses import classification_loss, takes_label_smoothing
from convolab.train.metrics import EvalResult, confusion_matrix

__all__ = ["Task", "EvalResult", "NOT_AN_IMAGE_CLASSIFIER"]

PerClass = tuple[torch.Tensor, list[tuple[str, int, float | None]]]  # see Task.report_per_class

# Why the report leaves out the attribution sections for a task whose model is not an image classifier.
log = logging.getLogger(__name__)

NOT_AN_IMAGE_CLASSIFIER = ("convolab.explain's attributions explain one class score per image of an image classifier "
                           "([N, C, H, W] -> [N, K])")


class Task:
    """What a training run of one kind of problem needs from its problem. Subclasses set ``name`` and
    ``input_kind`` (the model registry's kind of model it trains) and override what differs.

    Args:
        config: the run's ``TrainConfig``.
        data: the loaded dataset (``convolab.data.ImageDataset``).
    """

    name = ""
    input_kind = "image"  # models of this registry input kind train with this task
    data_task = "classification"  # the dataset's ``task`` this task reads
    monitors = {"val_accuracy": "max", "val_loss": "min"}  # what --monitor may watch, and which way is better
    unit = "images"  # what the printed figures call one sample
    # the main test figures, in order: (label, summary.json key, "%" for a percentage or "" for a 4-decimal
    # ratio); the report's header and test section, and `convolab eval`, show these
    headline: tuple[tuple[str, str, str], ...] = (("test accuracy", "test_accuracy", "%"),)
    predicts_masks = False  # `convolab predict` writes a mask per image instead of printing the top classes
    # -- what `convolab report` shows (its sections are anchored "kernels", "features", "gradcam", "sanity" ...)
    report_skipped: dict[str, str] = {}  # section anchor -> one sentence why it does not apply (shown instead)
    one_class_images = True  # a test sample is one image of one class: the report shows the predictions grid, the
    # images of the most-confused pairs and the feature maps of one test image per class
    report_first_images = "the first test images."  # else: the note under the feature maps of the first test images
    report_confused_pairs = True  # the test section lists the most-confused pairs of classes
    report_note = ""  # how the test section's figures are computed, shown under them
    report_columns = ("images", "accuracy")  # the per-class table's columns: what it counts, what it measures
    losses: tuple[str, ...] = ("cross_entropy",)  # the --loss values it trains with (convolab.train.losses)
    jitters = False  # whether its augmentation does --jitter (colour jitter)

    def __init__(self, config, data):
        self.config, self.data = config, data

    # -- checks -----------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse a dataset this task cannot train on, and a --monitor it does not compute (ValueError)."""
        if self.data.task != self.data_task:
            raise ValueError(f"{self.config.model} is a{'n' if self.input_kind[0] in 'aeiou' else ''} "
                             f"{self.input_kind} model ({self.name}) but {self.data.name} is a {self.data.task} "
                             f"dataset; choose a {self.data.task} model (`convolab models` lists each kind) or "
                             f"{self.data_task} data")
        if self.config.monitor not in self.monitors:
            raise ValueError(f"--monitor {self.config.monitor} is not measured for {self.name}; choose one of "
                             f"{', '.join(self.monitors)}")
        cfg = self.config
        if cfg.loss not in self.losses:
            raise ValueError(f"--loss {cfg.loss} is not available for {self.name}, which trains with "
                             f"{' or '.join(self.losses)}{'' if len(self.losses) > 1 else ' only'}; drop --loss")
        if cfg.jitter and not self.jitters:
            raise ValueError(f"--jitter is not available for {self.name} (colour jitter is in the image classifiers' "
                             f"batch augmentation); drop it")
        if cfg.label_smoothing and not takes_label_smoothing(cfg.loss):
            log.warning("--loss %s scores class indices: --label-smoothing %g does not change it", cfg.loss,
                        cfg.label_smoothing)

    # -- training ---------------------------------------------------------------------------
    def build_augment(self, device: torch.device, seed: int):
        """The batch augmentation (an object with ``__call__``, ``state_dict``, ``load_state_dict`` and
        ``generator``; None when nothing is augmented) and its settings (a ``convolab.data.augment.AugmentSpec``)."""
        from convolab.data.augment import AugmentSpec

        return None, AugmentSpec()

    def augment(self, augment, x: torch.Tensor, y: torch.Tensor):
        """Apply ``augment`` to a training batch: (x, y, mix) where ``mix`` is a ``convolab.data.augment.Mix`` when
        the batch was blended with a shuffled copy of itself (classification), else None."""
        x, y = augment(x, y)
        return x, y, None

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean training loss of a batch: ``--loss`` (``convolab.train.losses``) of the outputs (N, K) against
        class indices (N,), label-smoothed, or against soft targets (N, K) given as they are (a teacher's
        probabilities in distillation)."""
        return classification_loss(self.config.loss, outputs, targets, self.config.label_smoothing)

    def batch_stats(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """A training batch's share of the epoch's figures other than the loss, as 0-d device tensors that add up
        (``correct`` is required; e.g. ``pixels`` for segmentation). No host sync."""
        return {"correct": (outputs.argmax(1) == targets).sum()}

    def stat_dtypes(self) -> dict[str, torch.dtype]:
        """The dtype of each of :meth:`batch_stats`' sums (the epoch's accumulators are made from these)."""
        return {"correct": torch.long}

    def train_figures(self, sums: dict[str, float], seen: int) -> tuple[float, float]:
        """(train_loss, train_accuracy) of an epoch from its sums (``loss_sum`` and the stats) and samples."""
        return sums["loss_sum"] / seen, sums["correct"] / seen

    # -- evaluation -------------------------------------------------------------------------
    def eval_model(self, model: nn.Module, tta: bool) -> nn.Module:
        """The model evaluation runs (wrapped for test-time augmentation where the task has one)."""
        return model

    def evaluate(self, model: nn.Module, loader, keep: bool = False) -> EvalResult:
        raise NotImplementedError

    def row_fields(self, val: EvalResult | None) -> dict:
        """The task's fields of a metrics.jsonl row (beyond val_loss and val_accuracy)."""
        return {}

    def monitor_value(self, val: EvalResult) -> float:
        """The value of --monitor in ``val``."""
        key = self.config.monitor.removeprefix("val_")
        return val.loss if key == "loss" else val.accuracy if key == "accuracy" else float(val.metrics[key])

    def summary_fields(self, test: EvalResult) -> dict:
        """The task's fields of summary.json (beyond test_loss, test_accuracy and the run's bookkeeping)."""
        return {}

    def describe(self, result: EvalResult) -> str:
        """One line of the figures of an evaluation, for the log."""
        return f"loss {result.loss:.4f} acc {result.accuracy:.4f}"

    def plots(self, rows: list[dict], test: EvalResult, out: Path) -> None:
        """Write the task's plots of a finished run into ``out`` (the run's plots folder)."""

    # -- the report -------------------------------------------------------------------------
    def report_per_class(self, test: EvalResult) -> PerClass:
        """The report's per-class breakdown of a test evaluation kept with ``keep=True``: the (K, K) confusion
        matrix (row: true class, column: predicted) and one (class, count, value) row per class: its test samples
        and the accuracy on them (None where the value does not exist, e.g. the IoU of a class that occurs
        nowhere)."""
        cm = confusion_matrix(test.labels, test.predictions, self.data.num_classes)
        accuracy = cm.diag().double() / cm.sum(1).clamp_min(1).double()
        return cm, [(c, int(cm[i].sum()), float(accuracy[i])) for i, c in enumerate(self.data.classes)]

    def report_figures(self, test: EvalResult) -> dict:
        """The test section's figures (name -> matplotlib figure, not closed): the confusion matrix, and a grid of
        predictions where a test sample is one image of one class."""
        from convolab.plotting import confusion_figure, predictions_figure

        figures = {"confusion": confusion_figure(self.report_per_class(test)[0], list(self.data.classes))}
        if self.one_class_images:
            figures["predictions"] = predictions_figure(self.data.test.images, test.labels, test.predictions,
                                                        test.probabilities, list(self.data.classes))
        return figures
