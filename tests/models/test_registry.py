"""The model registry (``register_model``, ``list_models``) and the one factory, ``create_model``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convolab.errors import UnknownNameError
from convolab.models import _registry, create_model, get_model_entry, list_models, model_entries, register_model

FOUR = ["lenet5", "lenet5_classic", "mnist_cnn", "tutorial_cnn"]


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that a test may add to; the real one is restored afterwards."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    return _registry._REGISTRY


def _builder(name: str, doc: str = "A test model.\n\nMore text."):
    def fn(*, num_classes=10, in_chans=3, input_size=None, **kwargs):
        return nn.Linear(in_chans, num_classes)

    fn.__name__ = name
    fn.__doc__ = doc
    return fn


# -- register_model ------------------------------------------------------------------------------
def test_register_model_records_the_builder(scratch_registry):
    fn = _builder("scratch_net")
    assert register_model(year=2001, default_cfg={"num_classes": 3})(fn) is fn
    entry = get_model_entry("scratch_net")
    assert entry.fn is fn
    assert entry.year == 2001
    assert entry.description == "A test model."
    assert entry.family == fn.__module__.rsplit(".", 1)[-1]
    assert entry.default_cfg == {"num_classes": 3}
    assert "scratch_net" in list_models()


def test_register_model_bare_decorator(scratch_registry):
    fn = _builder("scratch_bare", doc="")
    assert register_model(fn) is fn
    assert get_model_entry("scratch_bare").description == ""
    assert get_model_entry("scratch_bare").year is None


def test_registering_a_name_twice_raises(scratch_registry):
    register_model(_builder("scratch_twice"))
    with pytest.raises(ValueError, match="scratch_twice.*registered twice"):
        register_model(_builder("scratch_twice"))


def test_registering_an_existing_model_name_raises(scratch_registry):
    before = get_model_entry("lenet5")
    with pytest.raises(ValueError, match="lenet5"):
        register_model(_builder("lenet5"))
    assert get_model_entry("lenet5") is before, "a refused registration must not replace the original"


# -- list_models ---------------------------------------------------------------------------------
def test_list_models_is_sorted_and_holds_the_four():
    names = list_models()
    assert names == sorted(names)
    assert set(FOUR) <= set(names)
    assert [e.name for e in model_entries()] == names


@pytest.mark.parametrize("pattern,expected", [
    ("lenet*", ["lenet5", "lenet5_classic"]),
    ("lenet", ["lenet5", "lenet5_classic"]),  # no wildcard: a substring
    ("cnn", ["mnist_cnn", "tutorial_cnn"]),
    ("*cnn", ["mnist_cnn", "tutorial_cnn"]),
    ("*_c*", ["lenet5_classic", "mnist_cnn", "tutorial_cnn"]),
    ("lenet5", ["lenet5", "lenet5_classic"]),
    ("lenet5?classic", ["lenet5_classic"]),
    ("LeNet*", ["lenet5", "lenet5_classic"]),
    ("resnet*", []),
])
def test_list_models_pattern(pattern, expected):
    assert [n for n in list_models(pattern) if n in FOUR] == expected
    assert list_models(pattern) == sorted(list_models(pattern))


# -- create_model --------------------------------------------------------------------------------
@pytest.mark.parametrize("name,matches", [
    ("resnet", ["resnet18", "resnet20"]),
    ("lenet", ["lenet5", "lenet5_classic"]),
    ("mnist", ["mnist_cnn"]),
    ("tutorial", ["tutorial_cnn"]),
    ("Lenet6", ["lenet5"]),
])
def test_unknown_model_names_close_matches(name, matches):
    with pytest.raises(UnknownNameError) as info:
        create_model(name)
    err = info.value
    assert isinstance(err, ValueError), "the CLI turns ValueErrors into one line and exit code 2"
    assert f"unknown model {name!r}" in str(err)
    for m in matches:
        assert m in err.matches
        assert repr(m) in str(err)
    assert "\n" not in str(err)


def test_unknown_model_without_close_match_still_says_where_to_look():
    with pytest.raises(UnknownNameError, match="convolab models") as info:
        create_model("zzzzzz")
    assert info.value.matches == []
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=0), "num_classes"),
    (dict(in_chans=0), "in_chans"),
    (dict(input_size=0), "input_size"),
    (dict(input_size=(28, -1)), "input_size"),
    (dict(input_size=(1, 2, 3, 4)), "input_size"),
])
def test_create_model_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("tutorial_cnn", **kwargs)


@pytest.mark.parametrize("input_size,expected", [(20, (20, 20)), ((20, 24), (20, 24)), ((1, 20, 24), (20, 24)),
                                                 ([20, 24], (20, 24)), (None, (28, 28))])
def test_create_model_input_size_forms(input_size, expected):
    model = create_model("tutorial_cnn", num_classes=4, in_chans=1, input_size=input_size)
    assert tuple(model.input_size) == expected
    assert model(torch.zeros(1, 1, *expected)).shape == (1, 4)


@pytest.mark.parametrize("name", FOUR)
def test_create_model_records_how_to_rebuild_it(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_chans=1, input_size=(20, 24))
    cfg = dict(model.convolab_cfg)
    assert cfg == dict(name=name, num_classes=3, in_chans=1, input_size=[20, 24])
    twin = create_model(cfg.pop("name"), **cfg)
    assert {k: v.shape for k, v in twin.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    twin.load_state_dict(model.state_dict())  # strict: the rebuilt model takes the weights


# -- model options: a bad keyword argument is a ValueError that names it and lists the good ones -----
@pytest.mark.parametrize("name,bad,expected_options", [
    ("resnet18", "bad_kwarg", ["drop_rate", "shortcut", "small_stem"]),
    ("tutorial_cnn", "dropout", []),
    ("unet", "bilinear", ["base_channels", "batch_norm", "depth", "drop_rate"]),
    ("fcn_resnet50", "drop_rate", ["aux_loss"]),
    ("c3d", "batchnorm", ["drop_rate"]),
    ("googlenet", "aux_logit", ["aux_logits"]),
])
def test_unknown_option_is_a_value_error_listing_the_options(name, bad, expected_options):
    with pytest.raises(ValueError) as info:
        create_model(name, num_classes=3, **{bad: 1})
    message = str(info.value)
    assert not isinstance(info.value, UnknownNameError)
    assert f"no option {bad!r}" in message and "\n" not in message
    options = message.split("options are: ", 1)[1]
    for option in expected_options:
        assert option in options
    assert "num_classes" in options  # create_model's own arguments are named too


@pytest.mark.parametrize("name,arg,value", [("vgg11", "batch_norm", True), ("lenet5", "classic", True),
                                            ("resnet20", "small_stem", False), ("efficientnet_b0", "width_mult", 2.0)])
def test_an_argument_the_builder_fixes_is_a_value_error(name, arg, value):
    with pytest.raises(ValueError, match=rf"{name} sets '{arg}' itself") as info:
        create_model(name, num_classes=3, **{arg: value})
    assert f"'{arg}'" not in str(info.value).split("options are: ", 1)[1]


def test_every_model_states_its_options():
    """The check needs each builder's options: a builder that hides them would accept any typo."""
    from convolab.models._factory import model_options

    for name in list_models():
        options = model_options(name)
        assert options is not None, name
        assert not {"num_classes", "in_chans", "input_size"} & set(options)
    assert "drop_rate" in model_options("alexnet") and "aux_loss" in model_options("fcn_resnet50")


@pytest.mark.parametrize("name,kwargs,match", [
    ("resnet18", dict(drop_rate=-0.5), "drop_rate"),
    ("vgg11", dict(drop_rate=1.0), "drop_rate"),
    ("mobilenet_v2", dict(width_mult=0), "width_mult"),
    ("convnext_tiny", dict(drop_path_rate=1.2), "drop_path_rate"),
    ("densenet121", dict(bn_size=0), "bn_size"),
    ("wrn16_8", dict(drop_rate=2), "drop_rate"),
    ("unet", dict(base_channels=-8), "base_channels"),
    ("c3d", dict(drop_rate=-1), "drop_rate"),
    ("r3d_18", dict(widths=(0, 8, 8, 8)), "widths"),
])
def test_bad_option_values_are_value_errors(name, kwargs, match):
    with torch.device("meta"), pytest.raises(ValueError, match=match):
        create_model(name, num_classes=3, **kwargs)


def test_default_input_is_the_configured_one_else_imagenet_or_kinetics_sized():
    from convolab.models import ModelEntry

    assert get_model_entry("tutorial_cnn").default_input == (1, 28, 28)
    assert get_model_entry("tutorial_cnn").default_num_classes == 10
    assert get_model_entry("r3d_18").default_input == (3, 16, 112, 112)
    bare = dict(name="bare", fn=lambda **kw: None, family="x", description="")
    assert ModelEntry(**bare).default_input == (3, 224, 224)
    assert ModelEntry(**bare, input_kind="clip").default_input == (3, 16, 112, 112)
    assert ModelEntry(**bare).default_num_classes == 1000
