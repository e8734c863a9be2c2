"""Figures (matplotlib) of a run."""

from convolab.plotting import plot_confusion, plot_curves, plot_lr_find, plot_lr_steps, plot_predictions

__all__ = ["plot_curves", "plot_predictions", "plot_confusion", "plot_lr_find", "plot_lr_steps"]
