"""``--init-from``: weights from a .safetensors or .pth file, the classifier replaced when needed."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

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
    with pytest.raises(ValueError, match=".safetensors or .pth"):
        read_state_dict(tmp_path / "w.txt")


def test_pickled_code_is_refused_by_weights_only(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": _source}, path)  # a function: not weights-only safe
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(path)


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
