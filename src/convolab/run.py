"""``load_run``: a trained model back from its run directory, ready to predict.

Everything that works on a trained model (eval, predict, and later explain, report, summary)
starts from a :class:`Run`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from convolab.data.images import image_to_array, load_image
from convolab.data.loader import Normalizer
from convolab.train.rundir import CONFIG, METRICS, SUMMARY, WEIGHTS

__all__ = ["Run", "load_run", "read_weights_metadata"]

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


def read_weights_metadata(path: str | os.PathLike) -> dict:
    """The convolab metadata stored in a ``model.safetensors`` file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    if "convolab" not in meta:
        raise ValueError(f"{path}: has no convolab metadata; was it written by convolab train?")
    return json.loads(meta["convolab"])


@dataclass
class Run:
    """A trained model and what it was trained on."""

    path: Path
    model: nn.Module  # in eval mode
    config: dict  # config.json (empty if the folder holds only the weights file)
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]  # (C, H, W) the model was trained on
    summary: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def metrics(self) -> list[dict]:
        """The per-epoch rows of ``metrics.jsonl``."""
        from convolab.atomic import read_jsonl

        path = self.path / METRICS
        return read_jsonl(path) if path.exists() else []

    def to_array(self, image: ImageLike) -> np.ndarray:
        """One image -> uint8 (C, H, W) at the training size and channel count, as the training data was made.

        Accepts a file path, a PIL image, a uint8 NumPy array (H, W) or (H, W, C), or a uint8
        tensor (C, H, W).
        """
        c, h, w = self.input_size
        if isinstance(image, (str, os.PathLike)):
            return load_image(image, (h, w), c)
        if isinstance(image, torch.Tensor):
            t = image.detach().cpu()
            if t.dim() == 3:
                t = t.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
            image = t.squeeze(-1).numpy() if t.dim() == 3 and t.shape[-1] == 1 else t.numpy()
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                raise ValueError(f"expected a uint8 image array; got {image.dtype} (scale to 0..255 first)")
            if image.ndim == 3 and image.shape[-1] == 1:
                image = image[..., 0]
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise ValueError(f"cannot use {type(image).__name__} as an image")
        return image_to_array(image, (h, w), c)

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Images -> the normalised float batch (N, C, H, W) the model was trained on, on the model's device."""
        if isinstance(images, (list, tuple)):
            arrays = [self.to_array(im) for im in images]
        elif isinstance(images, torch.Tensor) and images.dim() == 4:
            arrays = [self.to_array(im) for im in images]
        else:
            arrays = [self.to_array(images)]
        batch = torch.from_numpy(np.stack(arrays)).to(self.device)
        return Normalizer(self.mean, self.std, self.device)(batch)

    @torch.inference_mode()
    def predict(self, images: ImageLike | Sequence[ImageLike], top_k: int = 5) -> list[list[dict]]:
        """Top-k classes per image: ``[[{"class", "index", "probability"}, ...], ...]``."""
        x = self.preprocess(images)
        probs = self.model(x).float().softmax(1)
        k = max(1, min(top_k, probs.shape[1]))
        p, idx = probs.topk(k, dim=1)
        return [[{"class": self.classes[int(i)], "index": int(i), "probability": float(q)}
                 for q, i in zip(pr.tolist(), ir.tolist())] for pr, ir in zip(p, idx)]


def load_run(path: str | os.PathLike, device: str | torch.device = "cpu") -> Run:
    """Load a run directory (or a ``model.safetensors`` written by convolab).

    Raises:
        FileNotFoundError: no such folder or no weights in it.
        ValueError: the weights file is not convolab's or does not match its model.
    """
    from safetensors.torch import load_file

    from convolab.models import create_model

    path = Path(path).expanduser()
    weights = path if path.is_file() else path / WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run directory")
    if not weights.exists():
        hint = " (training may not have finished)" if (path / CONFIG).exists() else ""
        raise FileNotFoundError(f"{path}: no {WEIGHTS} in it{hint}; is this a convolab run directory?")
    run_dir = weights.parent
    meta = read_weights_metadata(weights)
    kwargs = dict(meta["model_kwargs"])
    model = create_model(meta["model"], **kwargs)
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{weights}: weights do not fit model {meta['model']} ({str(e).splitlines()[0]})") from None
    model.to(device).eval()
    config = json.loads((run_dir / CONFIG).read_text()) if (run_dir / CONFIG).exists() else {}
    summary = json.loads((run_dir / SUMMARY).read_text()) if (run_dir / SUMMARY).exists() else {}
    c, h, w = meta["input_size"]
    return Run(run_dir, model, config, list(meta["classes"]), tuple(meta["mean"]), tuple(meta["std"]), (c, h, w),
               summary)
