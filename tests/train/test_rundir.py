"""``prepare_run_dir`` and ``save_weights``: a run directory is never silently overwritten."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from convolab.train.rundir import RunDir, prepare_run_dir, save_weights


def test_fresh_folder_is_created_with_plots(tmp_path):
    path = prepare_run_dir(tmp_path / "a" / "run", "tutorial_cnn", "digits")
    assert path == tmp_path / "a" / "run"
    assert (path / "plots").is_dir()


def test_check_only_creates_nothing(tmp_path):
    path = prepare_run_dir(tmp_path / "run", "tutorial_cnn", "digits", create=False)
    assert not path.exists()


def test_existing_empty_folder_is_fine(tmp_path):
    (tmp_path / "run").mkdir()
    assert prepare_run_dir(tmp_path / "run", "m", "d") == tmp_path / "run"


def test_default_name_is_model_data_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = prepare_run_dir(None, "lenet5", "/some/folder/mnist-png/", create=False)
    assert path.parent == Path("runs")
    assert re.fullmatch(r"lenet5-mnist-png-\d{8}-\d{6}", path.name)


def test_non_empty_folder_refused_without_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_run_dir(out, "m", "d")
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not a convolab run directory"):
        prepare_run_dir(out, "m", "d", overwrite=True)
    assert (out / "holiday.jpg").read_bytes() == b"precious"


def test_overwrite_replaces_a_previous_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    path = prepare_run_dir(out, "m", "d", overwrite=True)
    assert sorted(os.listdir(path)) == ["plots"]


def test_out_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        prepare_run_dir(f, "m", "d", overwrite=True)
    assert f.read_text() == "x"


def test_out_below_a_file_is_refused_before_anything_is_made(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match=f"^--out {f}/a/run: {f} is a file, not a folder"):
        prepare_run_dir(f / "a" / "run", "m", "d", create=False)
    assert f.read_text() == "x"


def test_out_where_folders_cannot_be_made_is_refused_at_the_check(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(os, "access", lambda p, mode: asked.append((Path(p), mode)) or False)  # as if read-only
    with pytest.raises(PermissionError, match=f"^--out {tmp_path}/x/run: no permission to create folders in "):
        prepare_run_dir(tmp_path / "x" / "run", "m", "d", create=False)
    assert asked == [(tmp_path, os.W_OK | os.X_OK)]  # the nearest folder that exists is the one asked about


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no folder can be made")
def test_a_failed_mkdir_is_one_clear_error(tmp_path):
    with pytest.raises(PermissionError, match=r"^--out /proc/convolab-run: cannot create the run directory \("):
        prepare_run_dir("/proc/convolab-run", "m", "d")


def test_save_weights_round_trip_with_metadata(tmp_path):
    model = nn.Conv2d(2, 3, 3).to(memory_format=torch.channels_last)
    save_weights(model, tmp_path / "w.safetensors", {"model": "x", "classes": ["a", "b"]})
    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["convolab"]) == {"model": "x", "classes": ["a", "b"]}
        for k, v in model.state_dict().items():
            assert torch.equal(f.get_tensor(k), v)
    assert os.listdir(tmp_path) == ["w.safetensors"]


def test_save_weights_refuses_non_finite(tmp_path):
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="weight has NaN"):
        save_weights(model, tmp_path / "w.safetensors", {})
    assert os.listdir(tmp_path) == []


def test_rundir_writers(tmp_path):
    run = RunDir(tmp_path)
    run.write_config({"model": "m"})
    run.append_metrics({"epoch": 1})
    run.append_metrics({"epoch": 2})
    run.write_summary({"test_accuracy": 0.5})
    assert json.loads((tmp_path / "config.json").read_text()) == {"model": "m"}
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"epoch": 1}, {"epoch": 2}]
    assert json.loads((tmp_path / "summary.json").read_text()) == {"test_accuracy": 0.5}
