"""Quantization-aware training: the prepared graph's modes, a short QAT run on digits that reloads as the int8 graph
it trained (checked against converting that graph directly and against its fake-quantized outputs), the fp32 control
and the one-line refusal of a model torch.export cannot trace."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import convolab
from convolab.compress.qat import prepare_for_qat, qat, qat_control
from convolab.runs.reader import Run
from convolab.train.metrics import evaluate

warnings.filterwarnings("ignore", message=".*register_constant.*")


def _observer_state(prepared) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in prepared.state_dict().items() if "min_val" in k or "max_val" in k}


@pytest.mark.slow
def test_observers_record_in_training_only(digits_run):
    run = convolab.load_run(digits_run.run_dir)
    prepared, keep = prepare_for_qat(run)
    assert keep == ["features.conv1"]  # PTQ's choice: the 1-channel first convolution stays float32
    assert prepared.convolab_build["kind"] == "int8-pt2e" and prepared.convolab_build["qat"] is True
    # the rewrites that keep one weight per weight; not the space-to-depth stem (training would untie its copies)
    assert prepared.convolab_build["rewrites"] == ["relu-before-maxpool", "channels-last-flatten"]
    assert prepared.training
    x = torch.randn(16, 1, 8, 8)
    prepared(x)
    before = _observer_state(prepared)
    prepared.eval()
    assert not prepared.training
    with torch.no_grad():
        prepared(x * 50)  # far outside the ranges seen: an observer that records would widen them
    assert all(torch.equal(v, before[k]) for k, v in _observer_state(prepared).items())
    prepared.train()
    prepared(x * 50)
    after = _observer_state(prepared)
    assert any(not torch.equal(v, before[k]) for k, v in after.items())
    # fake quantization keeps the function close to the float model's (same weights, 8-bit rounding)
    prepared.eval()
    with torch.no_grad():
        ref, got = run.model(x), prepared(x)
    assert (got - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.fixture(scope="module")
def qat_runs(digits_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("qat")
    kw = dict(epochs=1, lr=1e-4, seed=0, progress=False, plots=False)
    return qat(digits_run.run_dir, out / "qat", **kw), qat_control(digits_run.run_dir, out / "fp32", **kw)


@pytest.mark.slow
def test_qat_run_reloads_as_the_int8_graph_it_trained(qat_runs):
    from convolab.runs.quantized import convert

    result, _ = qat_runs
    run = convolab.load_run(result.run_dir)
    assert run.build["kind"] == "int8-pt2e" and run.build["qat"] is True
    stored = load_file(str(result.run_dir / "model.safetensors"))
    assert stored["classifier.fc1.weight"].dtype == torch.int8  # quantized weights are stored as int8
    assert stored["features.conv1.weight"].dtype == torch.float32  # the layer kept float32
    x = torch.randn(32, 1, 8, 8)
    direct = convert(copy.deepcopy(result.model))  # the trained graph converted here, not through the files
    with torch.no_grad():
        assert torch.allclose(run.model(x), direct(x), atol=1e-5)
        fake = result.model.eval()(x)
        # the int8 graph computes what the fake-quantized one simulated, to within an int8 step or so
        assert (run.model(x) - fake).abs().max() < 0.05 * fake.abs().max()
    # summary.json's test figures are the reloaded int8 graph's, measured again here on the same test split
    data = convolab.load_dataset("digits", seed=0)
    x_test = (data.test.images.float() / 255 - torch.tensor(run.mean).view(1, -1, 1, 1)) / torch.tensor(
        run.std).view(1, -1, 1, 1)
    again = evaluate(run.model, [(x_test, data.test.labels)])
    assert result.summary["test_accuracy"] == pytest.approx(again.accuracy, abs=1e-9)
    assert run.summary["test_accuracy"] == result.summary["test_accuracy"]
    assert 0 <= result.summary["fake_quant_test_accuracy"] <= 1 and result.summary["quantized"] == "int8 (QAT)"


@pytest.mark.slow
def test_the_control_is_the_float_model_for_the_same_steps(qat_runs):
    q, c = qat_runs
    assert q.summary["steps"] == c.summary["steps"] > 0
    run = convolab.load_run(c.run_dir)
    assert run.build["kind"] == "registry" and run.build["name"] == "tutorial_cnn"
    assert run.config["config"]["precision"] == "32" == q.summary["precision"]
    assert run.config["recipe"]["lr"] == 1e-4 == convolab.load_run(q.run_dir).config["recipe"]["lr"]


class _Branchy(nn.Module):
    """A model whose forward pass branches on its data: torch.export cannot trace it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.convolab_cfg = {"name": "branchy"}

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x.flatten(1))
        return -self.fc(x.flatten(1))


def test_an_untraceable_model_is_one_line(tmp_path):
    run = Run(tmp_path, _Branchy(), {}, [str(i) for i in range(10)], (0.5,), (0.5,), (1, 8, 8),
              build={"kind": "registry", "name": "branchy", "kwargs": {}})
    with pytest.raises(ValueError, match=r"^_Branchy cannot be exported for int8 quantization: ") as e:
        prepare_for_qat(run)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_a_model_torchao_cannot_prepare_is_one_line_naming_the_step(tmp_path):
    """torchao's x86 quantizer (0.18) cannot prepare resnet20 (conv -> bn -> add -> relu, option-A shortcut) for QAT:
    the refusal names the model and the step that failed instead of torchao's traceback."""
    from convolab.models import create_model

    kwargs = dict(num_classes=10, in_chans=1, input_size=[8, 8])
    run = Run(tmp_path, create_model("resnet20", **kwargs), {}, [str(i) for i in range(10)], (0.5,), (0.5,),
              (1, 8, 8), build={"kind": "registry", "name": "resnet20", "kwargs": kwargs})
    # (which step fails depends on torchao's state in the process: annotating the pattern, or folding bn into conv)
    expected = (r"^ResNet cannot be prepared for quantization-aware training: torchao's QAT preparation failed in "
                r"(_annotate_qat_conv2d_bn_binary_unary|_fuse_conv_bn_qat) \((ValueError|IndexError): ")
    with pytest.raises(ValueError, match=expected) as e:
        prepare_for_qat(run)
    assert "\n" not in str(e.value)
