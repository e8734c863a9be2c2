"""Data parallelism: the loader's shards, and a real 2-process DDP run through torchrun on the CPU (gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from convolab.atomic import read_jsonl
from convolab.data import DeviceLoader, Split, load_dataset
from convolab.models import create_model


def _split(n=103):
    return Split(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).repeat(1, 1, 2, 2), torch.arange(n))


def test_shards_are_the_slices_of_the_same_batches():
    kwargs = dict(mean=(0.5,), std=(0.25,), shuffle=True, seed=3)
    whole = list(DeviceLoader(_split(), 20, **kwargs))
    shards = [list(DeviceLoader(_split(), 20, rank=r, world_size=2, **kwargs)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 103 // 20, "the incomplete last batch is dropped"
    for i, (x, y) in enumerate(whole[:-1]):
        assert torch.equal(torch.cat([shards[0][i][1], shards[1][i][1]]), y)
        assert torch.equal(torch.cat([shards[0][i][0], shards[1][i][0]]), x)
    assert DeviceLoader(_split(), 20, rank=1, world_size=2, **kwargs).batch_sizes() == [10] * 5
    with pytest.raises(ValueError, match="--batch-size 20 must be divisible by the 3 processes"):
        DeviceLoader(_split(), 20, rank=0, world_size=3, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_process_reference(batch: int, epochs: int, lr: float):
    """The same steps in one process by hand: the first ``batch`` images of each epoch's order, one SGD step."""
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=data.image_size)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loader = DeviceLoader(data.train, batch, mean=data.mean, std=data.std, shuffle=True, seed=0)
    losses = []
    for _ in range(epochs):
        x, y = next(iter(loader))  # the incomplete second batch is what DDP drops
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


@pytest.mark.slow
def test_two_process_ddp_on_cpu_equals_one_process(tmp_path, tmp_path_factory):
    """torchrun --nproc-per-node 2 with gloo: one run directory written by rank 0, world_size 2, and the
    weights of one process taking the same whole batches: DDP averages the two halves' gradients."""
    n = load_dataset("digits").train.labels.numel() // 2 * 2  # one full batch per epoch, split in two
    out = tmp_path / "ddp"
    # torchrun's log folder in a folder of its own: tmp_path is checked to hold only the run directory
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path_factory.mktemp("torchrun"))}
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
                           str(_free_port()), "-m", "convolab", "train", "--data", "digits", "--device", "cpu",
                           "--epochs", "3", "--batch-size", str(n), "--optimizer", "sgd", "--lr", "0.5",
                           "--schedule", "constant", "--label-smoothing", "0", "--precision", "32", "--quiet",
                           "--no-plots", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("test accuracy") == 1, "rank 0 alone reports"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert [r["epoch"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "step-00000002.pt",
                                                                      "step-00000003.pt"]
    assert len(torch.load(out / "checkpoints" / "step-00000003.pt", weights_only=True)["ranks"]) == 2

    model, losses = _one_process_reference(n, 3, 0.5)
    ddp_weights = load_file(str(out / "model.safetensors"))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ddp_weights[k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert [s["loss"] for s in read_jsonl(out / "steps.jsonl")] == pytest.approx(losses, rel=1e-4), \
        "steps.jsonl logs the mean of the two processes' losses"


def _torchrun(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    """``convolab train ARGS`` in two torchrun processes; torchrun's log folder goes under ``tmp``, not /tmp."""
    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
                           str(_free_port()), "-m", "convolab", "train", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)})


@pytest.mark.slow
def test_two_process_ddp_resumes_exactly(tmp_path):
    """A DDP run resumed (2 processes again) from a mid-run checkpoint ends with the weights of the same run
    uninterrupted, bit for bit, with each epoch once in metrics.jsonl: every process's data order, RNG
    states and partial sums are restored from the checkpoint's ``ranks``."""
    recipe = ["--data", "digits", "--device", "cpu", "--epochs", "3", "--batch-size", "128", "--optimizer",
              "adam", "--lr", "3e-3", "--augment", "light", "--quiet", "--no-plots", "--checkpoint-every", "4"]
    whole = _torchrun([*recipe, "--out", str(tmp_path / "whole")], tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    partial = tmp_path / "partial"
    first = _torchrun([*recipe, "--out", str(partial)], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # Roll the copy back to its older kept checkpoint, mid-epoch: drop everything after it, as if the
    # processes had been killed there.
    steps = read_jsonl(partial / "steps.jsonl")
    per_epoch = max(r["step"] for r in steps if r["epoch"] == 1)
    kept = sorted(p for p in (partial / "checkpoints").glob("step-*.pt"))
    assert len(kept) == 2
    back_to = torch.load(kept[0], weights_only=True)["global_step"]
    assert back_to % per_epoch and back_to < len(steps), (back_to, per_epoch, len(steps))
    for path in [kept[1], partial / "checkpoints" / "best.pt", partial / "model.safetensors",
                 partial / "summary.json"]:
        path.unlink()
    resumed = _torchrun(["--resume", str(partial), "--quiet", "--no-plots"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(partial / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in read_jsonl(partial / "metrics.jsonl")] == [1, 2, 3]
    summary = json.loads((partial / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["resumes"] == 1
    assert summary["test_accuracy"] == json.loads((tmp_path / "whole" / "summary.json").read_text())["test_accuracy"]
