"""PairAugment: image and mask move together; draws resume exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convolab.data.pair_augment import PairAugment


def _batch(b: int = 16, h: int = 12, w: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, h, w, generator=g)  # (B, 3, H, W)
    y = (x[:, 0] > 0.5).to(torch.uint8) + 1  # (B, H, W): a mask derived from the image, classes 1 and 2
    return x, y


def _find_crop(x: torch.Tensor, y: torch.Tensor, xo: torch.Tensor, yo: torch.Tensor, pad: int, fill: float,
               ignore: int) -> tuple[int, int, bool] | None:
    """Naive reference: the (dy, dx, flipped) whose crop of the padded pair is the output, if any."""
    _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), value=fill)
    yp = F.pad(y.long(), (pad, pad, pad, pad), value=ignore)
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            xc, yc = xp[:, dy:dy + h, dx:dx + w], yp[dy:dy + h, dx:dx + w]
            for flipped in (False, True):
                xe, ye = (xc.flip(2), yc.flip(1)) if flipped else (xc, yc)
                if torch.equal(xe, xo) and torch.equal(ye, yo.long()):
                    return dy, dx, flipped
    return None


def test_crop_and_flip_keep_image_and_mask_aligned():
    x, y = _batch()
    aug = PairAugment(crop_pad=3, hflip=True, ignore_index=255, seed=1, fill=torch.full((3,), -0.5))
    xo, yo = aug(x, y)
    assert xo.shape == x.shape and yo.shape == y.shape and yo.dtype == torch.uint8
    inside = yo != 255
    # the mask derived from the image still describes the augmented image, pixel for pixel
    assert torch.equal(yo[inside], ((xo[:, 0] > 0.5).to(torch.uint8) + 1)[inside])
    # the padded border is fill in the image and ignore_index in the mask, nowhere else
    assert torch.all(xo.permute(1, 0, 2, 3)[:, ~inside] == -0.5)
    assert not torch.any(xo.permute(1, 0, 2, 3)[:, inside] == -0.5)
    draws = [_find_crop(x[i], y[i], xo[i], yo[i], 3, -0.5, 255) for i in range(len(x))]
    assert all(d is not None for d in draws)  # every output is a crop (maybe mirrored) of its own padded pair
    assert len({d[:2] for d in draws}) > 3 and {d[2] for d in draws} == {False, True}  # draws differ per sample


def test_long_masks_and_ignore_none_pad_with_background():
    x, y = _batch()
    aug = PairAugment(crop_pad=2, hflip=False, ignore_index=None, seed=0)
    xo, yo = aug(x, y.long())
    assert yo.dtype == torch.long
    border = yo == 0
    assert border.any() and torch.all(xo.permute(1, 0, 2, 3)[:, border] == 0)
    assert all(_find_crop(x[i], y[i], xo[i], yo[i], 2, 0.0, 0) is not None for i in range(len(x)))


def test_resume_gives_the_same_draws():
    x, y = _batch()
    a = PairAugment(crop_pad=2, hflip=True, seed=5)
    a(x, y)
    state = a.state_dict()
    expected = [a(x, y) for _ in range(2)]
    b = PairAugment(crop_pad=2, hflip=True, seed=99)
    b.load_state_dict(state)
    for (xe, ye), (xg, yg) in zip(expected, [b(x, y) for _ in range(2)]):
        assert torch.equal(xe, xg) and torch.equal(ye, yg)
    assert not torch.equal(expected[0][0], expected[1][0])  # the stream moves on between batches


def test_off_is_identity_and_describe():
    x, y = _batch()
    aug = PairAugment(crop_pad=0, hflip=False)
    assert not aug.active and aug.describe() == "none"
    xo, yo = aug(x, y)
    assert torch.equal(xo, x) and torch.equal(yo, y)
    on = PairAugment(crop_pad=4, hflip=True)
    assert on.active and on.describe() == "crop pad 4, hflip"


@pytest.mark.parametrize("kwargs, match", [(dict(crop_pad=-1), "crop_pad"), (dict(crop_pad=1.5), "crop_pad"),
                                           (dict(ignore_index=300), "ignore_index")])
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PairAugment(**kwargs)


def test_mismatched_shapes_are_refused():
    x, y = _batch()
    with pytest.raises(ValueError, match=r"masks \(B, H, W\)"):
        PairAugment(crop_pad=1)(x, y[:, :-1])
