"""Batched augmentation: each operation against torchvision's per-image transform or a per-sample loop.

The vectorised operations draw their random numbers in one call per batch; the tests replay the
same generators to get those numbers, then build the expected images one at a time with
torchvision (pad + crop, flip, rotate) or a plain loop (cutout, mixup, cutmix).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from convolab.data.augment import AugmentSpec, BatchAugment, resolve_augment

B, C, H, W = 16, 3, 12, 10
FILL = torch.tensor([-1.0, -2.0, -0.5])  # "black" per channel after normalisation


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, H, W, generator=g), torch.randint(0, 10, (B,), generator=g)


def aug(seed=5, **spec):
    return BatchAugment(AugmentSpec(**spec), FILL, "cpu", seed=seed)


def replay(seed=5):
    """The generators an augmenter with ``seed`` draws from, fresh."""
    return torch.Generator().manual_seed(seed), np.random.default_rng(seed)


def test_translate_is_torchvisions_random_crop_with_padding():
    x, y = batch()
    out, mix = aug(crop_pad=3)(x, y)
    assert mix is None
    g, _ = replay()
    corners = (torch.rand(B, 2, generator=g) * 7).long()  # top-left corner of each crop in the padded image
    for i in range(B):
        padded = TF.pad(x[i] - FILL[:, None, None], [3, 3, 3, 3], fill=0.0) + FILL[:, None, None]
        expected = TF.crop(padded, int(corners[i, 0]), int(corners[i, 1]), H, W)
        assert torch.equal(out[i], expected), i
    assert out.is_contiguous(memory_format=torch.channels_last), "comes out channels-last, as the CPU wants it"


def test_translate_uses_every_offset():
    x = torch.zeros(2000, 1, 6, 6)
    x[:, :, 2, 2] = 1.0  # one white pixel; where it lands is the shift
    out = BatchAugment(AugmentSpec(crop_pad=1), torch.zeros(1), "cpu")(x, torch.zeros(2000, dtype=torch.long))[0]
    where = out[:, 0].flatten(1).argmax(1)
    counts = torch.bincount(where, minlength=36).view(6, 6)[1:4, 1:4]
    assert (counts > 2000 / 9 * 0.75).all() and counts.sum() == 2000, counts


def test_hflip_flips_about_half():
    x, y = torch.randn(400, 1, 4, 5), torch.zeros(400, dtype=torch.long)
    out, _ = aug(hflip=True)(x, y)
    flipped = torch.tensor([torch.equal(o, TF.horizontal_flip(i)) for o, i in zip(out, x)])
    same = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert (flipped ^ same).all()
    g, _ = replay()
    assert torch.equal(flipped, torch.rand(400, generator=g) < 0.5)


def test_rotate_matches_torchvision():
    x, y = batch()
    out, _ = aug(rotate=15.0)(x, y)
    g, _ = replay()
    angles = (torch.rand(B, generator=g) * 2 - 1) * 15.0
    for i in range(B):
        expected = TF.rotate(x[i] - FILL[:, None, None], float(angles[i]),
                             interpolation=TF.InterpolationMode.BILINEAR) + FILL[:, None, None]
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=1e-5)


def test_cutout_against_a_loop():
    x, y = batch()
    out, _ = aug(cutout=0.5)(x, y)
    g, _ = replay()
    u = torch.rand(B, 3, generator=g)
    size = round(0.5 * min(H, W))
    expected = x.clone()
    for i in range(B):
        if u[i, 2] < 0.5:
            cy, cx = int(u[i, 0] * H), int(u[i, 1] * W)
            top, left = cy - size // 2, cx - size // 2
            expected[i, :, max(top, 0):max(top + size, 0), max(left, 0):max(left + size, 0)] = 0.0
    assert torch.equal(out, expected)
    assert 0 < sum(not torch.equal(a, b) for a, b in zip(out, x)) < B


def test_mixup_against_the_formula():
    x, y = batch()
    out, mix = aug(mixup=0.4)(x, y)
    g, rng = replay()
    lam = rng.beta(0.4, 0.4)
    perm = torch.randperm(B, generator=g)
    assert mix.lam == lam and torch.equal(mix.y2, y[perm])
    torch.testing.assert_close(out, lam * x + (1 - lam) * x[perm], rtol=0, atol=1e-6)


def test_cutmix_against_a_loop():
    x, y = batch()
    out, mix = aug(cutmix=1.0)(x, y)
    g, rng = replay()
    lam = rng.beta(1.0, 1.0)
    ch, cw = int(H * math.sqrt(1 - lam)), int(W * math.sqrt(1 - lam))
    cy, cx = rng.integers(H), rng.integers(W)
    perm = torch.randperm(B, generator=g)
    expected = x.clone()
    area = 0
    for r in range(H):
        for c in range(W):
            if max(cy - ch // 2, 0) <= r < min(cy + ch // 2, H) and max(cx - cw // 2, 0) <= c < min(cx + cw // 2, W):
                expected[:, :, r, c] = x[perm][:, :, r, c]
                area += 1
    assert torch.equal(out, expected)
    assert mix.lam == pytest.approx(1 - area / (H * W)) and torch.equal(mix.y2, y[perm])


def test_mixup_and_cutmix_alternate():
    a = aug(mixup=0.2, cutmix=1.0)
    g, rng = replay()
    x, y = batch()
    kinds = []
    for _ in range(60):
        out, mix = a(x, y)
        if rng.random() < 0.5:  # the augmenter's coin: cutmix
            lam, _, _ = rng.beta(1.0, 1.0), rng.integers(H), rng.integers(W)
            perm = torch.randperm(B, generator=g)
            kinds.append("cutmix")
            assert torch.equal(mix.y2, y[perm]) and mix.lam >= lam - 1e-9  # the clipped box is no larger
        else:
            lam, perm = rng.beta(0.2, 0.2), torch.randperm(B, generator=g)
            kinds.append("mixup")
            assert mix.lam == lam
            torch.testing.assert_close(out, lam * x + (1 - lam) * x[perm], rtol=0, atol=1e-6)
    assert 15 < kinds.count("cutmix") < 45


def test_state_round_trip_repeats_the_augmentation():
    a = aug(crop_pad=2, hflip=True, rotate=10.0, cutout=0.3, mixup=0.2, cutmix=1.0)
    x, y = batch()
    a(x, y)
    state = a.state_dict()
    first = [a(x, y)[0] for _ in range(3)]
    a.load_state_dict(state)
    again = [a(x, y)[0] for _ in range(3)]
    assert all(torch.equal(p, q) for p, q in zip(first, again))


@pytest.mark.parametrize("preset,dataset,size,expected", [
    ("none", "fashion-mnist", (28, 28), AugmentSpec()),
    ("light", "fashion-mnist", (28, 28), AugmentSpec(crop_pad=2, hflip=True)),
    ("light", "digits", (8, 8), AugmentSpec(crop_pad=1)),
    ("standard", "cifar10", (32, 32), AugmentSpec(crop_pad=4, hflip=True, cutout=0.5)),
    ("standard", "mnist", (28, 28), AugmentSpec(crop_pad=4, cutout=0.5, rotate=10.0)),
    ("standard", "/data/my-folder", (64, 64), AugmentSpec(crop_pad=8, cutout=0.5)),
])
def test_presets_per_dataset(preset, dataset, size, expected):
    assert resolve_augment(preset, dataset, size) == expected


def test_explicit_settings_override_the_preset():
    spec = resolve_augment("standard", "fashion-mnist", (28, 28), hflip=False, cutout=0.0, mixup=0.2)
    assert spec == AugmentSpec(crop_pad=4, hflip=False, mixup=0.2)


@pytest.mark.parametrize("kwargs,match", [(dict(crop_pad=8), r"--crop-pad must be in \[0, 8\)"),
                                          (dict(cutout=1.0), "--cutout must be in"),
                                          (dict(rotate=200.0), "--rotate must be in")])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resolve_augment("none", "digits", (8, 8), **kwargs)
    with pytest.raises(ValueError, match="unknown augmentation preset 'heavy'"):
        resolve_augment("heavy", "digits", (8, 8))
