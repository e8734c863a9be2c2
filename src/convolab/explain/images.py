"""Explain a trained run's predictions for image files: overlay PNGs and raw maps (what ``convolab explain`` does)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from convolab.atomic import write_bytes
from convolab.explain.attribution import (
    RELU_METHODS,
    attribute,
    check_method,
    check_relu_network,
    integrated_gradients_gap,
)
from convolab.explain.inputs import resolve_class, unique_stem
from convolab.explain.layers import check_map_layer, resolve_layer
from convolab.explain.output import output_folder, writing
from convolab.explain.overlay import save_overlay
from convolab.explain.progress import progress_bar

__all__ = ["explain_images"]


def explain_images(run, images: list[str], methods: list[str], out_dir: str | Path, *, target: str | int | None = None,
                   layer: str | None = None, overwrite: bool = False, progress: bool = True) -> list[dict]:
    """Attribution maps for each image and method, written to ``out_dir``.

    For image ``cat.png`` and method ``gradcam``: ``cat_gradcam.png`` (input, map, overlay) and
    ``cat_gradcam.npy`` (the raw map). An image that cannot be read gets a record with ``error``
    and the others go on. Existing files are never replaced unless ``overwrite``. Names (methods,
    target, layer) and existing files are checked before anything is written; if the call fails
    later, the folder it created is removed again with the files it wrote (:mod:`convolab.explain.output`),
    and so is a folder it created but wrote nothing into. ``progress``: a bar on a terminal.

    Returns one record per image: the file, predicted class and probability, target, and per method
    the paths and map statistics (integrated gradients also their completeness gap).

    Raises:
        ValueError: an unknown method, class or layer, or a layer without (N, C, H, W) maps for the CAM family.
        FileExistsError: a file would be replaced without ``overwrite``.
        NotADirectoryError, PermissionError: ``out_dir`` cannot be made or written (one line naming the path).
    """
    for m in methods:
        check_method(m)
    model = run.model
    tgt_index = None if target is None else resolve_class(run.classes, target)
    cam_family = [m for m in methods if m in ("gradcam", "gradcam++")]
    if layer is not None or cam_family:
        layer = resolve_layer(model, layer)[0]
        if cam_family:  # a layer without maps fails here, before any folder is made
            device = next(model.parameters()).device
            check_map_layer(model, layer, torch.zeros(1, *run.input_size, device=device), cam_family[0])
    relu_family = [m for m in methods if m in RELU_METHODS]
    if relu_family:  # a model whose ReLUs captum cannot reach is refused here, before any folder is made
        device = next(model.parameters()).device
        check_relu_network(model, torch.zeros(1, *run.input_size, device=device), relu_family[0])
    out = Path(out_dir)
    used: set[str] = set()
    plan = [(img, unique_stem(img, used)) for img in images]
    if not overwrite:
        taken = [out / f"{stem}_{m}{ext}" for _, stem in plan for m in methods for ext in (".png", ".npy")]
        taken = [p for p in taken if p.exists()]
        if taken:
            raise FileExistsError(f"{taken[0]} exists ({len(taken)} file(s) would be replaced); "
                                  "choose another --out or pass --overwrite")
    records = []
    with output_folder(out) as folder, progress_bar(total=len(plan) * len(methods), desc="explain", unit="map",
                                                    enabled=progress) as bar:
        for image, stem in plan:
            try:
                array = run.to_array(image)  # uint8 (C, H, W) at the training size, as the training data was made
            except (ValueError, OSError) as e:
                records.append({"image": image, "error": str(e)})
                bar.update(len(methods))
                continue
            records.append(_explain_one(run, image, array, stem, methods, tgt_index, layer, folder, bar))
    return records


def _explain_one(run, image, array, stem: str, methods: list[str], tgt_index, layer, folder, bar) -> dict:
    model = run.model
    x = run.preprocess(torch.from_numpy(np.array(array)))
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    pred = int(probs.argmax())
    tgt = pred if tgt_index is None else tgt_index
    record = {"image": image, "predicted": run.classes[pred], "predicted_index": pred,
              "probability": float(probs[pred]), "target": run.classes[tgt], "target_index": tgt,
              "target_probability": float(probs[tgt]), "layer": layer, "methods": {}}
    for method in methods:
        bar.set_postfix_str(f"{Path(image).name} {method}")
        maps = attribute(model, x, method, tgt, layer)
        a = maps[0].detach().cpu()
        png, npy = folder.path / f"{stem}_{method}.png", folder.path / f"{stem}_{method}.npy"
        title = f"{method}: {run.classes[tgt]} (p={float(probs[tgt]):.2f})"
        if tgt != pred:
            title += f", predicted {run.classes[pred]}"
        with writing(png):
            save_overlay(array, a, title, png)
        folder.wrote(png)
        buf = io.BytesIO()
        np.save(buf, a.numpy())
        with writing(npy):
            write_bytes(npy, buf.getvalue())
        folder.wrote(npy)
        stats = {"png": str(png), "raw": str(npy), "shape": list(a.shape), "min": float(a.min()),
                 "max": float(a.max()), "mean": float(a.mean()), "sum": float(a.sum())}
        if method == "integrated-gradients":
            stats["completeness_gap"] = float(integrated_gradients_gap(model, x, maps, tgt)[0])
        record["methods"][method] = stats
        bar.update()
    return record
