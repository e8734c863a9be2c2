"""``convolab.atomic``: the writes every run-directory file goes through (``train/rundir.py`` uses them).

Kept beside the run-directory tests: the atomic helpers exist for the run directory's promise
that a reader sees the old file or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from convolab.atomic import append_jsonl, atomic_path, read_jsonl, write_bytes, write_json, write_text


def test_write_json_creates_and_replaces(tmp_path):
    dest = tmp_path / "sub" / "summary.json"
    write_json(dest, {"a": 1, "b": [1, 2]})
    assert json.loads(dest.read_text()) == {"a": 1, "b": [1, 2]}
    write_json(dest, {"c": "é"})
    assert json.loads(dest.read_text(encoding="utf-8")) == {"c": "é"}
    assert sorted(os.listdir(dest.parent)) == ["summary.json"], "no temporary file may be left behind"


def test_write_text_and_bytes(tmp_path):
    write_text(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.txt").read_bytes() == "héllo\n".encode()
    write_bytes(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"


def test_failure_inside_atomic_path_keeps_the_old_file_and_no_temp(tmp_path):
    dest = tmp_path / "model.safetensors"
    dest.write_bytes(b"old weights")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(dest) as tmp:
            assert tmp.parent == dest.parent, "the temp file must be in the destination's folder (same volume)"
            assert tmp != dest
            tmp.write_bytes(b"half of the new wei")
            raise RuntimeError("disk on fire")
    assert dest.read_bytes() == b"old weights"
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_failure_of_a_new_file_leaves_nothing(tmp_path):
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "new.json") as tmp:
            tmp.write_text("{")
            raise KeyError("boom")
    assert os.listdir(tmp_path) == []


def test_unserialisable_json_keeps_the_old_file(tmp_path):
    dest = tmp_path / "config.json"
    write_json(dest, {"ok": True})
    with pytest.raises(TypeError):
        write_json(dest, {"bad": object()})
    assert json.loads(dest.read_text()) == {"ok": True}
    assert os.listdir(tmp_path) == ["config.json"]


def test_atomic_file_gets_the_permissions_a_plain_write_would(tmp_path):
    """Replacing a file must not change who may read it: a plain ``open(..., "w")`` honours the umask."""
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    atomic = tmp_path / "atomic.json"
    write_json(atomic, {})
    assert oct(atomic.stat().st_mode & 0o777) == oct(plain.stat().st_mode & 0o777)

    shared = tmp_path / "shared.json"
    shared.write_text("{}")
    shared.chmod(0o644)
    write_json(shared, {"v": 2})
    assert oct(shared.stat().st_mode & 0o777) == oct(0o644)


def test_append_and_read_jsonl(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]
    for row in rows:
        append_jsonl(path, row)
    assert read_jsonl(path) == rows
    assert path.read_text().count("\n") == 2


def test_read_jsonl_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 1})
    append_jsonl(path, {"epoch": 2})
    with open(path, "a") as f:
        f.write('{"epoch": 3, "train_lo')  # a crash mid-write
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]


def test_read_jsonl_ignores_blank_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": 2}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]


def test_a_folder_that_cannot_hold_the_file_is_one_error_naming_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match=f"^cannot write {blocker}/out.json \\("):
        write_json(blocker / "out.json", {"a": 1})  # its folder would have to be a file
    assert blocker.read_text() == "x"
    if Path("/proc/self").is_dir():  # Linux: a folder where no file can be made, even by root
        with pytest.raises(PermissionError, match="^cannot write /proc/convolab.html \\(") as info:
            write_text("/proc/convolab.html", "x")
        assert ".tmp" not in str(info.value)


def test_append_jsonl_cuts_a_torn_last_line_before_appending(tmp_path):
    dest = tmp_path / "metrics.jsonl"
    dest.write_text('{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "lo')  # a kill mid-append
    append_jsonl(dest, {"epoch": 2, "loss": 0.25})
    assert dest.read_text() == '{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "loss": 0.25}\n'
    assert read_jsonl(dest) == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]
    torn_only = tmp_path / "steps.jsonl"
    torn_only.write_text('{"step": 1, "lo')  # no complete line at all
    append_jsonl(torn_only, [{"step": 1}, {"step": 2}])
    assert torn_only.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_json_files_are_strict_json_with_non_finite_values_named(tmp_path):
    row = {"epoch": 1, "val_loss": float("nan"), "lr": float("inf"), "sizes": [1.0, float("-inf")], "ok": 0.5}
    append_jsonl(tmp_path / "m.jsonl", row)
    write_json(tmp_path / "s.json", row)

    def strict(text):  # RFC 8259: no NaN or Infinity literals
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))

    for written in (strict((tmp_path / "m.jsonl").read_text()), strict((tmp_path / "s.json").read_text())):
        assert written == {"epoch": 1, "val_loss": None, "lr": None, "sizes": [1.0, None], "ok": 0.5,
                           "non_finite": ["lr", "sizes.1", "val_loss"]}
    assert row["val_loss"] != row["val_loss"], "the caller's object is left as it was"
    write_json(tmp_path / "clean.json", {"a": 1.5})
    assert "non_finite" not in json.loads((tmp_path / "clean.json").read_text())


def test_remove_temporaries_removes_only_atomic_paths_leftovers(tmp_path):
    from convolab.atomic import remove_temporaries

    (tmp_path / "checkpoints").mkdir()
    left = [tmp_path / ".metrics.jsonl.abc_1234.tmp", tmp_path / "checkpoints" / ".step-00000010.pt.k2j4h5g6.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "model.safetensors", tmp_path / ".x.tmp"]
    for p in left + kept:
        p.write_bytes(b"x")
    with atomic_path(tmp_path / "summary.json") as tmp:  # a real one, as a kill would leave it
        tmp.write_bytes(b"{")
        left.append(tmp)
        deeper = tmp_path / "data" / ".x.jsonl.abcdefgh.tmp"  # a folder not named: left alone
        deeper.parent.mkdir()
        deeper.write_bytes(b"x")
        kept.append(deeper)
        assert sorted(remove_temporaries(tmp_path, tmp_path / "checkpoints", tmp_path / "absent")) == sorted(left)
        tmp.write_bytes(b"{}")  # (atomic_path goes on to finish its own write)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in left[:2])


def test_write_jsonl_rewrites_a_log_as_strict_json(tmp_path):
    from convolab.atomic import write_jsonl

    dest = tmp_path / "metrics.jsonl"
    dest.write_text('{"epoch": 1}\n{"epoch": 2, "val_loss": NaN}\n{"epo')
    write_jsonl(dest, [{"epoch": 1}, {"epoch": 2, "val_loss": float("nan")}])
    assert dest.read_text() == '{"epoch": 1}\n{"epoch": 2, "val_loss": null, "non_finite": ["val_loss"]}\n'
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]
