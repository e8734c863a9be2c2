"""The streaming path (issue 16): a folder over the memory budget loads as FileImages and is served by
StreamLoader; the in-memory path (DeviceLoader over decoded tensors) is the reference for every figure —
the same uint8 pixels, the same batches for two shuffled epochs, under DDP slicing and after a mid-epoch
resume, and the same normalisation statistics."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from convolab.data import DeviceLoader, Split, load_dataset, normalization_stats
from convolab.data.folder import check_memory, scan_folder
from convolab.data.limits import format_bytes
from convolab.data.stream import FileImages, StreamLoader, make_loader, measure, streamed_stats

CLASSES = ("ankle", "bag", "coat")
PER_CLASS = 100  # 300 images
SIZE = (12, 10)  # (H, W) of most files


def write_folder(root, seed: int = 0):
    """300 noise PNGs in three class folders; a few of another size (resized) and a few grayscale (converted)."""
    rng = np.random.default_rng(seed)
    for k, c in enumerate(CLASSES):
        (root / c).mkdir(parents=True)
        for i in range(PER_CLASS):
            h, w = (15, 9) if i % 23 == 5 else SIZE
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            a[..., k] //= 2  # classes differ in their channel means
            img = Image.fromarray(a, "RGB")
            if i % 31 == 7:
                img = img.convert("L")
            img.save(root / c / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("stream") / "items")


@pytest.fixture(scope="module")
def both(folder):
    """The folder loaded into memory and streamed (same seed); nothing cached."""
    memory = load_dataset(folder, max_bytes=10**9, cache=False, seed=3)
    streamed = load_dataset(folder, max_bytes=1, cache=False, seed=3)
    return memory, streamed


SPLITS = ("train", "val", "test")


def test_the_budget_chooses_the_path(both):
    memory, streamed = both
    for s in SPLITS:
        assert isinstance(getattr(memory, s).images, torch.Tensor)
        assert isinstance(getattr(streamed, s).images, FileImages)
    assert len(memory.train) + len(memory.val) + len(memory.test) == 3 * PER_CLASS
    for attr in ("classes", "in_chans", "image_size", "input_size", "num_classes", "task"):
        assert getattr(memory, attr) == getattr(streamed, attr), attr
    assert memory.image_size == SIZE and memory.in_chans == 3


def test_the_choice_is_logged_with_its_reason(folder, convolab_log):
    need = 3 * PER_CLASS * 3 * SIZE[0] * SIZE[1]
    load_dataset(folder, max_bytes=need - 1, cache=False)
    lines = [r.getMessage() for r in convolab_log.records if "streaming" in r.getMessage()]
    assert len(lines) == 1
    assert f"take {format_bytes(need)} decoded, more than the in-memory limit of {format_bytes(need - 1)}" in lines[0]
    convolab_log.clear()
    ds = load_dataset(folder, max_bytes=need, cache=False)  # exactly at the limit: in memory
    assert isinstance(ds.train.images, torch.Tensor)
    assert not any("streaming" in r.getMessage() for r in convolab_log.records)


def test_the_budget_from_the_environment(folder, monkeypatch):
    monkeypatch.setenv("CONVOLAB_MAX_DATA_BYTES", "1K")
    assert isinstance(load_dataset(folder, cache=False).train.images, FileImages)


@pytest.mark.parametrize("split", SPLITS)
def test_identical_uint8_pixels_and_labels(both, split):
    memory, streamed = (getattr(d, split) for d in both)
    assert torch.equal(memory.labels, streamed.labels) and streamed.labels.dtype == torch.int64
    fi = streamed.images
    assert fi.shape == memory.images.shape and fi.dtype == torch.uint8 and fi.ndim == 4
    assert len(fi) == len(memory.images) and fi.nbytes == memory.images.numel()
    n = len(fi)
    gen = torch.Generator().manual_seed(0)
    for index in (torch.randint(0, n, (17,), generator=gen), torch.randperm(n, generator=gen)[:9].numpy(),
                  slice(3, 11), slice(None, None, 7), [n - 1, -1, 0, 0], torch.rand(n, generator=gen) < 0.2,
                  torch.arange(n)):
        got = fi[index]
        assert got.dtype == torch.uint8 and got.shape[1:] == memory.images.shape[1:]
        assert torch.equal(got, memory.images[torch.as_tensor(index)] if not isinstance(index, slice)
                           else memory.images[index])
    assert torch.equal(fi[5], memory.images[5])  # an int: one (C, H, W) image


def test_pixels_match_pil_for_a_file_that_needs_no_conversion(both):
    """An independent reference: an RGB file of the target size decodes to PIL's own pixels."""
    fi = both[1].train.images
    for i, path in enumerate(fi.files):
        with Image.open(path) as img:
            if img.mode == "RGB" and img.size == SIZE[::-1]:
                assert torch.equal(fi[i], torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy()))
                break
    else:
        pytest.fail("no RGB file of the dominant size")


def test_normalisation_stats_are_exact(both):
    memory, streamed = both
    decoded = memory.train.images
    assert streamed.mean == pytest.approx(memory.mean, rel=1e-12, abs=0)
    assert streamed.std == pytest.approx(memory.std, rel=1e-12, abs=0)
    # and both against a float64 computation over the decoded tensor (population std)
    x = decoded.to(torch.float64) / 255
    ref_mean = x.mean(dim=(0, 2, 3)).tolist()
    ref_std = x.std(dim=(0, 2, 3), correction=0).tolist()
    assert streamed.mean == pytest.approx(ref_mean, rel=1e-12) and streamed.std == pytest.approx(ref_std, rel=1e-12)
    # without recorded sums, one streaming pass gives the same figures
    fi = streamed.train.images
    bare = FileImages(fi.files, fi.size, fi.channels)
    assert bare.pixel_sums is None
    assert streamed_stats(bare, num_workers=0) == (streamed.mean, streamed.std)


def test_constant_channel_is_left_unscaled(tmp_path):
    for k, c in enumerate(("a", "b")):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (4, 4), (7, 10 * i + k, 0)).save(tmp_path / c / f"{i}.png")
    fi = FileImages(sorted(tmp_path.rglob("*.png")), (4, 4), 3)
    mean, std = streamed_stats(fi, num_workers=0)
    ref = normalization_stats(fi[:])
    assert mean == pytest.approx(ref[0], rel=1e-12) and std == pytest.approx(ref[1], rel=1e-12)
    assert std[0] == 1.0 and std[2] == 1.0 and mean[0] == 7 / 255


def loaders(memory: Split, streamed: Split, batch_size: int, **kwargs) -> tuple[DeviceLoader, StreamLoader]:
    stats = dict(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    dev = make_loader(memory, batch_size, **stats, **kwargs)
    st = make_loader(streamed, batch_size, num_workers=2, **stats, **kwargs)
    assert type(dev) is DeviceLoader and type(st) is StreamLoader
    return dev, st


def assert_same_batches(dev, st, epochs: int = 1) -> list[torch.Tensor]:
    """Iterate both loaders ``epochs`` times, comparing every batch; returns the labels served."""
    labels = []
    for _ in range(epochs):
        a, b = list(dev), list(st)
        assert len(a) == len(b) == len(dev) == len(st)
        assert [len(y) for _, y in b] == st.batch_sizes() == dev.batch_sizes()
        for (xa, ya), (xb, yb) in zip(a, b):
            assert xb.dtype == torch.float32 and yb.dtype == torch.int64
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
            assert xa.stride() == xb.stride()  # the same memory format
            labels.append(yb)
    return labels


@pytest.mark.parametrize("channels_last", [False, True])
def test_same_batches_for_two_shuffled_epochs(both, channels_last):
    dev, st = loaders(both[0].train, both[1].train, 32, shuffle=True, seed=11, channels_last=channels_last)
    assert st.num_samples == dev.num_samples and len(st) == len(dev)
    served = assert_same_batches(dev, st, epochs=2)
    epoch = len(dev)
    assert not torch.equal(torch.cat(served[:epoch]), both[0].train.labels)  # it did shuffle
    assert not torch.equal(torch.cat(served[:epoch]), torch.cat(served[epoch:]))  # a new order each epoch
    assert torch.equal(torch.cat(served[:epoch]).sort().values, both[0].train.labels.sort().values)
    if channels_last:
        x, _ = next(iter(st))
        assert x.is_contiguous(memory_format=torch.channels_last)


def test_same_batches_unshuffled_with_a_short_last_batch(both):
    dev, st = loaders(both[0].test, both[1].test, 25)
    assert len(both[0].test) % 25  # a short last batch
    assert_same_batches(dev, st)


def test_same_rank_slices_under_ddp(both):
    kw = dict(shuffle=True, seed=5, world_size=2)
    seen = []
    for rank in (0, 1):
        dev, st = loaders(both[0].train, both[1].train, 32, rank=rank, **kw)
        assert len(st) == len(both[0].train) // 32  # the incomplete last batch is dropped
        seen.append(assert_same_batches(dev, st, epochs=2))
    # each rank takes its half of every global batch: together, the single process's batches (less the last)
    single = make_loader(both[1].train, 32, mean=(0.5,) * 3, std=(0.5,) * 3, shuffle=True, seed=5, num_workers=0)
    whole = [y for _ in range(2) for _, y in single]
    steps = len(both[0].train) // 32
    assert len(whole) == 2 * (steps + 1) and len(seen[0]) == len(seen[1]) == 2 * steps
    for epoch in range(2):
        for k in range(steps):
            halves = torch.cat([seen[0][epoch * steps + k], seen[1][epoch * steps + k]])
            assert torch.equal(halves, whole[epoch * (steps + 1) + k])


def test_resume_mid_epoch(both):
    dev, st = loaders(both[0].train, both[1].train, 16, shuffle=True, seed=2)
    list(dev), list(st)  # epoch 1
    taken_dev, taken_st = iter(dev), iter(st)
    for _ in range(3):  # 3 batches of epoch 2, then "killed"
        next(taken_dev), next(taken_st)
    state = st.state_dict()
    assert torch.equal(state["generator"], dev.state_dict()["generator"])
    expected = list(taken_dev) + [b for b in dev]  # the rest of epoch 2, then epoch 3, uninterrupted
    del taken_st
    resumed = make_loader(both[1].train, 16, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), shuffle=True, seed=999,
                          num_workers=1)
    resumed.load_state_dict(pickle.loads(pickle.dumps(state)), skip_batches=3)
    got = list(resumed) + list(resumed)
    assert len(got) == len(expected) == 2 * len(dev) - 3
    for (xa, ya), (xb, yb) in zip(expected, got):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_stream_loader_takes_only_files(both):
    with pytest.raises(ValueError, match="StreamLoader serves images on disk"):
        StreamLoader(both[0].train, 8, mean=(0.5,) * 3, std=(0.5,) * 3)
    for bad in (dict(batch_size=0), dict(batch_size=3, world_size=2), dict(batch_size=4, num_workers=-1)):
        with pytest.raises(ValueError):
            StreamLoader(both[1].train, mean=(0.5,) * 3, std=(0.5,) * 3, **bad)


def test_empty_split_yields_nothing(both):
    empty = Split(both[1].val.images.subset([]), torch.zeros(0, dtype=torch.int64))
    st = StreamLoader(empty, 4, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert len(st) == 0 and list(st) == []


def test_file_images_indexing(both):
    fi = both[1].test.images
    n = len(fi)
    with pytest.raises(IndexError):
        fi[[n]]
    with pytest.raises(IndexError):
        fi[torch.ones(n + 1, dtype=torch.bool)]
    with pytest.raises(IndexError):
        fi[np.zeros((2, 2), np.int64)]
    assert fi[[]].shape == (0, 3, *SIZE)
    sub = fi.subset(torch.tensor([4, 1]))
    assert sub.files == (fi.files[4], fi.files[1]) and torch.equal(sub[:], fi[[4, 1]])
    assert pickle.loads(pickle.dumps(fi)).files == fi.files  # what a spawned worker receives
    assert repr(fi) == f"FileImages({n} files -> 3x12x10 uint8)"


def test_file_failing_to_decode_is_skipped_as_in_memory(tmp_path, convolab_log):
    """A truncated PNG passes the header scan; both paths drop it before drawing the splits."""
    root = write_folder(tmp_path / "f")
    data = (root / "bag" / "000.png").read_bytes()
    (root / "bag" / "zz-truncated.png").write_bytes(data[: len(data) // 2])
    memory = load_dataset(root, max_bytes=10**9, cache=False)
    streamed = load_dataset(root, max_bytes=1, cache=False)
    for s in SPLITS:
        a, b = getattr(memory, s), getattr(streamed, s)
        assert torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images[:])
        assert not any("zz-truncated" in f for f in b.images.files)
    warnings = [r.getMessage() for r in convolab_log.records if r.levelno == logging.WARNING]
    assert sum("zz-truncated.png" in w for w in warnings) == 2  # once per load


def test_file_gone_mid_run_is_one_line_naming_it(tmp_path):
    root = write_folder(tmp_path / "f")
    ds = load_dataset(root, max_bytes=1, cache=False)
    gone = ds.test.images.files[2]
    (tmp_path / "f" / gone).unlink()
    st = make_loader(ds.test, 8, mean=(0.5,) * 3, std=(0.5,) * 3, num_workers=1)
    with pytest.raises(ValueError) as e:
        list(st)
    assert str(e.value) == f"{gone}: no such file"


def test_measure_reports_unreadable_files(tmp_path):
    root = write_folder(tmp_path / "f")
    files = sorted(root.rglob("*.png"))[:70]
    (root / "junk.png").write_bytes(b"not a png")
    fi = FileImages(files[:40] + [root / "junk.png"] + files[40:], SIZE, 3)
    readable, keep, bad = measure(fi, num_workers=2)
    assert len(readable) == 70 and keep.tolist() == [i for i in range(71) if i != 40]
    assert [p.name for p, _ in bad] == ["junk.png"] and "not an image file" in bad[0][1]
    assert torch.equal(readable[:], fi[keep])
    # the recorded sums are each image's own
    a = fi[[0]].to(torch.int64).reshape(3, -1)
    assert readable.pixel_sums[0].tolist() == [[int(s), int(q)] for s, q in zip(a.sum(1), (a * a).sum(1))]


def test_check_memory_refuses_only_when_it_cannot_stream(tmp_path):
    for k, c in enumerate(("a", "b")):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.new("RGB", (40, 30), (i, k, 0)).save(tmp_path / c / f"{i}.png")
    scan = scan_folder(tmp_path)
    need = 10 * 3 * 30 * 40
    assert check_memory(scan, need) is True
    assert check_memory(scan, need - 1, stream=True) is False
    with pytest.raises(ValueError) as e:  # a caller that cannot stream still gets the figures
        check_memory(scan, need - 1)
    msg = str(e.value)
    assert "\n" not in msg and f"10 images of 3x30x40 would take {format_bytes(need)} in memory" in msg
    assert "--image-size 29x39 fits" in msg


def test_large_photos_are_refused_streamed_or_not(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.new("RGB", (1600, 1200), (i, 0, 0)).save(tmp_path / c / f"{i}.png")
    with pytest.raises(ValueError, match="large photos"):
        load_dataset(tmp_path, max_bytes=1)
    ds = load_dataset(tmp_path, max_bytes=1, image_size=(24, 32), val_fraction=0.0, cache=False, test_fraction=0.5)
    assert isinstance(ds.train.images, FileImages) and ds.train.images[:].shape == (2, 3, 24, 32)


def test_streamed_split_does_not_use_the_decode_cache(folder, user_cache):
    load_dataset(folder, max_bytes=1)
    assert not (user_cache / "decoded").exists()
    load_dataset(folder)
    assert (user_cache / "decoded").exists()


def test_train_val_test_folders_stream_the_same_splits(tmp_path):
    """The PATH/train, PATH/val, PATH/test layout: each split from its own folder, on both paths."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("val", 6), ("test", 8)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n // 2):
                pixels = rng.integers(0, 256, (6, 5), dtype=np.uint8)
                Image.fromarray(pixels, "L").save(tmp_path / split / c / f"{i}.png")
    memory = load_dataset(tmp_path, cache=False)
    streamed = load_dataset(tmp_path, max_bytes=1, cache=False)
    assert streamed.in_chans == 1 and streamed.image_size == (6, 5)
    for s, n in (("train", 20), ("val", 6), ("test", 8)):
        a, b = getattr(memory, s), getattr(streamed, s)
        assert len(b) == n and torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images[:])
        assert all(f"/{s}/" in f for f in b.images.files)
    assert streamed.mean == pytest.approx(memory.mean, rel=1e-12)
    assert streamed.std == pytest.approx(memory.std, rel=1e-12)
