"""``convolab.runs.pruned``: a run trained from a pruned model reloads with ``load_run`` (its logits the trained
model's), and an edited config.json is refused in one line before anything large is allocated."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from convolab.compress.prune import prune_structured
from convolab.runs import load_run
from convolab.runs.build import builder_kinds
from convolab.runs.session import make_trainer


def _pruned(run_dir, fraction: float = 0.4):
    run = load_run(run_dir)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return prune_structured(run.model, x, macs_fraction=fraction)


@pytest.fixture(scope="module")
def pruned_files(digits_run, tmp_path_factory):
    """The shared digits run with its model pruned (40 % of the MACs) written in place of its own, as a
    fine-tuning would write it: the pruned weights (same metadata) and config.json's ``build``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    result = _pruned(digits_run.run_dir)
    dst = tmp_path_factory.mktemp("pruned-files") / "run"
    dst.mkdir()
    for name in ("config.json", "summary.json"):
        shutil.copy(digits_run.run_dir / name, dst / name)
    with safe_open(str(digits_run.run_dir / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, str(dst / "model.safetensors"),
              metadata=meta)
    config = json.loads((dst / "config.json").read_text())
    config["build"] = result.model.convolab_build
    (dst / "config.json").write_text(json.dumps(config))
    return dst, result


@pytest.fixture
def copy(pruned_files, tmp_path):
    """A writable copy of the pruned run's files."""
    dst = tmp_path / "run"
    shutil.copytree(pruned_files[0], dst)
    return dst


def _edit(run, change) -> None:
    config = json.loads((run / "config.json").read_text())
    change(config["build"])
    (run / "config.json").write_text(json.dumps(config))


def test_pruned_is_a_build_kind():
    assert "pruned" in builder_kinds()


def test_the_pruned_files_reload_with_the_pruned_models_logits(pruned_files):
    path, result = pruned_files
    run = load_run(path)
    assert run.build == result.model.convolab_build and run.build["kind"] == "pruned"
    c1 = run.model.features.conv1
    assert c1.out_channels == result.channels_after["features.conv1"] < 16
    assert c1.weight.shape == (c1.out_channels, 1, 3, 3)
    assert sum(p.numel() for p in run.model.parameters()) == result.params_after
    batch = run.preprocess(torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8))
    with torch.no_grad():
        assert torch.equal(run.model(batch), result.model.eval()(batch))


@pytest.mark.slow
def test_a_run_trained_from_a_pruned_model_reloads(digits_run, digits_config, tmp_path):
    """The real path: the Trainer records the model's convolab_build as config.json's build; load_run rebuilds it
    with the trained weights."""
    result = _pruned(digits_run.run_dir)
    trained = make_trainer(digits_config(tmp_path / "run", epochs=1, plots=False), model=result.model).fit()
    config = json.loads((trained.run_dir / "config.json").read_text())
    assert config["build"] == result.model.convolab_build
    run = load_run(trained.run_dir)
    x = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    batch = run.preprocess(x)
    trained.model.eval().cpu()
    ours = trained.model.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in run.model.state_dict().items())  # the same weights, bit for bit
    with torch.no_grad():  # (close, not equal: training left the model channels-last, a different conv kernel)
        torch.testing.assert_close(run.model(batch), trained.model(batch), rtol=1e-5, atol=1e-5)
    assert len(run.predict(x[0], top_k=3)[0]) == 3
    # the reloaded model can be pruned again: it carries its base and its build
    assert run.model.convolab_cfg["name"] == "tutorial_cnn" and run.model.convolab_build == config["build"]
    again = prune_structured(run.model, batch, macs_fraction=0.3)
    assert again.channels_before == result.channels_after
    assert again.model.convolab_build["base"] == config["build"]["base"]


@pytest.mark.parametrize("change, message", [
    (lambda b: b["modules"].update({"features.conv7": {"out_channels": 4}}),
     r"field 'build.modules.features.conv7' names a layer that tutorial_cnn does not have"),
    (lambda b: b["modules"]["features.conv1"].update(out_channels=10**12),
     r"field 'build.modules.features.conv1.out_channels' is 1000000000000; expected an integer from 1 to 16"),
    (lambda b: b["modules"]["features.conv1"].update(out_channels="8"),
     r"'build.modules.features.conv1.out_channels' is '8'; expected an integer"),
    (lambda b: b["modules"]["features.conv1"].update(out_channels=True),
     r"'build.modules.features.conv1.out_channels' is True; expected an integer"),
    (lambda b: b["modules"]["features.conv1"].update(padding_mode=3),
     r"'build.modules.features.conv1.padding_mode' is not a size attribute of Conv2d"),
    (lambda b: b["modules"]["features.conv1"].update(__class__=3),
     r"'build.modules.features.conv1.__class__' is not a size attribute"),
    (lambda b: b["shapes"].update({"features.conv1.weight": [2**40, 1, 3, 3]}),
     r"field 'build.shapes.features.conv1.weight' is \[1099511627776, 1, 3, 3\]; expected 4 integers, each from 1 "
     r"to tutorial_cnn's \[16, 1, 3, 3\]"),
    (lambda b: b["shapes"].update({"features.conv1.weight": [4, 1, 3]}), r"expected 4 integers"),
    (lambda b: b["shapes"].update({"nothing.weight": [1]}),
     r"'build.shapes.nothing.weight' names a tensor that tutorial_cnn does not have"),
    (lambda b: b["base"].update(name="resnet18"), r"field 'build.base' describes resnet18 .* holds weights of "
     r"tutorial_cnn"),
    (lambda b: b["base"]["kwargs"].update(num_classes=10**9), r"build\.base.*num_classes"),
    (lambda b: b.pop("base"), r"field 'build.base' is missing"),
    (lambda b: b.update(modules=[1]), r"field 'build.modules' must be an object"),
    # sizes that fit the limits but not the file: caught from the safetensors header, before loading
    (lambda b: b["shapes"]["features.conv1.weight"].__setitem__(0, 1), r"weights do not fit the pruned tutorial_cnn "
     r"\(features.conv1.weight has shape \[\d+, 1, 3, 3\] in the file, \[1, 1, 3, 3\]"),
])
def test_an_edited_build_is_refused_in_one_line(copy, change, message):
    _edit(copy, change)
    with pytest.raises(ValueError, match=message) as e:
        load_run(copy)
    assert "\n" not in str(e.value)


def test_a_file_and_config_that_agree_but_do_not_chain_are_refused(copy):
    """conv2 given 5 input channels in both the weights file and config.json, while conv1 gives more: the
    meta-device forward finds it before anything is loaded."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = copy / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    w = tensors["features.conv2.weight"]
    assert w.shape[1] > 5
    tensors["features.conv2.weight"] = w[:, :5].contiguous()
    save_file(tensors, str(path), metadata=meta)
    _edit(copy, lambda b: b["shapes"].update({"features.conv2.weight": [w.shape[0], 5, 3, 3]}))
    with pytest.raises(ValueError, match=r"field 'build' records do not make a working tutorial_cnn \(.*channel") as e:
        load_run(copy)
    assert "\n" not in str(e.value)


def _save_as_run(result, name: str, in_chans: int, size: int, folder) -> None:
    """The pruned model as a run folder holds it: weights with convolab's metadata, config.json's build."""
    from safetensors.torch import save_file

    from convolab.runs.schema import FORMAT

    kwargs = {k: v for k, v in result.model.convolab_cfg.items() if k != "name"}
    meta = {"format": 1, "model": name, "model_kwargs": kwargs, "classes": [str(i) for i in range(10)],
            "mean": [0.5] * in_chans, "std": [0.25] * in_chans, "input_size": [in_chans, size, size]}
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"convolab": json.dumps(meta)})
    config = {"format": FORMAT, "task": "classification", "build": result.model.convolab_build, "recipe": {},
              "seed": 0}
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.slow
@pytest.mark.parametrize("name, in_chans, size", [("mobilenet_v2", 3, 32), ("se_resnet18", 3, 32),
                                                  ("mnist_cnn", 1, 28), ("convnext_tiny", 3, 32)])
def test_other_architectures_prune_and_reload(name, in_chans, size, tmp_path):
    """Depthwise convolutions (groups pruned with their channels), squeeze-excitation, dropout, ConvNeXt's
    channels-last permutes, LayerNorm and layer scale: the pruned model's MACs are convolab.analysis's, and
    load_run rebuilds it with the same logits."""
    from convolab.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=in_chans, input_size=(size, size))
    x = torch.randn(2, in_chans, size, size)
    result = prune_structured(model, x, macs_fraction=0.4)
    assert abs(result.macs_removed - 0.4) <= 0.05 and result.macs_after == result.analysis_macs_after
    _save_as_run(result, name, in_chans, size, tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert sum(p.numel() for p in run.model.parameters()) == result.params_after < result.params_before
    with torch.no_grad():
        torch.testing.assert_close(run.model(x), result.model.eval()(x), rtol=0, atol=0)
