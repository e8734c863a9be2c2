"""Colour jitter in the batched augmentation (``--jitter``): per-image brightness, contrast and saturation factors,
each image equal to torchvision's ``adjust_brightness``/``adjust_contrast``/``adjust_saturation`` with its factors,
grey images left unsaturated, the factors' range, and the run's augmentation."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from tests.cli.test_cli import cli

from convolab.data.augment import AugmentSpec, BatchAugment, jitter_pixels, resolve_augment

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def _pixels(b: int, c: int, seed: int = 0) -> torch.Tensor:
    """Pixels in [0, 1] as the loader's uint8 / 255 gives them."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, 9, 7), generator=g).float() / 255


def _torchvision(p: torch.Tensor, brightness, contrast, saturation) -> torch.Tensor:
    out = []
    for i, image in enumerate(p):  # one image at a time, its own factors
        if brightness is not None:
            image = TF.adjust_brightness(image, float(brightness[i]))
        if contrast is not None:
            image = TF.adjust_contrast(image, float(contrast[i]))
        if saturation is not None:
            image = TF.adjust_saturation(image, float(saturation[i]))
        out.append(image)
    return torch.stack(out)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("which", ["brightness", "contrast", "saturation", "all"])
def test_jitter_pixels_equals_torchvision(seed, which):
    p = _pixels(6, 3, seed)
    g = torch.Generator().manual_seed(100 + seed)
    factors = {k: 2 * torch.rand(6, generator=g) for k in ("brightness", "contrast", "saturation")}  # [0, 2): clamps
    given = {k: (v if which in (k, "all") else None) for k, v in factors.items()}
    torch.testing.assert_close(jitter_pixels(p, **given), _torchvision(p, **given), rtol=0, atol=2e-6)


def test_grey_images_get_brightness_and_contrast_only():
    p = _pixels(5, 1, 3)
    f = torch.tensor([0.3, 0.8, 1.0, 1.4, 1.9])
    torch.testing.assert_close(jitter_pixels(p, f, f, None), _torchvision(p, f, f, None), rtol=0, atol=2e-6)
    assert torch.equal(jitter_pixels(p, None, None, f), p), "saturation leaves a grey image as it is"
    assert torch.equal(_torchvision(p, None, None, f), p), "(torchvision's too)"


@pytest.mark.parametrize("channels", [1, 3])
def test_batch_augment_jitters_each_image_with_its_own_factors(channels):
    """BatchAugment draws the factors on its generator; the same draw reproduced on a twin gives each image's
    factors, and the normalised output is torchvision's jitter of the pixels with them, normalised."""
    mean, std = MEAN[:channels], STD[:channels]
    spec = resolve_augment("none", "cifar10", (9, 7), jitter=0.5)
    assert (spec.brightness, spec.contrast, spec.saturation, spec.jitters) == (0.5, 0.5, 0.5, True)
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    fill = -m.flatten() / s.flatten()
    aug = BatchAugment(spec, fill, "cpu", seed=7, mean=mean, std=std)
    twin = BatchAugment(spec, fill, "cpu", seed=7, mean=mean, std=std)
    p = _pixels(16, channels, 5)
    x = (p - m) / s
    out, mix = aug(x, torch.zeros(16, dtype=torch.long))
    assert mix is None
    brightness, contrast, saturation = twin.jitter_factors(16)
    for f in (brightness, contrast, saturation):  # uniform in [1 - 0.5, 1 + 0.5], one per image
        assert f.shape == (16,) and bool(((f >= 0.5) & (f <= 1.5)).all()) and f.std() > 0.1
    expected = _torchvision(p, brightness, contrast, saturation if channels == 3 else None)
    torch.testing.assert_close(out * s + m, expected, rtol=0, atol=5e-6)
    assert not torch.equal(out, x)


def test_jitter_comes_first_so_shift_borders_stay_black():
    spec = AugmentSpec(crop_pad=2, brightness=0.9, contrast=0.9, saturation=0.9)
    m, s = torch.tensor(MEAN).view(1, -1, 1, 1), torch.tensor(STD).view(1, -1, 1, 1)
    aug = BatchAugment(spec, -m.flatten() / s.flatten(), "cpu", seed=1, mean=MEAN, std=STD)
    out, _ = aug((_pixels(32, 3, 2) - m) / s, torch.zeros(32, dtype=torch.long))
    pixels = out * s + m
    shifted = pixels[:, :, :2].flatten(1).abs().amax(1) < 1e-6  # a top border shifted in: black
    assert shifted.any(), "some image was shifted down by 1-2 rows"


def test_describe_and_presets():
    spec = resolve_augment("standard", "cifar10", (32, 32))
    assert not spec.jitters and "jitter" not in spec.describe(), "no preset jitters"
    assert "colour jitter 0.4/0.4/0.4" in resolve_augment("none", "cifar10", (32, 32), jitter=0.4).describe()


@pytest.mark.slow
def test_a_run_with_jitter_records_it(tmp_path, capsys):
    """--jitter on digits (grey): the run trains, config.json's augment holds the three strengths."""
    out = tmp_path / "run"
    code, _, err = cli(["train", "--data", "digits", "--jitter", "0.4", "--epochs", "1", "--device", "cpu", "--quiet",
                        "--no-plots", "--no-checkpoints", "--out", out], capsys)
    assert code == 0, err
    augment = json.loads((out / "config.json").read_text())["augment"]
    assert (augment["brightness"], augment["contrast"], augment["saturation"]) == (0.4, 0.4, 0.4)


def test_bad_jitter_settings():
    with pytest.raises(ValueError, match=r"--jitter must be in \[0, 1\]; got 1.5"):
        resolve_augment("none", "cifar10", (32, 32), jitter=1.5)
    with pytest.raises(ValueError, match="colour jitter acts on pixel values"):
        BatchAugment(AugmentSpec(brightness=0.2), torch.zeros(3), "cpu")
