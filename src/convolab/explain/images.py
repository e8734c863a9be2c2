"""Explain a trained run's predictions for image files: overlay PNGs and raw maps (what ``convolab explain`` does)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from convolab.atomic import write_bytes
from convolab.explain.attribution import METHODS, attribute, integrated_gradients_gap
from convolab.explain.inputs import resolve_class, unique_stem
from convolab.explain.layers import resolve_layer
from convolab.explain.overlay import save_overlay

__all__ = ["explain_images"]


def explain_images(run, images: list[str], methods: list[str], out_dir: str | Path, *, target: str | int | None = None,
                   layer: str | None = None, overwrite: bool = False) -> list[dict]:
    """Attribution maps for each image and method, written to ``out_dir``.

    For image ``cat.png`` and method ``gradcam``: ``cat_gradcam.png`` (input, map, overlay) and
    ``cat_gradcam.npy`` (the raw map). An image that cannot be read gets a record with ``error``
    and the others go on. Existing files are never replaced unless ``overwrite``.

    Returns one record per image: the file, predicted class and probability, target, and per method
    the paths and map statistics (integrated gradients also their completeness gap).
    """
    for m in methods:
        if m not in METHODS:
            from convolab.errors import UnknownNameError

            raise UnknownNameError("method", m, METHODS)
    model = run.model
    tgt_index = None if target is None else resolve_class(run.classes, target)
    if layer is not None or any(m in ("gradcam", "gradcam++") for m in methods):
        layer = resolve_layer(model, layer)[0]
    out = Path(out_dir)
    used: set[str] = set()
    plan = [(img, unique_stem(img, used)) for img in images]
    if not overwrite:
        taken = [out / f"{stem}_{m}{ext}" for _, stem in plan for m in methods for ext in (".png", ".npy")]
        taken = [p for p in taken if p.exists()]
        if taken:
            raise FileExistsError(f"{taken[0]} exists ({len(taken)} file(s) would be replaced); "
                                  "choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for image, stem in plan:
        try:
            array = run.to_array(image)  # uint8 (C, H, W) at the training size, as the training data was made
        except (ValueError, OSError) as e:
            records.append({"image": image, "error": str(e)})
            continue
        x = run.preprocess(torch.from_numpy(np.array(array)))
        with torch.no_grad():
            probs = model(x).softmax(1)[0]
        pred = int(probs.argmax())
        tgt = pred if tgt_index is None else tgt_index
        record = {"image": image, "predicted": run.classes[pred], "predicted_index": pred,
                  "probability": float(probs[pred]), "target": run.classes[tgt], "target_index": tgt,
                  "target_probability": float(probs[tgt]), "layer": layer, "methods": {}}
        for method in methods:
            maps = attribute(model, x, method, tgt, layer)
            a = maps[0].detach().cpu()
            png, npy = out / f"{stem}_{method}.png", out / f"{stem}_{method}.npy"
            title = f"{method}: {run.classes[tgt]} (p={float(probs[tgt]):.2f})"
            if tgt != pred:
                title += f", predicted {run.classes[pred]}"
            save_overlay(array, a, title, png)
            buf = io.BytesIO()
            np.save(buf, a.numpy())
            write_bytes(npy, buf.getvalue())
            stats = {"png": str(png), "raw": str(npy), "shape": list(a.shape), "min": float(a.min()),
                     "max": float(a.max()), "mean": float(a.mean()), "sum": float(a.sum())}
            if method == "integrated-gradients":
                stats["completeness_gap"] = float(integrated_gradients_gap(model, x, maps, tgt)[0])
            record["methods"][method] = stats
        records.append(record)
    return records
