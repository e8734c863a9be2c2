"""``fashion-scenes``: an offline segmentation dataset composited from real Fashion-MNIST items.

Each scene is a 64x64 black canvas (Fashion-MNIST's own background is black) with 1 to 3 items pasted
onto it, drawn as follows from a NumPy generator seeded by ``seed`` (so the same seed gives the same bytes):

* the number of items, uniform in {1, 2, 3};
* per item: which Fashion-MNIST image (uniform over the pool, with replacement), an integer scale
  uniform in {1, 2} (28x28 or 56x56, each pixel repeated: no interpolation, so the mask stays exact),
  and a top-left corner uniform over the positions that keep the item inside the canvas;
* items are pasted in order, later ones on top: a pasted pixel replaces the canvas where the item's
  pixel is at least ``OPAQUE`` (32 of 255; fainter pixels, the speckle around many Fashion-MNIST items,
  are transparent), so later items occlude earlier ones.

The mask is exact by construction: ``1 + class`` of the item whose opaque pixel is visible there, 0
(background) elsewhere, giving 11 classes ("background" + the 10 Fashion-MNIST names). The coarse variant
``fashion-scenes-coarse`` merges them into 5: background, top (T-shirt/top, pullover, dress, coat,
shirt), trouser, footwear (sandal, sneaker, ankle boot) and bag.

Items never leak between splits: train scenes (and the validation scenes) are made of Fashion-MNIST's
training images, test scenes of its test images; the validation scenes use a share of the training images
held out from the train scenes (by ``seed``), so validation is on unseen items too. The test scenes are
drawn with a fixed seed (``test_seed``, 0) whatever the training seed, so that runs with different seeds
are measured on the same test set.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SCENE_DATASETS", "FINE_CLASSES", "COARSE_CLASSES", "ItemLayout", "draw_layout", "composite",
           "make_scenes", "load_fashion_scenes"]

log = logging.getLogger(__name__)

CANVAS = 64  # scene side in pixels
MAX_ITEMS = 3
SCALES = (1, 2)  # integer upscaling of a 28x28 item (pixel repetition)
OPAQUE = 32  # an item pixel this bright or brighter is pasted (and labelled); fainter ones are transparent

_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FINE_CLASSES = ("background", *_FASHION)
COARSE_CLASSES = ("background", "top", "trouser", "footwear", "bag")
# Fashion-MNIST label -> mask value; 0 stays background.
_FINE_MAP = np.arange(1, 11, dtype=np.uint8)
_COARSE_MAP = np.array([1, 2, 1, 1, 1, 3, 1, 3, 4, 3], np.uint8)  # see COARSE_CLASSES

SCENE_DATASETS = {
    "fashion-scenes": "offline: 1-3 Fashion-MNIST items on 64x64 canvases, exact masks, 11 classes "
                      "(8k train / 2k test scenes)",
    "fashion-scenes-coarse": "offline: fashion-scenes with 5 classes (background, top, trouser, footwear, bag)",
}


@dataclass
class ItemLayout:
    """Where each item of each scene goes; slots past ``count`` are unused (their values are drawn anyway)."""

    count: np.ndarray  # (N,) items in the scene, 1..MAX_ITEMS
    item: np.ndarray  # (N, MAX_ITEMS) index into the item pool
    scale: np.ndarray  # (N, MAX_ITEMS) integer scale
    top: np.ndarray  # (N, MAX_ITEMS) row of the item's top-left pixel on the canvas
    left: np.ndarray  # (N, MAX_ITEMS) column of the same


def draw_layout(n: int, pool_size: int, seed: int | tuple[int, ...], *, canvas: int = CANVAS,
                item_side: int = 28) -> ItemLayout:
    """Draw the layout of ``n`` scenes from a pool of ``pool_size`` items (see the module docstring)."""
    if pool_size < 1:
        raise ValueError("cannot compose scenes from an empty pool of items")
    if canvas < item_side * max(SCALES):
        raise ValueError(f"canvas {canvas} is smaller than the largest item ({item_side * max(SCALES)} pixels)")
    rng = np.random.default_rng(seed)
    count = rng.integers(1, MAX_ITEMS + 1, n)
    item = rng.integers(0, pool_size, (n, MAX_ITEMS))
    scale = np.asarray(SCALES)[rng.integers(0, len(SCALES), (n, MAX_ITEMS))]
    room = canvas - item_side * scale + 1  # (N, MAX_ITEMS) positions per axis that keep the item inside
    top = (rng.random((n, MAX_ITEMS)) * room).astype(np.int64)
    left = (rng.random((n, MAX_ITEMS)) * room).astype(np.int64)
    return ItemLayout(count, item, scale, top, left)


def composite(items: np.ndarray, labels: np.ndarray, layout: ItemLayout, class_map: np.ndarray, *,
              canvas: int = CANVAS, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Paste the items of ``layout`` onto black canvases, vectorised over scenes.

    Args:
        items: (P, S, S) uint8 item images (the pool).
        labels: (P,) their class labels.
        class_map: label -> mask value (uint8).

    Returns:
        images (N, 1, canvas, canvas) uint8 and masks (N, canvas, canvas) uint8.
    """
    n = len(layout.count)
    side = items.shape[-1]
    images = np.zeros((n, 1, canvas, canvas), np.uint8)
    masks = np.zeros((n, canvas, canvas), np.uint8)
    pos = np.arange(canvas)
    for start in range(0, n, chunk):  # chunks bound the (chunk, canvas, canvas) temporaries
        sl = slice(start, min(start + chunk, n))
        img, msk = images[sl, 0], masks[sl]  # views: written in place
        for j in range(MAX_ITEMS):
            s = layout.scale[sl, j, None]  # (b, 1)
            # canvas pixel -> item pixel: ((r - top) // s, (c - left) // s), inside when in [0, side)
            rows = (pos[None] - layout.top[sl, j, None]) // s  # (b, canvas)
            cols = (pos[None] - layout.left[sl, j, None]) // s  # (b, canvas)
            row_ok, col_ok = (rows >= 0) & (rows < side), (cols >= 0) & (cols < side)
            idx = layout.item[sl, j]
            pasted = items[idx[:, None, None], rows.clip(0, side - 1)[:, :, None],
                           cols.clip(0, side - 1)[:, None, :]]  # (b, canvas, canvas)
            active = layout.count[sl] > j  # (b,)
            visible = (pasted >= OPAQUE) & row_ok[:, :, None] & col_ok[:, None, :] & active[:, None, None]
            img[visible] = pasted[visible]
            value = class_map[labels[idx]]  # (b,)
            msk[visible] = np.broadcast_to(value[:, None, None], visible.shape)[visible]
    return images, masks


def make_scenes(items: np.ndarray, labels: np.ndarray, n: int, seed: int | tuple[int, ...], *, coarse: bool = False,
                canvas: int = CANVAS) -> tuple[np.ndarray, np.ndarray]:
    """``n`` scenes of items from ``items`` (P, 28, 28) with ``labels`` (P,): images (N, 1, H, W), masks (N, H, W)."""
    layout = draw_layout(n, len(items), seed, canvas=canvas, item_side=items.shape[-1])
    return composite(items, np.asarray(labels), layout, _COARSE_MAP if coarse else _FINE_MAP, canvas=canvas)


def load_fashion_scenes(*, coarse: bool = False, seed: int = 0, val_fraction: float = 0.1, n_train: int = 8000,
                        n_test: int = 2000, test_seed: int = 0, data_dir: str | os.PathLike | None = None,
                        download: bool = True, cache: bool = True):
    """Build ``fashion-scenes`` (or ``-coarse``) from Fashion-MNIST (found or downloaded as usual).

    ``n_train`` scenes are made from Fashion-MNIST's training images, of which ``val_fraction`` (of the scenes,
    from an item pool held out by ``seed``) form the validation split; ``n_test`` scenes from its test images.

    Returns:
        An :class:`~convolab.data.dataset.ImageDataset` with ``task="segmentation"``.
    """
    from convolab.data.base import ImageDataset, Split, normalization_stats
    from convolab.data.builtin import load_builtin
    from convolab.data.named import DATASETS

    if n_train < 1 or n_test < 1:
        raise ValueError(f"fashion-scenes needs at least one train and one test scene; got {n_train} and {n_test}")
    tr_x, tr_y, te_x, te_y, _, source = load_builtin(DATASETS["fashion-mnist"], data_dir, download, cache)
    tr_items, tr_labels = np.asarray(tr_x)[:, 0], np.asarray(tr_y, np.int64)  # (60000, 28, 28), (60000,)
    te_items, te_labels = np.asarray(te_x)[:, 0], np.asarray(te_y, np.int64)
    # Disjoint item pools for train and validation scenes, drawn by seed.
    perm = np.random.default_rng((seed, 1)).permutation(len(tr_items))
    n_val = int(round(val_fraction * n_train))
    held = int(round(val_fraction * len(tr_items))) if n_val else 0
    val_pool, train_pool = perm[:held], perm[held:]
    name = "fashion-scenes-coarse" if coarse else "fashion-scenes"
    # One independent stream per split (NumPy seed sequences (seed, k)), so no two splits or seeds share draws.
    tr = make_scenes(tr_items[train_pool], tr_labels[train_pool], n_train - n_val, (seed, 0), coarse=coarse)
    va = (make_scenes(tr_items[val_pool], tr_labels[val_pool], n_val, (seed, 2), coarse=coarse) if n_val
          else (np.zeros((0, 1, CANVAS, CANVAS), np.uint8), np.zeros((0, CANVAS, CANVAS), np.uint8)))
    te = make_scenes(te_items, te_labels, n_test, (test_seed, 3), coarse=coarse)
    train, val, test = (Split(torch.from_numpy(x), torch.from_numpy(y)) for x, y in (tr, va, te))
    mean, std = normalization_stats(train.images)
    classes = list(COARSE_CLASSES if coarse else FINE_CLASSES)
    return ImageDataset(name, classes, train, val, test, mean, std, f"{source}, Fashion-MNIST items composited",
                        task="segmentation", ignore_index=None)
