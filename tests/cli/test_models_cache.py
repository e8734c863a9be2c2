"""`convolab models`' parameter counts: counted once on the meta device, then read from a cache keyed by the source."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from convolab.cli import models as cli_models
from convolab.models import create_model, get_model_entry

NAMES = ["lenet5", "tutorial_cnn", "resnet18", "c3d"]


@pytest.fixture
def entries():
    return [get_model_entry(name) for name in NAMES]


def _refuse(entry):
    raise AssertionError(f"{entry.name} was built again")


def test_counted_once_then_read_and_equal_to_a_real_build(entries, tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "models.json"  # its folder does not exist yet
    counts = cli_models.parameter_counts(entries, cache)
    for e in entries[:3]:  # built for real on the CPU, at the same input
        model = create_model(e.name, num_classes=e.default_num_classes, in_chans=e.default_input[0],
                             input_size=e.default_input[-2:])
        assert counts[e.name] == sum(p.numel() for p in model.parameters())
    assert counts["c3d"] == 79_991_015
    saved = json.loads(cache.read_text())
    assert saved["counts"] == counts and saved["key"] == cli_models._source_key()
    monkeypatch.setattr(cli_models, "_count", _refuse)
    assert cli_models.parameter_counts(entries, cache) == counts  # all from the cache
    assert cli_models.parameter_counts(entries[:1], cache) == {"lenet5": counts["lenet5"]}


def test_a_change_of_source_a_torn_file_or_a_wrong_value_counts_afresh(entries, tmp_path, monkeypatch):
    cache = tmp_path / "models.json"
    counts = cli_models.parameter_counts(entries, cache)
    built = []
    real = cli_models._count
    monkeypatch.setattr(cli_models, "_count", lambda e: built.append(e.name) or real(e))
    monkeypatch.setattr(cli_models, "_source_key", lambda: "another source")
    assert cli_models.parameter_counts(entries, cache) == counts and built == NAMES
    assert json.loads(cache.read_text())["key"] == "another source"
    for text in ("{not json", "[]", '{"key": "another source", "counts": []}',
                 '{"key": "another source", "counts": {"lenet5": "many", "tutorial_cnn": true}}'):
        cache.write_text(text)
        built.clear()
        assert cli_models.parameter_counts(entries[:2], cache) == {n: counts[n] for n in NAMES[:2]}
        assert built == NAMES[:2]


def test_a_model_from_outside_convolab_is_never_cached(tmp_path, monkeypatch):
    def mine(num_classes=10, in_chans=1, input_size=(8, 8)):
        return torch.nn.Linear(in_chans, num_classes)

    outside = dataclasses.replace(get_model_entry("lenet5"), name="mine", fn=mine)
    assert not mine.__module__.startswith("convolab.")
    cache = tmp_path / "models.json"
    before = json.dumps({"key": cli_models._source_key(), "counts": {"mine": 1}})
    cache.write_text(before)
    monkeypatch.setattr(cli_models, "_count", lambda e: sum(p.numel() for p in e.fn(1, 1).parameters()))
    assert cli_models.parameter_counts([outside], cache) == {"mine": 2}  # counted, not the cache's 1
    assert cache.read_text() == before  # and not written


def test_an_unwritable_cache_still_gives_the_counts(entries, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli_models.parameter_counts(entries[:1], blocker / "models.json") == {"lenet5": 61_706}
