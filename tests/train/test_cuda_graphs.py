"""``--cuda-graphs``: the refusals (one line each, before any data loads) and the wrapper's routing.

The graphs themselves need a CUDA GPU, which CI does not have: ``benchmarks/cuda_graphs.py`` trains
with and without them side by side on a GPU (README: Speed). Here ``make_graphed_callables`` is
replaced by a stand-in that does what the wrapper relies on — warm-up passes that move BatchNorm's
running statistics, and a graphed forward installed on the module — so that what convolab itself does
(put the statistics back, give the module its own forward back, call the graphs only for training
batches of the captured shape) is checked on the CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convolab.cli import main
from convolab.runs.session import resume
from convolab.train import TrainConfig, Trainer
from convolab.train.cuda_graphs import GraphedForward, cuda_graph_conflicts

CUDA = torch.device("cuda", 0)


def test_conflicts_none_for_one_cuda_process():
    assert cuda_graph_conflicts(CUDA, 1) is None


@pytest.mark.parametrize("device, world_size, needle", [
    (torch.device("cpu"), 1, "needs a CUDA GPU"),
    (torch.device("mps"), 1, "on mps drop it"),
    (CUDA, 2, "torchrun"),
])
def test_conflicts_name_the_reason(device, world_size, needle):
    message = cuda_graph_conflicts(device, world_size)
    assert message is not None and needle in message and "\n" not in message


@pytest.mark.parametrize("kw, needle", [
    ({"compile": True}, "--cuda-graphs and --compile"),
    ({"grad_checkpointing": True}, "--grad-checkpointing"),
    ({"accum_steps": 2}, "--accum-steps"),
])
def test_config_refuses_flags_graphs_cannot_go_with(kw, needle):
    TrainConfig(**kw).validate()  # fine without --cuda-graphs
    with pytest.raises(ValueError, match=needle):
        TrainConfig(cuda_graphs=True, **kw).validate()


def test_trainer_refuses_graphs_on_the_cpu_before_loading_data(tmp_path):
    # a dataset that does not exist: the refusal must come first
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        Trainer(TrainConfig(data=str(tmp_path / "nowhere"), device="cpu", cuda_graphs=True, out=str(tmp_path / "r")))
    assert not (tmp_path / "r").exists()


def test_cli_refusal_is_one_line(capsys, tmp_path):
    code = main(["train", "--data", "digits", "--device", "cpu", "--cuda-graphs", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().count("\n") == 0 and "--cuda-graphs needs a CUDA GPU" in err
    assert not (tmp_path / "r").exists()


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)).mean((2, 3))


@pytest.fixture
def fake_capture(monkeypatch):
    """A stand-in for torch.cuda.make_graphed_callables: three warm-up passes in training mode (moving
    BatchNorm's statistics, as the real one does), then a 'graphed' forward installed on the module that
    records its calls."""
    calls = []

    def make_graphed_callables(module, sample_args):
        (sample,) = sample_args
        for _ in range(3):
            module(sample * 3 + 1).sum().backward()
        module.zero_grad(set_to_none=True)
        own = module.forward

        def graphed(x):
            calls.append(tuple(x.shape))
            return own(x)

        module.forward = graphed
        return module

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", make_graphed_callables)
    return calls


def test_capture_leaves_the_module_as_it_was(fake_capture):
    torch.manual_seed(0)
    net = _Net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    GraphedForward(net, torch.randn(8, 1, 6, 6))
    after = net.state_dict()
    assert set(after) == set(before)
    for k in before:  # the warm-up moved the running statistics; they are back, in the same tensors
        assert torch.equal(after[k], before[k]), k
    assert "forward" not in net.__dict__  # the module's own forward again (saved, evaluated, exported as is)
    assert net.bn.num_batches_tracked.item() == 0


def test_graphs_only_for_training_batches_of_the_captured_shape(fake_capture):
    torch.manual_seed(0)
    net = _Net().train()
    g = GraphedForward(net, torch.randn(8, 1, 6, 6))
    x = torch.randn(8, 1, 6, 6)
    expected = net(x)  # the module's own forward (same weights): what the graphs must compute
    fake_capture.clear()
    out = g(x)
    assert fake_capture == [(8, 1, 6, 6)] and torch.allclose(out, expected)
    g(torch.randn(5, 1, 6, 6))  # an epoch's short last batch: the module itself
    net.eval()
    g(x)  # evaluation
    net.train()
    with torch.no_grad():
        g(x)  # no autograd: nothing to replay a backward pass for
    assert fake_capture == [(8, 1, 6, 6)]


# -- whole recorded steps ----------------------------------------------------------------------------------
def _recorded_on_the_cpu(monkeypatch):
    """--cuda-graphs on the CPU, with EagerStep (the same protocol as the CUDA graph: warm-up, restore, then a
    step function reading fixed input tensors) in place of the graph, and the device-side finiteness check."""
    import importlib

    from convolab.train.cuda_graphs import EagerStep

    loop_module = importlib.import_module("convolab.train.loop")
    from convolab.train.step import StandardStep

    monkeypatch.setattr(loop_module, "cuda_graph_conflicts", lambda *args: None)
    monkeypatch.setattr(StandardStep, "step_graph_class", EagerStep)


def test_recorded_steps_train_exactly_as_the_loop_does(digits_config, tmp_path, monkeypatch):
    # digits: 1,617 training images at batch 100 -> 16 recorded steps and a short 17th run as usual, per epoch;
    # light augmentation (shifts, rotations) draws from the generator the graph registers.
    from tests.train.test_deferred_nan import _deferred, _same_run

    import convolab

    recipe = dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="onecycle",
                  augment="light", label_smoothing=0.1, batch_size=100, epochs=2, plots=False)
    _deferred(monkeypatch)
    loop = convolab.train(digits_config(tmp_path / "loop", **recipe))
    _recorded_on_the_cpu(monkeypatch)
    captured = []
    real_capture = Trainer._capture_graphs

    def capture(self):
        real_capture(self)
        captured.append(self.step.step_graph)

    monkeypatch.setattr(Trainer, "_capture_graphs", capture)
    recorded = convolab.train(digits_config(tmp_path / "recorded", cuda_graphs=True, **recipe))
    assert len(captured) == 1 and captured[0] is not None, "the whole step was recorded, once"
    _same_run(recorded, loop)  # steps.jsonl, metrics, weights, test accuracy: identical


def test_whole_steps_are_recorded_only_where_every_part_can_be(digits_config, tmp_path, monkeypatch):
    from tests.train.test_deferred_nan import _deferred

    _recorded_on_the_cpu(monkeypatch)
    _deferred(monkeypatch)
    base = dict(optimizer="sgd", momentum=0.9, cuda_graphs=True, epochs=1, plots=False)
    for extra, whole in [({}, True), ({"clip_grad_norm": 1.0}, False), ({"mixup": 0.2}, False),
                         ({"optimizer": "adam"}, False)]:
        t = Trainer(digits_config(tmp_path / f"r{len(extra)}{whole}{list(extra)}", **{**base, **extra}))
        t._setup()
        assert t.step.records_whole_steps() is whole, extra


def test_a_recorded_run_resumes_exactly(digits_config, tmp_path, monkeypatch):
    # Stopped after epoch 1 and resumed: the resumed process records its step anew (after the checkpoint's
    # weights, momentum and generators are restored; the device learning rate saved as a number) and ends
    # where the uninterrupted run does.
    from tests.train.test_deferred_nan import _deferred, _same_run

    import convolab

    recipe = dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, schedule="onecycle", augment="light",
                  batch_size=100, epochs=2, plots=False, cuda_graphs=True)
    _deferred(monkeypatch)
    _recorded_on_the_cpu(monkeypatch)
    whole = convolab.train(digits_config(tmp_path / "whole", **recipe))
    real_epoch = Trainer._train_epoch

    def stop_before_epoch_2(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", stop_before_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        convolab.train(digits_config(tmp_path / "stopped", **recipe))
    monkeypatch.setattr(Trainer, "_train_epoch", real_epoch)
    from convolab.runs.checkpoints import find_checkpoint

    _, _, state = find_checkpoint(tmp_path / "stopped")
    assert all(type(g["lr"]) is float for g in state["optimizer"]["param_groups"])  # not the device tensor
    resumed = resume(tmp_path / "stopped")
    assert resumed.summary["resumes"] == 1
    _same_run(resumed, whole)
