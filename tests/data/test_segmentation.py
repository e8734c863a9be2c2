"""Segmentation data: the folder format (exact round trip, every bad input), the photo datasets offline."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convolab.data import load_dataset
from convolab.data.dataset import normalization_stats
from convolab.data.segmentation import is_segmentation_source, load_segmentation
from convolab.errors import DataNotFoundError


def _write_pairs(split_dir: Path, n: int, *, size=(12, 16), classes=3, seed=0, mode="L", start=0):
    """n RGB images and class-index masks (with a few ignored pixels); returns {stem: (image (3,H,W), mask)}."""
    rng = np.random.default_rng(seed)
    (split_dir / "images").mkdir(parents=True, exist_ok=True)
    (split_dir / "masks").mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(start, start + n):
        x = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        y = rng.integers(0, classes, size, dtype=np.uint8)
        y[0, :2] = 255
        Image.fromarray(x, "RGB").save(split_dir / "images" / f"s{i:03d}.png")
        m = Image.fromarray(y, "L")
        if mode == "P":
            m = m.convert("P")  # an L image as P keeps the values as indices (grey palette)
            m.putpalette([v for k in range(256) for v in (k * 7 % 256, k, 255 - k)])
        m.save(split_dir / "masks" / f"s{i:03d}.png")
        out[f"s{i:03d}"] = (x.transpose(2, 0, 1), y)
    return out


def _stack(pairs: dict) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(pairs)
    return np.stack([pairs[k][0] for k in keys]), np.stack([pairs[k][1] for k in keys])


@pytest.mark.parametrize("mode", ["L", "P"])
def test_folder_round_trip_is_exact(tmp_path, mode):
    train = _write_pairs(tmp_path / "train", 6, mode=mode, seed=1)
    test = _write_pairs(tmp_path / "test", 3, mode=mode, seed=2)
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    assert is_segmentation_source(str(tmp_path))
    ds = load_dataset(tmp_path, val_fraction=0.0, cache=False)
    assert ds.task == "segmentation" and ds.ignore_index == 255 and ds.classes == ["background", "cat", "dog"]
    for split, want in ((ds.train, _stack(train)), (ds.test, _stack(test))):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.uint8
        assert np.array_equal(split.images.numpy(), want[0]) and np.array_equal(split.labels.numpy(), want[1])
    assert (ds.mean, ds.std) == normalization_stats(ds.train.images)


def test_val_carved_and_test_held_out_by_seed(tmp_path):
    pairs = _write_pairs(tmp_path, 20, classes=2)  # ROOT/images + ROOT/masks: no splits
    a = load_segmentation(str(tmp_path), val_fraction=0.2, test_fraction=0.25, seed=3, cache=False)
    b = load_segmentation(str(tmp_path), val_fraction=0.2, test_fraction=0.25, seed=3, cache=False)
    c = load_segmentation(str(tmp_path), val_fraction=0.2, test_fraction=0.25, seed=4, cache=False)
    assert (len(a.train), len(a.val), len(a.test)) == (12, 3, 5)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.val.labels, b.val.labels)
    assert not torch.equal(a.test.images, c.test.images)
    everything = torch.cat([a.train.images, a.val.images, a.test.images])
    want = torch.from_numpy(_stack(pairs)[0])
    assert sorted(map(bytes, everything.numpy())) == sorted(map(bytes, want.numpy()))  # a partition of the pairs
    assert a.classes == ["class 0", "class 1"]  # no classes.txt: named from the largest index


def test_own_val_folder_is_used(tmp_path):
    _write_pairs(tmp_path / "train", 4)
    val = _write_pairs(tmp_path / "val", 2, seed=5)
    _write_pairs(tmp_path / "test", 2, seed=6)
    ds = load_segmentation(str(tmp_path), cache=False)
    assert len(ds.train) == 4 and np.array_equal(ds.val.labels.numpy(), _stack(val)[1])


def test_resize_images_bilinear_masks_nearest(tmp_path):
    train = _write_pairs(tmp_path / "train", 3, size=(20, 30))
    _write_pairs(tmp_path / "test", 2, size=(20, 30), seed=1)
    ds = load_segmentation(str(tmp_path), image_size=(10, 14), val_fraction=0.0, cache=False)
    x, y = _stack(train)
    want_x = [np.asarray(Image.fromarray(i.transpose(1, 2, 0)).resize((14, 10), Image.Resampling.BILINEAR))
              for i in x]
    want_y = [np.asarray(Image.fromarray(m).resize((14, 10), Image.Resampling.NEAREST)) for m in y]
    assert np.array_equal(ds.train.images.numpy(), np.stack(want_x).transpose(0, 3, 1, 2))
    assert np.array_equal(ds.train.labels.numpy(), np.stack(want_y))
    assert set(np.unique(ds.train.labels.numpy())) <= {0, 1, 2, 255}  # nearest never blends indices


def test_bad_pairs_are_listed_once_and_skipped(tmp_path, convolab_log):
    good = _write_pairs(tmp_path / "train", 3)
    _write_pairs(tmp_path / "test", 2, seed=1)
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    t = tmp_path / "train"
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(t / "images" / "nomask.png")
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(t / "masks" / "noimage.png")
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(t / "images" / "small.png")
    Image.fromarray(np.zeros((10, 16), np.uint8)).save(t / "masks" / "small.png")
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(t / "images" / "outside.png")
    Image.fromarray(np.full((12, 16), 7, np.uint8)).save(t / "masks" / "outside.png")
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(t / "images" / "broken.png")
    (t / "masks" / "broken.png").write_bytes(b"not a png at all")
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(t / "images" / "rgbmask.png")
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(t / "masks" / "rgbmask.png")
    ds = load_dataset(tmp_path, val_fraction=0.0, cache=False)
    assert np.array_equal(ds.train.labels.numpy(), _stack(good)[1])  # only the good pairs, unchanged
    warnings = [r.getMessage() for r in convolab_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    w = warnings[0]
    assert "skipped 6 bad files" in w
    assert f"{t / 'images' / 'nomask.png'} (no mask {t / 'masks'}/nomask.png" in w
    assert f"{t / 'masks' / 'noimage.png'} (no image" in w
    assert f"{t / 'masks' / 'small.png'} (mask is 10x16 pixels but its image {t / 'images' / 'small.png'} is 12x16" in w
    assert f"{t / 'masks' / 'outside.png'} (holds class index 7, outside the 3 classes (expected 0..2, or 255" in w
    assert f"{t / 'masks' / 'broken.png'} (not an image file" in w
    assert f"{t / 'masks' / 'rgbmask.png'} (mask of mode RGB" in w


def test_cached_load_equals_fresh_and_keeps_the_warning(tmp_path, convolab_log):
    _write_pairs(tmp_path / "train", 4)
    _write_pairs(tmp_path / "test", 2, seed=1)
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(tmp_path / "train" / "images" / "lonely.png")
    first = load_segmentation(str(tmp_path), cache=True)
    second = load_segmentation(str(tmp_path), cache=True)
    assert torch.equal(first.train.images, second.train.images) and torch.equal(first.test.labels, second.test.labels)
    warnings = [r.getMessage() for r in convolab_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("lonely.png" in m for m in warnings)


def test_nothing_usable_is_refused(tmp_path):
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "masks").mkdir(parents=True)
    (tmp_path / "train" / "images" / "a.png").write_bytes(b"junk")
    (tmp_path / "train" / "masks" / "a.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"no usable image/mask pairs .*a\.png \(not an image file"):
        load_segmentation(str(tmp_path), cache=False)


@pytest.mark.parametrize("case, match", [
    ("one-class", r"every mask holds only class 0"),
    ("no-images", r"train: has masks/ but no images/ folder"),
    ("empty-test", r"the test split is empty"),
    ("bad-classes", r"classes.txt: names 1 class; expected one name per line"),
    ("memory", r"would take .* more than the limit .*CONVOLAB_MAX_DATA_BYTES"),
    ("photos", r"mostly 12x1100 pixels \(large photos\).*--image-size"),
])
def test_bad_folders_one_line(tmp_path, case, match):
    _write_pairs(tmp_path / "train", 3, classes=1 if case == "one-class" else 3,
                 size=(12, 1100) if case == "photos" else (12, 16))
    if case == "no-images":
        _write_pairs(tmp_path / "test", 1)
        import shutil

        shutil.rmtree(tmp_path / "train" / "images")
    elif case == "empty-test":
        (tmp_path / "test" / "images").mkdir(parents=True)
        (tmp_path / "test" / "masks").mkdir(parents=True)
    elif case == "bad-classes":
        (tmp_path / "classes.txt").write_text("background\n")
    with pytest.raises(ValueError, match=match) as e:
        load_segmentation(str(tmp_path), cache=False, max_bytes=100 if case == "memory" else None)
    assert "\n" not in str(e.value)


def test_sources_are_recognised(tmp_path):
    for name in ("fashion-scenes", "Fashion_Scenes_Coarse", "oxford-pets", "voc-segmentation"):
        assert is_segmentation_source(name)
    (tmp_path / "cls" / "cat").mkdir(parents=True)  # a classification folder
    assert not is_segmentation_source(str(tmp_path / "cls"))
    assert not is_segmentation_source("fashion-mnist") and not is_segmentation_source(str(tmp_path / "nowhere"))


# -- torchvision's photo datasets: offline refusal, and parsing of a tiny folder in their layout ------------

@pytest.mark.parametrize("name, what", [("oxford-pets", "oxford-iiit-pet/images"), ("voc-segmentation", "VOC2012")])
def test_offline_refusal_says_where_it_looked(tmp_path, name, what):
    with pytest.raises(DataNotFoundError) as e:
        load_dataset(name, data_dir=tmp_path, download=False)
    text = str(e.value)
    assert f"--data-dir {tmp_path}" in text and "user cache" in text and "download not attempted" in text
    assert what in text and "\n" not in text


def test_failed_download_says_why_and_keeps_nothing(monkeypatch, user_cache):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading images.tar.gz:\nTried https://example, got: no network")

    monkeypatch.setattr(torchvision.datasets, "OxfordIIITPet", offline)
    with pytest.raises(DataNotFoundError, match=r"download failed \(RuntimeError: Error downloading images.tar.gz: "
                                                r"Tried https://example, got: no network\)"):
        load_dataset("oxford-pets")
    assert not user_cache.exists()


def _jpeg_and_mask(image: Path, mask: Path, values: np.ndarray, mode: str = "L") -> None:
    image.parent.mkdir(parents=True, exist_ok=True)
    mask.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*values.shape, 3), 128, np.uint8)).save(image, quality=95)
    Image.fromarray(values, "L").convert(mode).save(mask)


def test_oxford_pets_layout_trimaps_become_background_pet_ignore(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    rng = np.random.default_rng(0)
    trimaps = {}
    for stem in ("cat_1", "dog_2", "cat_3"):
        trimaps[stem] = rng.integers(1, 4, (16, 16), dtype=np.uint8)
        _jpeg_and_mask(base / "images" / f"{stem}.jpg", base / "annotations" / "trimaps" / f"{stem}.png",
                       trimaps[stem])
    (base / "annotations" / "trainval.txt").write_text("cat_1 1 1 1\ndog_2 2 2 1\n")
    (base / "annotations" / "test.txt").write_text("cat_3 1 1 1\n")
    ds = load_dataset("oxford-pets", data_dir=tmp_path, download=False, image_size=16, val_fraction=0.0, cache=False)
    assert ds.classes == ["background", "pet"] and ds.ignore_index == 255 and ds.task == "segmentation"
    lut = np.array([0, 1, 0, 255], np.uint8)  # trimap 1 = pet, 2 = background, 3 = border
    assert np.array_equal(ds.train.labels.numpy(), lut[np.stack([trimaps["cat_1"], trimaps["dog_2"]])])
    assert np.array_equal(ds.test.labels.numpy(), lut[trimaps["cat_3"]][None])
    assert ds.train.images.shape == (2, 3, 16, 16)


def test_voc_layout_val_is_the_test_split(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(1)
    masks = {}
    for stem in ("2007_000001", "2007_000002", "2007_000003"):
        masks[stem] = rng.integers(0, 21, (8, 10), dtype=np.uint8)
        masks[stem][0] = 255
        _jpeg_and_mask(voc / "JPEGImages" / f"{stem}.jpg", voc / "SegmentationClass" / f"{stem}.png", masks[stem],
                       mode="P")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n2007_000003\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000002\n")
    ds = load_dataset("voc-segmentation", data_dir=tmp_path, download=False, image_size=(8, 10), val_fraction=0.0,
                      cache=False)
    assert ds.num_classes == 21 and ds.classes[0] == "background" and ds.ignore_index == 255
    assert np.array_equal(ds.train.labels.numpy(), np.stack([masks["2007_000001"], masks["2007_000003"]]))
    assert np.array_equal(ds.test.labels.numpy(), masks["2007_000002"][None])
