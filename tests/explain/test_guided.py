"""Deconvnet and guided backpropagation against hand computations, through the CLI, and the models they refuse.

The references never use captum: on small nets the backward pass is written out layer by layer (the adjoint
of a convolution is the transposed convolution), and on zoo models each ``nn.ReLU`` is replaced by an
``autograd.Function`` whose backward is the method's rule.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from convolab.explain.attribution import METHODS, PIXEL_METHODS, RELU_METHODS, attribute, check_relu_network


def _rule(grad: torch.Tensor, pre: torch.Tensor, method: str) -> torch.Tensor:
    """A ReLU's backward: the gradient at its output -> the gradient at its input ``pre``."""
    if method == "plain":
        return grad * (pre > 0)
    if method == "guided-backprop":  # Springenberg et al.: input positive AND gradient positive
        return grad * (pre > 0) * (grad > 0)
    assert method == "deconvnet"  # Zeiler & Fergus: the gradient rectified, whatever the input
    return grad * (grad > 0)


class ConvNet(nn.Module):
    """conv(stride 2) - ReLU - conv - ReLU - linear, on ``[N, 2, 9, 9]``."""

    def __init__(self, relu: str = "separate"):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)  # 9x9 -> 5x5
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)  # 5x5 -> 5x5
        self.fc = nn.Linear(3 * 5 * 5, 6)
        inplace = relu == "inplace"
        self.relu1 = nn.ReLU(inplace=inplace)
        # "shared": one module called twice (as torchvision's ResNet blocks do)
        self.relu2 = self.relu1 if relu == "shared" else nn.ReLU(inplace=inplace)

    def forward(self, x):
        return self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).flatten(1))


def convnet_by_hand(net: ConvNet, x: torch.Tensor, target: torch.Tensor, method: str) -> torch.Tensor:
    """The method's input gradient by the chain rule, one layer at a time (no autograd)."""
    with torch.no_grad():
        z1 = net.conv1(x)
        z2 = net.conv2(z1.clamp_min(0))
        g = net.fc.weight[target].reshape(z2.shape)  # dy_c / d relu(z2)
        g = _rule(g, z2, method)
        g = F.conv_transpose2d(g, net.conv2.weight, padding=1)  # dy_c / d relu(z1)
        g = _rule(g, z1, method)
        return F.conv_transpose2d(g, net.conv1.weight, stride=2, padding=1)  # dy_c / dx, 5x5 -> 9x9


class SkipNet(nn.Module):
    """conv - (ReLU(z) + z) - linear: the ReLU's input also feeds the skip, as the nodes of a DARTS cell do."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3 * 9 * 9, 6)

    def forward(self, x):
        z = self.conv(x)
        return self.fc((self.relu(z) + z).flatten(1))


def skipnet_by_hand(net: SkipNet, x: torch.Tensor, target: torch.Tensor, method: str) -> torch.Tensor:
    with torch.no_grad():
        z = net.conv(x)
        g = net.fc.weight[target].reshape(z.shape)  # dy_c / d(relu(z) + z)
        g = _rule(g, z, method) + g  # the skip's gradient passes untouched
        return F.conv_transpose2d(g, net.conv.weight, padding=1)


def _net(cls, *args):
    torch.manual_seed(0)
    return cls(*args).double().eval()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.randn(4, 2, 9, 9, dtype=torch.float64)


TARGETS = torch.tensor([0, 3, 5, 3])


def test_the_hand_chain_rule_is_the_gradient(x):
    """The references' plumbing: with the plain ReLU rule they give autograd's gradient."""
    for net, by_hand in ((_net(ConvNet), convnet_by_hand), (_net(SkipNet), skipnet_by_hand)):
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(net(xr).gather(1, TARGETS[:, None]).sum(), xr)
        torch.testing.assert_close(by_hand(net, x, TARGETS, "plain"), grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("relu", ["separate", "inplace", "shared"])
@pytest.mark.parametrize("method", RELU_METHODS)
def test_equals_the_hand_computation(x, method, relu):
    net = _net(ConvNet, relu)
    got = attribute(net, x, method, TARGETS)
    assert got.shape == x.shape
    torch.testing.assert_close(got, convnet_by_hand(net, x, TARGETS, method), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", RELU_METHODS)
def test_a_relu_whose_input_feeds_another_layer(x, method):
    """captum hooks the gradient of the ReLU's input tensor; without a fresh view that hook would also rectify
    the skip's gradient (a wrong map on DARTS cells)."""
    net = _net(SkipNet)
    torch.testing.assert_close(attribute(net, x, method, TARGETS), skipnet_by_hand(net, x, TARGETS, method),
                               rtol=0, atol=1e-6)


def test_the_rules_change_the_map(x):
    """On a net with ReLUs the three gradients differ (and the hand rules would not match a swapped method)."""
    net = _net(ConvNet)
    plain = convnet_by_hand(net, x, TARGETS, "plain")
    guided = attribute(net, x, "guided-backprop", TARGETS)
    deconv = attribute(net, x, "deconvnet", TARGETS)
    scale = plain.abs().max()
    assert (guided - plain).abs().max() > 0.1 * scale
    assert (deconv - guided).abs().max() > 0.1 * scale
    assert (attribute(net, x, "saliency", TARGETS) - guided.abs()).abs().max() > 0.1 * scale


def test_the_model_is_left_as_it_was(x):
    """No hooks stay behind: the gradient afterwards is the plain one."""
    net = _net(ConvNet, "inplace")
    attribute(net, x, "guided-backprop", TARGETS)
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in net.modules())
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(xr).gather(1, TARGETS[:, None]).sum(), xr)
    torch.testing.assert_close(grad, convnet_by_hand(net, x, TARGETS, "plain"), rtol=0, atol=1e-12)


def test_registered_as_pixel_methods():
    assert set(RELU_METHODS) == {"deconvnet", "guided-backprop"}
    assert set(RELU_METHODS) <= set(PIXEL_METHODS) <= set(METHODS)


class FunctionalNet(nn.Module):
    def __init__(self, act=None):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.act = act
        self.fc = nn.Linear(3 * 9 * 9, 6)

    def forward(self, x):
        h = self.relu(self.conv(x))
        h = self.act(h) if self.act is not None else F.relu(h - 0.1)  # a second ReLU, as a function
        return self.fc(h.flatten(1))


class NoReLUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.act = nn.ReLU6()
        self.fc = nn.Linear(3 * 9 * 9, 6)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).flatten(1))


class SENet(nn.Module):
    """ReLUs plus a sigmoid gate (squeeze-and-excitation): allowed."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(3 * 9 * 9, 6)

    def forward(self, x):
        h = self.relu(self.conv(x))
        return self.fc((h * torch.sigmoid(h.mean(dim=(2, 3), keepdim=True))).flatten(1))


@pytest.mark.parametrize("net,needles", [
    (FunctionalNet(), ["nn.ReLU module", "FunctionalNet applies 1 of its 2 ReLUs as functions", "saliency"]),
    (FunctionalNet(nn.Hardswish()), ["FunctionalNet also uses Hardswish (1x)", "saliency"]),
    (NoReLUNet(), ["NoReLUNet has none", "ReLU6", "saliency"]),
])
@pytest.mark.parametrize("method", RELU_METHODS)
def test_networks_it_cannot_guide_are_refused(x, net, needles, method):
    net = net.double().eval()
    with pytest.raises(ValueError) as e:
        attribute(net, x, method, TARGETS)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(method) and all(n in msg for n in needles), msg
    assert attribute(net, x, "saliency", TARGETS).shape == x.shape  # the suggested method works


def test_sigmoid_gates_are_allowed(x):
    net = _net(SENet)
    assert check_relu_network(net, x) == 1
    assert torch.isfinite(attribute(net, x, "guided-backprop", TARGETS)).all()


# Zoo models against the autograd.Function reference -------------------------------------------------------------


class _RuleReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, method):
        ctx.save_for_backward(pre)
        ctx.method = method
        return pre.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (pre,) = ctx.saved_tensors
        return _rule(grad, pre, ctx.method), None


class _RuleModule(nn.Module):
    def __init__(self, method):
        super().__init__()
        self.method = method

    def forward(self, pre):
        return _RuleReLU.apply(pre, self.method)


def by_functions(model: nn.Module, x: torch.Tensor, target, method: str) -> torch.Tensor:
    """A copy of ``model``, each ``nn.ReLU`` replaced by the rule as an ``autograd.Function``: its input gradient."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, _RuleModule(method))
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    target = torch.as_tensor(target).expand(len(x))
    (grad,) = torch.autograd.grad(out.gather(1, target[:, None]).sum(), x)
    return grad


def test_function_reference_matches_the_hand_chain_rule(x):
    net = _net(ConvNet)
    for method in RELU_METHODS:
        torch.testing.assert_close(by_functions(net, x, TARGETS, method), convnet_by_hand(net, x, TARGETS, method),
                                   rtol=0, atol=1e-12)


ZOO = [  # (name, input size): inplace ReLUs, a ReLU module used twice, SE gates, shared DARTS nodes
    pytest.param("tutorial_cnn", 16),
    pytest.param("resnet20", 16),
    pytest.param("se_resnet18", 32, marks=pytest.mark.slow),
    pytest.param("darts_net", 16, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,size", ZOO)
def test_zoo_models_match_the_reference(name, size):
    from convolab.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_chans=3, input_size=size).double().eval()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    for method in RELU_METHODS:
        ref = by_functions(model, x, 2, method)
        assert ref.abs().max() > 0
        torch.testing.assert_close(attribute(model, x, method, 2), ref, rtol=0, atol=1e-6 * float(ref.abs().max()))


@pytest.mark.slow
@pytest.mark.parametrize("name,needle", [("googlenet", "57 of its 57 ReLUs as functions"),
                                         ("shufflenet_v1", "ReLUs as functions"),
                                         ("mobilenet_v2", "has none (it uses ReLU6"),
                                         ("mobilenet_v3_small", "also uses Hardswish"),
                                         ("efficientnet_b0", "has none (it uses SiLU")])
def test_zoo_models_it_cannot_guide(name, needle):
    from convolab.models import create_model

    model = create_model(name, num_classes=5, in_chans=3, input_size=64).eval()
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        attribute(model, torch.randn(1, 3, 64, 64), "guided-backprop")


# The CLI on the shared digits run -----------------------------------------------------------------------------


def test_cli_writes_both_maps_equal_to_the_reference(digits_run, tmp_path, capsys):
    from convolab import load_run
    from convolab.cli import main
    from convolab.data import load_dataset

    image = tmp_path / "digit.png"
    Image.fromarray(load_dataset("digits").test.images[3, 0].numpy()).save(image)
    code = main(["explain", str(digits_run.run_dir), str(image), "--method", "deconvnet", "guided-backprop",
                 "--out", str(tmp_path / "e"), "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    (record,) = json.loads(out)
    run = load_run(digits_run.run_dir)
    x = run.preprocess(torch.from_numpy(np.array(run.to_array(str(image)))))
    maps = {}
    for method in RELU_METHODS:
        m = record["methods"][method]
        assert m["png"] == str(tmp_path / "e" / f"digit_{method}.png") and Image.open(m["png"]).format == "PNG"
        raw = np.load(m["raw"])
        assert raw.shape == (1, 8, 8) and np.isfinite(raw).all() and np.abs(raw).max() > 0
        ref = by_functions(run.model, x, record["target_index"], method)[0].numpy()
        np.testing.assert_allclose(raw, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
        maps[method] = raw
    saliency = attribute(run.model, x, "saliency", record["target_index"])[0].numpy()
    scale = np.abs(saliency).max()
    assert np.abs(maps["guided-backprop"] - maps["deconvnet"]).max() > 0.05 * scale
    assert np.abs(np.abs(maps["guided-backprop"]) - saliency).max() > 0.05 * scale


def test_a_model_it_cannot_guide_is_refused_before_any_folder_is_made(digits_run, tmp_path):
    from convolab import load_run
    from convolab.explain.images import explain_images

    run = load_run(digits_run.run_dir)
    run.model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()
    # (an image that cannot be read would only be recorded as an error: the refusal must come before any image)
    with pytest.raises(ValueError, match="ReLU"):
        explain_images(run, [str(tmp_path / "missing.png")], ["guided-backprop"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
