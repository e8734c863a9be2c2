"""``convolab train``'s training-engine options: each reaches TrainConfig; contradictions are one-line errors."""

from __future__ import annotations

import json

import pytest
from tests.cli.test_cli import assert_one_line_error, cli

from convolab.atomic import read_jsonl


def test_recipe_flags_reach_the_config_and_the_steps(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = cli(["train", "--data", "digits", "--epochs", "2", "--quiet", "--no-plots", "--device", "cpu",
                        "--out", out, "--optimizer", "sgd", "--nesterov", "--lr", "0.05", "--weight-decay", "1e-4",
                        "--clip-grad-norm", "2", "--accum-steps", "2", "--label-smoothing", "0.1",
                        "--schedule", "multistep", "--milestones", "1", "--gamma", "0.5", "--warmup-steps", "3",
                        "--augment", "standard", "--hflip", "--rotate", "5", "--cutmix", "1"], capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["augment"] == dict(
        crop_pad=1, hflip=True, rotate=5.0, cutout=0.5, mixup=0.0, cutmix=1.0,  # digits' standard, overridden
        brightness=0.0, contrast=0.0, saturation=0.0)  # no --jitter
    config = json.loads((out / "config.json").read_text())["config"]
    assert {k: config[k] for k in ("optimizer", "nesterov", "lr", "weight_decay", "clip_grad_norm", "accum_steps",
                                   "label_smoothing", "schedule", "milestones", "gamma", "warmup_steps")} == dict(
        optimizer="sgd", nesterov=True, lr=0.05, weight_decay=1e-4, clip_grad_norm=2.0, accum_steps=2,
        label_smoothing=0.1, schedule="multistep", milestones=[1.0], gamma=0.5, warmup_steps=3)
    steps = read_jsonl(out / "steps.jsonl")
    per_epoch = len(steps) // 2
    rates = [s["lr"] for s in steps]
    assert rates[:4] == pytest.approx([0.05 / 4, 0.05 / 2, 0.05 * 3 / 4, 0.05])  # the warmup
    assert set(rates[3:per_epoch]) == {0.05} and set(rates[per_epoch:]) == {0.025}  # halved after epoch 1
    assert all(s["grad_norm"] > 0 for s in steps)


@pytest.mark.parametrize("args,needles", [
    (["--schedule", "onecycle", "--warmup-epochs", "1"], ["onecycle has its own warmup"]),
    (["--optimizer", "adam", "--nesterov"], ["--nesterov needs --optimizer sgd"]),
    (["--warmup-epochs", "1", "--warmup-steps", "5"], ["--warmup-epochs or --warmup-steps, not both"]),
    (["--schedule", "cosine", "--min-lr", "1"], ["--min-lr must be in [0, --lr)"]),
    (["--schedule", "linear"], ["--schedule", "invalid choice: 'linear'"]),
    (["--accum-steps", "0"], ["--accum-steps", "must be a positive integer"]),
    (["--label-smoothing", "1"], ["--label-smoothing", "must be in [0, 1)"]),
    (["--clip-grad-norm", "-1"], ["--clip-grad-norm", "must be > 0"]),
    (["--gamma", "2"], ["--gamma", "must be in (0, 1]"]),
    (["--augment", "heavy"], ["--augment", "invalid choice: 'heavy'"]),
    (["--crop-pad", "8"], ["--crop-pad must be in [0, 8) for 8-pixel images"]),
    (["--cutout", "1.5"], ["--cutout", "must be in [0, 1)"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("--") else None)
def test_contradictions_are_one_line_errors(args, needles, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = cli(["train", "--data", "digits", "--quiet", "--out", out, *args], capsys)
    assert_one_line_error(code, err, "convolab train", *needles)
    assert not out.exists()
