"""``explain_images``: a failed call leaves no half-made folder, write errors are one line, progress on a terminal."""

from __future__ import annotations

import errno
import io
import sys

import numpy as np
import pytest
from PIL import Image

import convolab
from convolab.explain import images as images_module
from convolab.explain.images import explain_images


@pytest.fixture(scope="module")
def run(digits_run):
    return convolab.load_run(digits_run.run_dir)


@pytest.fixture
def digit(tmp_path):
    path = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(path)
    return str(path)


def _full_disk_on(call: int, monkeypatch):
    """save_overlay fails with ENOSPC on its ``call``-th use (after the earlier ones wrote their files)."""
    real, calls = images_module.save_overlay, []

    def save(*args):
        calls.append(1)
        if len(calls) == call:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    monkeypatch.setattr(images_module, "save_overlay", save)


def test_a_failed_explain_leaves_no_half_made_folder(run, digit, tmp_path, monkeypatch):
    _full_disk_on(2, monkeypatch)
    out = tmp_path / "new" / "expl"
    with pytest.raises(PermissionError) as e:
        explain_images(run, [digit], ["saliency", "gradcam"], out)
    assert str(e.value) == f"cannot write {out / 'digit_gradcam.png'} (No space left on device)"
    assert not (tmp_path / "new").exists()  # the saliency files written first went with the folder


def test_a_failed_explain_keeps_a_folder_that_was_there(run, digit, tmp_path, monkeypatch):
    _full_disk_on(2, monkeypatch)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(PermissionError):
        explain_images(run, [digit], ["saliency", "gradcam"], out)
    assert (out / "notes.txt").read_text() == "the user's"


def test_a_layer_without_maps_fails_before_any_folder_is_made(run, digit, tmp_path):
    out = tmp_path / "expl"
    with pytest.raises(ValueError, match=r"layer 'classifier.fc1' of TutorialCNN gives \(N, 128\)"):
        explain_images(run, [digit], ["gradcam"], out, layer="classifier.fc1")
    with pytest.raises(ValueError, match="methods: cam, gradcam"):
        explain_images(run, [digit], ["foo"], out)
    assert not out.exists()


def test_no_folder_is_left_when_no_image_could_be_read(run, tmp_path):
    out = tmp_path / "expl"
    records = explain_images(run, [str(tmp_path / "missing.png")], ["saliency"], out)
    assert "error" in records[0] and not out.exists()


def test_a_folder_that_cannot_be_made_is_one_line(run, digit):
    with pytest.raises(PermissionError, match=r"^--out /proc/convolab-expl: cannot create the folder"):
        explain_images(run, [digit], ["saliency"], "/proc/convolab-expl")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_unless_quiet(run, digit, tmp_path, monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    explain_images(run, [digit], ["saliency", "gradcam"], tmp_path / "a")
    assert "explain" in err.getvalue() and "/2 [" in err.getvalue()
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    explain_images(run, [digit], ["saliency"], tmp_path / "b", progress=False)
    assert quiet.getvalue() == ""
