"""A run's recipe and data as training had them: ``run_config`` (the ``TrainConfig`` config.json recorded) and
``load_data`` (the dataset, loaded and split as in training). Evaluation, the report and compression (which fine-tunes
and calibrates on the run's own data) all start from these."""

from __future__ import annotations

import os
from dataclasses import fields

from convolab.runs.reader import Run

__all__ = ["run_config", "load_data"]


def run_config(run: Run):
    """The run's ``TrainConfig`` as config.json recorded it (fields this convolab does not know are dropped; a
    run written before config.json held the whole config gets the defaults, with its recipe where recorded)."""
    from convolab.train.config import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    saved = run.config.get("config")
    if isinstance(saved, dict) and saved:
        values = {k: v for k, v in saved.items() if k in known}
    else:
        values = {k: v for k, v in (run.config.get("recipe") or {}).items() if k in known}
        values.update(model=run.config.get("model") or "tutorial_cnn",
                      data=(run.config.get("dataset") or {}).get("name") or "fashion-mnist")
        if "seed" in run.config:
            values["seed"] = run.config["seed"]
    return TrainConfig(**values)


def load_data(run: Run, config, data_dir: str | os.PathLike | None = None):
    """The dataset ``run`` was trained on, loaded and split as in training (config.json's dataset settings).

    Raises:
        ValueError: config.json names no dataset, or the dataset does not fit the model (input size, channels or
            classes differ from the run's).
    """
    from convolab.data import load_dataset
    from convolab.data.resolve import recorded_data_dir

    if not isinstance(run.config.get("config"), dict):  # an older run: as the explanation tools load it
        from convolab.explain.inputs import run_dataset

        return run_dataset(run, data_dir=data_dir)
    ds = run.config.get("dataset") or {}
    name = ds.get("name") or config.data
    if not name:
        raise ValueError(f"{run.path}: config.json does not say which dataset the run used")
    data = load_dataset(name, data_dir=data_dir or recorded_data_dir(ds.get("data_dir", config.data_dir)),
                        val_fraction=ds.get("val_fraction", config.val_fraction), seed=config.seed,
                        download=config.download,
                        image_size=tuple(config.image_size) if config.image_size is not None else None,
                        max_bytes=config.max_memory, frames=config.frames)
    have, want = tuple(data.input_size), tuple(run.input_size)
    if have != want:
        raise ValueError(f"{name} has {'x'.join(map(str, have))} inputs but the model was trained on "
                         f"{'x'.join(map(str, want))}")
    if list(data.classes) != list(run.classes):
        raise ValueError(f"{name}'s classes differ from the run's ({len(data.classes)} vs {len(run.classes)} classes)")
    return data
