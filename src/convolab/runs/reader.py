"""``load_run``: a trained model back from its run directory, ready to predict.

Everything that works on a trained model (eval, predict, explain, report, summary) starts from a :class:`Run`.
The run's files are checked (:mod:`convolab.runs.schema`) before anything is built, and the model is rebuilt
the way config.json's ``build`` says (:mod:`convolab.runs.build`; format-1 runs: from the weights metadata).
"""

from __future__ import annotations

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
from convolab.runs.build import build_model
from convolab.runs.layout import CONFIG, METRICS, SUMMARY, WEIGHTS
from convolab.runs.schema import (
    CONFIG_SCHEMA,
    SUMMARY_SCHEMA,
    check_weights_metadata,
    config_format,
    parse_json,
    read_json,
    read_json_text,
    validate,
)
from convolab.tensor_files import file_kind

__all__ = ["Run", "load_run", "read_weights_metadata"]

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


def _check_safetensors(path: Path) -> None:
    """Refuse a weights file that is not safetensors by content, saying what it is instead."""
    try:
        kind = file_kind(path)
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    if kind in ("torch-zip", "pickle"):
        raise ValueError(f"{path}: a torch pickle (.pt/.pth), not safetensors; a run's weights are a model.safetensors "
                         "(to train from a .pth state dict use convolab train --init-from)")
    if kind != "safetensors":
        raise ValueError(f"{path}: not a readable safetensors file (no safetensors header)")


def read_weights_metadata(path: str | os.PathLike) -> dict:
    """The convolab metadata stored in a ``model.safetensors`` file, validated (see ``convolab.runs.schema``).

    Raises:
        ValueError: not a safetensors file, no convolab metadata, or metadata that is malformed, inconsistent
            (fewer class names than outputs, a mean per channel missing ...) or absurd (sizes of gigabytes).
    """
    from safetensors import safe_open

    path = Path(path)
    _check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:200]})") from None
    if "convolab" not in meta:
        raise ValueError(f"{path}: has no convolab metadata; was it written by convolab train?")
    what = f"{path} (metadata 'convolab')"
    return check_weights_metadata(parse_json(meta["convolab"], what), what)


@dataclass
class Run:
    """A trained model and what it was trained on."""

    path: Path
    model: nn.Module  # in eval mode
    config: dict  # config.json (empty if the folder holds only the weights file)
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, ...]  # (C, H, W) the model was trained on; (C, T, H, W) for clips
    summary: dict = field(default_factory=dict)
    task: str = "classification"  # config.json's "task" (format 1 runs are classification)
    format: int = 1  # config.json's "format" (1: written before the field existed, or no config.json)
    build: dict = field(default_factory=dict)  # how the model was rebuilt: {"kind": "registry", "name", "kwargs"}

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

    def to_clip(self, video: str | os.PathLike | torch.Tensor) -> torch.Tensor:
        """One video -> uint8 (C, T, H, W): its first T frames at the training size and channel count, resized as
        the training clips were (bilinear, antialiased).

        Accepts a video file or uint8 frames (T', H', W', C') as :func:`convolab.data.video_io.read_video` gives.

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file cannot be decoded, or holds fewer than T frames.
        """
        import torch.nn.functional as F

        from convolab.data.video_io import read_video

        c, t, h, w = self.input_size
        if isinstance(video, torch.Tensor):
            frames, where = video.detach().cpu(), "the video"
            if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] not in (1, 3):
                raise ValueError(f"expected uint8 frames (T, H, W, 1 or 3); got {frames.dtype} {tuple(frames.shape)}")
            if frames.shape[-1] != c:  # grey <-> RGB as PyAV converts: repeat, or ITU-R 601 luma
                if c == 3:
                    frames = frames.expand(-1, -1, -1, 3)
                else:
                    luma = (frames.float() @ torch.tensor([0.299, 0.587, 0.114])).round().clamp(0, 255)  # (T, H, W)
                    frames = luma.to(torch.uint8)[..., None]
        else:
            frames, where = read_video(video, max_frames=t, channels=c), str(video)  # (T', H', W', C)
        n = frames.shape[0]
        if n < t:
            raise ValueError(f"{where}: {n} frame{'s' if n != 1 else ''}, shorter than the {t} frames of a clip "
                             "this model takes")
        clip = frames[:t].permute(0, 3, 1, 2)  # (T, C, H', W')
        if tuple(clip.shape[-2:]) != (h, w):  # as convolab.data.clips decodes a training video
            clip = F.interpolate(clip.float(), size=(h, w), mode="bilinear", antialias=True, align_corners=False)
            clip = clip.round_().clamp_(0, 255).to(torch.uint8)
        return clip.permute(1, 0, 2, 3).contiguous()  # (C, T, H, W)

    def preprocess(self, images: ImageLike | Sequence[ImageLike]) -> torch.Tensor:
        """Inputs -> the normalised float batch the model was trained on, on the model's device: images
        (N, C, H, W), or for a clip run videos (N, C, T, H, W) (see :meth:`to_clip`)."""
        clips = len(self.input_size) == 4  # the model takes (C, T, H, W) clips, decoded from videos
        convert = self.to_clip if clips else self.to_array
        if isinstance(images, (list, tuple)):
            arrays = [convert(im) for im in images]
        elif isinstance(images, torch.Tensor) and images.dim() == len(self.input_size) + 1 and not clips:
            arrays = [convert(im) for im in images]
        else:
            arrays = [convert(images)]
        batch = torch.stack([torch.as_tensor(a) for a in arrays]).to(self.device)
        return Normalizer(self.mean, self.std, self.device)(batch)

    @torch.inference_mode()
    def predict(self, images: ImageLike | Sequence[ImageLike], top_k: int = 5, *, mc_samples: int | None = None,
                seed: int = 0) -> list[list[dict]] | list[dict] | torch.Tensor:
        """What the run's model predicts for each input (told apart by shapes, so the reader names no task).

        Classification and clips (inputs are videos): the top-k classes per input,
        ``[[{"class", "index", "probability"}, ...], ...]``. Segmentation: the class-index masks, uint8
        (N, H, W) at the model's input size (``run.predict([image])[0]`` is one image's (H, W) mask).

        With ``mc_samples=S`` (classification and clips; MC dropout, :mod:`convolab.explain.uncertainty`): ``S``
        passes with the dropout layers on, seeded with ``seed``; per input ``{"top_k": [{"class", "index",
        "probability", "std"}, ...], "std", "entropy", "mutual_information", "mc_samples"}``: the top-k classes of
        the mean probabilities with each one's standard deviation over the passes, the top class's spread again as
        ``std``, the predictive entropy and the mutual information (nats).

        Raises:
            ValueError: ``mc_samples`` below 2, a model without dropout layers, or one that is not a classifier
                (segmentation).
        """
        x = self.preprocess(images)
        if mc_samples is not None:
            return self._predict_mc(x, top_k, mc_samples, seed)
        out = self.model(x).float()  # (N, K) class scores, or (N, K, H, W) per pixel
        if out.dim() == 4:  # scores per pixel (segmentation)
            return out.max(1).indices.to(torch.uint8).cpu()  # (N, K, H, W) logits -> (N, H, W) classes
        return self._top_k(out.softmax(1), top_k)

    def _top_k(self, probs: torch.Tensor, top_k: int, std: torch.Tensor | None = None) -> list[list[dict]]:
        """``[[{"class", "index", "probability"(, "std")}, ...], ...]``: the ``top_k`` of each row of ``probs``."""
        k = max(1, min(top_k, probs.shape[1]))
        p, idx = probs.topk(k, dim=1)
        spread = std.gather(1, idx).tolist() if std is not None else [[None] * k] * len(idx)
        return [[{"class": self.classes[int(i)], "index": int(i), "probability": float(q),
                  **({"std": float(s)} if s is not None else {})}
                 for q, i, s in zip(pr, ir, sr)] for pr, ir, sr in zip(p.tolist(), idx.tolist(), spread)]

    def _predict_mc(self, x: torch.Tensor, top_k: int, samples: int, seed: int) -> list[dict]:
        from convolab.explain.uncertainty import mc_dropout

        mc = mc_dropout(self.model, x, samples, seed)
        tops = self._top_k(mc.probabilities, top_k, mc.std)
        return [{"top_k": top, "std": float(s), "entropy": float(h), "mutual_information": float(i),
                 "mc_samples": mc.samples}
                for top, s, h, i in zip(tops, mc.top_std.tolist(), mc.entropy.tolist(),
                                        mc.mutual_information.tolist())]


def _read_config(path: Path) -> dict:
    """config.json, its format checked before its fields (a newer format is named as such, not as a bad field)."""
    config = read_json_text(path)
    config_format(config, str(path))
    validate(config, CONFIG_SCHEMA, str(path))
    return config


def _check_same_model(config: dict, meta: dict, config_path: Path, weights: Path) -> None:
    """A registry ``build`` in config.json must name the model and arguments the weights metadata names (it is
    checked after the metadata itself, so that a bad metadata field is named as such).

    Raises:
        ValueError: config.json and the weights metadata describe different models (one of them was edited).
    """
    build = config["build"]
    if (build.get("name"), build.get("kwargs")) != (meta["model"], meta["model_kwargs"]):
        raise ValueError(f"{config_path}: field 'build' describes {build.get('name')} {build.get('kwargs')}, but "
                         f"{weights} holds the weights of {meta['model']} {meta['model_kwargs']}; expected the same "
                         "model in both (was one of them edited?)")


def load_run(path: str | os.PathLike, device: str | torch.device = "cpu") -> Run:
    """Load a run directory (or a ``model.safetensors`` written by convolab).

    Raises:
        FileNotFoundError: no such folder or no weights in it.
        ValueError: a file is not convolab's, is of a newer format, or does not match its model.
    """
    path = Path(path).expanduser()
    weights = path if path.is_file() else path / WEIGHTS
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run directory")
    if not weights.exists():
        hint = " (training may not have finished)" if (path / CONFIG).exists() else ""
        raise FileNotFoundError(f"{path}: no {WEIGHTS} in it{hint}; is this a convolab run directory?")
    run_dir = weights.parent
    # The small files first: a bad config.json or summary.json is refused before the model is built.
    config = _read_config(run_dir / CONFIG) if (run_dir / CONFIG).exists() else {}
    summary = read_json(run_dir / SUMMARY, SUMMARY_SCHEMA) if (run_dir / SUMMARY).exists() else {}
    meta = read_weights_metadata(weights)
    build = config.get("build")
    if build is not None and build["kind"] != "registry":  # a pruned or quantized model: only config.json says how
        model = build_model(build, weights, str(run_dir / CONFIG), "build")
    else:  # a registry model, from the weights metadata (a weights file alone rebuilds its model)
        build = {"kind": "registry", "name": meta["model"], "kwargs": meta["model_kwargs"]}
        model = build_model(build, weights, f"{weights} (metadata 'convolab')", None)
        if "build" in config:
            _check_same_model(config, meta, run_dir / CONFIG, weights)
    model.to(device).eval()
    return Run(run_dir, model, config, list(meta["classes"]), tuple(meta["mean"]), tuple(meta["std"]),
               tuple(meta["input_size"]), summary, task=config.get("task", "classification"),
               format=config.get("format", 1), build=build)
