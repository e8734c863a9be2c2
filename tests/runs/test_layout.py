"""``convolab.runs.layout`` and ``convolab.runs.writer``: a run directory is never silently overwritten."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from convolab.runs.layout import MARKER, is_run_dir, own_files, prepare_run_dir, run_id
from convolab.runs.writer import NullRunWriter, RunWriter, save_weights


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
    with pytest.raises(FileExistsError, match="not a run directory made by convolab"):
        prepare_run_dir(out, "m", "d", overwrite=True)
    assert (out / "holiday.jpg").read_bytes() == b"precious"


def test_overwrite_replaces_a_previous_run(tmp_path):
    out = prepare_run_dir(tmp_path / "run", "m", "d")
    (out / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (out / "plots" / "loss.png").write_bytes(b"png")
    old_id = run_id(out)
    path = prepare_run_dir(out, "m", "d", overwrite=True)
    assert sorted(os.listdir(path)) == [MARKER, "plots"]
    assert os.listdir(path / "plots") == []
    assert run_id(path) not in (None, old_id)  # a new run, a new identity


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


def test_run_writer(tmp_path):
    run = RunWriter(tmp_path)
    run.write_config({"model": "m", "model_kwargs": {"num_classes": 3}})
    run.append_metrics({"epoch": 1})
    run.append_metrics({"epoch": 2})
    run.write_summary({"test_accuracy": 0.5})
    # The format's fields are added where the caller left them out: format 2, the task, how to rebuild the model.
    assert json.loads((tmp_path / "config.json").read_text()) == {
        "format": 2, "task": "classification", "model": "m", "model_kwargs": {"num_classes": 3},
        "build": {"kind": "registry", "name": "m", "kwargs": {"num_classes": 3}}}
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"epoch": 1}, {"epoch": 2}]
    assert json.loads((tmp_path / "summary.json").read_text()) == {"test_accuracy": 0.5}


def test_run_writer_keeps_what_the_caller_gives(tmp_path):
    build = {"kind": "pruned", "base": "resnet18"}
    RunWriter(tmp_path).write_config({"task": "segmentation", "model": "unet", "model_kwargs": {}, "build": build})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["task"] == "segmentation" and config["build"] == build and config["format"] == 2


def test_null_run_writer_writes_nothing(tmp_path):
    run = NullRunWriter(tmp_path)
    run.write_config({"model": "m"})
    run.append_metrics({"epoch": 1})
    run.append_steps([{"step": 1}])
    run.write_summary({})
    run.save_model(nn.Linear(2, 2), {})
    assert run.path == tmp_path and run.plots == tmp_path / "plots" and list(tmp_path.iterdir()) == []


# -- what --overwrite may delete (issue: a folder holding a config.json was wiped, thesis and all) ------------------
def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_overwrite_never_deletes_a_project_folder_that_holds_a_config_json(tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "config.json").write_text('{"model": "mine"}')
    (project / "thesis.tex").write_text("\\\\documentclass{article}")
    (project / "data" / "x.csv").write_text("1,2")
    before = _snapshot(project)
    for create in (False, True):
        with pytest.raises(FileExistsError, match=rf"^--out {project}: exists and is not a run directory made by "
                                                  rf"convolab \(no {MARKER} marker\)"):
            prepare_run_dir(project, "m", "d", overwrite=True, create=create)
    assert _snapshot(project) == before


def test_a_run_made_by_convolab_is_marked_with_a_fresh_identity(tmp_path):
    a = prepare_run_dir(tmp_path / "a", "m", "d")
    b = prepare_run_dir(tmp_path / "b", "m", "d")
    marker = json.loads((a / MARKER).read_text())
    assert marker["kind"] == "convolab-run" and marker["run_id"] == run_id(a)
    assert run_id(a) != run_id(b)
    assert is_run_dir(a) and not is_run_dir(tmp_path)


def test_overwrite_deletes_only_the_files_convolab_writes(tmp_path):
    out = prepare_run_dir(tmp_path / "run", "m", "d")
    for name in ("config.json", "metrics.jsonl", "steps.jsonl", "summary.json", "model.safetensors", "report.html",
                 "checkpoints/step-10.pt", "checkpoints/best.pt", "plots/confusion.png", ".summary.json.ab12.tmp"):
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_bytes(b"convolab's")
    mine = {"notes.txt": b"my notes", "plots/my-figure.png": b"my figure", "checkpoints/keep.pt": b"my weights",
            "analysis/table.csv": b"1,2"}
    for name, data in mine.items():
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_bytes(data)
    prepare_run_dir(out, "m", "d", overwrite=True)
    assert _snapshot(out) == {MARKER: (out / MARKER).read_bytes(), **mine}
    ours, others = own_files(out)
    assert [p.name for p in ours] == [MARKER]
    assert sorted(str(p.relative_to(out)) for p in others) == ["analysis", "checkpoints/keep.pt", "notes.txt",
                                                               "plots/my-figure.png"]


def test_a_run_made_before_markers_is_replaced_only_when_it_holds_nothing_else(tmp_path):
    legacy = tmp_path / "legacy"
    (legacy / "plots").mkdir(parents=True)
    (legacy / "config.json").write_text(json.dumps({"model": "m", "versions": {"convolab": "0.1.0"}}))
    (legacy / "plots" / "loss.png").write_bytes(b"png")
    assert is_run_dir(legacy)
    prepare_run_dir(legacy, "m", "d", overwrite=True)
    assert sorted(os.listdir(legacy)) == [MARKER, "plots"]

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "config.json").write_text(json.dumps({"model": "m", "versions": {"convolab": "0.1.0"}}))
    (mixed / "thesis.tex").write_text("mine")
    with pytest.raises(FileExistsError, match="not a run directory made by convolab"):
        prepare_run_dir(mixed, "m", "d", overwrite=True)
    assert sorted(os.listdir(mixed)) == ["config.json", "thesis.tex"]


@pytest.mark.parametrize("where", ["cwd", "parent", "home", "root"])
def test_the_working_directory_its_parents_home_and_root_are_never_a_run(tmp_path, monkeypatch, where):
    work = tmp_path / "a" / "work"
    work.mkdir(parents=True)
    (work / "config.json").write_text("{}")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    out = {"cwd": ".", "parent": "..", "home": str(tmp_path / "home"), "root": "/"}[where]
    before = _snapshot(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=rf"^--out {re.escape(out)}: is (the|a parent of the) "):
            prepare_run_dir(out, "m", "d", overwrite=overwrite, create=False)
    assert _snapshot(tmp_path) == before


def test_a_symlink_is_never_a_run_directory(tmp_path):
    real = prepare_run_dir(tmp_path / "real", "m", "d")
    (real / "config.json").write_text("{}")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(FileExistsError, match=rf"^--out {link}: is a symbolic link"):
        prepare_run_dir(link, "m", "d", overwrite=True)
    assert (real / "config.json").read_text() == "{}"


def test_resume_refuses_a_checkpoint_copied_in_from_another_run(digits_config, tmp_path):
    """Dropped into this run's checkpoints/, another run's checkpoint would silently make this run another model."""
    import shutil

    import convolab
    from convolab.runs.session import resume

    a = convolab.train(digits_config(tmp_path / "a", epochs=1, plots=False)).run_dir
    b = convolab.train(digits_config(tmp_path / "b", epochs=1, plots=False, seed=1)).run_dir
    newest_b = sorted((b / "checkpoints").glob("step-*.pt"))[-1]
    intruder = a / "checkpoints" / "step-999999.pt"
    shutil.copy(newest_b, intruder)
    before = _snapshot(a)
    for target in (a, intruder):
        with pytest.raises(ValueError, match=rf"^refusing to resume {a}: step-999999.pt was written by another run"):
            resume(target)
    assert _snapshot(a) == before
    assert run_id(a) and run_id(a) != run_id(b)
    assert resume(b).summary["epochs"] == 1  # its own checkpoint resumes as before (nothing left to train)
