"""A corpus of broken run directories: config.json, summary.json and the weights' metadata, each refused with one
line naming the file, the field and what was expected (``convolab.runs.schema``), before any model is built."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.cli.test_cli import assert_one_line_error, cli

import convolab
from convolab.runs.schema import MAX_DEPTH, Int, ListOf, Obj, Str, maybe, parse_json, validate


@pytest.fixture
def run_copy(digits_run, tmp_path):
    """A writable copy of the shared digits run (config.json, summary.json, model.safetensors)."""
    dst = tmp_path / "run"
    dst.mkdir()
    for name in ("config.json", "summary.json", "model.safetensors"):
        shutil.copy(digits_run.run_dir / name, dst / name)
    return dst


def _meta(run) -> dict:
    from safetensors import safe_open

    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["convolab"])


def _write_meta(run, text: str) -> None:
    """Rewrite model.safetensors with the same tensors and ``text`` as its convolab metadata."""
    tensors = {k: v.clone() for k, v in load_file(str(run / "model.safetensors")).items()}  # not the mmap
    save_file(tensors, str(run / "model.safetensors"), metadata={"convolab": text})


def _edit_meta(run, **changes) -> None:
    meta = _meta(run)
    for key, value in changes.items():
        if "__" in key:
            outer, inner = key.split("__")
            meta[outer][inner] = value
        else:
            meta[key] = value
    _write_meta(run, json.dumps(meta))


# -- config.json and summary.json ------------------------------------------------------------------------
DEEP = "[" * 40 + "]" * 40
BAD_CONFIGS = [
    ("[]", "is a list of 0 items; expected an object"),
    ("null", "is null; expected an object"),
    ("", "not valid JSON (expecting value at line 1, column 1)"),
    ('{"seed": 1', "not valid JSON"),
    ('{"seed": "zero"}', "field 'seed' is the string 'zero'; expected an integer"),
    ('{"seed": true}', "field 'seed' is true; expected an integer"),
    ('{"model": 3}', "field 'model' is 3; expected a string"),
    ('{"dataset": []}', "field 'dataset' is a list of 0 items; expected an object or null"),
    ('{"dataset": {"name": 7}}', "field 'dataset.name' is 7; expected a string"),
    ('{"dataset": {"name": "digits", "val_fraction": 2}}', "field 'dataset.val_fraction' is 2; expected a number "
                                                           "from 0 to 1"),
    ('{"dataset": {"name": "digits", "data_dir": 5}}', "field 'dataset.data_dir' is 5; expected a string or null"),
    ('{"recipe": null}', "field 'recipe' is null; expected an object"),
    ('{"command": ["convolab", 1]}', "field 'command[1]' is 1; expected a string"),
    ('{"world_size": 0}', "field 'world_size' is 0; expected an integer from 1 to 1,000,000"),
    ('{"versions": {"torch": 2}}', "field 'versions.torch' is 2; expected a string or null"),
    ('{"recipe": {"x": ' + DEEP + "}}", f"field 'recipe.x' is nested more than {MAX_DEPTH} levels deep"),
    ("[" * 200_000 + "]" * 200_000, "nested too deeply to read"),
]


@pytest.mark.parametrize("text,expected", BAD_CONFIGS, ids=range(len(BAD_CONFIGS)))
def test_bad_config_json_is_one_line_naming_the_file_and_field(run_copy, text, expected):
    (run_copy / "config.json").write_text(text)
    with pytest.raises(ValueError) as e:
        convolab.load_run(run_copy)
    message = str(e.value)
    assert message.startswith(f"{run_copy / 'config.json'}: ") and expected in message, message
    assert "\n" not in message


BAD_SUMMARIES = [
    ("[1, 2]", "is a list of 2 items; expected an object"),
    ('{"test_accuracy": "high"}', "field 'test_accuracy' is the string 'high'; expected a number from 0 to 1 or null"),
    ('{"test_accuracy": 1.5}', "field 'test_accuracy' is 1.5; expected a number from 0 to 1 or null"),
    ('{"test_accuracy": NaN}', "field 'test_accuracy' is nan; expected a number from 0 to 1 or null"),
    ('{"epochs": -1}', "field 'epochs' is -1; expected an integer >= 0"),
    ('{"stopped_early": "no"}', "field 'stopped_early' is the string 'no'; expected true or false"),
    ('{"test_loss": [0.2]}', "field 'test_loss' is a list of 1 item; expected a finite number or null"),
    ("\x00\x01", "not valid JSON"),
]


@pytest.mark.parametrize("text,expected", BAD_SUMMARIES, ids=range(len(BAD_SUMMARIES)))
def test_bad_summary_json_is_one_line_naming_the_file_and_field(run_copy, text, expected):
    (run_copy / "summary.json").write_text(text)
    with pytest.raises(ValueError) as e:
        convolab.load_run(run_copy)
    message = str(e.value)
    assert message.startswith(f"{run_copy / 'summary.json'}: ") and expected in message, message


def test_summary_json_that_is_not_utf8(run_copy):
    (run_copy / "summary.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match="summary.json: not UTF-8 text"):
        convolab.load_run(run_copy)


def test_a_valid_run_with_fields_of_a_later_convolab_still_loads(run_copy):
    config = json.loads((run_copy / "config.json").read_text())
    config["something_new"] = {"nested": [1, 2, {"x": None}]}
    config["command"] = None  # a run trained from Python, not by the CLI
    (run_copy / "config.json").write_text(json.dumps(config))
    summary = json.loads((run_copy / "summary.json").read_text())
    summary["test_accuracy"] = None  # a non-finite figure written as null
    (run_copy / "summary.json").write_text(json.dumps(summary))
    run = convolab.load_run(run_copy)
    assert run.config["something_new"]["nested"][2] == {"x": None} and run.summary["test_accuracy"] is None


# -- the weights' metadata -------------------------------------------------------------------------------
BAD_METADATA = [
    ("[]", "is a list of 0 items; expected an object"),
    ("null", "is null; expected an object"),
    ("not json", "not valid JSON (expecting value at line 1, column 1)"),
    ('{"format": 1}', "field 'model' is missing; expected a string"),
]


@pytest.mark.parametrize("text,expected", BAD_METADATA, ids=range(len(BAD_METADATA)))
def test_bad_metadata_text(run_copy, text, expected):
    _write_meta(run_copy, text)
    with pytest.raises(ValueError) as e:
        convolab.load_run(run_copy)
    assert str(e.value).startswith(f"{run_copy / 'model.safetensors'} (metadata 'convolab'): "), str(e.value)
    assert expected in str(e.value)


BAD_FIELDS = [
    (dict(classes=["0", "1", "2"]), "field 'classes' names 3 class(es) for a model with 10 outputs "
                                    "(model_kwargs.num_classes); expected 10 names"),
    (dict(classes=[]), "field 'classes' is a list of 0 items; expected a list of 1 to 100,000 strings"),
    (dict(classes=list(range(10))), "field 'classes[0]' is 0; expected a string"),
    (dict(mean=[0.1, 0.2, 0.3]), "field 'mean' has 3 value(s) for a 1-channel input (input_size [1, 8, 8]); "
                                 "expected 1"),
    (dict(std=[0.0]), "field 'std[0]' is 0.0; expected a number from 0 (excluded) to 1000"),
    (dict(mean="0.5"), "field 'mean' is the string '0.5'; expected a list of 1 to 64 numbers"),
    (dict(input_size=[1, 100_000, 100_000]), "field 'input_size[1]' is 100000; expected an integer from 1 to 8,192"),
    (dict(input_size=[8, 8]), "field 'input_size' is a list of 2 items; expected a list of 3 to 4 integers"),
    (dict(input_size=[64, 8192, 8192]), "field 'input_size' [64, 8192, 8192] is 4,294,967,296 values per input"),
    (dict(model_kwargs__num_classes=10**9), "field 'model_kwargs.num_classes' is 1000000000; expected an integer "
                                            "from 1 to 100,000"),
    (dict(model_kwargs__num_classes="10"), "field 'model_kwargs.num_classes' is the string '10'"),
    (dict(model_kwargs__in_chans=3), "field 'model_kwargs.in_chans' is 3 but input_size [1, 8, 8] has 1 channel"),
    (dict(model_kwargs=[1]), "field 'model_kwargs' is a list of 1 item; expected an object"),
    (dict(model=None), "field 'model' is null; expected a string"),
    (dict(model="no_such_model"), "fields 'model'/'model_kwargs' do not build a model"),
    (dict(model_kwargs__depth=3), "fields 'model'/'model_kwargs' do not build a model"),
    (dict(format=2), "field 'format' is 2, written by a newer convolab"),
    (dict(format="1"), "field 'format' is the string '1'; expected 1"),
]


@pytest.mark.parametrize("changes,expected", BAD_FIELDS, ids=range(len(BAD_FIELDS)))
def test_bad_metadata_fields(run_copy, changes, expected):
    _edit_meta(run_copy, **changes)
    with pytest.raises(ValueError) as e:
        convolab.load_run(run_copy)
    message = str(e.value)
    assert message.startswith(f"{run_copy / 'model.safetensors'} (metadata 'convolab'): "), message
    assert expected in message and "\n" not in message, message


def test_absurd_sizes_are_refused_before_any_memory_is_allocated(run_copy, monkeypatch):
    """Sizes within the schema's bounds that would still allocate gigabytes (tutorial_cnn at 8192 x 8192 has a
    first linear layer of ~4 G weights) are caught on the meta device: the model is never built for real."""
    import convolab.models

    real = convolab.models.create_model
    built = []

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        built.append({p.device.type for p in model.parameters()})
        return model

    monkeypatch.setattr(convolab.models, "create_model", spy)
    _edit_meta(run_copy, input_size=[1, 8192, 8192], model_kwargs__input_size=[8192, 8192])
    with pytest.raises(ValueError, match=r"weights do not fit model tutorial_cnn \(.* has shape .* in the file"):
        convolab.load_run(run_copy)
    assert built == [{"meta"}], "only the meta-device probe was built"


def test_a_torch_file_named_model_safetensors(run_copy):
    tensors = {k: v.clone() for k, v in load_file(str(run_copy / "model.safetensors")).items()}  # not the mmap
    torch.save(tensors, run_copy / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors: a torch pickle \(.pt/.pth\), not safetensors"):
        convolab.load_run(run_copy)


def test_a_weights_file_under_another_name_is_read_by_content(run_copy):
    (run_copy / "model.safetensors").rename(run_copy / "weights.pt")
    run = convolab.load_run(run_copy / "weights.pt")
    assert run.classes == [str(i) for i in range(10)]


@pytest.mark.parametrize("verb", ["eval", "predict", "summary"])
def test_cli_verbs_on_a_broken_run_exit_2_with_one_line(run_copy, verb, capsys, tmp_path):
    (run_copy / "config.json").write_text('{"dataset": {"name": ["digits"]}}')
    argv = {"eval": ["eval", run_copy], "predict": ["predict", run_copy, tmp_path / "x.png"],
            "summary": ["summary", run_copy]}[verb]
    code, _, err = cli(argv, capsys)
    assert_one_line_error(code, err, "config.json: field 'dataset.name' is a list of 1 item; expected a string")


# -- the validator itself ----------------------------------------------------------------------------------
def test_validate_names_the_deepest_field_and_refuses_unknown_keys_when_asked():
    spec = Obj({"a": ListOf(Obj({"b": maybe(Int(0, 9))}))})
    validate({"a": [{"b": 1}, {"b": None}]}, spec, "f")
    with pytest.raises(ValueError, match=r"^f: field 'a\[1\]\.b' is 10; expected an integer from 0 to 9 or null$"):
        validate({"a": [{"b": 1}, {"b": 10}]}, spec, "f")
    with pytest.raises(ValueError, match=r"^f: field 'x' is not a field this convolab knows; expected only a, b$"):
        validate({"x": 1}, Obj({"a": Str(), "b": Str()}, other=None), "f")
    with pytest.raises(ValueError, match="^f: field '1' has a key of type int"):
        validate({1: 1}, Obj(), "f")


def test_parse_json_names_what_it_read():
    with pytest.raises(ValueError, match=r"^meta: not valid JSON \(expecting ',' delimiter at line 1, column 9\)"):
        parse_json('{"a": 1 "b": 2}', "meta")


def test_a_model_that_cannot_be_built_on_the_meta_device_still_loads(run_copy, monkeypatch):
    """The meta-device probe is a pre-check: a model with an op lacking a meta kernel is built for real instead."""
    import convolab.models

    real = convolab.models.create_model

    def no_meta(*args, **kwargs):
        if torch.empty(0).device.type == "meta":
            raise NotImplementedError("no meta kernel for this op")
        return real(*args, **kwargs)

    monkeypatch.setattr(convolab.models, "create_model", no_meta)
    assert convolab.load_run(run_copy).classes == [str(i) for i in range(10)]
