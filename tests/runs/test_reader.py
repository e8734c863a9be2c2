"""``convolab.runs.reader`` and ``convolab.runs.build``: format 2 (format, task, build), format-1 runs still load,
and a run's model is rebuilt by the builder its ``build.kind`` names."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from convolab.models import create_model
from convolab.runs import build as build_module
from convolab.runs.build import build_model, builder_kinds, register_builder
from convolab.runs.reader import load_run


def _config(run) -> dict:
    return json.loads((run / "config.json").read_text())


def _write_config(run, config: dict) -> None:
    (run / "config.json").write_text(json.dumps(config))


def test_a_new_run_is_format_2_with_task_and_build(digits_run):
    config = _config(digits_run.run_dir)
    assert config["format"] == 2 and config["task"] == "classification"
    assert config["build"] == {"kind": "registry", "name": "tutorial_cnn",
                               "kwargs": {"num_classes": 10, "in_chans": 1, "input_size": [8, 8]}}
    run = load_run(digits_run.run_dir)
    assert (run.format, run.task, run.build) == (2, "classification", config["build"])
    assert run.classes == [str(i) for i in range(10)] and run.config == config


def test_a_format_1_run_still_loads(run_copy, digits_run):
    """A config.json written before format 2 (no format, task or build): classification, rebuilt from the weights
    metadata, predicting exactly what the format-2 run predicts."""
    config = _config(run_copy)
    for key in ("format", "task", "build"):
        del config[key]
    _write_config(run_copy, config)
    old, new = load_run(run_copy), load_run(digits_run.run_dir)
    assert (old.format, old.task) == (1, "classification")
    assert old.build == {"kind": "registry", "name": "tutorial_cnn", "kwargs": new.build["kwargs"]}
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(old.model(old.preprocess(x)), new.model(new.preprocess(x)))


def test_weights_alone_load_as_format_1(run_copy):
    run = load_run(run_copy / "model.safetensors")
    for key in ("config.json", "summary.json"):
        (run_copy / key).unlink()
    alone = load_run(run_copy / "model.safetensors")
    assert (alone.format, alone.task, alone.config) == (1, "classification", {})
    assert all(torch.equal(a, b) for a, b in zip(alone.model.state_dict().values(), run.model.state_dict().values()))


def test_the_model_carries_the_files_weights(digits_run):
    run = load_run(digits_run.run_dir)
    stored = load_file(str(digits_run.run_dir / "model.safetensors"))
    own = run.model.state_dict()
    assert stored.keys() == own.keys() and all(torch.equal(stored[k], own[k]) for k in stored)
    assert not run.model.training


@pytest.mark.parametrize("task", ["segmentation", "clips"])
def test_the_task_is_read(run_copy, task):
    _write_config(run_copy, {**_config(run_copy), "task": task})
    assert load_run(run_copy).task == task


BAD = [
    ({"format": 3}, "field 'format' is 3, written by a newer convolab; this one reads formats 1 to 2"),
    ({"format": 0}, "field 'format' is 0; expected an integer from 1 to 2"),
    ({"task": "detection"}, "field 'task' is the string 'detection'; expected 'classification' or 'segmentation' "
                            "or 'clips'"),
    ({"build": {"name": "x"}}, "field 'build.kind' is missing; expected a string"),
    ({"build": {"kind": "sparse"}}, "field 'build.kind' is 'sparse'; expected one of int8-pt2e, pruned, registry"),
    ({"build": {"kind": "registry", "name": "tutorial_cnn", "kwargs": {"num_classes": 10**9}}},
     "field 'build.kwargs.num_classes' is 1000000000; expected an integer from 1 to 100,000"),
    ({"build": {"kind": "registry", "name": "lenet5", "kwargs": {"num_classes": 10}}},
     "field 'build' describes lenet5 {'num_classes': 10}, but"),
]


@pytest.mark.parametrize("changes,expected", BAD, ids=range(len(BAD)))
def test_bad_format_fields_are_one_line(run_copy, changes, expected):
    _write_config(run_copy, {**_config(run_copy), **changes})
    with pytest.raises(ValueError) as e:
        load_run(run_copy)
    message = str(e.value)
    assert message.startswith(f"{run_copy / 'config.json'}: ") and expected in message and "\n" not in message, \
        message


def test_a_registered_kind_rebuilds_the_model_without_touching_load_run(run_copy, monkeypatch):
    """A new kind (here: the run's model with its classifier reset to zero) is one registration; load_run hands it
    config.json's build and uses the model it returns."""
    monkeypatch.setattr(build_module, "_BUILDERS", dict(build_module._BUILDERS))
    seen = []

    def zero_head(build: dict, weights, what: str, field: str | None) -> torch.nn.Module:
        seen.append((build, what, field))
        model = create_model(build["base"], num_classes=10, in_chans=1, input_size=(8, 8))
        model.load_state_dict(load_file(str(weights)))
        torch.nn.init.zeros_(model.get_classifier().weight)
        torch.nn.init.zeros_(model.get_classifier().bias)
        return model

    before = builder_kinds()
    register_builder("zero_head", zero_head)
    assert builder_kinds() == sorted([*before, "zero_head"])
    build = {"kind": "zero_head", "base": "tutorial_cnn"}
    _write_config(run_copy, {**_config(run_copy), "build": build})
    run = load_run(run_copy)
    assert seen == [(build, str(run_copy / "config.json"), "build")] and run.build == build
    probs = [p["probability"] for p in run.predict(torch.zeros(1, 8, 8, dtype=torch.uint8), top_k=10)[0]]
    assert probs == pytest.approx([0.1] * 10)  # a zero classifier: softmax of equal logits
    with pytest.raises(ValueError, match="already registered"):
        register_builder("zero_head", zero_head)


def test_build_model_names_the_field_of_a_format_1_run(run_copy):
    with pytest.raises(ValueError, match=r"^W: fields 'model'/'model_kwargs' do not build a model"):
        build_model({"kind": "registry", "name": "no_such", "kwargs": {}}, run_copy / "model.safetensors", "W", None)
    with pytest.raises(ValueError, match=r"^C: fields 'build.name'/'build.kwargs' do not build a model"):
        build_model({"kind": "registry", "name": "no_such", "kwargs": {}}, run_copy / "model.safetensors", "C")
    with pytest.raises(ValueError, match=r"^C: field 'build.kwargs' is missing"):
        build_model({"kind": "registry", "name": "tutorial_cnn"}, run_copy / "model.safetensors", "C")
