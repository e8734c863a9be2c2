"""``--init-from``: weights from a .safetensors or .pth file, the classifier replaced when needed."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from tests.bad_files import write_raw_pickle, write_safetensors_bytes, write_torch_zip

from convolab.cli import main
from convolab.models import create_model
from convolab.train.init_from import load_initial_weights, read_state_dict


def _source(num_classes=10, in_chans=3):
    torch.manual_seed(1)
    return create_model("tutorial_cnn", num_classes=num_classes, in_chans=in_chans, input_size=28)


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_same_architecture_loads_every_tensor(tmp_path, fmt):
    src = _source()
    path = tmp_path / f"w.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = create_model("tutorial_cnn", num_classes=10, in_chans=3, input_size=28)
    assert load_initial_weights(dst, path) == []
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_other_class_count_replaces_only_the_classifier(tmp_path):
    src = _source(num_classes=1000)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    torch.manual_seed(5)
    dst = create_model("tutorial_cnn", num_classes=7, in_chans=3, input_size=28)
    fresh_fc = dst.get_classifier().weight.detach().clone()
    notes = load_initial_weights(dst, path)
    assert notes and "1000 classes in the file, 7 here" in notes[0]
    assert torch.equal(dst.get_classifier().weight, fresh_fc)
    assert torch.equal(dst.features.conv1.weight, src.features.conv1.weight)
    assert torch.equal(dst.classifier.fc1.weight, src.classifier.fc1.weight)


def test_rgb_first_conv_is_summed_for_a_grayscale_model(tmp_path):
    src = _source(in_chans=3)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=28)
    notes = load_initial_weights(dst, path)
    assert any("summed" in n for n in notes)
    # A gray image fed as three equal channels gives the same response as the summed filter.
    gray = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(gray), src.eval()(gray.expand(-1, 3, -1, -1)))


def test_mismatches_are_clear_errors(tmp_path):
    other = create_model("lenet5", num_classes=10, in_chans=1)
    path = tmp_path / "lenet.pth"
    torch.save(other.state_dict(), path)
    dst = create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=28)
    with pytest.raises(ValueError, match="do not match the model|has shape"):
        load_initial_weights(dst, path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_state_dict(tmp_path / "missing.pth")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(ValueError, match=r"not a safetensors or .pth weights file \(neither a torch zip archive nor "
                                         r"a pickle; it starts with b'x'\)"):
        read_state_dict(tmp_path / "w.txt")
    with pytest.raises(IsADirectoryError, match=r"a folder; expected a weights file \(a run's .*model.safetensors"):
        read_state_dict(tmp_path)


def test_pickled_code_is_refused_with_what_it_would_call(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": _source}, path)  # a function: not weights-only safe
    with pytest.raises(ValueError) as e:
        read_state_dict(path)
    assert str(e.value) == (f"--init-from {path}: refused: loading this file would run code (it would call "
                            f"{_source.__module__}._source); convolab reads only tensors and plain values from a "
                            ".pt/.pth file, so it is not loaded (a safetensors file of the same weights is safe to "
                            "share)")


@pytest.mark.parametrize("form", ["raw", "zip"])
def test_a_shell_command_in_a_pth_never_runs(tmp_path, capsys, form):
    marker = tmp_path / "PWNED"
    path = (write_raw_pickle if form == "raw" else write_torch_zip)(tmp_path / "evil.pth", marker)
    code = main(["train", "--model", "tutorial_cnn", "--data", "digits", "--epochs", "1", "--quiet", "--no-plots",
                 "--out", str(tmp_path / "run"), "--init-from", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "would run code (it would call posix.system)" in err and "weights_only=False" not in err
    assert not marker.exists(), "the payload ran"


# -- what a file holds -----------------------------------------------------------------------------------
def _save(tmp_path, obj, name="w.pth"):
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def _sparse():
    return torch.zeros(3, 3).to_sparse()


@pytest.mark.parametrize("obj,expected", [
    ({0: torch.zeros(1), 1: torch.zeros(1)}, "key 0 is a int; expected a state dict (tensor names to tensors"),
    ({"w": torch.zeros(2, device="meta")}, "w is a meta tensor (a shape without values); expected real weights"),
    ({"w": _sparse()}, "w is a sparse_coo tensor; expected dense tensors"),
    ({"w": torch.tensor([1.0, float("nan"), float("inf")])}, "w holds NaN or inf (2 of 3 values); expected finite"),
    ({"w": torch.zeros(1), "step": 3}, "step is a int, not a tensor; expected a state dict"),
    ({"w": torch.zeros(1), "sub": {"x": torch.zeros(1)}}, "sub is a dict, not a tensor"),
    ([torch.zeros(1)], "holds a list, not a state dict; expected a state dict"),
    (torch.zeros(3), "holds a Tensor, not a state dict"),
    ("weights", "holds a str, not a state dict"),
    ({}, "holds an empty dict"),
    ({"epoch": 3, "optimizer": {"lr": 0.1}}, "holds a dict without tensors (keys 'epoch', 'optimizer'); expected a "
                                             "state dict (tensor names to tensors, as model.state_dict() gives), or "
                                             "one under 'state_dict' or 'model' or 'model_state_dict'"),
], ids=["int-keys", "meta", "sparse", "non-finite", "non-tensor", "nested-dict", "list", "tensor", "str", "empty",
        "no-tensors"])
def test_contents_that_are_no_state_dict(tmp_path, obj, expected):
    path = _save(tmp_path, obj)
    with pytest.raises(ValueError) as e:
        read_state_dict(path)
    assert str(e.value) == f"--init-from {path}: {expected}" or str(e.value).startswith(
        f"--init-from {path}: {expected}"), str(e.value)


@pytest.mark.parametrize("wrapper", ["model", "state_dict", "model_state_dict"])
def test_a_state_dict_nested_under_a_key_is_unwrapped(tmp_path, wrapper):
    src = _source()
    path = _save(tmp_path, {wrapper: src.state_dict(), "epoch": 90, "optimizer": {"lr": 0.1}})
    state = read_state_dict(path)
    assert state.keys() == src.state_dict().keys()


def test_a_convolab_checkpoint_is_read_for_its_model(tmp_path):
    src = _source()
    path = _save(tmp_path, {"format": 1, "model": src.state_dict(), "epoch": 3, "rng": {"torch": torch.zeros(3)}},
                 "step-00000010.pt")
    dst = create_model("tutorial_cnn", num_classes=10, in_chans=3, input_size=28)
    assert load_initial_weights(dst, path) == []
    assert torch.equal(dst.features.conv1.weight, src.features.conv1.weight)


def test_the_format_is_read_from_the_content_not_the_name(tmp_path):
    src = _source()
    tensors = {k: v.contiguous() for k, v in src.state_dict().items()}
    for name in ("w.pt", "w.pth", "w.bin", "weights"):
        write_safetensors_bytes(tmp_path / name, tensors)
        assert torch.equal(read_state_dict(tmp_path / name)["features.conv1.weight"], src.features.conv1.weight)
    torch.save(src.state_dict(), tmp_path / "really-torch.safetensors")
    assert torch.equal(read_state_dict(tmp_path / "really-torch.safetensors")["features.conv1.weight"],
                       src.features.conv1.weight)


def test_non_finite_weights_blame_the_file_not_the_learning_rate(tmp_path, capsys):
    src = _source(in_chans=1)
    state = src.state_dict()
    state["features.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = _save(tmp_path, state)
    code = main(["train", "--model", "tutorial_cnn", "--data", "digits", "--epochs", "1", "--quiet", "--no-plots",
                 "--out", str(tmp_path / "run"), "--init-from", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"--init-from {path}: features.conv1.weight holds NaN or inf (1 of " in err
    assert "--lr" not in err and "diverged" not in err.split("(a model")[0]


def test_cli_train_init_from_a_run(tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["train", "--model", "tutorial_cnn", "--data", "digits", "--epochs", "1", "--quiet", "--no-plots",
                 "--out", str(first)]) == 0
    second = tmp_path / "second"
    assert main(["train", "--model", "tutorial_cnn", "--data", "digits", "--epochs", "1", "--quiet", "--no-plots",
                 "--out", str(second), "--init-from", str(first / "model.safetensors")]) == 0
    assert (second / "model.safetensors").exists()
    capsys.readouterr()
    code = main(["train", "--model", "lenet5", "--data", "digits", "--epochs", "1", "--quiet", "--no-plots",
                 "--out", str(tmp_path / "third"), "--init-from", str(first / "model.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--init-from" in err
