"""ClipAugment: one crop and one flip per clip for all its frames, checked against a per-clip loop; exact resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convolab.data.clip_augment import ClipAugment, flips_keep_class

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _clips(b=16, c=2, t=5, h=12, w=10, seed=0, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, c, 1, h, w, generator=g) + 0.5  # > 0, so the black border (0) is told apart
    return (base * torch.arange(1, t + 1).view(1, 1, t, 1, 1)).to(device)  # frame t = (t + 1) x frame 0


def _shifts(x: torch.Tensor, pad: int):
    """Every crop of the zero-padded clip (the reference: slicing, one clip at a time)."""
    padded = F.pad(x, (pad, pad, pad, pad))  # (C, T, H + 2p, W + 2p)
    h, w = x.shape[-2:]
    return {(dy, dx): padded[..., dy:dy + h, dx:dx + w] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)}


@pytest.mark.parametrize("device", DEVICES)
def test_crop_is_one_shift_per_clip_for_every_frame(device):
    x = _clips(device=device)
    y = torch.arange(len(x), device=device)
    aug = ClipAugment(crop_pad=2, device=device, seed=1)
    out, y2 = aug(x, y)
    assert out.shape == x.shape and torch.equal(y2, y)
    seen = set()
    for i in range(len(x)):
        matches = [k for k, v in _shifts(x[i], 2).items() if torch.equal(v, out[i])]
        assert len(matches) == 1, f"clip {i} is no single crop of its padded self (frames moved apart?)"
        seen.add(matches[0])
    assert len(seen) > 4  # different clips got different shifts
    # frames stay aligned: frame t is still (t + 1) x frame 0, pixel for pixel
    t = x.shape[2]
    assert torch.allclose(out, out[:, :, :1] * torch.arange(1, t + 1, device=device).view(1, 1, t, 1, 1))


def test_padding_takes_the_fill_value():
    x = _clips(b=64, c=2)
    fill = torch.tensor([-1.0, -2.0])
    out, _ = ClipAugment(crop_pad=3, seed=0, fill=fill)(x, torch.zeros(64))
    # clips shifted down by 3 rows have their first row padded: each channel's fill, in every frame
    top = out[:, :, :, 0, :]  # (B, C, T, W)
    padded_rows = (top == fill.view(1, 2, 1, 1)).all(-1).all(-1).all(-1)
    assert padded_rows.any()
    assert ((out == -1.0) | (out == -2.0) | (out >= 0.5)).all()  # nothing else was made up


@pytest.mark.parametrize("device", DEVICES)
def test_flip_mirrors_whole_clips_about_half_of_them(device):
    x = _clips(b=200, device=device)
    out, _ = ClipAugment(hflip=True, device=device, seed=3)(x, torch.zeros(200))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(4)).flatten(1).all(1)
    assert (same ^ mirrored).all()  # each clip is either untouched or mirrored in all of its frames
    assert 70 < int(mirrored.sum()) < 130


def test_resume_draws_the_same():
    x = _clips(b=8)
    a = ClipAugment(crop_pad=2, hflip=True, seed=5)
    a(x, None)
    state = a.state_dict()
    want = [a(x, None)[0] for _ in range(3)]
    b = ClipAugment(crop_pad=2, hflip=True, seed=99)
    b.load_state_dict(state)
    got = [b(x, None)[0] for _ in range(3)]
    assert all(torch.equal(u, v) for u, v in zip(want, got))
    assert not torch.equal(want[0], want[1])  # the stream moves on between batches


def test_defaults_and_checks():
    off = ClipAugment()
    assert not off.active and off.describe() == "none" and not off.hflip  # flips are opt-in
    x = _clips(b=2)
    assert off(x, None)[0] is x
    on = ClipAugment(crop_pad=1, hflip=True)
    assert on.active and on.describe() == "crop pad 1 (same for every frame), hflip"
    assert flips_keep_class("moving-fashion") is False  # a mirrored "move left" is "move right"
    assert flips_keep_class("ucf101") is True and flips_keep_class("/some/folder") is None
    with pytest.raises(ValueError, match="crop_pad must be a whole number"):
        ClipAugment(crop_pad=-1)
    with pytest.raises(ValueError, match=r"expects clips \(B, C, T, H, W\)"):
        on(torch.zeros(2, 1, 8, 8), None)
    with pytest.raises(ValueError, match="below the frames' shorter side"):
        ClipAugment(crop_pad=10)(x, None)
