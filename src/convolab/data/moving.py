"""``moving-fashion``: an offline clip dataset whose label is the motion, not the object.

Each clip shows one Fashion-MNIST item (a train item for train clips, a test item for test clips, so no
item is in both) on a black 32x32 canvas over T frames (default 8), moving in one of 8 ways — the class:

======  =====================  ==========================================================================
label   name                   motion over the clip (linear in t, frame 0 to frame T-1)
======  =====================  ==========================================================================
0, 1    move-left, move-right  the item's centre moves 6..10 px (of the 32-px canvas) along x
2, 3    move-up, move-down     the same along y (up is towards row 0)
4, 5    rotate-cw, rotate-ccw  the item turns 60..120 degrees about its centre, clockwise as displayed
6, 7    zoom-in, zoom-out      the item's scale grows (shrinks) by a factor of 1.3..1.6
======  =====================  ==========================================================================

Every clip starts from the same random distribution whatever its class — the centre within ±4 px of the
canvas centre, any angle (0..360 degrees), a scale of 0.45..0.7 (1 = the item's 28 px) — so frame 0 says
nothing about the label: a model must compare frames. (Later frames alone say a little: a zoomed-in item is
larger on average by the last frame, a moved one off-centre; a one-frame baseline should show frame 0.)

Classes are balanced (exactly n / 8 each when 8 divides n), and the item, the start and the amount of motion
are drawn per clip from a generator seeded by ``seed`` (train and test use different streams of it): the same
arguments give the same clips, bit for bit.

Frames are made in one batch per chunk of clips with ``affine_grid``/``grid_sample`` (bilinear): the whole
default set (6,000 train + 1,500 test clips of 8 frames) takes a few seconds on one core. The canvas side
can be changed (``size``): the motion scales with it. :func:`write_moving_videos` writes the same clips as
lossless video files in class subfolders, which load back through :func:`convolab.data.clips.load_clips`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MOTIONS", "make_moving_clips", "load_moving_fashion", "write_moving_videos", "DEFAULT_FRAMES",
           "DEFAULT_TRAIN", "DEFAULT_TEST", "DEFAULT_SIZE"]

MOTIONS = ("move-left", "move-right", "move-up", "move-down", "rotate-cw", "rotate-ccw", "zoom-in", "zoom-out")
DEFAULT_FRAMES = 8
DEFAULT_TRAIN = 6000
DEFAULT_TEST = 1500
DEFAULT_SIZE = 32

_CANVAS = 32  # the geometry below is in pixels of a 32-px canvas holding the 28-px item at scale 1
_START_OFFSET = 4.0  # px: start centre within ±this of the canvas centre
_SCALE = (0.45, 0.7)  # start scale
_SHIFT = (6.0, 10.0)  # px travelled by translations
_TURN = (60.0, 120.0)  # degrees turned by rotations
_ZOOM = (1.3, 1.6)  # scale factor of zooms
_CHUNK = 512  # clips rendered per grid_sample call (bounds the float memory: 512 x 8 x 32 x 32 x 4 B = 16 MiB)


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _trajectories(labels: torch.Tensor, frames: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Per clip and frame: centre (x, y) in px from the canvas centre, angle in radians, scale. Each (N, T)."""
    n = len(labels)
    t = torch.linspace(0, 1, frames, dtype=torch.float64)[None]  # (1, T): 0 at the first frame, 1 at the last
    x0 = _uniform(g, n, -_START_OFFSET, _START_OFFSET)[:, None]
    y0 = _uniform(g, n, -_START_OFFSET, _START_OFFSET)[:, None]
    a0 = _uniform(g, n, 0, 2 * math.pi)[:, None]
    s0 = _uniform(g, n, *_SCALE)[:, None]
    shift = _uniform(g, n, *_SHIFT)[:, None]
    turn = torch.deg2rad(_uniform(g, n, *_TURN))[:, None]
    zoom = _uniform(g, n, *_ZOOM)[:, None]
    lab = labels[:, None]
    # the sign of each motion: +1 for right, down (rows grow downwards), clockwise as displayed, zoom in
    sign = {0: -1, 1: 1, 2: -1, 3: 1, 4: 1, 5: -1, 6: 1, 7: -1}
    s = torch.zeros_like(lab, dtype=torch.float64)
    for k, v in sign.items():
        s = torch.where(lab == k, torch.tensor(float(v), dtype=torch.float64), s)
    horizontal, vertical = (lab == 0) | (lab == 1), (lab == 2) | (lab == 3)
    rotating, zooming = (lab == 4) | (lab == 5), (lab == 6) | (lab == 7)
    x = x0 + torch.where(horizontal, s * shift * t, 0.0)
    y = y0 + torch.where(vertical, s * shift * t, 0.0)
    # With y pointing down, a positive angle in the usual rotation matrix turns clockwise on screen.
    angle = a0 + torch.where(rotating, s * turn * t, 0.0)
    scale = s0 * torch.where(zooming, zoom ** (s * t), 1.0)
    return x, y, angle, scale


def _render(items: torch.Tensor, x, y, angle, scale, size: int) -> torch.Tensor:
    """Items (N, 28, 28) uint8 placed by (N, T) trajectories -> clips (N, 1, T, size, size) uint8."""
    n, t = x.shape
    src = F.pad(items.to(torch.float32), (2, 2, 2, 2))[:, None]  # (N, 1, 32, 32): the item at scale 1 on the canvas
    src = src[:, None].expand(n, t, 1, _CANVAS, _CANVAS).reshape(n * t, 1, _CANVAS, _CANVAS)  # (N*T, 1, 32, 32)
    # affine_grid maps each output position p (normalised to [-1, 1], square canvas) to an input position:
    # p_in = R(-angle) (p - c) / scale, the inverse of "scale, rotate, then move the centre to c".
    cos, sin = angle.cos().reshape(-1), angle.sin().reshape(-1)
    inv = 1 / scale.reshape(-1)
    cx, cy = (x.reshape(-1) * 2 / _CANVAS), (y.reshape(-1) * 2 / _CANVAS)  # px -> normalised units
    a, b = cos * inv, sin * inv  # R(-angle) / scale = [[cos, sin], [-sin, cos]] / scale
    theta = torch.stack([torch.stack([a, b, -(a * cx + b * cy)], 1),
                         torch.stack([-b, a, -(-b * cx + a * cy)], 1)], 1).to(torch.float32)  # (N*T, 2, 3)
    grid = F.affine_grid(theta, [n * t, 1, size, size], align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (N*T, 1, S, S)
    out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out.reshape(n, t, 1, size, size).transpose(1, 2).contiguous()  # (N, 1, T, S, S)


def make_moving_clips(items: torch.Tensor, n: int, *, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` clips of items drawn from ``items`` (M, 28, 28) uint8: (clips (n, 1, T, S, S) uint8, labels (n,) int64).

    Deterministic in (items, n, frames, size, seed). Labels are balanced: ``arange(n) % 8``, shuffled.

    Raises:
        ValueError: n < 1, frames < 2 (one frame has no motion), size < 8, or no items.
    """
    if n < 1:
        raise ValueError(f"moving-fashion: the number of clips must be >= 1; got {n}")
    if frames < 2:
        raise ValueError(f"moving-fashion: frames must be >= 2 (motion needs at least two frames); got {frames}")
    if size < 8:
        raise ValueError(f"moving-fashion: the canvas side must be >= 8 pixels; got {size}")
    if len(items) == 0:
        raise ValueError("moving-fashion: no Fashion-MNIST items to draw from")
    g = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % len(MOTIONS))[torch.randperm(n, generator=g)]  # (n,) balanced
    which = torch.randint(len(items), (n,), generator=g)  # the item of each clip
    x, y, angle, scale = _trajectories(labels, frames, g)
    clips = torch.empty(n, 1, frames, size, size, dtype=torch.uint8)  # (N, 1, T, S, S)
    for i in range(0, n, _CHUNK):
        j = slice(i, i + _CHUNK)
        clips[j] = _render(items[which[j]], x[j], y[j], angle[j], scale[j], size)
    return clips, labels.to(torch.int64)


def _fashion_items(data_dir, download: bool, cache: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's train and test images (N, 28, 28) uint8, from wherever convolab finds them."""
    from convolab.data.builtin import load_builtin
    from convolab.data.named import DATASETS

    tr_x, _, te_x, _, _, _ = load_builtin(DATASETS["fashion-mnist"], data_dir, download, cache)
    return torch.from_numpy(np.asarray(tr_x)[:, 0]), torch.from_numpy(np.asarray(te_x)[:, 0])


def load_moving_fashion(*, frames: int = DEFAULT_FRAMES, n_train: int = DEFAULT_TRAIN, n_test: int = DEFAULT_TEST,
                        size: int = DEFAULT_SIZE, seed: int = 0, data_dir=None, download: bool = True,
                        cache: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The moving-fashion train and test clips: (train_x, train_y, test_x, test_y), clips (N, 1, T, S, S) uint8.

    Train clips move Fashion-MNIST train items, test clips its test items. ``seed`` seeds the clips (the test
    clips use ``seed + 1``'s stream, so changing ``n_train`` leaves the test clips as they were).
    """
    train_items, test_items = _fashion_items(data_dir, download, cache)
    tr_x, tr_y = make_moving_clips(train_items, n_train, frames=frames, size=size, seed=2 * seed)
    te_x, te_y = make_moving_clips(test_items, n_test, frames=frames, size=size, seed=2 * seed + 1)
    return tr_x, tr_y, te_x, te_y


def write_moving_videos(root: str | os.PathLike, n: int, frames: int = DEFAULT_FRAMES, seed: int = 0, *,
                        n_test: int = 0, size: int = DEFAULT_SIZE, ext: str = ".mkv", fps: float = 8,
                        data_dir=None) -> list[Path]:
    """Write moving-fashion clips as video files, ``root/<motion>/clip_00000.mkv``; returns the paths.

    The clips are :func:`load_moving_fashion`'s first ``n`` train clips for ``(frames, size, seed)`` (bit
    for bit, in the order of the returned paths). With ``n_test > 0`` the layout is ``root/train/<motion>/``
    and ``root/test/<motion>/`` (the first ``n_test`` test clips). The default ``.mkv`` (FFV1) is lossless,
    so the folder loads back to exactly these clips; other extensions follow :func:`write_video`.
    """
    from convolab.data.video_io import write_video

    tr_x, tr_y, te_x, te_y = load_moving_fashion(frames=frames, n_train=n, n_test=max(n_test, 1), size=size,
                                                 seed=seed, data_dir=data_dir)
    root = Path(root)
    parts = [("", tr_x, tr_y)] if n_test <= 0 else [("train", tr_x, tr_y), ("test", te_x[:n_test], te_y[:n_test])]
    paths = []
    for split, x, y in parts:
        for i in range(len(x)):
            path = root / split / MOTIONS[int(y[i])] / f"clip_{i:05d}{ext}"
            write_video(path, x[i].permute(1, 2, 3, 0).numpy(), fps)  # (1, T, S, S) -> (T, S, S, 1)
            paths.append(path)
    return paths

