"""moving-fashion: deterministic, balanced, the label is the motion (checked by image moments), frame 0 says
nothing, train and test items apart, and the same clips through real video files."""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np
import pytest
import torch

from convolab.data.clips import load_clips
from convolab.data.moving import MOTIONS, load_moving_fashion, make_moving_clips, write_moving_videos


def _bar_items(n=16) -> torch.Tensor:
    """Items whose position, orientation and size moments are easy to read: a 4x18 bright bar, centred."""
    items = torch.zeros(n, 28, 28, dtype=torch.uint8)
    items[:, 12:16, 5:23] = 200
    return items


def _moments(clips: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: centre of mass (x, y) in px (N, T, 2), orientation in radians (N, T), mass (N, T)."""
    w = clips[:, 0].to(torch.float64)  # (N, T, H, W)
    h_, w_ = w.shape[-2:]
    ys = torch.arange(h_, dtype=torch.float64)[:, None]
    xs = torch.arange(w_, dtype=torch.float64)[None, :]
    m = w.sum((-2, -1))
    cx, cy = (w * xs).sum((-2, -1)) / m, (w * ys).sum((-2, -1)) / m
    dx, dy = xs - cx[..., None, None], ys - cy[..., None, None]
    mu20, mu02, mu11 = (w * dx * dx).sum((-2, -1)), (w * dy * dy).sum((-2, -1)), (w * dx * dy).sum((-2, -1))
    theta = 0.5 * torch.atan2(2 * mu11, mu20 - mu02)  # orientation of the principal axis, y pointing down
    return torch.stack([cx, cy], -1).numpy(), theta.numpy(), m.numpy()


def test_deterministic_and_balanced():
    items = _bar_items()
    a, ya = make_moving_clips(items, 80, frames=6, seed=3)
    b, yb = make_moving_clips(items, 80, frames=6, seed=3)
    c, _ = make_moving_clips(items, 80, frames=6, seed=4)
    assert a.shape == (80, 1, 6, 32, 32) and a.dtype == torch.uint8 and ya.dtype == torch.int64
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(a, c)
    assert torch.bincount(ya).tolist() == [10] * 8


def test_translation_classes_move_the_labelled_way():
    clips, y = make_moving_clips(_bar_items(), 400, frames=8, seed=0)
    com, _, _ = _moments(clips)
    d = com[:, -1] - com[:, 0]  # (N, 2): displacement from frame 0 to frame T-1
    expect = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}  # left, right, up (towards row 0), down
    for k, (sx, sy) in expect.items():
        dk = d[y.numpy() == k]
        along = dk @ np.array([sx, sy], float)
        across = dk @ np.array([sy, -sx], float)
        # 6..10 px travelled (a bar partly off the canvas at the end shifts its centre of mass a little)
        assert along.min() > 5 and along.max() < 11, MOTIONS[k]
        assert np.median(np.abs(across)) < 0.1 and np.abs(across).max() < 1.0, MOTIONS[k]
    for k in range(4, 8):  # rotations and zooms keep the centre where it is
        assert np.median(np.abs(d[y.numpy() == k])) < 0.1, MOTIONS[k]


def test_rotation_and_zoom_classes():
    clips, y = make_moving_clips(_bar_items(), 400, frames=8, seed=1)
    _, theta, mass = _moments(clips)
    step = np.angle(np.exp(2j * np.diff(theta, axis=1))) / 2  # per-frame turn, unwrapped modulo 180 degrees
    turn = np.degrees(step.sum(1))
    y = y.numpy()
    # clockwise on screen (y down) is a growing angle; 60..120 degrees over the clip, give or take sampling
    assert turn[y == 4].min() > 50 and turn[y == 4].max() < 130
    assert turn[y == 5].max() < -50 and turn[y == 5].min() > -130
    ratio = mass[:, -1] / mass[:, 0]  # area grows with the square of the scale: 1.3..1.6 -> 1.69..2.56
    assert ratio[y == 6].min() > 1.5 and ratio[y == 6].max() < 2.8
    assert (1 / ratio[y == 7]).min() > 1.5 and (1 / ratio[y == 7]).max() < 2.8
    for k in range(4):  # translations keep size and angle (bars that leave the canvas lose some mass)
        assert np.median(np.abs(ratio[y == k] - 1)) < 0.02 and np.median(np.abs(turn[y == k])) < 1


def test_frame_zero_says_nothing_about_the_motion():
    clips, y = make_moving_clips(_bar_items(), 2400, frames=4, seed=2)
    com, theta, mass = _moments(clips)
    y = y.numpy()
    # per class, frame 0's mass, centre and (doubled) orientation have the distribution of all clips: each
    # class mean within 4 standard errors (300 clips per class) of the overall mean
    f0 = np.stack([mass[:, 0] / mass[:, 0].mean(), com[:, 0, 0], com[:, 0, 1], np.cos(2 * theta[:, 0])], 1)
    means = np.stack([f0[y == k].mean(0) for k in range(8)])  # (8, 4)
    z = (means - f0.mean(0)) / (f0.std(0) / np.sqrt(300))
    assert np.abs(z).max() < 4
    # ... while the last frame does differ (a zoomed-in item is larger): the test can tell
    last = np.array([(mass[y == k, -1] / mass[:, 0].mean()).mean() for k in range(8)])
    assert last[6] - last[7] > 0.8


def test_fashion_clips_train_and_test_items_apart():
    tr_x, tr_y, te_x, te_y = load_moving_fashion(frames=4, n_train=40, n_test=24, seed=0)
    assert tr_x.shape == (40, 1, 4, 32, 32) and te_x.shape == (24, 1, 4, 32, 32)
    from convolab.data.dataset import load_dataset

    fm = load_dataset("fashion-mnist", val_fraction=0.0)
    again, _ = make_moving_clips(fm.train.images[:, 0], 40, frames=4, seed=0)
    assert torch.equal(again, tr_x)  # train clips are drawn from the train items ...
    again, _ = make_moving_clips(fm.test.images[:, 0], 24, frames=4, seed=1)
    assert torch.equal(again, te_x)  # ... and test clips from the test items (seed 2 * seed + 1)
    # changing the number of train clips leaves the test clips as they were
    assert torch.equal(load_moving_fashion(frames=4, n_train=8, n_test=24, seed=0)[2], te_x)


@pytest.mark.slow
def test_default_set_through_load_clips_is_fast_and_shaped():
    torch.set_num_threads(1)
    start = time.perf_counter()
    ds = load_clips("moving-fashion", val_fraction=0.1, seed=0)
    took = time.perf_counter() - start
    assert took < 20, f"made in {took:.1f} s"
    assert ds.task == "clips" and ds.classes == list(MOTIONS) and ds.frames == 8
    assert (len(ds.train), len(ds.val), len(ds.test)) == (5400, 600, 1500)
    assert ds.input_size == (1, 8, 32, 32)
    groups = torch.cat([ds.train.groups, ds.val.groups, ds.test.groups])
    assert len(torch.unique(groups)) == 7500  # one clip per "video"
    assert torch.bincount(ds.test.labels).tolist() == [1500 // 8 + (k < 1500 % 8) for k in range(8)]


def test_load_clips_moving_fashion_options():
    ds = load_clips("moving_fashion", frames=3, image_size=24, val_fraction=0.0)
    assert ds.input_size == (1, 3, 24, 24) and len(ds.val) == 0 and ds.name == "moving-fashion"
    with pytest.raises(ValueError, match="canvas is square"):
        load_clips("moving-fashion", image_size=(24, 32))
    with pytest.raises(ValueError, match="frames must be >= 2"):
        load_clips("moving-fashion", frames=1)
    # 7,500 clips of 8 x 32 x 32 bytes = 58.6 MiB: refused under a 50 MiB limit, before anything is made
    with pytest.raises(ValueError, match=r"moving-fashion: up to 7,500 clips of 1x8x32x32 would take 58.6 MiB"):
        load_clips("moving-fashion", max_bytes=50 * 2**20)


def _digest(clip: torch.Tensor) -> str:
    return hashlib.sha1(clip.contiguous().numpy().tobytes()).hexdigest()


def test_written_videos_load_back_bit_exact(tmp_path):
    paths = write_moving_videos(tmp_path / "mv", 24, frames=5, seed=7, n_test=8)
    assert len(paths) == 32 and all(p.suffix == ".mkv" for p in paths)
    assert {p.parent.name for p in paths} <= set(MOTIONS) and (tmp_path / "mv" / "test").is_dir()
    tr_x, tr_y, te_x, te_y = load_moving_fashion(frames=5, n_train=24, n_test=8, seed=7)
    ds = load_clips(tmp_path / "mv", frames=5, val_fraction=0.25, seed=0)
    assert ds.input_size == (1, 5, 32, 32)
    # a folder's classes are its sorted subfolder names: compare labels by name
    want = {_digest(x): MOTIONS[y] for x, y in zip(torch.cat([tr_x, te_x]), torch.cat([tr_y, te_y]))}
    got_train = {_digest(x): ds.classes[y] for s in (ds.train, ds.val) for x, y in zip(s.images, s.labels)}
    got_test = {_digest(x): ds.classes[y] for x, y in zip(ds.test.images, ds.test.labels)}
    assert len(got_train) == 24 and len(got_test) == 8
    assert {**got_train, **got_test} == want  # every clip, with its label, bit for bit
    assert set(got_test) == {_digest(x) for x in te_x}  # test/ stayed the test split
    assert math.isclose(ds.mean[0], tr_x.double().mean().item() / 255, rel_tol=0.2)  # stats from train clips
