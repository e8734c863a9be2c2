"""A corpus of broken checkpoints: each is refused by ``load_checkpoint`` with one line naming the file, the field
and what was expected — and by ``convolab train --resume`` with exit 2, before the data loads."""

from __future__ import annotations

import copy
import shutil
import sys

import pytest
import torch
from tests.bad_files import write_raw_pickle, write_safetensors_bytes, write_torch_zip
from tests.cli.test_cli import assert_one_line_error, cli

import convolab
from convolab.runs import checkpoints as runs_ckpt
from convolab.train import checkpoint as ckpt


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, digits_config):
    """A 1-epoch digits run and the state of its last step checkpoint."""
    result = convolab.train(digits_config(tmp_path_factory.mktemp("corpus") / "run", epochs=1, plots=False))
    newest = ckpt.step_checkpoints(result.run_dir)[-1]
    return result.run_dir, torch.load(newest, map_location="cpu", weights_only=True)


def _set(state: dict, dotted: str, value) -> None:
    keys = [int(k) if k.isdigit() else k for k in dotted.split(".")]
    for k in keys[:-1]:
        state = state[k]
    if value is _DELETE:
        del state[keys[-1]]
    else:
        state[keys[-1]] = value


_DELETE = object()

BAD_STATES = [
    ("sharding_plan", {"mesh": [2, 2]}, "the checkpoint has fields this convolab does not know (sharding_plan); it was "
                                        "probably written by a newer convolab (upgrade convolab to resume it)"),
    ("format", 2, "checkpoint format 2 was written by a newer convolab; this one reads format 1"),
    ("format", 0, "field 'format' is 0; expected 1"),
    ("epoch", "2", "field 'epoch' is the string '2'; expected an integer from 1 to 10,000,000"),
    ("epoch", 2.0, "field 'epoch' is 2.0; expected an integer"),
    ("epoch", 10**15, "field 'epoch' is 1000000000000000; expected an integer from 1 to 10,000,000"),
    ("epoch", 500, "field 'epoch' is 500 in a run of 1 epochs; expected at most 2"),
    ("global_step", -1, "field 'global_step' is -1; expected an integer from 0 to 1,000,000,000,000"),
    ("batch", None, "field 'batch' is null; expected an integer"),
    ("history", {"epoch": 1}, "field 'history' is an object; expected a list"),
    ("history", [{"epoch": i, "train_loss": 0.5, "train_accuracy": 0.9, "val_loss": 0.5, "val_accuracy": 0.9}
                 for i in range(1, 6)], "field 'history' has 5 epochs before epoch 2; expected 1 (one per finished "
                                        "epoch)"),
    ("rng", _DELETE, "field 'rng' is missing; expected an object"),
    ("rng.python", [3, [1, 2, 3], None], "field 'rng.python' is not a valid generator state"),
    ("rng.python", [3, list(range(625)), None], "field 'rng.python' is not a valid generator state"),
    ("glass_rng", {"bit_generator": "PCG64"}, "field 'glass_rng' is not a valid generator state"),
    ("augment", {"torch": torch.zeros(16, dtype=torch.uint8), "numpy": {"bit_generator": "PCG64", "state": {}}},
     "field 'augment.numpy' is not a valid generator state"),
    ("rng.python", "seed", "field 'rng.python' is the string 'seed'; expected a list of 3 values"),
    ("rng.torch", torch.zeros(10, dtype=torch.uint8), "field 'rng.torch' is not a valid generator state"),
    ("rng.torch", torch.zeros(10), "field 'rng.torch' is a float32 tensor of shape [10] on cpu; expected a dense CPU "
                                   "tensor of uint8 with 1 dimension"),
    ("rng.numpy.keys", torch.zeros(3, dtype=torch.int64), "field 'rng.numpy' is not a valid generator state"),
    ("rng.numpy.pos", 10_000, "field 'rng.numpy.pos' is 10000; expected an integer from 0 to 624"),
    ("rng.mersenne", 1, "field 'rng.mersenne' is not a field this convolab knows"),
    ("loader.generator", torch.zeros(4, dtype=torch.uint8), "field 'loader.generator' is not a valid generator state"),
    ("model", [1, 2], "field 'model' is a list of 2 items; expected a state dict"),
    ("model.fc_extra", 3, "field 'model.fc_extra' is 3; expected a dense CPU tensor"),
    ("model.meta_w", torch.zeros(2, device="meta"), "field 'model.meta_w' is a float32 tensor of shape [2] on meta"),
    ("optimizer.param_groups", [], "field 'optimizer.param_groups' is a list of 0 items"),
    ("nan.streak", -2, "field 'nan.streak' is -2"),
    ("elapsed", float("inf"), "field 'elapsed' is inf; expected a number >= 0"),
    ("best.value", "high", "field 'best.value' is the string 'high'"),
    ("config.epochs", "1", "field 'config.epochs' is the string '1'; expected an integer"),
    ("config.lr", True, "field 'config.lr' is true; expected a number"),
    ("config.ema", 0.99, "field 'ema' is null in a run with --ema 0.99; expected the EMA weights"),
    ("config.milestones", torch.zeros(0), "field 'config.milestones' is a float32 tensor of shape [0] on cpu; "
                                          "expected a plain value"),
    ("history.0.val_accuracy", _DELETE, "field 'history[0].val_accuracy' is missing"),
    ("history.0.train_loss", torch.zeros(()), "field 'history[0].train_loss' is a float32 tensor"),
    ("history.0.note", torch.zeros(()), "field 'history[0].note' is a float32 tensor"),
    ("history.0.epoch", 3, "field 'history[0].epoch' is 3; expected 1 (each epoch once, in order)"),
    ("epoch_sums", {"loss_sum": torch.zeros(())}, "field 'epoch_sums.correct' is missing"),
    ("epoch_sums", {"loss_sum": 1.0, "correct": 1, "seen": 1, "seconds": 1.0}, "field 'epoch_sums.loss_sum' is 1.0"),
    ("config.cycle_epochs", [["", True]], "field 'config.cycle_epochs' is a list of 1 item; expected a number or "
                                          "null"),
    ("optimizer.state.0.exp_avg", torch.zeros(2, 2, 2, 2, 2), "field 'optimizer.state.0.exp_avg' has shape "
                                                              "[2, 2, 2, 2, 2] for a parameter of shape"),
    ("optimizer.state.0", "x", "field 'optimizer.state.0' is the string 'x'; expected an object"),
    ("optimizer.state.0.step", torch.zeros(3), "field 'optimizer.state.0.step' has shape [3] for a parameter"),
    ("config.fancy_new_option", True, "field 'config' has options this convolab does not know (fancy_new_option)"),
]


@pytest.mark.parametrize("field,value,expected", BAD_STATES, ids=[f"{f}-{i}" for i, (f, _, _) in
                                                                   enumerate(BAD_STATES)])
def test_bad_checkpoint_contents(one_epoch, tmp_path, field, value, expected):
    """Each edit of a good checkpoint, put in place of the run's newest one: refused by ``find_checkpoint`` (what
    ``--resume`` calls: the file checked alone, then against the run's model and optimizer)."""
    run_dir, good = one_epoch
    shutil.copytree(run_dir, tmp_path / "run")
    path = ckpt.step_checkpoints(tmp_path / "run")[-1]
    state = copy.deepcopy(good)
    _set(state, field, value)
    torch.save(state, path)
    with pytest.raises(ValueError) as e:
        runs_ckpt.find_checkpoint(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message, message


def test_integer_keys_and_non_finite_weights(one_epoch, tmp_path):
    _, good = one_epoch
    state = copy.deepcopy(good)
    state["model"][0] = torch.zeros(1)
    torch.save(state, tmp_path / "a.pt")
    with pytest.raises(ValueError, match=r"field 'model' has a key of type int \(0\); expected tensor names"):
        ckpt.load_checkpoint(tmp_path / "a.pt")
    state = copy.deepcopy(good)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name][0] = float("nan")
    torch.save(state, tmp_path / "b.pt")
    with pytest.raises(ValueError, match=f"field 'model.{name}' holds NaN or inf; convolab never saves non-finite"):
        ckpt.load_checkpoint(tmp_path / "b.pt")


@pytest.mark.parametrize("edit,expected", [
    ("shape", "field 'model.{k}' has shape [1], tutorial_cnn (as {config} describes it) {shape}; expected the weights "
              "of this run's model"),
    ("missing", "field 'model' has no {k}, which tutorial_cnn (as {config} describes it) has"),
    ("extra", "field 'model' has tensors tutorial_cnn does not have (extra.weight)"),
])
def test_weights_that_do_not_fit_the_runs_model(one_epoch, tmp_path, edit, expected):
    """load_checkpoint cannot know the model; find_checkpoint compares with the one config.json describes (built on
    the meta device) instead of leaving load_state_dict's traceback to _restore."""
    run_dir, good = one_epoch
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    newest = ckpt.step_checkpoints(run)[-1]
    state = copy.deepcopy(good)
    k = next(iter(state["model"]))
    shape = list(state["model"][k].shape)
    if edit == "shape":
        state["model"][k] = torch.zeros(1)
    elif edit == "missing":
        del state["model"][k]
    else:
        state["model"]["extra.weight"] = torch.zeros(1)
    torch.save(state, newest)
    ckpt.load_checkpoint(newest)  # a well-formed checkpoint ...
    for target in (run, newest):  # ... that is not this run's model, whether named by its folder or by its file
        with pytest.raises(ValueError) as e:
            runs_ckpt.find_checkpoint(target)
        assert str(e.value).startswith(f"{newest}: ")
        assert expected.format(k=k, shape=shape, config=run / "config.json") in str(e.value), str(e.value)


@pytest.mark.parametrize("obj,expected", [
    ([1, 2, 3], "not a convolab checkpoint (it holds a list; expected the dict of training state"),
    ({"a": 1}, "not a convolab checkpoint (no model, optimizer, format; expected the training state"),
    (torch.zeros(3), "not a convolab checkpoint (it holds a Tensor"),
    ({"model": {"w": torch.zeros(1)}, "optimizer": {}, "format": 1}, "field 'config' is missing"),
])
def test_files_that_are_no_checkpoint(tmp_path, obj, expected):
    torch.save(obj, tmp_path / "x.pt")
    with pytest.raises(ValueError) as e:
        ckpt.load_checkpoint(tmp_path / "x.pt")
    assert expected in str(e.value), str(e.value)


def test_text_safetensors_and_pickled_code(tmp_path):
    (tmp_path / "notes.pt").write_text("epoch 3 looked good\n")
    with pytest.raises(ValueError, match=r"notes.pt: not a checkpoint \(neither a torch zip archive nor a pickle; it "
                                         r"starts with b'epoch 3 looked g'\)$"):
        ckpt.load_checkpoint(tmp_path / "notes.pt")
    write_safetensors_bytes(tmp_path / "w.pt", {"w": torch.zeros(2)})
    with pytest.raises(ValueError, match="w.pt: a safetensors weights file, not a checkpoint .* use convolab train "
                                         "--init-from"):
        ckpt.load_checkpoint(tmp_path / "w.pt")
    marker = tmp_path / "PWNED"
    for path in (write_raw_pickle(tmp_path / "raw.pt", marker), write_torch_zip(tmp_path / "zip.pt", marker)):
        with pytest.raises(ValueError) as e:
            ckpt.load_checkpoint(path)
        assert "refused: loading this file would run code (it would call posix.system)" in str(e.value)
        assert "weights_only=False" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("breakage", ["rng", "unknown-key", "pickled-code", "text"])
def test_cli_resume_refuses_a_bad_checkpoint_before_the_data_loads(one_epoch, tmp_path, capsys, monkeypatch,
                                                                   breakage):
    run_dir, good = one_epoch
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    newest = ckpt.step_checkpoints(run)[-1]
    marker = tmp_path / "PWNED"
    state = copy.deepcopy(good)
    if breakage == "rng":
        state["rng"]["torch"] = torch.zeros(7, dtype=torch.uint8)
        torch.save(state, newest)
    elif breakage == "unknown-key":
        state["sharding_plan"] = {}
        torch.save(state, newest)
    elif breakage == "pickled-code":
        write_torch_zip(newest, marker)
    else:
        newest.write_text("not a checkpoint")
    (run / "checkpoints" / "best.pt").unlink()
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(sys.modules["convolab.train.loop"], "load_dataset", no_data)
    code, _, err = cli(["train", "--resume", run, "--quiet"], capsys)
    assert_one_line_error(code, err, str(newest), "no older readable checkpoint")
    assert "Traceback" not in err and "weights_only=False" not in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not marker.exists()


def test_no_augmentation_state_in_a_run_that_augments(one_epoch, tmp_path):
    """(found by the checkpoint fuzzer: augment.load_state_dict(None) in the trainer's restore)"""
    import json

    run_dir, good = one_epoch
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "config.json").read_text())
    config["augment"]["crop_pad"] = 1
    (run / "config.json").write_text(json.dumps(config))
    assert good["augment"] is None
    with pytest.raises(ValueError, match=r"field 'augment' is null in a run that augments \(.*config.json: crop_pad\); "
                                         "expected the augmentation's generators"):
        runs_ckpt.find_checkpoint(run)
