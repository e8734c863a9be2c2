"""Pipeline parallelism: where models are cut, and 2 stages on gloo against one process training alone."""

from __future__ import annotations

import copy
import itertools
import os
import random
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.distributed.pipelining import SplitPoint, pipeline

from convolab.models import create_model
from convolab.train.pipeline import PipelineRunner, _balanced_cuts, cuttable_blocks, split_points

# float32. Against the whole batch in one process (tutorial_cnn) the pipeline sums the same products in
# another order (a mean of 4 micro-batch means, gradients summed over micro-batches then divided by 4), so
# the two agree to rounding: relative 1e-5, absolute 1e-6 (measured: losses 2.4e-7, weights 1.5e-8).
# Against the same per-micro-batch order (resnet20, whose batch norm sees micro-batches) it is bit-exact.
RTOL, ATOL = 1e-5, 1e-6
STEPS, BATCH, MICRO = 5, 16, 4


def _model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes=10, in_chans=1, input_size=(28, 28))


def _stage_params(model: torch.nn.Module, cuts: list[str], x: torch.Tensor) -> list[list[str]]:
    """Parameter names of each stage, as torch's own tracer cuts the model (the independent check)."""
    pipe = pipeline(copy.deepcopy(model), (x,), split_spec=dict.fromkeys(cuts, SplitPoint.BEGINNING))
    return [[n for n, _ in pipe.get_stage_module(i).named_parameters()] for i in range(pipe.num_stages)]


@pytest.mark.parametrize("name,n_stages", [("tutorial_cnn", 2), ("lenet5", 3), ("resnet20", 3)])
def test_split_points_cover_every_parameter_once_in_order(name, n_stages):
    model, x = _model(name), torch.randn(2, 1, 28, 28)
    cuts = split_points(model, n_stages, x)
    stages = _stage_params(model, cuts, x)
    assert len(stages) == n_stages and all(stages)
    names = [n for n, _ in model.named_parameters()]
    flat = [n for stage in stages for n in stage]
    assert sorted(flat) == sorted(names), "every parameter in exactly one stage"
    order = [min(names.index(n) for n in stage) for stage in stages]
    assert order == sorted(order), "stages follow the model's order"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg11", "resnet18", "densenet121", "mobilenet_v2"])
def test_split_points_on_larger_registry_models(name):
    torch.manual_seed(0)
    model, x = create_model(name, num_classes=10, in_chans=3, input_size=(32, 32)), torch.randn(2, 3, 32, 32)
    for balance in ("params", "flops"):
        cuts = split_points(model, 4, x, balance=balance)
        stages = _stage_params(model, cuts, x)
        assert len(stages) == 4 and all(stages)
        assert sorted(n for s in stages for n in s) == sorted(n for n, _ in model.named_parameters())


def test_blocks_follow_the_forward_not_registration_order():
    # resnet20 registers maxpool before bn1 but calls conv1, bn1, relu, maxpool; bn1 is a block of its own.
    blocks = [b.name for b in cuttable_blocks(_model("resnet20"), torch.randn(1, 1, 28, 28))]
    assert blocks[:3] == ["conv1", "bn1", "layer1.0"] and blocks[-1] == "fc"


def test_block_weights_match_hand_counts():
    model = _model("tutorial_cnn")
    blocks = {b.name: b for b in cuttable_blocks(model, torch.randn(2, 1, 28, 28))}
    assert list(blocks) == ["features.conv1", "features.conv2", "classifier.fc1", "classifier.fc2"]
    assert [b.params for b in blocks.values()] == [16 * 9 + 16, 32 * 16 * 9 + 32, 1568 * 128 + 128, 128 * 10 + 10]
    # FLOPs = 2 x MACs, batch of 2: conv1 at 28x28 (one input channel), conv2 at 14x14 after pool1
    assert blocks["features.conv1"].flops == 2 * 2 * 16 * 28 * 28 * (1 * 9)
    assert blocks["features.conv2"].flops == 2 * 2 * 32 * 14 * 14 * (16 * 9)
    assert blocks["classifier.fc1"].flops == 2 * 2 * 1568 * 128


def test_balanced_cuts_equal_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        weights = [rng.randint(0, 50) for _ in range(rng.randint(1, 9))]
        k = rng.randint(1, len(weights))
        best = min(max(sum(weights[a:b]) for a, b in zip((0, *c), (*c, len(weights))))
                   for c in itertools.combinations(range(1, len(weights)), k - 1))
        cuts = _balanced_cuts(weights, k)
        assert len(cuts) == k - 1 and cuts == sorted(set(cuts)) and all(0 < c < len(weights) for c in cuts)
        assert max(sum(weights[a:b]) for a, b in zip((0, *cuts), (*cuts, len(weights)))) == best


def test_balance_by_params_and_by_flops():
    model, x = _model("tutorial_cnn"), torch.randn(2, 1, 28, 28)
    # weights per block: params (160, 4640, 200832, 1290); FLOPs (0.45M, 3.61M, 0.80M, 0.005M)
    assert split_points(model, 3, x, balance="params") == ["classifier.fc1", "classifier.fc2"]  # fc1 alone
    assert split_points(model, 3, x, balance="flops") == ["features.conv2", "classifier.fc1"]  # conv2 alone


def test_split_point_errors():
    model, x = _model("tutorial_cnn"), torch.randn(1, 1, 28, 28)
    with pytest.raises(ValueError, match=r"--pipeline-stages 5: TutorialCNN has only 4 blocks .*at most 4 stages"):
        split_points(model, 5, x)
    with pytest.raises(ValueError, match="must be >= 1"):
        split_points(model, 0, x)
    with pytest.raises(ValueError, match="balance must be one of params, flops"):
        split_points(model, 2, x, balance="memory")
    assert split_points(model, 1, x) == []


def test_runner_without_process_group_is_a_clear_error():
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="need a process group: start with torchrun"):
        PipelineRunner(_model("tutorial_cnn"), 2, torch.randn(4, 1, 28, 28), F.cross_entropy, 4)


# -- 2 processes, gloo, CPU ------------------------------------------------------------------------------
def _data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(STEPS, BATCH, 1, 28, 28, generator=g), torch.randint(0, 10, (STEPS, BATCH), generator=g)


def _sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


# (model, schedule): tutorial_cnn with both schedules; resnet20 for batch norm, skip connections, 3 cuts
CASES = [("tutorial_cnn", "gpipe"), ("tutorial_cnn", "1f1b"), ("resnet20", "gpipe")]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    xs, ys = _data()
    result: dict[str, object] = {}
    for name, schedule in CASES:
        runner = PipelineRunner(_model(name), 2, xs[0], F.cross_entropy, MICRO, schedule=schedule)
        opt = _sgd(runner.stage_module.parameters())
        losses = []
        for x, y in zip(xs, ys):
            opt.zero_grad()
            losses.append(runner.step(x, y))
            opt.step()
        tag = f"{name}/{schedule}"
        result[f"{tag}/losses"] = torch.stack(losses)
        if runner.is_last:
            result[f"{tag}/outputs"] = runner.outputs
        state = runner.full_state_dict()
        evaluated = runner.eval_forward(xs[0][:6])  # 6 does not split into 4: one micro-batch
        if rank == 0:
            result[f"{tag}/state"] = state
        if runner.is_last:
            result[f"{tag}/eval"] = evaluated
        if name == "tutorial_cnn" and schedule == "gpipe":
            with pytest.raises(ValueError, match="batch of 10 samples does not split into 4 equal micro-batches"):
                runner.step(xs[0][:10], ys[0][:10])
            runner.load_full_state_dict(_model(name).state_dict())  # back to the initial weights
            result["reloaded/eval"] = runner.eval_forward(xs[0])
    torch.save(result, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _reference(name: str, micro: int) -> dict[str, torch.Tensor]:
    """One process, the unsplit model, the same batches; ``micro`` > 1 runs batch norm per micro-batch.

    One thread, as in the workers: a CPU convolution's sums depend on the thread count, and resnet20's
    steps on random labels amplify that rounding (2 threads against 1 moves its weights by ~5e-4 in 5 steps).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_alone(name, micro)
    finally:
        torch.set_num_threads(threads)


def _train_alone(name: str, micro: int) -> dict[str, torch.Tensor]:
    model, (xs, ys) = _model(name), _data()
    opt, losses = _sgd(model.parameters()), []
    for x, y in zip(xs, ys):
        opt.zero_grad()
        if micro == 1:  # the whole batch at once: what pipelining must reproduce
            logits = [model(x)]  # (N, 10)
            loss = F.cross_entropy(logits[0], y)
            loss.backward()
        else:  # GPipe's order: one backward per micro-batch, gradients summed, then divided by their number
            logits = [model(xm) for xm in x.chunk(micro)]  # (N / micro, 10) each
            parts = [F.cross_entropy(o, ym) for o, ym in zip(logits, y.chunk(micro))]
            for part in parts:
                part.backward()
            for p in model.parameters():
                p.grad /= micro
            loss = torch.stack(parts).mean()
        opt.step()
        losses.append(loss.detach())
    with torch.no_grad():
        model.eval()
        evaluated = model(xs[0][:6])
    return {"losses": torch.stack(losses), "state": model.state_dict(), "eval": evaluated,
            "outputs": torch.cat(logits).detach()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_stages_on_gloo_train_like_one_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name, schedule in CASES:
        tag = f"{name}/{schedule}"
        # no batch norm: the whole batch at once; batch norm: statistics per micro-batch, as GPipe computes them
        ref = _reference(name, micro=MICRO if name == "resnet20" else 1)
        torch.testing.assert_close(r0[f"{tag}/losses"], r1[f"{tag}/losses"], rtol=0, atol=0)  # broadcast
        torch.testing.assert_close(r1[f"{tag}/losses"], ref["losses"], rtol=RTOL, atol=ATOL)
        state = r0[f"{tag}/state"]
        assert list(state) == list(ref["state"]), "the unsplit model's names, in its order"
        for key, value in ref["state"].items():
            torch.testing.assert_close(state[key], value, rtol=RTOL, atol=ATOL, msg=f"{tag} {key}")
        torch.testing.assert_close(r1[f"{tag}/outputs"], ref["outputs"], rtol=RTOL, atol=ATOL)  # last step's logits
        # eval mode: batch norm's running statistics, trained through the training traces
        torch.testing.assert_close(r1[f"{tag}/eval"], ref["eval"], rtol=RTOL, atol=ATOL)
        print(tag, "max |loss diff|", (r1[f"{tag}/losses"] - ref["losses"]).abs().max().item(),
              "max |weight diff|", max((state[k].float() - v.float()).abs().max().item()
                                       for k, v in ref["state"].items()))
    with torch.no_grad():
        initial = _model("tutorial_cnn").eval()(_data()[0][0])
    torch.testing.assert_close(r1["reloaded/eval"], initial, rtol=RTOL, atol=ATOL)


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo group of this process alone (a 1-stage pipeline), taken down after the test."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.slow  # two traces: ~4 s
def test_one_stage_trains_like_the_model_and_checks_its_inputs(one_process_group):
    (xs, ys), micro = _data(), 2
    runner = PipelineRunner(_model("lenet5"), 1, xs[0], F.cross_entropy, micro)
    assert runner.is_first and runner.is_last and runner.cuts == []
    opt = _sgd(runner.stage_module.parameters())
    for x, y in zip(xs[:2], ys[:2]):
        opt.zero_grad()
        loss = runner.step(x, y)
        opt.step()
    ref = _model("lenet5")
    ref_opt = _sgd(ref.parameters())
    for x, y in zip(xs[:2], ys[:2]):
        ref_opt.zero_grad()
        ref_loss = F.cross_entropy(ref(x), y)
        ref_loss.backward()
        ref_opt.step()
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=RTOL, atol=ATOL)
    state = runner.full_state_dict()
    assert list(state) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=RTOL, atol=ATOL)
    with torch.no_grad():
        torch.testing.assert_close(runner.eval_forward(xs[2]), ref.eval()(xs[2]), rtol=RTOL, atol=ATOL)

    with pytest.raises(ValueError, match="a batch of 5 samples does not split into 2 equal micro-batches"):
        runner.step(xs[0][:5], ys[0][:5])
    bad = dict(ref.state_dict())
    bad["features.conv9.weight"] = bad.pop("features.conv1.weight")
    with pytest.raises(ValueError, match=r"state dict does not match LeNet5: missing \['features.conv1.weight'\], "
                                         r"unexpected \['features.conv9.weight'\]"):
        runner.load_full_state_dict(bad)
    runner.load_full_state_dict(_model("lenet5", seed=3).state_dict())
    torch.testing.assert_close(runner.full_state_dict()["features.conv1.weight"],
                               _model("lenet5", seed=3).features.conv1.weight.detach(), rtol=0, atol=0)


def test_runner_argument_errors(one_process_group):
    model, x = _model("tutorial_cnn"), torch.randn(4, 1, 28, 28)
    with pytest.raises(ValueError, match=r"--pipeline-stages 2 needs 2 processes .* this job has 1: use torchrun "
                                         r"--nproc-per-node 2"):
        PipelineRunner(model, 2, x, F.cross_entropy, 4)
    with pytest.raises(ValueError, match="pipeline schedule must be one of gpipe, 1f1b; got 'zb'"):
        PipelineRunner(model, 1, x, F.cross_entropy, 4, schedule="zb")
    with pytest.raises(ValueError, match="micro-batches per batch must be >= 1; got 0"):
        PipelineRunner(model, 1, x, F.cross_entropy, 0)
