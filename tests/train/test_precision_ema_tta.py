"""Precision, EMA, test-time augmentation, gradient checkpointing, compile and TensorBoard options of the trainer."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch
from safetensors.torch import load_file
from tests.cli.test_cli import assert_one_line_error, cli
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import convolab
from convolab.atomic import read_jsonl
from convolab.data import load_dataset
from convolab.train import loop as trainer_module
from convolab.train import step as step_module
from convolab.train.ema import ModelEma
from convolab.train.metrics import FlipAverage, evaluate
from convolab.train.step import check_precision, resolve_precision


def test_ema_matches_torch_averaged_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 1, 6, 6))  # materialise the lazy layer
    ours = ModelEma(model, 0.9)
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(7):  # real steps: parameters move and BatchNorm's running statistics too
        model.train()
        model(torch.randn(8, 1, 6, 6)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ours.update(model)
        reference.update_parameters(model)
    mine = ours.module.state_dict()
    for name, value in reference.module.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(mine[name], value, rtol=1e-6, atol=1e-7, msg=name)
    # integer buffers are copied (AveragedModel keeps its first copy of BatchNorm's batch counter)
    assert mine["1.num_batches_tracked"] == model.state_dict()["1.num_batches_tracked"] > 1
    assert not torch.equal(mine["0.weight"], model.state_dict()["0.weight"])
    assert ours.updates == 7


def test_ema_warmup_against_a_hand_computation():
    # decay_t = min(decay, (1 + t) / (10 + t)) at update t, from the weights the average started from
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEma(model, 0.2, warmup=True)
    got = []
    for w in (1.0, 2.0, 3.0, 4.0):
        with torch.no_grad():
            model.weight.fill_(w)
        ema.update(model)
        got.append(ema.module.weight.item())
    # t=0: 0.1*0 + 0.9*1 = 0.9;  t=1 (2/11 < 0.2): 2/11*0.9 + 9/11*2 = 1.8;  t=2 (3/12 > 0.2, capped):
    # 0.2*1.8 + 0.8*3 = 2.76;  t=3: 0.2*2.76 + 0.8*4 = 3.752
    assert got == pytest.approx([0.9, 1.8, 2.76, 3.752], rel=1e-6)
    assert [ema.decay_at(t) for t in (0, 1, 2, 10_000)] == pytest.approx([0.1, 2 / 11, 0.2, 0.2])
    assert ModelEma(model, 0.999, warmup=True).decay_at(8991) == pytest.approx(0.999)


def test_flip_average_is_the_mean_of_the_probabilities():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.randn(50, 1, 3, 4), torch.randint(0, 3, (50,))
    p = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
    res = evaluate(FlipAverage(model), [(x, y)])
    assert res.accuracy == int((p.argmax(1) == y).sum()) / 50
    assert res.loss == pytest.approx(-p[torch.arange(50), y].log().mean().item(), rel=1e-5)


@pytest.fixture(scope="module")
def ema_tta_run(tmp_path_factory, digits_config):
    return convolab.train(digits_config(tmp_path_factory.mktemp("ema") / "run", epochs=2, plots=False, ema=0.9,
                                        tta=True, hflip=None))


def test_ema_weights_are_evaluated_and_saved(ema_tta_run):
    run_dir = ema_tta_run.run_dir
    saved = load_file(str(run_dir / "model.safetensors"))
    last = sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1]
    state = torch.load(last, weights_only=True)
    assert state["ema"]["updates"] == ema_tta_run.summary["steps"]
    for k, v in saved.items():
        assert torch.equal(v, state["ema"]["module"][k]), k
    assert any(not torch.equal(v, state["model"][k]) for k, v in saved.items()), "the average, not the last weights"


def test_tta_summary_recomputed_from_the_saved_weights(ema_tta_run):
    run = convolab.load_run(ema_tta_run.run_dir)
    data = load_dataset("digits")
    x = run.preprocess(list(data.test.images))  # (359, 1, 8, 8)
    with torch.no_grad():
        plain = run.model(x).softmax(1)
        flipped = run.model(x.flip(3)).softmax(1)
    y = data.test.labels
    s = ema_tta_run.summary
    assert s["test_accuracy_without_tta"] == int((plain.argmax(1) == y).sum()) / len(y)
    assert s["test_accuracy"] == int(((plain + flipped).argmax(1) == y).sum()) / len(y)


def test_bf16_autocast_on_this_cpu_or_a_clear_error(digits_config, tmp_path, capsys):
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        with pytest.raises(ValueError, match="this CPU has no bfloat16 instructions"):
            check_precision("bf16", torch.device("cpu"))
        return
    fp32 = read_jsonl(convolab.train(digits_config(tmp_path / "a", epochs=1, plots=False, precision="32")).run_dir
                      / "steps.jsonl")
    r = convolab.train(digits_config(tmp_path / "b", epochs=1, plots=False, precision="bf16"))
    bf16 = read_jsonl(r.run_dir / "steps.jsonl")
    assert bf16[0]["loss"] != fp32[0]["loss"], "the forward pass ran in bfloat16"
    assert bf16[0]["loss"] == pytest.approx(fp32[0]["loss"], rel=2e-2), "... and is close to the float32 one"
    assert bf16[-1]["loss"] < bf16[0]["loss"]
    assert all(v.dtype == torch.float32 for v in load_file(str(r.run_dir / "model.safetensors")).values())
    assert r.summary["precision"] == "bf16"


def _cpuinfo_has_bf16() -> bool:
    """From the kernel's CPU flags, independently of torch: AVX512-BF16 or AMX tiles."""
    flags = set(open("/proc/cpuinfo").read().split())
    return bool({"avx512_bf16", "amx_tile"} & flags)


def test_auto_precision_is_bf16_where_the_cpu_has_bfloat16_instructions(monkeypatch):
    cpu = torch.device("cpu")
    if sys.platform == "linux":
        assert resolve_precision("auto", cpu) == ("bf16" if _cpuinfo_has_bf16() else "32")
    for native, expected in ((True, "bf16"), (False, "32")):
        monkeypatch.setattr(step_module, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_precision("auto", cpu) == expected
        assert resolve_precision("auto", torch.device("cuda")) == "32"  # GPUs: float32 unless asked
        assert resolve_precision("auto", torch.device("mps")) == "32"
    for given in ("32", "bf16", "fp16"):
        assert resolve_precision(given, cpu) == given


def test_the_default_run_records_the_precision_auto_chose(digits_run):
    assert digits_run.summary["precision"] == resolve_precision("auto", torch.device("cpu"))
    if sys.platform == "linux":
        assert digits_run.summary["precision"] == ("bf16" if _cpuinfo_has_bf16() else "32")


def test_auto_precision_without_bfloat16_instructions_trains_in_float32(digits_config, tmp_path, monkeypatch,
                                                                         caplog):
    monkeypatch.setattr(step_module, "cpu_has_native_bf16", lambda: False)
    a = convolab.train(digits_config(tmp_path / "a", epochs=1, plots=False))
    b = convolab.train(digits_config(tmp_path / "b", epochs=1, plots=False, precision="32"))
    assert a.summary["precision"] == "32"
    assert read_jsonl(a.run_dir / "steps.jsonl") == read_jsonl(b.run_dir / "steps.jsonl")


def test_fp16_needs_a_gpu(tmp_path, capsys):
    code, _, err = cli(["train", "--data", "digits", "--quiet", "--device", "cpu", "--precision", "fp16", "--out",
                        tmp_path / "run"], capsys)
    assert_one_line_error(code, err, "--precision fp16 needs a CUDA GPU", "use --precision bf16 or 32")
    assert not (tmp_path / "run").exists()


def test_grad_checkpointing_is_switched_on_or_refused(digits_config, tmp_path, monkeypatch, capsys):
    code, _, err = cli(["train", "--data", "digits", "--quiet", "--model", "tutorial_cnn", "--grad-checkpointing",
                        "--out", tmp_path / "a"], capsys)
    assert_one_line_error(code, err, "tutorial_cnn has no gradient checkpointing", "resnet")
    assert not (tmp_path / "a").exists()
    calls = []
    create = trainer_module.create_model

    def with_checkpointing(*args, **kwargs):
        model = create(*args, **kwargs)
        model.set_grad_checkpointing = lambda enable=True: calls.append(enable)
        return model

    monkeypatch.setattr(trainer_module, "create_model", with_checkpointing)
    convolab.train(digits_config(tmp_path / "b", epochs=1, plots=False, grad_checkpointing=True))
    assert calls == [True]


def test_tensorboard_missing_or_writing(digits_config, tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    with pytest.raises(ValueError, match="--tensorboard needs the tensorboard package: pip install tensorboard"):
        convolab.train(digits_config(tmp_path / "a", tensorboard=True))
    assert not (tmp_path / "a").exists()

    logged, closed = [], []

    class Writer:  # stands in for torch.utils.tensorboard.SummaryWriter
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            logged.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            closed.append(self.log_dir)

    monkeypatch.setattr(importlib.util, "find_spec",  # tensorboard "installed"; every other package as it is
                        lambda name, *a: object() if name == "tensorboard" else real_find_spec(name, *a))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    r = convolab.train(digits_config(tmp_path / "b", epochs=2, plots=False, tensorboard=True))
    rows = read_jsonl(r.run_dir / "metrics.jsonl")
    assert [(v, s) for t, v, s in logged if t == "epoch/val_accuracy"] == [(row["val_accuracy"], row["epoch"])
                                                                          for row in rows]
    steps = read_jsonl(r.run_dir / "steps.jsonl")
    assert [(v, s) for t, v, s in logged if t == "step/lr"] == [(st["lr"], st["step"]) for st in steps]
    assert closed == [str(r.run_dir / "tensorboard")]


@pytest.mark.slow
def test_compile(digits_config, tmp_path):
    r = convolab.train(digits_config(tmp_path / "run", epochs=1, plots=False, compile=True))
    state = torch.load(sorted((r.run_dir / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in state["model"]), "the checkpoint holds the plain model's keys"
    assert r.summary["test_accuracy"] > 0.3


def test_3d_convolutions_are_kept_out_of_cpu_bf16():
    from convolab.models import create_model
    from convolab.train.step import cpu_bf16_training_problem

    assert cpu_bf16_training_problem(create_model("c3d", num_classes=2, in_chans=1, input_size=(8, 32, 32),
                                                  widths=[4, 4, 4, 4, 4], fc_width=8))
    assert cpu_bf16_training_problem(create_model("r3d_18", num_classes=2, in_chans=1, widths=[4, 4, 4, 4]))
    for name in ("lenet5", "tutorial_cnn", "unet"):
        assert cpu_bf16_training_problem(create_model(name, num_classes=2, in_chans=1)) is None


def test_auto_precision_trains_a_3d_cnn_in_float32_on_a_bf16_cpu(tmp_path, monkeypatch, caplog):
    """The 3D CNN diverged at step 2 in bf16 (wrong Conv3d weight gradients of torch's CPU kernel): auto says
    why it stays at float32, and the run is the float32 run step for step."""
    import logging

    from tests.train.test_tasks import clip_config, write_video_folder

    monkeypatch.setattr(step_module, "cpu_has_native_bf16", lambda: True)
    root = write_video_folder(tmp_path / "videos", per_class=4, per_class_test=1)
    with caplog.at_level(logging.INFO, logger="convolab"):
        a = convolab.train(clip_config(root, tmp_path / "a", epochs=1, plots=False, precision="auto"))
    assert a.summary["precision"] == "32"
    assert "float32 (--precision auto: not bf16, torch's bf16 Conv3d weight gradient on CPU" in caplog.text
    b = convolab.train(clip_config(root, tmp_path / "b", epochs=1, plots=False, precision="32"))
    assert read_jsonl(a.run_dir / "steps.jsonl") == read_jsonl(b.run_dir / "steps.jsonl")
