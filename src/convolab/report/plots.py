"""Moved to :mod:`convolab.plotting` (train, explain and report all draw with it); this name stays until every
importer uses the new one (issue 16)."""

from convolab.plotting import (
    confusion_figure,
    curve_figures,
    loss_labels,
    lr_steps_figure,
    plot_confusion,
    plot_curves,
    plot_lr_find,
    plot_lr_steps,
    plot_predictions,
    plt,
    predictions_figure,
    save_figure,
    smoothed_loss_floor,
)

__all__ = ["plot_curves", "curve_figures", "loss_labels", "smoothed_loss_floor", "plot_predictions",
           "predictions_figure", "plot_confusion", "confusion_figure", "save_figure", "plot_lr_find", "plot_lr_steps",
           "lr_steps_figure", "plt"]
