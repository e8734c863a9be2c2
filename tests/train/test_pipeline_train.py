"""--pipeline-stages in the training loop: 2 stages on gloo against the same run in one process, and the refusals."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from convolab.atomic import read_jsonl
from convolab.runs.session import train
from convolab.train.config import TrainConfig
from convolab.train.distributed import DistInfo
from convolab.train.loop import Trainer

# float32. The pipeline sums the same products in another order (a batch of 64 as 2 micro-batches of 32: the mean
# of two means, gradients summed over micro-batches then halved), so the runs agree to rounding only. Over a
# whole epoch of digits (21 steps of SGD) that rounding grows a little; rtol 1e-4, atol 1e-5 (measured on a
# 2-core CPU: losses 4.8e-7, weights 3.7e-8).
RTOL, ATOL = 1e-4, 1e-5


def _config(out: Path, stages: int) -> TrainConfig:
    return TrainConfig(model="tutorial_cnn", data="digits", epochs=1, pipeline_stages=stages, batch_size=64,
                       precision="32", device="cpu", out=str(out), progress=False, plots=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    # What torchrun sets for each process; convolab's init_distributed joins the gloo group from it.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = train(_config(Path(out) / "pipe", 2))
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({"summary": result.summary,
                                                            "run_dir": str(result.run_dir)}))


@pytest.mark.slow  # two processes tracing and training one epoch, then the same epoch alone: ~25 s
def test_two_stages_train_like_one_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: a CPU convolution's sums depend on the thread count
    try:
        ref = train(_config(tmp_path / "alone", 1))
    finally:
        torch.set_num_threads(threads)
    pipe, alone = tmp_path / "pipe", tmp_path / "alone"
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # One run folder, written by rank 0 alone (rank 1 returns the same figures but writes nothing).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone", "pipe", "rank0.json", "rank1.json"]
    assert (pipe / "summary.json").is_file() and not (pipe / "checkpoints").exists()
    summary = json.loads((pipe / "summary.json").read_text())
    assert summary == ranks[0]["summary"]
    assert summary["world_size"] == 2
    assert json.loads((pipe / "config.json").read_text())["config"]["checkpoints"] is False
    assert len(read_jsonl(pipe / "metrics.jsonl")) == 1

    # Per-step losses and learning rates, against the unsplit model trained on the same batches in one process.
    steps, ref_steps = read_jsonl(pipe / "steps.jsonl"), read_jsonl(alone / "steps.jsonl")
    assert [s["step"] for s in steps] == [s["step"] for s in ref_steps] and len(steps) == 21  # ceil(1293 / 64)
    assert [s["lr"] for s in steps] == [s["lr"] for s in ref_steps]
    torch.testing.assert_close(torch.tensor([s["loss"] for s in steps]), torch.tensor([s["loss"] for s in ref_steps]),
                               rtol=RTOL, atol=ATOL)
    # Final weights: every stage's, gathered into rank 0's model.safetensors, named as the unsplit model's.
    weights, ref_weights = load_file(str(pipe / "model.safetensors")), load_file(str(alone / "model.safetensors"))
    assert list(weights) == list(ref_weights)
    for key, value in ref_weights.items():
        torch.testing.assert_close(weights[key], value, rtol=RTOL, atol=ATOL, msg=key)
    # Evaluation through the stages (the last stage's logits broadcast): the same figures in both processes.
    for rank in ranks:
        for key in ("test_loss", "test_accuracy", "final_val_accuracy"):
            assert rank["summary"][key] == pytest.approx(ref.summary[key], rel=RTOL, abs=ATOL), key
    for key in ("train_loss", "train_accuracy", "val_loss"):
        assert read_jsonl(pipe / "metrics.jsonl")[0][key] == pytest.approx(
            read_jsonl(alone / "metrics.jsonl")[0][key], rel=RTOL, abs=ATOL), key
    print("max |loss diff|", max(abs(a["loss"] - b["loss"]) for a, b in zip(steps, ref_steps)),
          "max |weight diff|", max((weights[k] - v).abs().max().item() for k, v in ref_weights.items()))


@pytest.mark.parametrize("option,flag", [
    (dict(accum_steps=2), "--accum-steps > 1"), (dict(ema=0.99), "--ema"), (dict(cuda_graphs=True), "--cuda-graphs"),
    (dict(compile=True), "--compile"), (dict(precision="fp16"), "--precision fp16"),
    (dict(engine="numpy"), "--engine numpy"), (dict(early_stopping=2), "--early-stopping"),
    (dict(clip_grad_norm=1.0), "--clip-grad-norm"),
    (dict(checkpoint_every=10), "--checkpoint-every \\(pipeline runs keep no checkpoints\\)"),
])
def test_config_refuses_what_pipelines_cannot_do(option, flag):
    config = TrainConfig(model="tutorial_cnn", data="digits", pipeline_stages=2, **option)
    with pytest.raises(ValueError, match=f"^--pipeline-stages 2 cannot be combined with {flag}"):
        config.validate()
    TrainConfig(model="tutorial_cnn", data="digits", pipeline_stages=1, **option)  # (fine without stages)


def test_trainer_refuses_a_world_size_other_than_the_stages(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match=r"^--pipeline-stages 2 needs 2 processes \(one per stage\); this job has 1: "
                                         r"start it with torchrun --nproc-per-node 2$"):
        Trainer(TrainConfig(model="tutorial_cnn", data="digits", pipeline_stages=2, device="cpu"))
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="this job has 3"):
        Trainer(TrainConfig(model="tutorial_cnn", data="digits", pipeline_stages=2, device="cpu"))


def test_trainer_checks_before_joining_the_group(monkeypatch):
    """Pipelined runs: checkpoints off, --precision auto is float32, a resume or an explicit bf16 refused before the
    process group is joined (and before any data loads)."""
    loop = sys.modules[Trainer.__module__]  # (convolab.train is also the name of the train function)
    monkeypatch.setenv("WORLD_SIZE", "2")
    joined: list[torch.device] = []

    def join(device: torch.device) -> tuple[DistInfo, torch.device]:
        joined.append(device)
        return DistInfo(), device

    monkeypatch.setattr(loop, "init_distributed", join)
    config = TrainConfig(model="tutorial_cnn", data="digits", pipeline_stages=2, device="cpu")
    with pytest.raises(ValueError, match="^--pipeline-stages 2: pipeline runs keep no checkpoints, so they cannot "
                                         "resume; train a new run$"):
        Trainer(config, resume_state={"epoch": 1})
    assert not joined
    trainer = Trainer(config)
    assert trainer.config.checkpoints is False and config.checkpoints is True, "the caller's config is not changed"
    assert trainer.precision == "32" and len(joined) == 1
    monkeypatch.setattr(loop, "resolve_precision", lambda precision, device: "bf16")  # a CPU with bfloat16
    monkeypatch.setattr(loop, "check_precision", lambda precision, device: None)
    assert Trainer(config).precision == "32", "--precision auto (bf16 on this CPU) becomes float32"
    with pytest.raises(ValueError, match="^--pipeline-stages 2 trains in float32 only; drop --precision bf16$"):
        Trainer(TrainConfig(model="tutorial_cnn", data="digits", pipeline_stages=2, device="cpu", precision="bf16"))
