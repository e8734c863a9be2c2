"""Networks from a spec (convolab.models.spec): the grammar, the built network against hand counts and torch
functional references, its errors, the file forms, the NumPy engine's twins of its blocks, and the CLI."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.cli.test_cli import assert_one_line_error, cli
from torch import nn

import convolab
from convolab.layers.branches import Concat, DenseConcat, Residual
from convolab.models import create_model, get_model_entry
from convolab.models.spec import (
    LAYERS,
    SpecError,
    SpecNet,
    build_spec,
    format_spec,
    parse_spec,
    read_spec_file,
    resolve_model_name,
    spec_help,
)

SIMPLE_CNN = "spec:conv(6,5),relu,maxpool(2),conv(16,5),relu,maxpool(2),flatten,fc(120),relu,fc(84),relu,fc(10)"
LENET5 = "spec:conv(6,5,p=2),tanh,avgpool(2),conv(16,5),tanh,avgpool(2),flatten,fc(120),tanh,fc(84),tanh,fc"


# -- the grammar -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    SIMPLE_CNN[5:], LENET5[5:], "3*(conv(32,3,p=same),bn,relu),maxpool(2)",
    "res(conv(8,3,p=same),bn,relu,conv(8,3,p=same)),cat(conv(4,1)|conv(4,3,p=1)|maxpool(3,s=1,p=1)),gap,fc",
    "dense(conv(4,3,p=same)),2*res(conv(8,3,p=1)),leakyrelu(0.2),dropout(p=0.25),conv(8,3,bias=false,mode=reflect)",
    "2*(conv(8,3),(relu,dropout2d(0.1))),flatten,fc(1e1)",
])
def test_format_reads_back_to_the_same_tree(text):
    once = format_spec(parse_spec(text))
    assert format_spec(parse_spec(once)) == once
    assert once.replace(" ", "") == once and len(parse_spec(once)) == len(parse_spec(text))


def test_spaces_newlines_and_comments_are_ignored():
    messy = "spec: conv( 6 , 5 ) ,\n relu, # the first block\n maxpool(2) ,flatten, fc"
    assert resolve_model_name(messy) == "spec:conv(6,5),relu,maxpool(2),flatten,fc"


def test_values_parse_to_their_types():
    (layer,) = parse_spec("conv(8, 3, p=same, bias=false, a=0.5, b=-2, c=none, d=1e-3)")
    assert layer.args == [8, 3]
    assert layer.kwargs == {"p": "same", "bias": False, "a": 0.5, "b": -2, "c": None, "d": 1e-3}


@pytest.mark.parametrize("text, where", [
    ("conv(6,5),,relu", "character 11"),          # an empty item: points at the second comma
    ("conv(6,5 relu", "character 10"),            # a missing ')' or ','
    ("conv(6,5),relu)", "character 15"),          # a stray ')'
    ("cat(conv(4,1))", "character 1"),            # cat needs 2 branches
    ("conv(k=5, 6)", "positional arguments come before named ones"),
    ("conv(6,5) $", "cannot read '$'"),
    ("", "the spec is empty"),
])
def test_a_spec_that_does_not_parse_points_at_the_token(text, where):
    with pytest.raises(SpecError, match="spec") as e:
        parse_spec(text)
    message = str(e.value)
    assert where in message and "\n" not in message


# -- the built network -------------------------------------------------------------------------------------------------
def test_simple_cnn_by_hand():
    """The tutorials' SimpleCNN on 28x28: 28 -5-> 24 -pool-> 12 -5-> 8 -pool-> 4, so fc1 reads 16*4*4 = 256."""
    model = create_model(SIMPLE_CNN, num_classes=10, in_chans=1, input_size=28)
    assert isinstance(model, SpecNet)
    expected = (6 * 25 + 6) + (16 * 6 * 25 + 16) + (256 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected == 44_426
    assert list(dict(model.features.named_children())) == ["conv1", "relu1", "maxpool1", "conv2", "relu2",
                                                           "maxpool2"]
    assert list(dict(model.classifier.named_children())) == ["flatten1", "fc1", "relu3", "fc2", "relu4", "fc3"]
    assert model.get_classifier() is model.classifier.fc3
    assert [f["reduction"] for f in model.feature_info] == [2, 4]
    # the same function written with torch.nn.functional and the model's own weights
    x = torch.randn(3, 1, 28, 28)
    f, c = model.features, model.classifier
    h = F.max_pool2d(F.relu(F.conv2d(x, f.conv1.weight, f.conv1.bias)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, f.conv2.weight, f.conv2.bias)), 2).flatten(1)
    h = F.relu(F.linear(h, c.fc1.weight, c.fc1.bias))
    h = F.relu(F.linear(h, c.fc2.weight, c.fc2.bias))
    torch.testing.assert_close(model(x), F.linear(h, c.fc3.weight, c.fc3.bias))
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (3, 84)


def test_lenet5_spec_has_lenet5s_parameters():
    ours = create_model(LENET5, num_classes=10, in_chans=1, input_size=28)
    zoo = create_model("lenet5", num_classes=10, in_chans=1, input_size=28)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in zoo.parameters()) == 61_706


def test_blocks_compute_what_they_say():
    torch.manual_seed(0)
    model = create_model("spec:conv(8,3,p=same),res(conv(8,3,p=same),relu),res(conv(16,3,s=2,p=1)),"
                         "cat(conv(4,1)|maxpool(3,s=1,p=1)),dense(conv(2,3,p=same)),gap,fc",
                         num_classes=3, in_chans=2, input_size=12)
    f = model.features
    x = torch.randn(2, 2, 12, 12)
    h = f.conv1(x)
    r1 = f.res1
    assert isinstance(r1, Residual) and isinstance(r1.shortcut, nn.Identity)
    h1 = r1.body(h) + h
    r2 = f.res2  # 8 -> 16 channels at stride 2: a 1x1 projection of stride 2, no bias
    assert isinstance(r2.shortcut, nn.Conv2d) and r2.shortcut.stride == (2, 2) and r2.shortcut.bias is None
    h2 = r2.body(h1) + F.conv2d(h1, r2.shortcut.weight, stride=2)
    assert isinstance(f.cat1, Concat)
    h3 = torch.cat([f.cat1.branch1(h2), F.max_pool2d(h2, 3, 1, 1)], dim=1)
    assert isinstance(f.dense1, DenseConcat)
    h4 = torch.cat([h3, f.dense1.body(h3)], dim=1)
    assert h4.shape == (2, 4 + 16 + 2, 6, 6)
    torch.testing.assert_close(model.forward_features(x), h4)
    logits = F.linear(h4.mean((2, 3)), model.classifier.fc1.weight, model.classifier.fc1.bias)
    torch.testing.assert_close(model(x), logits)


def test_repeats_build_fresh_layers_named_in_order():
    model = create_model("spec:3*(conv(4,3,p=same),relu),flatten,fc", num_classes=2, in_chans=1, input_size=5)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3 and len({id(c.weight) for c in convs}) == 3
    assert [n for n, _ in model.features.named_children()] == ["conv1", "relu1", "conv2", "relu2", "conv3", "relu3"]


def test_the_head_rules(caplog):
    import logging

    # no head: gap and fc are added on a map, fc on a vector, and the log says so
    with caplog.at_level(logging.INFO, logger="convolab"):
        m = create_model("spec:conv(8,3)", num_classes=4, in_chans=1, input_size=8)
    assert m.spec_added_head == ["gap", "fc"] and m(torch.randn(2, 1, 8, 8)).shape == (2, 4)
    assert "the spec ends in a map, not in fc: convolab added gap, fc (4 classes)" in caplog.text
    m = create_model("spec:flatten,fc(16),relu", num_classes=4, in_chans=1, input_size=8)
    assert m.spec_added_head == ["fc"] and [n for n, _ in m.classifier.named_children()][-1] == "fc2"
    assert len(m.features) == 0  # nothing before flatten: an MLP
    # fc without a width takes the classes; with one it must be the classes
    assert create_model("spec:flatten,fc", num_classes=7, in_chans=1, input_size=4)(torch.randn(1, 1, 4, 4)).shape \
        == (1, 7)
    with pytest.raises(ValueError, match=r"ends in 10 outputs but the data has 7 classes; end it in fc"):
        create_model(SIMPLE_CNN, num_classes=7, in_chans=1, input_size=28)
    with pytest.raises(ValueError, match="fc without a width is the last layer"):
        create_model("spec:flatten,fc,relu,fc", num_classes=7, in_chans=1, input_size=4)


@pytest.mark.parametrize("text, size, message", [
    ("spec:conv(6,5),maxpool(2),conv(16,5),maxpool(2),conv(8,3),flatten,fc", 16,
     r"layer 5 conv\(8,3\) does not fit its 16x1x1 input: the map collapses"),
    ("spec:maxpool(2),maxpool(2),maxpool(2),fc", 4, r"layer 3 maxpool\(2\) does not fit its 1x1x1 input"),
    ("spec:conv(6,5),fc(10)", 28, r"layer 2 fc\(10\) gets a 6x24x24 map; put flatten \(or gap\) before it"),
    ("spec:flatten,conv(4,3)", 8, r"layer 2 conv\(4,3\) needs a map"),
    ("spec:res(conv(8,3)),fc", 8, r"the body turns 1x8x8 into 8x6x6; a residual sum needs the same size"),
    ("spec:cat(conv(4,3)|conv(4,1)),fc", 8, "a concatenation needs the same height and width in every branch"),
    ("spec:dense(conv(4,3)),fc", 8, r"dense\(...\) concatenates, so the body must keep the height and width"),
    ("spec:conv(8,3,g=3)", 8, "groups g=3 must divide the input channels"),
    ("spec:conv(8,3,s=2,p=same)", 8, "p=same needs stride 1"),
    ("spec:conv(8,3,mode=mirror)", 8, "mode must be one of zeros, reflect, replicate, circular"),
    ("spec:conv(8,3,q=1)", 8, r"conv has no argument 'q'; it takes out, k, s"),
    ("spec:conv", 8, r"conv needs out \(e.g. conv\(16\)\)"),
    ("spec:conv(8,3,1,0,1,1,true,zeros,9)", 8, "conv takes at most 8 arguments"),
    ("spec:comv(8,3)", 8, "unknown layer 'comv' at character 1; did you mean conv"),
    ("spec:maxpool(3,p=2)", 8, r"p \(at most k // 2"),
    ("spec:dropout(1.5)", 8, r"p must be a number in \[0, 1\]"),
    ("spec:2000*relu", 8, "a repeat count must be 1 to 1000"),
    ("spec:flatten,fc(1000000)", 32, r"layer 2 fc\(1000000\): would hold 1,024,000,000 weights; at most 268,435,456"),
])
def test_a_spec_that_does_not_fit_is_one_line_naming_the_layer(text, size, message):
    with pytest.raises(ValueError, match=message) as e:
        create_model(text, num_classes=2, in_chans=1, input_size=size)
    assert "\n" not in str(e.value)


def test_every_layer_builds_and_runs():
    special = {"gn": "(2)", "cbam": "(2,3)"}
    for name, kind in LAYERS.items():
        args = "(8)" if "out" in kind.required else special.get(name, "")
        before = "" if kind.needs != "vector" else "flatten,"
        model = create_model(f"spec:{before}{name}{args}", num_classes=3, in_chans=2, input_size=6)
        assert model(torch.randn(2, 2, 6, 6)).shape == (2, 3), name
    assert "conv(out, k=3, s=1, p=0, d=1, g=1, bias=true, mode=zeros)" in spec_help()


@pytest.mark.parametrize("text, classes", [("flatten,fc(3)", 3), ("flatten,fc(out=7)", 7), ("flatten,fc", 10),
                                           ("conv(out=8,k=3)", 10), ("flatten,fc(3),relu", 10),
                                           ("2*(flatten,linear(5))", 5)])
def test_the_registry_entry_shows_a_spec_at_the_classes_it_fixes(text, classes):
    assert get_model_entry("spec:" + text).default_num_classes == classes


def test_the_registry_entry_of_a_spec():
    entry = get_model_entry("spec: conv(6,5), relu, flatten, fc(3)")
    assert entry.name == "spec:conv(6,5),relu,flatten,fc(3)" and entry.family == "spec"
    assert entry.default_num_classes == 3 and entry.default_input == (1, 28, 28)
    model = create_model(entry.name, num_classes=3, in_chans=1, input_size=28)
    assert model.convolab_cfg["name"] == entry.name
    with pytest.raises(ValueError, match="has no option 'drop_rate'"):
        create_model(entry.name, num_classes=3, in_chans=1, drop_rate=0.1)


# -- files -------------------------------------------------------------------------------------------------------------
def test_json_yaml_and_text_files_read_to_the_one_line_spec(tmp_path):
    want = "spec:2*(conv(8,3,p=same),relu),res(conv(8,3,p=same)),cat(conv(4,1)|conv(4,3,p=1)),flatten,fc"
    layers = [{"repeat": 2, "body": [{"conv": {"out": 8, "k": 3, "p": "same"}}, "relu"]},
              {"res": [{"conv": {"out": 8, "k": 3, "p": "same"}}]},
              {"cat": [[{"conv": [4, 1]}], [{"conv": {"out": 4, "k": 3, "p": 1}}]]}, "flatten", "fc"]
    (tmp_path / "net.json").write_text(json.dumps({"layers": layers}))
    (tmp_path / "net.yaml").write_text(
        "# a network\nlayers:\n  - repeat: 2\n    body: [{conv: {out: 8, k: 3, p: same}}, relu]\n"
        "  - res: [{conv: {out: 8, k: 3, p: same}}]\n  - cat: [[{conv: [4, 1]}], [{conv: {out: 4, k: 3, p: 1}}]]\n"
        "  - flatten\n  - fc\n")
    (tmp_path / "net.spec").write_text("# a network\n2*(conv(8,3,p=same), relu),\nres(conv(8,3,p=same)),\n"
                                       "cat(conv(4,1) | conv(4,3,p=1)),\nflatten, fc\n")
    for name in ("net.json", "net.yaml", "net.spec"):
        assert read_spec_file(tmp_path / name) == want
        assert resolve_model_name(str(tmp_path / name)) == want
    (tmp_path / "bad.json").write_text('[{"conv": [8, 3], "relu": null}]')
    with pytest.raises(SpecError, match=r"bad.json\[0\]: one layer per object"):
        read_spec_file(tmp_path / "bad.json")
    (tmp_path / "bad.spec").write_text("conv(8,3\n")
    with pytest.raises(SpecError, match="bad.spec: expected"):
        read_spec_file(tmp_path / "bad.spec")
    with pytest.raises(SpecError, match="no such spec file"):
        resolve_model_name(str(tmp_path / "missing.json"))
    assert resolve_model_name("resnet18") == "resnet18"  # a registry name passes through


# -- the NumPy engine --------------------------------------------------------------------------------------------------
def _random_spec(rng) -> str:
    c = int(rng.integers(2, 6))
    body = [f"conv({c},3,p=same)", rng.choice(["relu", "tanh", "sigmoid", "elu"])]
    parts = [f"conv({c},3,p=1)", f"res({','.join(body)})"]
    if rng.random() < 0.5:
        parts.append(f"res(conv({c + 2},3,s=2,p=1),relu)")  # a projection shortcut
    parts.append(f"cat(conv({int(rng.integers(1, 4))},1)|conv(2,3,p=1),relu|maxpool(3,s=1,p=1))")
    parts.append(f"dense(conv({int(rng.integers(1, 4))},3,p=same),leakyrelu(0.1))")
    parts.append(rng.choice(["maxpool(2)", "avgpool(2)"]))
    parts += ["flatten", f"fc({int(rng.integers(3, 9))})", "relu", "fc"]
    return "spec:" + ",".join(parts)


def test_glass_twins_of_the_spec_blocks_equal_torch_in_float64():
    """30 random specs with residual (identity and projection), concatenated and dense blocks: forward, the input
    gradient and every parameter gradient of the converted glass model equal torch's to 1e-10."""
    from tests.glass._helpers import rel_err

    from convolab import glass

    rng = np.random.default_rng(0)
    for trial in range(30):
        text = _random_spec(rng)
        torch.manual_seed(trial)
        model = create_model(text, num_classes=4, in_chans=2, input_size=8).double()
        g = glass.from_torch(model)
        x = rng.standard_normal((3, 2, 8, 8))
        up = rng.standard_normal((3, 4))
        xt = torch.tensor(x, requires_grad=True)
        out = model(xt)
        out.backward(torch.tensor(up))
        got = g(x)
        assert rel_err(got, out.detach().numpy()) <= 1e-10, text
        assert rel_err(g.backward(up), xt.grad.numpy()) <= 1e-10, text
        grads = {name: grad for name, _, grad in g.named_parameters()}
        for name, p in model.named_parameters():
            assert rel_err(grads[name], p.grad.numpy()) <= 1e-10, (text, name)


def test_every_convertible_layer_in_one_spec_equals_torch_in_float64():
    """The tutorials' blocks in one network (evaluation mode: stochastic pooling's weighted mean, fractional
    pooling's fixed sequence), converted to the NumPy engine: forward and all gradients to 1e-10."""
    from tests.glass._helpers import rel_err

    from convolab import glass

    text = ("spec:conv(4,3,p=1,mode=reflect),gn(2),swish(1.5),sepconv(6,3,p=1),ln,gelu,ssconv(6,3,p=1,mode=circular),"
            "lrn(3),elu,se(2),cbam(2,3),trueconv(4,3,p=1),leakyrelu(0.1),nonlocal,dropout2d(0.3),stochpool(2),"
            "sigmoid,fracpool(0.7),tanh,gmp,fc(6),dropout(0.5),silu,fc")
    for trial in range(3):
        torch.manual_seed(trial)
        model = create_model(text, num_classes=3, in_chans=2, input_size=12).double().eval()
        for p in model.parameters():  # the non-local block starts as the identity: give it weights
            p.data.normal_(0, 0.3)
        g = glass.from_torch(model)
        g.eval()
        x = np.random.default_rng(trial).standard_normal((2, 2, 12, 12))
        up = np.random.default_rng(trial + 100).standard_normal((2, 3))
        xt = torch.tensor(x, requires_grad=True)
        out = model(xt)
        out.backward(torch.tensor(up))
        assert rel_err(g(x), out.detach().numpy()) <= 1e-10
        assert rel_err(g.backward(up), xt.grad.numpy()) <= 1e-10
        grads = {name: grad for name, _, grad in g.named_parameters()}
        for name, p in model.named_parameters():
            if name.endswith("phi.bias"):  # the softmax cancels it: zero up to rounding in both engines
                assert np.abs(grads[name]).max() < 1e-12 and p.grad.abs().max() < 1e-12
                continue
            assert rel_err(grads[name], p.grad.numpy()) <= 1e-10, name


# -- training, the run directory, the CLI ------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["torch", "numpy"])
def test_a_spec_trains_records_itself_and_reloads(tmp_path, engine):
    from convolab.train import TrainConfig

    spec = "spec: conv(8,3,p=same), relu, res(conv(8,3,p=same), relu), maxpool(2), flatten, fc(32), relu, fc"
    cfg = TrainConfig(model=spec, data="digits", out=str(tmp_path / "run"), epochs=2, seed=0, device="cpu",
                      progress=False, plots=False, engine=engine)
    result = convolab.train(cfg)
    canonical = resolve_model_name(spec)
    run = convolab.load_run(result.run_dir)
    assert run.config["model"] == canonical == run.build["name"]
    assert result.summary["test_accuracy"] > 0.5  # 2 epochs on the 8x8 digits
    data = convolab.load_dataset("digits")
    x = (data.test.images.float() / 255 - torch.tensor(data.mean).view(1, -1, 1, 1)) / torch.tensor(
        data.std).view(1, -1, 1, 1)
    with torch.no_grad():
        accuracy = int((run.model(x).argmax(1) == data.test.labels).sum()) / len(data.test.labels)
    assert accuracy == pytest.approx(result.summary["test_accuracy"], abs=1e-9)


def test_cli_summary_and_bad_specs(tmp_path, capsys):
    code, out, _ = cli(["summary", SIMPLE_CNN], capsys)
    assert code == 0 and "parameters: 44,426" in out and "classifier.fc3" in out
    code, _, err = cli(["train", "--model", "spec:conv(6,5) relu", "--data", "digits", "--out", str(tmp_path / "a"),
                        "--quiet"], capsys)
    assert_one_line_error(code, err, "expected ',' or the end")
    code, _, err = cli(["train", "--model", "spec:conv(6,5),maxpool(2),conv(16,5),flatten,fc", "--data", "digits",
                        "--out", str(tmp_path / "b")], capsys)  # not --quiet: refused before the data loads
    assert_one_line_error(code, err, "layer 3 conv(16,5) does not fit its 6x2x2 input")
    assert not (tmp_path / "b" / "model.safetensors").exists()


def test_spec_model_module_tree_is_plain_torch():
    model = build_spec("conv(4,3),relu,flatten,fc", num_classes=2, in_chans=1, input_size=(6, 6))
    assert isinstance(model.features, nn.Sequential) and isinstance(model.classifier, nn.Sequential)
    assert OrderedDict(model.named_children()).keys() == {"features", "classifier"}


def test_models_spec_help_lists_every_layer(capsys):
    code, out, _ = cli(["models", "--spec-help"], capsys)
    assert code == 0 and 'cat" "(" spec ("|" spec)+ ")"' in out
    for name in LAYERS:
        assert f"\n  {name}" in out, name


def test_the_benchmark_compares_the_same_network(capsys):
    """benchmarks/spec_speed.py: the hand-written module gets the spec model's weights, so both lose the same."""
    from tests.benchmark_scripts import load_benchmark

    bench = load_benchmark("spec_speed")
    assert bench.main(["--steps", "2", "--rounds", "1", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert out.count("round 0's losses differ by at most 0.00e+00") == 2 and "spec / nn.Module:" in out


def test_the_readmes_yaml_spec_builds(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    (block,) = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    (tmp_path / "net.yaml").write_text(block)
    text = read_spec_file(tmp_path / "net.yaml")
    assert text == "spec:2*(conv(32,3,p=same),bn,relu),res(conv(32,3,p=same),bn),gap,fc"
    assert create_model(text, num_classes=10, in_chans=3, input_size=32)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.slow
def test_explain_viz_and_report_take_a_spec_run(tmp_path, capsys):
    from PIL import Image

    run = tmp_path / "run"
    code, _, err = cli(["train", "--model", "spec:conv(8,3,p=same),relu,conv(8,3,p=same),relu,maxpool(2),flatten,fc",
                        "--data", "digits", "--epochs", "1", "--out", run, "--quiet"], capsys)
    assert code == 0, err
    data = convolab.load_dataset("digits")
    Image.fromarray(data.test.images[0, 0].numpy()).save(tmp_path / "d.png")
    code, out, err = cli(["explain", run, tmp_path / "d.png", "--method", "gradcam", "--out", tmp_path / "x"], capsys)
    assert code == 0 and (tmp_path / "x" / "d_gradcam.png").stat().st_size > 0, err
    code, out, err = cli(["viz", run, "--kernels", "--out", tmp_path / "v"], capsys)
    assert code == 0 and "features.conv1: 8 filters of 1x3x3" in out, err
    code, out, err = cli(["report", run], capsys)
    assert code == 0 and (run / "report.html").stat().st_size > 0, err
