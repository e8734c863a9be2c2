"""Loss landscapes and mode connectivity: every figure against an independent computation (the loss by
``F.cross_entropy`` on images normalised by hand, BatchNorm statistics by ``torch.optim.swa_utils.update_bn``),
the direction's filter norms, determinism, restored weights, and ``convolab landscape`` end to end and its refusals."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tests.cli.test_cli import assert_one_line_error, cli
from torch import nn

import convolab
from convolab.data import load_dataset
from convolab.experiments import landscape as ls

N = 200  # images per evaluation: enough for the figures to differ, few enough to stay fast
BN_SPEC = "spec:conv(8,3,p=same),bn,relu,maxpool(2),conv(8,3,p=same),bn,relu,flatten,fc"


def _subset(run, n=N, split="train"):
    """The first n images of the run's split, loaded here straight from load_dataset (not through the landscape)."""
    ds = run.config["dataset"]
    data = load_dataset("digits", val_fraction=ds["val_fraction"], seed=run.config["seed"])
    part = getattr(data, split)
    return part.images[:n], part.labels[:n].long()


def _normalised(run, images, mean=None, std=None):
    mean = torch.tensor(run.mean if mean is None else mean).view(1, -1, 1, 1)
    std = torch.tensor(run.std if std is None else std).view(1, -1, 1, 1)
    return (images.double() / 255 - mean) / std


def _own_loss(model, run, images, labels, mean=None, std=None):
    """Mean cross-entropy and accuracy of ``model`` in one float64 forward pass."""
    with torch.no_grad():
        logits = copy.deepcopy(model).double().eval()(_normalised(run, images, mean, std))
    return float(F.cross_entropy(logits, labels)), float((logits.argmax(1) == labels).double().mean())


@pytest.fixture(scope="module")
def run(digits_run):
    return convolab.load_run(digits_run.run_dir)


@pytest.fixture(scope="module")
def bn_runs(digits_config, tmp_path_factory):
    """Two runs of a small BatchNorm CNN on digits, 1 epoch each, seeds 0 and 1 (one split: the same val_fraction
    and the dataset's split seed differ, so each has its own mean and std)."""
    root = tmp_path_factory.mktemp("bn-runs")
    paths = []
    for seed in (0, 1):
        result = convolab.train(digits_config(root / f"s{seed}", model=BN_SPEC, epochs=1, seed=seed))
        paths.append(Path(result.run_dir))
    return paths


# -- directions ------------------------------------------------------------------------------------------------

def _filters(w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return w.transpose(0, dim).reshape(w.shape[dim], -1).double().norm(dim=1)


def test_direction_filters_have_the_trained_filters_norms_and_biases_and_norms_are_zero():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.ConvTranspose2d(6, 4, 2, stride=2),
                          nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(5))
    model(torch.zeros(1, 3, 6, 6))
    with torch.no_grad():
        model[0].weight[2].zero_()  # a pruned filter stays zero
    d = ls.filter_normalized_direction(model, seed=3)
    assert set(d) == {n for n, _ in model.named_parameters()}
    for name, dim in (("0.weight", 0), ("3.weight", 1), ("6.weight", 0)):  # conv, transposed conv (out = dim 1), fc
        w = dict(model.named_parameters())[name]
        assert d[name].shape == w.shape
        torch.testing.assert_close(_filters(d[name], dim), _filters(w.detach(), dim), rtol=1e-6, atol=1e-7)
        assert not torch.equal(d[name], w.detach())  # a draw, not the weights themselves
    assert float(d["0.weight"][2].abs().sum()) == 0.0
    for name in ("0.bias", "1.weight", "1.bias", "3.bias", "4.weight", "4.bias", "6.bias"):
        assert float(d[name].abs().sum()) == 0.0, name
    # the transposed convolution's output units are its weight's dim 1: normalising along dim 0 would differ
    assert not torch.allclose(_filters(d["3.weight"], 0), _filters(model[3].weight.detach(), 0), rtol=1e-3)


def test_directions_are_deterministic_per_seed(run):
    a, b, c = (ls.filter_normalized_direction(run.model, seed=s) for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.conv1.weight"], c["features.conv1.weight"])
    d1, d2 = ls.direction_pair(run.model, seed=0)
    assert all(torch.equal(d1[k], a[k]) for k in a)  # the 2-D slice's first direction is the 1-D one
    assert not torch.equal(d1["classifier.fc1.weight"], d2["classifier.fc1.weight"])


def test_coordinates_are_symmetric_with_exact_zero_and_the_path_holds_both_runs():
    xs = ls.slice_coordinates(21, 0.7)
    assert len(xs) == 21 and xs[10] == 0.0 and xs[0] == -0.7 and xs[-1] == 0.7
    assert all(x == -y for x, y in zip(xs, reversed(xs)))
    ts = ls.interpolation_ts(21)  # linspace(-0.25, 1.25, 21) steps by 0.075: neither 0 nor 1 is on it
    assert len(ts) == 23 and 0.0 in ts and 1.0 in ts and ts == sorted(ts) and ts[0] == -0.25 and ts[-1] == 1.25
    assert ls.interpolation_ts(13) == [-0.25 + 0.125 * i for i in range(13)]  # 0 and 1 on the grid: nothing added
    with pytest.raises(ValueError, match="points must be >= 2"):
        ls.slice_coordinates(1, 1.0)


# -- slices ------------------------------------------------------------------------------------------------------

def test_slice_at_zero_is_the_runs_own_loss_and_the_weights_are_restored(run):
    images, labels = _subset(run)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    s = ls.landscape_1d(run, points=5, span=0.5, images=N)
    loss, acc = _own_loss(run.model, run, images, labels)
    assert s.alphas == [-0.5, -0.25, 0.0, 0.25, 0.5] and s.images == N and s.split == "train"
    assert s.center[0] == pytest.approx(loss, rel=1e-5) and s.center[1] == acc
    assert all(torch.equal(before[k], v) for k, v in run.model.state_dict().items())
    assert not run.model.training
    assert all(p.is_contiguous() for p in run.model.parameters())  # (evaluated channels last, then laid back)
    # away from the trained weights the loss is that of theta + a*d, computed here by hand
    d = ls.filter_normalized_direction(run.model, seed=0)
    moved = copy.deepcopy(run.model)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p.add_(d[name], alpha=0.5)
    assert s.losses[-1] == pytest.approx(_own_loss(moved, run, images, labels)[0], rel=1e-5)
    # (5 epochs do not reach a minimum: along a random direction the loss may fall a little on one side)
    assert s.losses[0] + s.losses[-1] > 2 * s.losses[2]  # but the slice curves upwards around the trained weights
    again = ls.landscape_1d(run, points=5, span=0.5, images=N)
    assert again.losses == s.losses and again.accuracies == s.accuracies  # deterministic with the seed


def test_2d_centre_and_row_are_the_1d_slice(run):
    s1 = ls.landscape_1d(run, points=3, span=0.4, images=N, split="test", seed=2)
    s2 = ls.landscape_2d(run, points=3, span=0.4, images=N, split="test", seed=2)
    assert len(s2.losses) == 3 and all(len(row) == 3 for row in s2.losses)
    assert s2.center == s1.center
    assert s2.slice_1d().losses == s1.losses and s2.slice_1d().accuracies == s1.accuracies
    images, labels = _subset(run, split="test")
    assert s2.center[0] == pytest.approx(_own_loss(run.model, run, images, labels)[0], rel=1e-5)
    assert abs(s2.cosine) < 0.1  # random directions in ~30k dimensions are nearly orthogonal
    assert len({s2.losses[0][0], s2.losses[0][2], s2.losses[2][0], s2.losses[2][2]}) == 4


# -- interpolation ------------------------------------------------------------------------------------------------

def test_interpolation_endpoints_are_each_runs_own_loss(bn_runs):
    a, b = (convolab.load_run(p) for p in bn_runs)
    images, labels = _subset(a)
    assert a.mean != b.mean  # each run's own normalisation: the path interpolates it too
    plain = ls.interpolate(a, b, points=5, bn_reset=False, images=N)
    assert not plain.bn_reset and plain.bn_layers == 2
    assert plain.ts == [-0.25, 0.0, 0.125, 0.5, 0.875, 1.0, 1.25]
    at = dict(zip(plain.ts, plain.losses))
    assert at[0.0] == pytest.approx(_own_loss(a.model, a, images, labels)[0], rel=1e-5)
    assert at[1.0] == pytest.approx(_own_loss(b.model, a, images, labels, b.mean, b.std)[0], rel=1e-5)

    reset = ls.interpolate(a, b, points=5, bn_reset=True, images=N)
    assert reset.bn_reset
    at_reset = dict(zip(reset.ts, reset.losses))
    for t, run_ in ((0.0, a), (1.0, b)):  # the reference: SWA's update_bn on the same training batches
        model = copy.deepcopy(run_.model)
        batches = [_normalised(run_, images[i:i + 1000]).float() for i in range(0, N, 1000)]
        torch.optim.swa_utils.update_bn(batches, model)
        assert at_reset[t] == pytest.approx(_own_loss(model, run_, images, labels)[0], rel=1e-5)
    assert at_reset[0.5] != pytest.approx(at[0.5], rel=1e-3)  # recomputed statistics change the middle
    # the runs' own weights are left as they were
    assert _own_loss(a.model, a, images, labels)[0] == pytest.approx(at[0.0], rel=1e-5)
    # the barrier by its definition, from the figures
    inside = [(t, v) for t, v in zip(reset.ts, reset.losses) if 0 <= t <= 1]
    want = max(0.0, *(v - ((1 - t) * at_reset[0.0] + t * at_reset[1.0]) for t, v in inside))
    assert reset.barrier == pytest.approx(want) and reset.to_json()["barrier"] == reset.barrier


def test_interpolation_refuses_two_different_models(run, bn_runs):
    other = convolab.load_run(bn_runs[0])
    with pytest.raises(ValueError, match="different models"):
        ls.interpolate(run, other, points=3, images=N)


def test_refuses_int8_and_segmentation_runs(run):
    int8 = dataclasses.replace(run, build={"kind": "int8-pt2e"})
    with pytest.raises(ValueError, match="int8 graph"):
        ls.landscape_1d(int8, points=3, images=N)
    seg = dataclasses.replace(run, task="segmentation")
    with pytest.raises(ValueError, match="segmentation run"):
        ls.landscape_2d(seg, points=3, images=N)


# -- the command ----------------------------------------------------------------------------------------------------

def test_cli_writes_the_landscape_and_refuses_to_overwrite_it(digits_run, tmp_path, capsys):
    out = tmp_path / "ls"
    code, stdout, err = cli(["landscape", digits_run.run_dir, "--points", "5", "--span", "0.5", "--images", N,
                             "--2d", "--out", out, "--json"], capsys)
    assert code == 0, err
    record = json.loads(stdout)
    assert record == json.loads((out / "landscape.json").read_text())
    assert (out / "plots" / "landscape_1d.png").stat().st_size > 0 and (out / "plots" / "landscape_2d.png").exists()
    assert record["images"] == N and record["settings"]["points"] == 5 and record["interpolation"] is None
    s1 = ls.landscape_1d(convolab.load_run(digits_run.run_dir), points=5, span=0.5, images=N)
    assert record["slice_1d"]["losses"] == pytest.approx(s1.losses, rel=1e-12)
    assert record["slice_2d"]["losses"][2][2] == record["slice_1d"]["losses"][2]
    capsys.readouterr()  # (the data's log line)

    code, _, err = cli(["landscape", digits_run.run_dir, "--points", "3", "--images", N, "--out", out], capsys)
    assert_one_line_error(code, err, "exists", "--overwrite")
    code, stdout, err = cli(["landscape", digits_run.run_dir, "--points", "3", "--images", N, "--out", out,
                             "--overwrite"], capsys)
    assert code == 0, err
    assert "loss" in stdout and "wrote" in stdout
    assert not (out / "plots" / "landscape_2d.png").exists()  # the earlier 2-D figure is not this landscape's
    assert json.loads((out / "landscape.json").read_text())["slice_2d"] is None


def test_cli_interpolation(bn_runs, tmp_path, capsys):
    code, stdout, err = cli(["landscape", *bn_runs, "--points", "3", "--images", N, "--no-bn-reset", "--json"],
                            capsys)
    assert code == 0, err
    record = json.loads(stdout)
    path = record["interpolation"]
    assert not path["bn_reset"] and path["ts"] == [-0.25, 0.0, 0.5, 1.0, 1.25]
    assert (bn_runs[0] / "landscape" / "plots" / "interpolation.png").exists()
    assert math.isfinite(path["barrier"]) and record["slice_1d"] is None


@pytest.mark.parametrize("extra,needle", [
    (["{run2}", "--2d"], "--2d is for slices"),
    (["{run2}", "--seed", "3"], "--seed is for slices"),
    (["--no-bn-reset"], "--no-bn-reset is for the interpolation"),
    (["--points", "1"], "must be >= 2"),
    (["--split", "nope"], "invalid choice"),
    (["{other}"], "different models"),
])
def test_cli_bad_input_is_one_line(extra, needle, bn_runs, digits_run, tmp_path, capsys):
    subs = {"{run2}": str(bn_runs[1]), "{other}": str(digits_run.run_dir)}
    argv = ["landscape", bn_runs[0], *[subs.get(e, e) for e in extra], "--images", N, "--out", tmp_path / "o"]
    code, _, err = cli(argv, capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "o").exists()


def test_cli_refuses_int8_and_segmentation_runs(digits_run, tmp_path, capsys, monkeypatch):
    real = convolab.runs.load_run
    changes = (({"build": {"kind": "int8-pt2e"}}, "int8 graph"), ({"task": "segmentation"}, "segmentation"))
    for change, needle in changes:
        monkeypatch.setattr(convolab.runs, "load_run", lambda p, device="cpu", c=change: dataclasses.replace(
            real(p, device), **c))
        code, _, err = cli(["landscape", digits_run.run_dir, "--out", tmp_path / "o"], capsys)
        assert_one_line_error(code, err, needle)


def test_cli_missing_run_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "convolab", "landscape", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"convolab landscape: error: {tmp_path / 'nope'}: no such run "
                                                "directory"]
