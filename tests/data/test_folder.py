"""Image-folder datasets (``load_dataset(path)``), generated with PIL in temporary folders.

Most images are a constant grey value unique in their folder, so the value read back says which
file an image came from; images whose conversion is under test are noise, compared with PIL's own
conversion (``Image.convert``, ``resize(..., BILINEAR)``) as the reference.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convolab.data import load_dataset
from convolab.data.folder import scan_folder


def save_constant(path: Path, value: int, size=(28, 28), mode="L") -> None:
    """A ``size`` (H, W) image filled with ``value`` (in every band)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    Image.new(mode, (w, h), value if mode == "L" else (value,) * len(mode)).save(path)


def make_class_folder(root: Path, counts: dict[str, int], start: int = 1) -> dict[int, int]:
    """``root/<class>/NNN.png`` constant images with unique values; returns value -> label (classes sorted)."""
    value_to_label = {}
    value = start
    for label, name in enumerate(sorted(counts)):
        for i in range(counts[name]):
            save_constant(root / name / f"{i:03d}.png", value)
            value_to_label[value] = label
            value += 1
    return value_to_label


def values_of(images: torch.Tensor) -> list[int]:
    """The constant value of each image, checking that each image is constant."""
    flat = images.reshape(len(images), -1)
    assert torch.equal(flat, flat[:, :1].expand_as(flat)), "expected constant images"
    return flat[:, 0].tolist()


def check_labels(split, value_to_label: dict[int, int]) -> list[int]:
    values = values_of(split.images)
    assert split.labels.tolist() == [value_to_label[v] for v in values]
    return values


# --- layouts ---------------------------------------------------------------------------------------------


def test_train_test_layout(tmp_path):
    train = make_class_folder(tmp_path / "train", {"boot": 12, "sandal": 8, "shirt": 10}, start=1)
    test = make_class_folder(tmp_path / "test", {"boot": 3, "sandal": 4, "shirt": 5}, start=101)
    ds = load_dataset(tmp_path, val_fraction=0.25)
    assert ds.classes == ["boot", "sandal", "shirt"]
    assert ds.name == str(tmp_path) and ds.source == str(tmp_path)
    assert ds.train.images.shape[1:] == (1, 28, 28) and ds.train.images.dtype == torch.uint8
    tr, va, te = (check_labels(s, train if s is not ds.test else test) for s in (ds.train, ds.val, ds.test))
    assert sorted(te) == sorted(test)  # test/ used as is
    assert sorted(tr + va) == sorted(train) and not set(tr) & set(va)
    assert Counter(train[v] for v in va) == {0: 3, 1: 2, 2: round(0.25 * 10)}  # stratified val from train/


def test_flat_layout_is_split_stratified(tmp_path):
    counts = {"cat": 10, "dog": 15, "fish": 20}
    v2l = make_class_folder(tmp_path, counts)
    ds = load_dataset(tmp_path, test_fraction=0.2, val_fraction=0.1, seed=3)
    assert ds.classes == ["cat", "dog", "fish"]
    tr, va, te = (check_labels(s, v2l) for s in (ds.train, ds.val, ds.test))
    assert sorted(tr + va + te) == sorted(v2l)  # every image exactly once
    assert Counter(v2l[v] for v in te) == {0: 2, 1: 3, 2: 4}  # 20 % of each class
    assert Counter(v2l[v] for v in va) == {0: 1, 1: 1, 2: 2}  # round(0.1 * 8, 12, 16) (at least 1)


def test_flat_layout_split_is_seeded(tmp_path):
    make_class_folder(tmp_path, {"a": 20, "b": 20})

    def test_values(seed):
        return sorted(values_of(load_dataset(tmp_path, seed=seed).test.images))

    assert test_values(0) == test_values(0)
    assert test_values(0) != test_values(1)


def test_val_folder_is_used_as_is(tmp_path):
    train = make_class_folder(tmp_path / "train", {"a": 6, "b": 6}, start=1)
    val = make_class_folder(tmp_path / "val", {"a": 2, "b": 3}, start=51)
    test = make_class_folder(tmp_path / "test", {"a": 4, "b": 1}, start=101)
    ds = load_dataset(tmp_path, val_fraction=0.5)  # ignored: the folder has its own val/
    assert sorted(check_labels(ds.train, train)) == sorted(train)
    assert sorted(check_labels(ds.val, val)) == sorted(val)
    assert sorted(check_labels(ds.test, test)) == sorted(test)


def test_train_and_val_without_test_carves_test_from_train(tmp_path):
    train = make_class_folder(tmp_path / "train", {"a": 10, "b": 10}, start=1)
    val = make_class_folder(tmp_path / "val", {"a": 2, "b": 2}, start=51)
    ds = load_dataset(tmp_path, test_fraction=0.3)
    tr, va, te = check_labels(ds.train, train), check_labels(ds.val, val), check_labels(ds.test, train)
    assert sorted(va) == sorted(val)
    assert sorted(tr + te) == sorted(train)
    assert Counter(train[v] for v in te) == {0: 3, 1: 3}


def test_class_only_in_test_is_an_error(tmp_path):
    make_class_folder(tmp_path / "train", {"a": 2})
    make_class_folder(tmp_path / "test", {"a": 1, "zebra": 1})
    with pytest.raises(ValueError, match="zebra"):
        load_dataset(tmp_path)


def test_test_without_train_is_an_error(tmp_path):
    make_class_folder(tmp_path / "test", {"a": 2})
    with pytest.raises(ValueError, match="no train/"):
        load_dataset(tmp_path)


# --- sizes and modes --------------------------------------------------------------------------------------


def noise(shape, seed, dtype=np.uint8, high=256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, shape, dtype=dtype)


def test_odd_sizes_and_modes_become_gray_28x28(tmp_path, convolab_log):
    root = tmp_path / "train"
    for i in range(10):  # the majority: 28x28 grayscale
        save_constant(root / "a" / f"{i:02d}.png", 10 + i)
    odd = {  # file name -> (PIL image, reference array (28, 28)); in class folder "b"
        "rgb.png": Image.fromarray(noise((28, 28, 3), 1), "RGB"),
        "rgba.png": Image.fromarray(noise((28, 28, 4), 2), "RGBA"),
        "p.png": Image.fromarray(noise((28, 28, 3), 3), "RGB").quantize(16),
        "la.png": Image.fromarray(noise((28, 28, 2), 4), "LA"),
        "i16.png": Image.fromarray(noise((28, 28), 5, np.uint16, 65536)),
        "wide-l.png": Image.fromarray(noise((30, 40), 6), "L"),
        "wide-rgb.png": Image.fromarray(noise((30, 40, 3), 7), "RGB"),
    }
    for name, img in odd.items():
        (root / "b").mkdir(parents=True, exist_ok=True)
        img.save(root / "b" / name)
    for i in range(4):
        save_constant(tmp_path / "test" / "a" / f"{i}.png", 200 + i)

    def reference(name: str) -> np.ndarray:
        img = Image.open(root / "b" / name)
        if img.mode == "I;16":
            return np.asarray(img, np.uint16) >> 8  # documented: the top 8 bits of 16-bit grey
        gray = img.convert("L")
        return np.asarray(gray.resize((28, 28), Image.Resampling.BILINEAR) if gray.size != (28, 28) else gray)

    assert Image.open(root / "b" / "i16.png").mode == "I;16"
    assert Image.open(root / "b" / "p.png").mode == "P"
    ds = load_dataset(tmp_path, val_fraction=0.0)  # train keeps file order: a/00..09, then b/ sorted
    assert ds.train.images.shape == (17, 1, 28, 28)
    assert values_of(ds.train.images[:10]) == list(range(10, 20))
    for k, name in enumerate(sorted(odd)):
        np.testing.assert_array_equal(ds.train.images[10 + k, 0].numpy(), reference(name), err_msg=name)
    assert ds.train.labels.tolist() == [0] * 10 + [1] * 7
    assert any("2 resized, 6 converted" in r.getMessage() for r in convolab_log.records)


def test_mostly_rgb_folder_gives_three_channels(tmp_path):
    rgb = {f"{i:02d}.png": noise((28, 28, 3), 10 + i) for i in range(6)}
    for name, arr in rgb.items():
        (tmp_path / "train" / "x").mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr, "RGB").save(tmp_path / "train" / "x" / name)
    gray = noise((28, 28), 30)
    Image.fromarray(gray, "L").save(tmp_path / "train" / "x" / "90-gray.png")
    rgba = noise((28, 28, 4), 31)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "train" / "x" / "91-rgba.png")
    save_constant(tmp_path / "train" / "y" / "0.png", 6, mode="RGB")  # a second class: a classifier needs two
    save_constant(tmp_path / "test" / "x" / "0.png", 5, mode="RGB")
    ds = load_dataset(tmp_path, val_fraction=0.0)
    assert ds.in_chans == 3 and ds.train.images.shape == (9, 3, 28, 28)
    for k, arr in enumerate(rgb.values()):
        np.testing.assert_array_equal(ds.train.images[k].numpy(), arr.transpose(2, 0, 1))
    np.testing.assert_array_equal(ds.train.images[6].numpy(), np.stack([gray] * 3))  # grey repeated
    np.testing.assert_array_equal(ds.train.images[7].numpy(), rgba[..., :3].transpose(2, 0, 1))  # alpha dropped
    assert len(ds.mean) == len(ds.std) == 3


def test_dominant_size_wins(tmp_path):
    for i in range(5):
        save_constant(tmp_path / "c" / f"big{i}.png", 50 + i, size=(32, 20))
    save_constant(tmp_path / "c" / "small.png", 7, size=(28, 28))
    for i in range(2):  # a second class (a classifier needs two), with one image in the test split
        save_constant(tmp_path / "d" / f"{i}.png", 60 + i, size=(32, 20))
    scan = scan_folder(tmp_path)
    assert (scan.size, scan.channels, scan.n_resized) == ((32, 20), 1, 1)
    ds = load_dataset(tmp_path, test_fraction=0.3, val_fraction=0.0)
    assert ds.image_size == (32, 20)
    values = sorted(values_of(ds.train.images) + values_of(ds.test.images))
    assert values == [7, 50, 51, 52, 53, 54, 60, 61]  # a constant image stays constant


# --- unreadable files --------------------------------------------------------------------------------------


@pytest.fixture
def folder_with_bad_files(tmp_path):
    v2l = make_class_folder(tmp_path, {"a": 8, "b": 8})
    (tmp_path / "a" / "zz-random.png").write_bytes(np.random.default_rng(0).bytes(500))
    full = tmp_path / "full.png"
    Image.fromarray(noise((64, 64), 1), "L").save(full)  # noise: the PNG's pixel data is most of the file
    data = full.read_bytes()
    full.unlink()
    (tmp_path / "b" / "zz-truncated.png").write_bytes(data[: len(data) // 2])
    with Image.open(tmp_path / "b" / "zz-truncated.png") as img:  # the header reads: only decoding fails
        assert img.size == (64, 64)
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "README").write_text("no extension")
    return tmp_path, v2l


@pytest.mark.parametrize("cache", [False, True])
def test_unreadable_files_are_skipped_with_a_warning(folder_with_bad_files, convolab_log, cache):
    root, v2l = folder_with_bad_files
    for attempt in range(2 if cache else 1):  # with the cache, the second load must warn too
        convolab_log.clear()
        ds = load_dataset(root, cache=cache)
        values = [v for s in (ds.train, ds.val, ds.test) for v in check_labels(s, v2l)]
        assert sorted(values) == sorted(v2l), f"attempt {attempt}"
        warnings = [r.getMessage() for r in convolab_log.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "skipped 2 unreadable" in warnings[0]
        assert str(root / "a" / "zz-random.png") in warnings[0]
        assert str(root / "b" / "zz-truncated.png") in warnings[0]
        assert "notes.txt" not in warnings[0] and "README" not in warnings[0]


def test_non_image_files_are_not_listed(folder_with_bad_files):
    root, _ = folder_with_bad_files
    names = {p.name for p in scan_folder(root).all_files()}
    assert "notes.txt" not in names and "README" not in names


# --- errors ------------------------------------------------------------------------------------------------


def test_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="no class subfolders"):
        load_dataset(tmp_path)


def test_folder_without_class_subfolders(tmp_path):
    save_constant(tmp_path / "a.png", 1)
    save_constant(tmp_path / "b.png", 2)
    with pytest.raises(ValueError, match="no class subfolders"):
        load_dataset(tmp_path)


def test_class_folders_without_images(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files"):
        load_dataset(tmp_path)


def test_only_unreadable_images(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="none of its 1 image files"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("relative", [False, True])
def test_missing_path(tmp_path, monkeypatch, relative):
    monkeypatch.chdir(tmp_path)
    path = "./no-such-folder" if relative else str(tmp_path / "no-such-folder")
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        load_dataset(path)


def test_file_instead_of_folder(tmp_path):
    save_constant(tmp_path / "one.png", 1)
    with pytest.raises(ValueError, match="one.png"):
        load_dataset(tmp_path / "one.png")
