"""Bad image files (issue 15): each is one ValueError naming the file, never a hang or a traceback.

Named pipes would block ``open`` forever before the fix, so those tests run under an alarm that turns a
hang into a failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from convolab.data import load_dataset
from convolab.data.folder import scan_folder
from convolab.data.images import image_header, load_image, open_image
from convolab.explain.inputs import image_files, load_folder


@contextlib.contextmanager
def no_hang(seconds: float = 5):
    """Fail, instead of hanging the suite, when the body blocks on a named pipe made by :func:`mkfifo`.

    Every ``seconds`` a writer opens and closes each of them, which releases a reader blocked
    in ``open``; the body must finish before the first release.
    """
    stop = threading.Event()

    def release():
        while not stop.wait(seconds):
            for fifo in _FIFOS:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO while nobody reads it
                except OSError:
                    pass

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    start = time.monotonic()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    assert time.monotonic() - start < seconds, "blocked on a named pipe"


_FIFOS: list = []


def mkfifo(path):
    os.mkfifo(path)
    _FIFOS.append(path)


def noise_png(path, size=(64, 64), seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8), "L").save(path)


def truncated_png(path):
    """A PNG whose header reads (size known) but whose pixel data is cut in half."""
    noise_png(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as img:
        assert img.size == (64, 64)


def make_bad(tmp_path, kind: str):
    path = tmp_path / "x.png"
    if kind == "fifo":
        mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        truncated_png(path)
    elif kind == "not an image":
        path.write_bytes(b"hello, I am text")
    return path


BAD = {"fifo": "not a regular file", "folder": "is a folder", "empty": "empty file", "truncated": "cannot decode",
       "not an image": "not an image file"}


# image_header reads the header alone: a truncated file's damage shows only when it is decoded.
CASES = [(kind, reader) for kind in sorted(BAD) for reader in ("open_image", "load_image", "image_header")
         if (kind, reader) != ("truncated", "image_header")]


@pytest.mark.parametrize("kind,reader", CASES)
def test_bad_file_is_one_line_naming_it(tmp_path, kind, reader):
    path = make_bad(tmp_path, kind)
    read = {"open_image": open_image, "image_header": image_header,
            "load_image": lambda p: load_image(p, (8, 8), 1)}[reader]
    with no_hang(), pytest.raises(ValueError) as e:
        read(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and BAD[kind] in msg and "\n" not in msg


@pytest.mark.parametrize("pixels", [40 * 40, 60 * 60], ids=["warning-variant", "error-variant"])
def test_decompression_bomb_is_refused(tmp_path, monkeypatch, pixels):
    # Pillow warns past MAX_IMAGE_PIXELS and raises DecompressionBombError past twice that; a small limit
    # makes both cheap to reach.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    side = int(pixels**0.5)
    path = tmp_path / "bomb.png"
    Image.new("L", (side, side)).save(path)
    for read in (open_image, image_header, lambda p: load_image(p, (8, 8), 1)):
        with pytest.raises(ValueError, match="decompression bomb") as e:
            read(path)
        assert str(e.value).startswith(f"{path}: ")


def test_a_good_image_still_reads(tmp_path):
    noise_png(tmp_path / "g.png", (10, 12))
    assert open_image(tmp_path / "g.png").size == (12, 10)
    assert image_header(tmp_path / "g.png") == ((10, 12), "L")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_image(tmp_path / "nope.png")


# --- training folders -----------------------------------------------------------------------------------


def two_class_folder(root, n=6, size=(16, 16)):
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("L", size[::-1], 10 * i + (c == "b")).save(root / c / f"{i}.png")


def test_named_pipe_in_a_training_folder_is_skipped_not_waited_on(tmp_path, convolab_log):
    two_class_folder(tmp_path)
    mkfifo(tmp_path / "a" / "zz.png")
    with no_hang():
        scan = scan_folder(tmp_path)
        ds = load_dataset(tmp_path, cache=False)
    assert [p.name for p, _ in scan.bad] == ["zz.png"] and "not a regular file" in scan.bad[0][1]
    assert len(ds.train) + len(ds.val) + len(ds.test) == 12
    warnings = [r.getMessage() for r in convolab_log.records if r.levelno == logging.WARNING]
    assert any(str(tmp_path / "a" / "zz.png") in w for w in warnings)


def test_bomb_in_a_training_folder_is_skipped(tmp_path, monkeypatch, convolab_log):
    two_class_folder(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("L", (60, 60)).save(tmp_path / "b" / "zz-bomb.png")
    ds = load_dataset(tmp_path, cache=False)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 12
    warnings = [r.getMessage() for r in convolab_log.records if r.levelno == logging.WARNING]
    assert any("zz-bomb.png (refused as a possible decompression bomb" in w for w in warnings), warnings


# --- folders for explanation tools (tcav's concept folders, explain/viz inputs) ------------------------------


class _Run:
    """What load_folder needs of a Run: the same to_array (load_image) and a preprocess that scales to 0..1."""

    input_size = (1, 8, 8)

    def to_array(self, path):
        return load_image(path, (8, 8), 1)

    def preprocess(self, images):
        return images.float() / 255


def test_load_folder_skips_unreadable_images_with_a_warning(tmp_path, convolab_log):
    for i in range(3):
        noise_png(tmp_path / f"{i}.png", seed=i)
    truncated_png(tmp_path / "t.png")
    (tmp_path / "e.png").write_bytes(b"")
    mkfifo(tmp_path / "f.png")
    assert [p.name for p in image_files(tmp_path)] == ["0.png", "1.png", "2.png", "e.png", "f.png", "t.png"]
    with no_hang():
        x = load_folder(_Run(), tmp_path, min_images=3, what="concept folder")
    assert x.shape == (3, 1, 8, 8)
    expected = torch.stack([torch.from_numpy(load_image(tmp_path / f"{i}.png", (8, 8), 1)) for i in range(3)])
    assert torch.equal(x, expected.float() / 255)
    warnings = [r.getMessage() for r in convolab_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 3 unreadable image files" in warnings[0]
    for name in ("t.png", "e.png", "f.png"):
        assert str(tmp_path / name) in warnings[0]


def test_load_folder_refuses_when_too_few_readable_images_remain(tmp_path):
    noise_png(tmp_path / "0.png")
    (tmp_path / "e.png").write_bytes(b"")
    (tmp_path / "j.png").write_bytes(b"junk")
    with pytest.raises(ValueError) as e:
        load_folder(_Run(), tmp_path, min_images=2, what="concept folder")
    msg = str(e.value)
    assert "only 1 readable image files (2 more could not be read, e.g. " in msg and "at least 2" in msg
    assert str(tmp_path) in msg and "\n" not in msg


def test_load_folder_limit_counts_readable_images(tmp_path):
    (tmp_path / "0.png").write_bytes(b"junk")
    for i in range(1, 4):
        noise_png(tmp_path / f"{i}.png", seed=i)
    assert load_folder(_Run(), tmp_path, limit=2).shape == (2, 1, 8, 8)
