"""The folder explanation tools write into: undone when a call fails, and write errors as one line."""

from __future__ import annotations

import errno
import io
import sys

import pytest

from convolab.atomic import write_text
from convolab.explain.output import output_folder, writing
from convolab.explain.progress import progress_bar


def test_a_failed_call_removes_the_folders_it_made_and_its_files(tmp_path):
    out = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), output_folder(out) as folder:
        write_text(out / "x.png", "x")
        folder.wrote(out / "x.png")
        raise RuntimeError("boom")
    assert not (tmp_path / "a").exists()


def test_a_folder_that_was_there_and_other_files_are_kept(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(RuntimeError), output_folder(tmp_path / "a" / "b") as folder:
        write_text(folder.path / "mine.png", "x")
        folder.wrote(folder.path / "mine.png")
        write_text(folder.path / "theirs.txt", "another program's file")
        raise RuntimeError("boom")
    assert (tmp_path / "a" / "b" / "theirs.txt").exists() and not (tmp_path / "a" / "b" / "mine.png").exists()
    with pytest.raises(RuntimeError), output_folder(tmp_path / "a"):
        raise RuntimeError("boom")
    assert (tmp_path / "a").is_dir()


def test_success_keeps_the_files_and_an_unused_new_folder_goes(tmp_path):
    with output_folder(tmp_path / "kept") as folder:
        write_text(folder.path / "x.png", "x")
        folder.wrote(folder.path / "x.png")
    assert (tmp_path / "kept" / "x.png").exists()
    with output_folder(tmp_path / "unused"):
        pass
    assert not (tmp_path / "unused").exists()


def test_folders_that_cannot_be_made_are_one_line(tmp_path):
    (tmp_path / "f").write_text("a file")
    with pytest.raises(NotADirectoryError, match=r"--out .*f/x: .*f is a file, not a folder"):
        with output_folder(tmp_path / "f" / "x"):
            pass
    with pytest.raises(PermissionError, match=r"^--out /proc/convolab-x: cannot create the folder \("):
        with output_folder("/proc/convolab-x"):
            pass


def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    dest = tmp_path / "m.png"
    with pytest.raises(PermissionError) as e, writing(dest):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(e.value) == f"cannot write {dest} (No space left on device)"
    with pytest.raises(PermissionError, match="^cannot write /x/y"), writing("/z"):  # already one line: kept
        raise PermissionError("cannot write /x/y (Read-only file system)")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("terminal,enabled,shown", [(True, True, True), (False, True, False), (True, False, False)])
def test_progress_only_on_a_terminal_and_not_when_quiet(monkeypatch, terminal, enabled, shown):
    err = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    for _ in progress_bar(range(3), desc="explain", enabled=enabled):
        pass
    assert ("explain" in err.getvalue()) is shown
