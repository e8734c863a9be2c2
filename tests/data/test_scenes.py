"""fashion-scenes: deterministic by seed, exact masks (against a naive loop), no item shared between splits."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from convolab.data import builtin as builtin_module
from convolab.data import dataset as dataset_module
from convolab.data import scenes


def _items(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    x[x < 100] = 0  # transparent holes, as Fashion-MNIST's black background
    return x, np.arange(n) % 10


def _naive(items, labels, layout: scenes.ItemLayout, class_map, canvas=64):
    """One pixel at a time: the reference the vectorised composite must equal."""
    n = len(layout.count)
    images = np.zeros((n, 1, canvas, canvas), np.uint8)
    masks = np.zeros((n, canvas, canvas), np.uint8)
    for i in range(n):
        for j in range(int(layout.count[i])):
            item, s = items[layout.item[i, j]], int(layout.scale[i, j])
            for r in range(28 * s):
                for c in range(28 * s):
                    v = item[r // s, c // s]
                    if v >= scenes.OPAQUE:
                        images[i, 0, layout.top[i, j] + r, layout.left[i, j] + c] = v
                        masks[i, layout.top[i, j] + r, layout.left[i, j] + c] = class_map[labels[layout.item[i, j]]]
    return images, masks


def test_vectorised_composite_equals_a_naive_loop():
    items, labels = _items()
    layout = scenes.draw_layout(12, len(items), seed=3)
    assert set(layout.count) == {1, 2, 3} and set(layout.scale.ravel()) == {1, 2}
    for class_map in (scenes._FINE_MAP, scenes._COARSE_MAP):
        got = scenes.composite(items, labels, layout, class_map, chunk=5)  # chunks smaller than the batch
        want = _naive(items, labels, layout, class_map)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_same_seed_same_bytes_other_seed_other_scenes():
    items, labels = _items()
    a = scenes.make_scenes(items, labels, 50, seed=7)
    b = scenes.make_scenes(items, labels, 50, seed=7)
    c = scenes.make_scenes(items, labels, 50, seed=8)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert a[0].tobytes() != c[0].tobytes()
    assert a[0].shape == (50, 1, 64, 64) and a[1].shape == (50, 64, 64) and a[1].dtype == np.uint8


def test_coarse_masks_are_the_fine_ones_merged():
    items, labels = _items()
    fine = scenes.make_scenes(items, labels, 30, seed=1)
    coarse = scenes.make_scenes(items, labels, 30, seed=1, coarse=True)
    merge = np.array([0, 1, 2, 1, 1, 1, 3, 1, 3, 4, 3], np.uint8)  # fine mask value -> coarse, by the class names
    for f, name in enumerate(scenes.FINE_CLASSES):
        want = {"background": "background", "Trouser": "trouser", "Bag": "bag",
                "Sandal": "footwear", "Sneaker": "footwear", "Ankle boot": "footwear"}.get(name, "top")
        assert scenes.COARSE_CLASSES[merge[f]] == want
    assert np.array_equal(coarse[0], fine[0]) and np.array_equal(coarse[1], merge[fine[1]])


def _fake_fashion(monkeypatch):
    """Fashion-MNIST stand-in whose items carry their identity: item k is a solid square of value k + 1."""
    def square(values):
        return torch.from_numpy(np.repeat(np.asarray(values, np.uint8), 28 * 28).reshape(-1, 1, 28, 28))

    # values 1..100 for train, 101..140 for test: load_builtin's (train_x, train_y, test_x, test_y, classes, source)
    fake = (square(range(1, 101)).numpy(), (np.arange(100) % 10), square(range(101, 141)).numpy(),
            (np.arange(40) % 10), list(scenes.FINE_CLASSES[1:]), "fake")
    monkeypatch.setattr(builtin_module, "load_builtin", lambda *a, **k: fake)


def test_no_item_shared_between_train_val_and_test(monkeypatch):
    _fake_fashion(monkeypatch)
    ds = scenes.load_fashion_scenes(seed=4, val_fraction=0.2, n_train=300, n_test=60)
    used = {split: set(np.unique(getattr(ds, split).images.numpy())) - {0} for split in ("train", "val", "test")}
    assert (len(ds.train), len(ds.val), len(ds.test)) == (240, 60, 60)
    assert used["train"] and used["val"] and used["test"]
    assert max(used["train"] | used["val"]) <= 100 < min(used["test"])  # train/val items only from the train split
    assert not used["train"] & used["val"]  # validation scenes are of held-out items
    again = scenes.load_fashion_scenes(seed=5, val_fraction=0.2, n_train=300, n_test=60)
    assert torch.equal(again.test.images, ds.test.images)  # the test set does not depend on the seed
    assert not torch.equal(again.train.images, ds.train.images)


def test_real_scenes_are_consistent():
    ds = scenes.load_fashion_scenes(seed=0, n_train=200, n_test=50, cache=False)
    assert ds.task == "segmentation" and ds.classes == list(scenes.FINE_CLASSES) and ds.num_classes == 11
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.uint8
    assert ds.train.images.shape[1:] == (1, 64, 64) and ds.train.labels.shape[1:] == (64, 64)
    for split in (ds.train, ds.val, ds.test):
        # black background: a pixel belongs to an item exactly where it is not black
        assert torch.equal(split.labels > 0, split.images[:, 0] > 0)
        assert int(split.labels.max()) <= 10
    mean, std = dataset_module.normalization_stats(ds.train.images)
    assert (ds.mean, ds.std) == (mean, std)


@pytest.mark.slow
def test_default_size_is_fast_and_through_load_dataset():
    start = time.perf_counter()
    ds = dataset_module.load_dataset("fashion-scenes-coarse", cache=False)
    took = time.perf_counter() - start
    assert (len(ds.train) + len(ds.val), len(ds.test)) == (8000, 2000) and ds.num_classes == 5
    assert set(np.unique(ds.train.labels.numpy())) == {0, 1, 2, 3, 4}
    assert took < 10, f"generation took {took:.1f} s"
