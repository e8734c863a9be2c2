"""--act and --init for zoo models: which families take an activation, that the built network holds it (and
no ReLU), that it sits where the math allows (SiLU and GELU do not commute with max-pooling), the one-line
refusals, and the weight statistics of each init scheme against its formula."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convolab.models import ACTIVATIONS, INIT_SCHEMES, create_model, get_model_entry, init_weights
from convolab.models._activations import act_layer, is_monotone
from convolab.models._factory import act_families
from convolab.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

ACT_CLASSES = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
               "swish": nn.SiLU, "silu": nn.SiLU, "gelu": nn.GELU}
# One model per family (and per block kind) that takes --act; built on the meta device: structure only.
ACT_MODELS = ["tutorial_cnn", "mnist_cnn", "lenet5", "lenet5_classic", "mlp", "alexnet", "alexnet_lrn", "vgg11_bn",
              "resnet20", "resnet50", "wrn16_8", "se_resnet18"]


def test_the_families_that_take_act():
    assert ACT_CLASSES.keys() == set(ACTIVATIONS)
    families = act_families()
    assert {"tutorial", "lenet", "mlp", "alexnet", "vgg", "resnet", "senet"} <= set(families)
    assert {get_model_entry(m).family for m in ACT_MODELS} <= set(families)
    assert "perceptron" not in families["mlp"] and "nin" not in sum(families.values(), [])


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("name", ACT_MODELS)
def test_built_model_holds_the_activation_and_no_relu(name, act):
    with torch.device("meta"):
        model = create_model(name, **get_model_entry(name).default_cfg, act=act)
    kinds = [type(m) for m in model.modules()]
    assert ACT_CLASSES[act] in kinds
    if act != "relu":
        assert nn.ReLU not in kinds
    assert model.convolab_cfg["act"] == act  # a run records it, so load_run rebuilds the same network


def test_activation_layers_are_fresh_and_leaky_slope_is_torchs():
    make = act_layer("leaky_relu")
    assert make() is not make() and make().negative_slope == 0.01
    assert act_layer("elu")().alpha == 1.0 and act_layer("gelu")().approximate == "none"
    assert [a for a in ACTIVATIONS if not is_monotone(a)] == ["swish", "silu", "gelu"]


def test_silu_and_gelu_do_not_commute_with_max_pooling():
    """Why the pool-first families put SiLU and GELU before the pool: two values in one window."""
    x = torch.tensor([[[[-3.0, -1.0]]]])
    for act, fn in (("silu", F.silu), ("gelu", F.gelu)):
        assert not is_monotone(act)
        assert not torch.allclose(fn(F.max_pool2d(x, (1, 2))), F.max_pool2d(fn(x), (1, 2)))
    for fn in (F.relu, torch.tanh, torch.sigmoid, F.elu, F.leaky_relu):
        torch.testing.assert_close(fn(F.max_pool2d(x, (1, 2))), F.max_pool2d(fn(x), (1, 2)))


FUNCTIONAL = {"relu": F.relu, "leaky_relu": lambda t: F.leaky_relu(t, 0.01), "elu": F.elu, "sigmoid": torch.sigmoid,
              "tanh": torch.tanh, "swish": F.silu, "silu": F.silu, "gelu": F.gelu}


def _tutorial_reference(model, x, f):
    """tutorial_cnn in the tutorials' order, written with torch.nn.functional: conv -> act -> pool, twice."""
    feats, head = model.features, model.classifier
    h = F.max_pool2d(f(F.conv2d(x, feats.conv1.weight, feats.conv1.bias, padding=1)), 2)
    h = F.max_pool2d(f(F.conv2d(h, feats.conv2.weight, feats.conv2.bias, padding=1)), 2)
    h = f(F.linear(h.flatten(1), head.fc1.weight, head.fc1.bias))
    return F.linear(h, head.fc2.weight, head.fc2.bias)


def _lenet_reference(model, x, f):
    """lenet5 (28x28, padded by 2) in the act -> pool order, written with torch.nn.functional."""
    feats, head = model.features, model.classifier
    h = F.max_pool2d(f(F.conv2d(x, feats.conv1.weight, feats.conv1.bias, padding=2)), 2)
    h = F.max_pool2d(f(F.conv2d(h, feats.conv2.weight, feats.conv2.bias)), 2)
    h = f(F.linear(h.flatten(1), head.fc1.weight, head.fc1.bias))
    h = f(F.linear(h, head.fc2.weight, head.fc2.bias))
    return F.linear(h, head.fc3.weight, head.fc3.bias)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("name,reference", [("tutorial_cnn", _tutorial_reference), ("lenet5", _lenet_reference)])
def test_pool_first_families_compute_the_tutorials_order(name, reference, act):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1, input_size=28, act=act).double().eval()
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(model(x), reference(model, x, FUNCTIONAL[act]), rtol=1e-12, atol=1e-12)
    # feature_info names the last layer of each stage: the pool for SiLU/GELU, the activation otherwise
    last = [info["module"].rsplit(".", 1)[-1] for info in model.feature_info]
    assert all(n.startswith("pool") for n in last) != is_monotone(act)


def test_defaults_are_unchanged():
    """Without act each family builds what it built before: ReLU (tanh for lenet5_classic), same layer names."""
    assert [n for n, m in create_model("tutorial_cnn").named_modules() if isinstance(m, nn.ReLU)] == [
        "features.relu1", "features.relu2", "classifier.relu3"]
    assert sum(isinstance(m, nn.Tanh) for m in create_model("lenet5_classic").modules()) == 4
    r = create_model("resnet20", num_classes=10)
    assert sum(isinstance(m, nn.ReLU) for m in r.modules()) == 1 + 9  # the stem's and one per basic block


def test_act_refused_in_one_line_naming_the_families():
    with pytest.raises(ValueError) as e:
        create_model("nin", act="gelu")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("nin has no activation choice")
    for family in ("alexnet", "lenet", "mlp", "resnet", "tutorial", "vgg"):
        assert f"{family} (" in msg
    with pytest.raises(ValueError, match="unknown activation 'relu6'; choose one of relu, leaky_relu"):
        create_model("tutorial_cnn", act="relu6")


@pytest.mark.parametrize("kwargs,needle", [
    (dict(model="nin", act="gelu"), "nin has no activation choice"),
    (dict(act="gelu", model_kwargs={"act": "elu"}), "--act and --model-arg act=... both set the activation"),
    (dict(init="he", init_from="weights.safetensors"), "--init he draws weights that --init-from then replaces"),
    (dict(model="nin", model_kwargs={"act": "elu"}), "nin has no activation choice"),
    (dict(init="lecun"), "unknown --init 'lecun'"),
])
def test_config_refusals(kwargs, needle):
    with pytest.raises(ValueError) as e:
        TrainConfig(**kwargs).validate()
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_model_args_carry_act():
    assert TrainConfig(model_kwargs={"widths": [8]}, act="elu").model_args() == {"widths": [8], "act": "elu"}
    assert TrainConfig(model_kwargs={"widths": [8]}).model_args() == {"widths": [8]}


def test_cli_refuses_act_with_exit_code_2(capsys, tmp_path):
    from tests.cli.test_cli import assert_one_line_error, cli

    code, _, err = cli(["train", "--model", "nin", "--act", "gelu", "--data", "digits", "--out", tmp_path / "r"],
                       capsys)
    assert_one_line_error(code, err, "nin has no activation choice", "tutorial (")
    assert not (tmp_path / "r").exists()  # refused before a run directory (or any data) exists
    code, _, err = cli(["train", "--act", "relu6"], capsys)
    assert code == 2 and "invalid choice: 'relu6'" in err


# -- init ----------------------------------------------------------------------------------------
class Probe(nn.Module):
    """Large layers, so the sample statistics of a scheme are within a fraction of a percent of its formula."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(64, 128, 3)                       # fan_in 576, fan_out 1152: 73,728 weights
        self.grouped = nn.Conv2d(256, 256, 3, groups=4)         # weight (256, 64, 3, 3): fan_in 576, fan_out 2304
        self.fc = nn.Linear(1000, 300)                          # fan_in 1000, fan_out 300: 300,000 weights
        self.bn = nn.BatchNorm2d(128)


def _fans(w: torch.Tensor) -> tuple[int, int]:
    """fan_in, fan_out by hand: weight.shape[1] and weight.shape[0] times the kernel's elements."""
    k = math.prod(w.shape[2:])
    return w.shape[1] * k, w.shape[0] * k


def _check_std(w: torch.Tensor, std: float) -> None:
    n = w.numel()
    # sample std of n normal draws: relative standard error 1/sqrt(2n); allow 6 of them
    assert abs(w.std().item() / std - 1) < 6 / math.sqrt(2 * n), (w.std().item(), std)
    assert abs(w.mean().item()) < 6 * std / math.sqrt(n)


@pytest.mark.parametrize("scheme", ["he", "xavier", "normal"])
def test_init_weight_statistics_follow_the_formulas(scheme):
    torch.manual_seed(0)
    probe = Probe()
    bn_before = probe.bn.weight.clone()
    init_weights(probe, scheme)
    for layer in (probe.conv, probe.grouped, probe.fc):
        w = layer.weight.detach()
        fan_in, fan_out = _fans(w)
        assert torch.count_nonzero(layer.bias) == 0
        if scheme == "he":
            _check_std(w, math.sqrt(2 / fan_in))
        elif scheme == "normal":
            _check_std(w, 0.01)
        else:  # U(-a, a): |w| <= a, variance a^2 / 3, half of the draws inside (-a/2, a/2)
            a = math.sqrt(6 / (fan_in + fan_out))
            assert w.abs().max().item() <= a
            _check_std(w, a / math.sqrt(3))
            inside = (w.abs() < a / 2).float().mean().item()
            assert abs(inside - 0.5) < 6 * math.sqrt(0.25 / w.numel())
    assert torch.equal(probe.bn.weight, bn_before)  # norm layers keep the family's own
    assert _fans(probe.grouped.weight) == (576, 2304)  # torch's fans: in channels per group, all out channels


def test_default_init_changes_nothing_and_bad_scheme_is_refused():
    torch.manual_seed(0)
    model = create_model("tutorial_cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    init_weights(model, "default")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert INIT_SCHEMES == ("default", "he", "xavier", "normal")
    with pytest.raises(ValueError, match="unknown init scheme 'lecun'; choose one of default, he, xavier, normal"):
        init_weights(model, "lecun")


def test_init_reaches_every_conv_and_linear_of_a_zoo_model():
    torch.manual_seed(0)
    model = init_weights(create_model("resnet20", num_classes=10, shortcut="B"), "normal")
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 19 + 2 + 1  # 19 convolutions on the path, 2 projection shortcuts, fc
    weights = torch.cat([m.weight.flatten() for m in layers])
    _check_std(weights.detach(), 0.01)


def test_train_applies_init_and_act_and_records_them(capsys, tmp_path):
    """convolab train --init he --act elu: the run's first weights follow He's formula (an lr of 1e-9 leaves them
    there), config.json records both and load_run rebuilds the ELU network."""
    from tests.cli.test_cli import cli

    from convolab import load_run

    out = tmp_path / "run"
    code, _, err = cli(["train", "--model", "tutorial_cnn", "--data", "digits", "--epochs", "1", "--lr", "1e-9",
                        "--init", "he", "--act", "elu", "--quiet", "--no-plots", "--no-checkpoints", "--device", "cpu",
                        "--out", out], capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["init"] == "he" and config["config"]["act"] == "elu"
    assert config["model_kwargs"]["act"] == "elu"
    run = load_run(out)
    kinds = {type(m) for m in run.model.modules()}
    assert nn.ELU in kinds and nn.ReLU not in kinds
    fc1 = run.model.classifier.fc1  # digits are 8x8: 32 * 2 * 2 = 128 inputs, 128 outputs
    fan_in = fc1.weight.shape[1]
    _check_std(fc1.weight.detach(), math.sqrt(2 / fan_in))
    assert fc1.bias.abs().max().item() < 1e-6  # zero, moved by at most a few steps of lr 1e-9
    # PyTorch's default for this layer would have std 1 / sqrt(3 * fan_in): sqrt(6) times smaller
    assert fc1.weight.std().item() > 2 / math.sqrt(3 * fan_in)


@pytest.mark.parametrize("act", ["tanh", "elu", "gelu"])
def test_a_resnet_with_another_activation_converts_to_glass_exactly(act):
    """glass's BasicBlock takes the torch block's activation (used twice: two glass layers), so --engine numpy trains
    the network --act asked for: forward and gradients equal torch's in float64."""
    import numpy as np

    from convolab import glass
    from convolab.train.engines.numpy import NumpyEngine

    NumpyEngine().check(TrainConfig(model="resnet20", engine="numpy", act=act))  # no refusal any more
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3, in_chans=1, input_size=8, act=act).double()
    g = glass.from_torch(model)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    xt = torch.tensor(x, requires_grad=True)
    out = model(xt)
    out.sum().backward()
    assert np.abs(g(x) - out.detach().numpy()).max() <= 1e-10 * np.abs(out.detach().numpy()).max()
    dx = g.backward(np.ones((2, 3)))
    assert np.abs(dx - xt.grad.numpy()).max() <= 1e-10 * np.abs(xt.grad.numpy()).max()
