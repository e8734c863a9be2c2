"""kill -9 of real ``convolab train`` processes of the segmentation and clip tasks, then ``convolab train --resume``:
final weights, metrics.jsonl and steps.jsonl identical to an uninterrupted run (tests/train/test_kill.py does it
for classification; its zygote, kill and comparison helpers are reused here).

The runs use tiny widths (``unet`` at base_channels 4, depth 2; ``r3d_18`` at widths 4, 4, 8, 8) on tiny folders.
``TrainConfig.model_kwargs`` has no command-line option, so the zygote's ``convolab.cli.main`` is wrapped to take
``--model-kwargs JSON`` and put it in the config that ``convolab train`` builds; everything else is the real command
(the resumes take nothing but ``--resume RUN``: the checkpoint's config carries the widths)."""

from __future__ import annotations

import json

import pytest
from tests.train import test_kill
from tests.train.test_kill import Zygote, assert_same_run, kill_at_marker
from tests.train.test_tasks import write_segmentation_folder, write_video_folder

pytestmark = pytest.mark.slow

PRELUDE = r'''
import json as _json
import av  # noqa: F401  (PyAV: imported once here, as the zygote does for the rest)
import convolab.cli as _cli
import convolab.cli.train as _cli_train

_main, _config_from_args = _cli.main, _cli_train.config_from_args


def _main_with_model_kwargs(argv):
    """``convolab ARGV`` where ``train`` also takes --model-kwargs JSON (TrainConfig.model_kwargs)."""
    argv, kwargs = list(argv), None
    if "--model-kwargs" in argv:
        i = argv.index("--model-kwargs")
        kwargs = _json.loads(argv[i + 1])
        del argv[i:i + 2]

        def config_from_args(args, *more, **overrides):
            config = _config_from_args(args, *more, **overrides)
            config.model_kwargs = kwargs
            return config

        _cli_train.config_from_args = config_from_args
    return _main(argv)


_cli.main = _main_with_model_kwargs  # (the zygote's "from convolab.cli import main" takes this one)
'''

COMMON = ["--device", "cpu", "--quiet", "--no-plots", "--seed", "3", "--precision", "32", "--optimizer", "adam",
          "--lr", "0.003", "--batch-size", "8"]


@pytest.fixture
def zygote(tmp_path, monkeypatch):
    monkeypatch.setattr(test_kill, "ZYGOTE", PRELUDE + test_kill.ZYGOTE)
    z = Zygote(tmp_path)
    yield z
    z.close()


def _kill_and_resume(z: Zygote, tmp_path, recipe: list, trials: list[tuple[str, dict]]) -> list[str]:
    """The uninterrupted reference run, then one killed-and-resumed run per trial (a ``step`` hook: killed after
    that many optimizer steps; a ``write`` hook: killed inside that atomic write, its temporary file in place)."""
    reference = tmp_path / "reference"
    z.run(["train", *recipe, "--out", reference], tmp_path / "reference.log")
    total = max(r["step"] for r in map(json.loads, (reference / "steps.jsonl").read_text().splitlines()))
    outcomes = []
    for i, (kind, how) in enumerate(trials):
        run, marker, log = tmp_path / f"t{i}-{kind}", tmp_path / f"t{i}.marker", tmp_path / f"t{i}.log"
        assert kind != "step" or how["n"] < total
        hook = {"kind": kind, "marker": marker, **how}
        assert kill_at_marker(z, z.start(["train", *recipe, "--out", run], log, hook), marker, log), \
            f"trial {i} ended before its kill"
        assert not (run / "model.safetensors").exists()
        if kind == "write":
            assert any(run.rglob(".*.tmp")), f"trial {i}: no temporary file at the kill"
        z.run(["train", "--resume", run, "--quiet"], tmp_path / f"t{i}.resume.log")
        assert_same_run(run, reference, f"trial {i} ({kind} {how})")
        outcomes.append(f"{kind} {how}: identical")
    return outcomes


AUGMENTS = ["light", "none"]


@pytest.mark.parametrize("augment", AUGMENTS)
def test_kill_9_segmentation_then_resume_is_bit_identical(zygote, tmp_path, augment):
    """unet on 22 training images (3 steps an epoch at batch 8), 3 epochs, a checkpoint every 2 steps (with light
    augmentation: shifts and flips of image and mask together); killed mid-epoch 2, and inside a checkpoint's
    write."""
    root = write_segmentation_folder(tmp_path / "seg")
    recipe = ["--model", "unet", "--model-kwargs", json.dumps({"base_channels": 4, "depth": 2}), "--data", root,
              "--epochs", "3", "--checkpoint-every", "2", "--augment", augment, *COMMON]
    _kill_and_resume(zygote, tmp_path, recipe, [
        ("step", {"n": 5}),
        ("write", {"match": "step-*.pt", "n": 3, "partial": True}),
    ])
    summary = json.loads((tmp_path / "t0-step" / "summary.json").read_text())
    assert summary["task"] == "segmentation" and summary["resumes"] == 1 and summary["steps"] == 9


@pytest.mark.parametrize("augment", AUGMENTS)
def test_kill_9_clips_then_resume_is_bit_identical(zygote, tmp_path, augment):
    """r3d_18 on 36 training clips of 4 frames (two per video; 5 steps an epoch), 2 epochs, a checkpoint every 3
    steps (with light augmentation: a crop per clip); killed mid-epoch 1, and mid-epoch 2."""
    root = write_video_folder(tmp_path / "videos")
    recipe = ["--model", "r3d_18", "--model-kwargs", json.dumps({"widths": [4, 4, 8, 8]}), "--data", root,
              "--frames", "4", "--epochs", "2", "--checkpoint-every", "3", "--augment", augment, *COMMON]
    _kill_and_resume(zygote, tmp_path, recipe, [("step", {"n": 4}), ("step", {"n": 8})])
    summary = json.loads((tmp_path / "t1-step" / "summary.json").read_text())
    assert summary["task"] == "clips" and summary["resumes"] == 1 and summary["steps"] == 10
    assert summary["test_video_accuracy"] is not None
