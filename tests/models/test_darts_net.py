"""darts_net, the DARTS network family in the registry: the paper's cell by default (its published parameter count),
a genotype in every form a user has one (dict, JSON text, genotype.json with or without the "genotype" key) giving
the same network, one-line errors, and a run trained from a genotype file that reloads once the file is gone."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tests.models._helpers import n_params

import convolab
from convolab.cli import main
from convolab.data import load_dataset
from convolab.data.loader import Normalizer
from convolab.models import create_model, get_model_entry, model_options
from convolab.models.darts import DARTS_V2, CellGenotype, DartsNetwork, resolve_genotype

pytestmark = pytest.mark.usefixtures("one_thread")

# A cell unlike DARTS_V2 (5x5 and dilated convolutions, an average pool, a node reading node 1), so a form that
# silently fell back to the default genotype would build another network.
OTHER = CellGenotype(
    normal=(("sep_conv_5x5", 1), ("dil_conv_5x5", 0), ("avg_pool_3x3", 0), ("sep_conv_3x3", 2)),
    reduce=(("dil_conv_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("sep_conv_5x5", 1)),
    normal_concat=(2, 3), reduce_concat=(2, 3))
SMALL = dict(num_classes=5, in_chans=1, input_size=8, init_channels=4, layers=3)


def _build(genotype, seed: int = 0) -> DartsNetwork:
    torch.manual_seed(seed)
    return create_model("darts_net", genotype=genotype, **SMALL).eval()


def test_default_is_the_papers_second_order_cell():
    assert resolve_genotype(None) is DARTS_V2
    # The cell of the paper's Fig. 4/5 (second order): 3x3 separable convolutions and one dilated one in the normal
    # cell, max-pools and skips in the reduction cell, all four nodes concatenated.
    assert [op for op, _ in DARTS_V2.normal].count("sep_conv_3x3") == 5
    assert DARTS_V2.skip_count("normal") == 2 and DARTS_V2.skip_count("reduce") == 3
    assert {op for op, _ in DARTS_V2.reduce} == {"max_pool_3x3", "skip_connect"}
    assert DARTS_V2.normal_concat == DARTS_V2.reduce_concat == (2, 3, 4, 5)
    model = create_model("darts_net")
    assert model.genotype == DARTS_V2 and model.convolab_cfg["genotype"] == DARTS_V2.to_dict()


def test_the_papers_cifar10_network_has_its_published_size():
    # Liu et al. 2019, Table 1: DARTS (second order) on CIFAR-10, 20 cells of 36 initial channels, 3.3M parameters;
    # the authors' train.py logs "param size = 3.349342MB" (auxiliary head excluded, as here).
    with torch.device("meta"):
        model = create_model("darts_net", num_classes=10, init_channels=36, layers=20)
    assert n_params(model) == 3_349_342


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_default_genotype_gives_logits(shape):
    torch.manual_seed(0)
    model = create_model("darts_net", num_classes=7, in_chans=shape[0], input_size=shape[1:], init_channels=8,
                         layers=5).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    # Two reductions (cells 1 and 3 of 5): the last map is a quarter of the input's side, rounded up.
    assert model.forward_features(x).shape[-2:] == tuple(-(-s // 4) for s in shape[1:])
    assert model.feature_info == [dict(module="features", num_chs=4 * 8 * 4, reduction=4)]


def test_every_genotype_form_builds_the_same_network(tmp_path):
    bare, wrapped = tmp_path / "bare.json", tmp_path / "genotype.json"
    bare.write_text(json.dumps(OTHER.to_dict()))
    # as darts_search writes it: the cell under "genotype", beside what led to it
    wrapped.write_text(json.dumps({"genotype": OTHER.to_dict(), "per_epoch": [], "stop_reason": None,
                                   "supernet": {"init_channels": 8}}))
    forms = {"CellGenotype": OTHER, "dict": OTHER.to_dict(), "JSON text": json.dumps(OTHER.to_dict()),
             "path": str(bare), "genotype.json": str(wrapped), "PathLike": wrapped,
             "wrapped dict": {"genotype": OTHER.to_dict()}}
    x = torch.randn(3, 1, 8, 8)
    reference = _build(OTHER)
    with torch.no_grad():
        want = reference(x)
    for form, genotype in forms.items():
        model = _build(genotype)
        assert model.genotype == OTHER, form
        assert n_params(model) == n_params(reference), form
        with torch.no_grad():
            assert torch.equal(model(x), want), form
        assert model.convolab_cfg["genotype"] == OTHER.to_dict(), form  # never the path or the text
    default = _build(None)
    assert n_params(default) != n_params(reference)
    with torch.no_grad():
        assert not torch.allclose(default(x), want)


@pytest.mark.parametrize("genotype, message", [
    (42, "genotype must be None (the paper's DARTS_V2 cell), a CellGenotype, a genotype dict"),
    ([["sep_conv_3x3", 0]], "genotype must be None"),
    ({"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]]}, "not a DARTS genotype"),
    ('{"normal": [', "genotype's JSON text is not JSON"),
    ({"normal": [["conv_9x9", 0], ["sep_conv_3x3", 1]], "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1]],
      "normal_concat": [2], "reduce_concat": [2]}, "normal cell: unknown operation 'conv_9x9'"),
    ({"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 2]], "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1]],
      "normal_concat": [2], "reduce_concat": [2]}, "normal cell: node 0 reads state 2; it may read 0 to 1"),
])
def test_a_bad_genotype_is_one_line(genotype, message):
    with pytest.raises(ValueError) as e:
        create_model("darts_net", genotype=genotype, **SMALL)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_genotype_file_that_is_not_there_or_not_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="genotype file .*missing.json' does not exist; expected None"):
        create_model("darts_net", genotype=str(tmp_path / "missing.json"), **SMALL)
    (tmp_path / "notes.json").write_text("a cell I liked")
    with pytest.raises(ValueError, match="notes.json' is not JSON"):
        create_model("darts_net", genotype=tmp_path / "notes.json", **SMALL)


@pytest.mark.parametrize("arg, value", [("init_channels", 0), ("layers", -1), ("stem_multiplier", 1.5)])
def test_bad_sizes_are_refused(arg, value):
    with pytest.raises(ValueError, match=f"{arg} must be a positive integer; got {value}"):
        create_model("darts_net", **{**SMALL, arg: value})


def test_registry_entry_and_options():
    entry = get_model_entry("darts_net")
    assert (entry.family, entry.year, entry.input_kind) == ("darts", 2019, "image")
    assert entry.default_input == (3, 32, 32) and entry.default_num_classes == 10
    assert model_options("darts_net") == ["genotype", "init_channels", "layers", "stem_multiplier"]


def test_a_pruned_build_is_kept_when_the_cfg_is_set_again():
    model = _build(OTHER)
    assert model.convolab_build == {"kind": "registry", "name": "darts_net",
                                    "kwargs": {k: v for k, v in model.convolab_cfg.items() if k != "name"}}
    model.convolab_build = {"kind": "pruned", "base": {}}
    model.convolab_cfg = {"name": "darts_net", "genotype": "somewhere.json"}
    assert model.convolab_build == {"kind": "pruned", "base": {}}
    assert model.convolab_cfg == {"name": "darts_net", "genotype": OTHER.to_dict()}


def test_cli_trains_a_genotype_file_and_the_run_reloads_without_it(tmp_path, capsys):
    path, out = tmp_path / "search" / "genotype.json", tmp_path / "run"
    path.parent.mkdir()
    path.write_text(json.dumps({"genotype": OTHER.to_dict(), "per_epoch": [OTHER.to_dict()]}))
    code = main(["train", "--model", "darts_net", "--model-arg", f"genotype={path}", "init_channels=4", "layers=3",
                 "--data", "digits", "--epochs", "1", "--batch-size", "32", "--lr", "0.01", "--device", "cpu",
                 "--quiet", "--no-plots", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["build"]["kwargs"]["genotype"] == OTHER.to_dict()
    # the settings a resume reads hold the genotype too, not the path (the trainer swaps it in after building)
    assert config["config"]["model_kwargs"]["genotype"] == OTHER.to_dict()
    path.unlink()
    path.parent.rmdir()
    run = convolab.load_run(out)
    assert isinstance(run.model, DartsNetwork) and run.model.genotype == OTHER
    # The weights as trained, against a network built here from the genotype and loaded with them.
    from safetensors.torch import load_file

    trained = create_model("darts_net", num_classes=10, in_chans=1, input_size=8, genotype=OTHER.to_dict(),
                           init_channels=4, layers=3)
    trained.load_state_dict(load_file(out / "model.safetensors"))
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(run.model.eval()(x), trained.eval()(x))
    # And the reloaded model is the one the training evaluated: its test accuracy is summary.json's, exactly.
    data = load_dataset("digits", val_fraction=config["dataset"]["val_fraction"], seed=config["seed"])
    with torch.no_grad():
        logits = run.model(Normalizer(run.mean, run.std)(data.test.images))
    labels = data.test.labels
    assert run.summary["test_samples"] == len(labels)
    assert int((logits.argmax(1) == labels).sum()) / len(labels) == run.summary["test_accuracy"] > 0.3
    assert F.cross_entropy(logits, labels).item() == pytest.approx(run.summary["test_loss"], rel=1e-5)


def test_cli_names_a_missing_genotype_file_in_one_line(tmp_path, capsys):
    code = main(["train", "--model", "darts_net", "--model-arg", f"genotype={tmp_path / 'nope.json'}",
                 "init_channels=4", "layers=3", "--data", "digits", "--epochs", "1", "--quiet", "--no-plots",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nope.json' does not exist" in err, err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_network_trained_by_train_network_reloads(digits_config, tmp_path):
    """The other way a found cell is trained (``convolab.experiments.nas.darts.train_network``, a DartsNetwork
    given to the trainer): the run records the registry's darts_net, so load_run rebuilds it."""
    from convolab.experiments.nas.darts import train_network

    result = train_network(OTHER, digits_config(tmp_path / "run", epochs=1, plots=False, model="darts_net"),
                           init_channels=4, layers=3)
    run = convolab.load_run(result.run_dir)
    assert run.build["name"] == "darts_net" and run.model.genotype == OTHER
    assert n_params(run.model) == result.summary["params"]
    data = load_dataset("digits", val_fraction=run.config["dataset"]["val_fraction"], seed=run.config["seed"])
    with torch.no_grad():
        logits = run.model.eval()(Normalizer(run.mean, run.std)(data.test.images))
    assert int((logits.argmax(1) == data.test.labels).sum()) / len(logits) == result.summary["test_accuracy"]
