"""What a run records of itself: config.json's content, the weights' metadata, the versions that matter."""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["run_record", "weights_metadata", "versions"]


def versions() -> dict:
    """Versions that matter for reproducing a run."""
    from importlib.metadata import PackageNotFoundError, version

    from convolab import __version__

    try:
        tv = version("torchvision")
    except PackageNotFoundError:
        tv = None
    return {"convolab": __version__, "torch": torch.__version__, "torchvision": tv,
            "numpy": np.__version__, "python": platform.python_version()}


def weights_metadata(model: nn.Module, data) -> dict:
    """What ``model.safetensors`` carries so that it alone rebuilds and feeds the model."""
    cfg = dict(model.convolab_cfg)
    return {"format": 1, "model": cfg.pop("name"), "model_kwargs": cfg, "classes": list(data.classes),
            "mean": list(data.mean), "std": list(data.std), "input_size": list(data.input_size)}


def run_record(trainer, kind: str) -> dict:
    """What config.json records of ``trainer``'s run (the sink adds the format's own fields)."""
    self = trainer
    cfg, data = self.config, self.data
    kwargs = {k: v for k, v in self.model.convolab_cfg.items() if k != "name"}
    return {
        "kind": kind, "task": self.task.name, "model": cfg.model, "model_kwargs": kwargs,
        "build": ({"kind": "registry", "name": cfg.model, "kwargs": kwargs} if self._given["model"] is None
                  else getattr(self._given["model"], "convolab_build", None)
                  or {"kind": "given", "name": type(self.model).__name__}),
        "dataset": {"name": data.name, "source": data.source, "data_dir": cfg.data_dir,
                    "val_fraction": cfg.val_fraction, "classes": data.classes,
                    "sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
                    "input_size": list(data.input_size), "mean": list(data.mean), "std": list(data.std)},
        "recipe": {k: getattr(cfg, k) for k in ("epochs", "batch_size", "eval_batch_size", "lr", "optimizer",
                                               "momentum", "weight_decay", "channels_last", "schedule",
                                               "accum_steps", "label_smoothing", "clip_grad_norm", "augment")}
        | ({"batch_size": self.batch_size_used, "batch_size_given": cfg.batch_size}
           if self.batch_size_used != cfg.batch_size else {}),
        "augment": asdict(self.augment_spec),
        "seed": cfg.seed, "device": str(self.device), "world_size": self.dist.world_size,
        "command": sys.argv if Path(sys.argv[0]).name in ("convolab", "__main__.py") else None,
        "versions": versions(), "config": cfg.to_dict(),
    } | ({"given": given} if (given := sorted(k for k, v in self._given.items() if v)) else {})

