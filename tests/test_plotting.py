"""The run's figures say what they show: the loss curves are labelled for the loss each one is."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from convolab.plotting import curve_figures, loss_labels, plt, smoothed_loss_floor

ROWS = [{"epoch": 1, "train_loss": 0.9, "val_loss": 0.5, "train_accuracy": 0.7, "val_accuracy": 0.8},
        {"epoch": 2, "train_loss": 0.65, "val_loss": 0.30, "train_accuracy": 0.9, "val_accuracy": 0.92}]


def _legend(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_smoothed_train_loss_and_plain_val_loss_are_told_apart():
    """0.65 against 0.30 looked like a bug while both were labelled 'cross-entropy'."""
    figs = dict(curve_figures(ROWS, label_smoothing=0.1, num_classes=10))
    labels = _legend(figs["loss.png"])
    train, val = labels[0], labels[1]
    assert "label smoothing 0.1" in train and "train" in train
    assert "plain cross-entropy" in val and "smoothing" not in val
    assert figs["loss.png"].axes[0].get_ylabel() == "loss"
    floor = [line for line in figs["loss.png"].axes[0].get_lines() if line.get_linestyle() == "--"]
    assert len(floor) == 1 and floor[0].get_ydata()[0] == pytest.approx(smoothed_loss_floor(0.1, 10))
    assert "0.50" in labels[2]
    for f in figs.values():
        plt.close(f)


def test_unsmoothed_and_mixed_and_unknown_recipes():
    assert loss_labels(0.0)[0] == "train: cross-entropy (mean over the epoch)"
    assert "mixup/cutmix" in loss_labels(0.0, mixed=True)[0]
    assert "objective" in loss_labels(None)[0]  # not known: no claim that it is plain cross-entropy
    figs = dict(curve_figures(ROWS, label_smoothing=0.1, num_classes=10, mixed=True))
    assert not [line for line in figs["loss.png"].axes[0].get_lines() if line.get_linestyle() == "--"]
    for f in figs.values():
        plt.close(f)


@pytest.mark.parametrize("eps,k", [(0.1, 10), (0.2, 3), (0.05, 100)])
def test_the_floor_is_torchs_smoothed_cross_entropy_of_the_best_prediction(eps, k):
    """The best prediction is the smoothed target itself; torch's loss there is the floor."""
    target = torch.full((1, k), eps / k)
    target[0, 0] += 1 - eps
    loss = F.cross_entropy(target.log(), torch.tensor([0]), label_smoothing=eps)
    assert smoothed_loss_floor(eps, k) == pytest.approx(float(loss), rel=1e-5)
    assert smoothed_loss_floor(0.0, k) == 0.0
    assert smoothed_loss_floor(0.1, 10) == pytest.approx(0.5003, abs=1e-4)
    assert not math.isnan(smoothed_loss_floor(1e-9, 2))


def test_iou_bars_are_the_ious_and_a_class_that_occurs_nowhere_is_na():
    """The per-class IoU chart (the segmentation report's; here since the task draws it, below the report)."""
    from convolab.plotting import iou_figure

    fig = iou_figure(["background", "cat", "dog"], [0.9, None, 0.25])
    ax = fig.axes[0]
    assert [p.get_width() for p in ax.patches] == pytest.approx([0.9, 0.0, 0.25])
    assert [t.get_text() for t in ax.texts] == ["0.900", "n/a", "0.250"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["background", "cat", "dog"]
    assert ax.get_xlim() == (0, 1)
    plt.close(fig)
