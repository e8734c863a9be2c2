"""resolve_layer: names from named_modules(), the feature_info default, errors that list the choices."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from convolab.explain.attribution import METHODS, attribute
from convolab.explain.layers import check_map_layer, conv_layers, feature_layers, first_conv, resolve_layer
from convolab.models import create_model


@pytest.fixture(scope="module")
def tutorial():
    return create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=(8, 8))


def test_default_is_last_feature_stage(tutorial):
    name, module = resolve_layer(tutorial)
    assert name == "features.relu2" == tutorial.feature_info[-1]["module"]
    assert module is tutorial.features.relu2


def test_named_layer_is_the_module_of_that_name(tutorial):
    name, module = resolve_layer(tutorial, "features.conv1")
    assert name == "features.conv1" and module is tutorial.features.conv1


def test_default_on_a_resnet_is_its_last_stage():
    model = create_model("resnet18", num_classes=10, input_size=32)
    name, module = resolve_layer(model)
    assert name == "layer4" and module is model.layer4


def test_unknown_name_suggests_and_lists(tutorial):
    with pytest.raises(ValueError) as e:
        resolve_layer(tutorial, "features.conv3")
    msg = str(e.value)
    assert "\n" not in msg
    assert "unknown layer 'features.conv3'" in msg and "did you mean" in msg and "'features.conv1'" in msg
    assert "TutorialCNN has no module of that name" in msg  # names the model the layer was looked for in
    assert "feature stages: features.relu1, features.relu2" in msg
    assert "convolutions: features.conv1, features.conv2" in msg


def test_the_model_itself_is_not_a_layer(tutorial):
    with pytest.raises(ValueError, match="unknown layer ''"):
        resolve_layer(tutorial, "")


def test_long_listings_are_cut():
    model = create_model("resnet50", num_classes=10, input_size=32)
    with pytest.raises(ValueError, match=r"\.\.\. \d+ more") as e:
        resolve_layer(model, "layer9")
    assert len(str(e.value)) < 2000


def test_without_feature_info_the_default_is_the_last_conv():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 3, 3), nn.Flatten())
    assert resolve_layer(model) == ("2", model[2])
    assert first_conv(model) == ("0", model[0])
    assert conv_layers(model) == ["0", "2"] and feature_layers(model) == []


def test_no_conv_and_no_feature_info():
    with pytest.raises(ValueError, match="name a layer"):
        resolve_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="no convolutional layer"):
        first_conv(nn.Linear(4, 2))


# -- layers the CAM family cannot use: one line, not captum's or torch's internal text -------------
def test_a_layer_that_gives_vectors_is_refused_with_the_choices(tutorial):
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError) as e:
        check_map_layer(tutorial.eval(), "classifier.fc1", x)
    msg = str(e.value)
    assert msg.startswith("layer 'classifier.fc1' of TutorialCNN gives (N, 128), not (N, C, H, W) maps")
    assert "Grad-CAM needs a convolutional layer" in msg and "features.conv1" in msg and "\n" not in msg
    check_map_layer(tutorial, "features.relu1", x)  # a feature map passes


def test_a_layer_the_forward_pass_skips_is_refused(tutorial):
    """TutorialCNN calls the classifier's layers one by one, so the 'classifier' container never runs."""
    with pytest.raises(ValueError, match="layer 'classifier' does not run in TutorialCNN's forward pass"):
        check_map_layer(tutorial.eval(), "classifier", torch.zeros(1, 1, 8, 8))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("layer,says", [("classifier.fc1", "gives (N, 128)"), ("classifier.flatten", "gives (N, 128)"),
                                        ("classifier", "does not run")])
def test_attribute_says_why_a_layer_has_no_map(tutorial, method, layer, says):
    """Before: torch's 'Input and output must have the same number of spatial dimensions ...' or captum's
    AssertionError 'Forward hook did not obtain any outputs for given layer' (a traceback)."""
    with pytest.raises(ValueError, match=re.escape(says)) as e:
        attribute(tutorial.eval(), torch.rand(2, 1, 8, 8), method, layer=layer)
    assert "spatial dimensions" not in str(e.value) and "\n" not in str(e.value)


def test_unknown_method_lists_the_methods(tutorial):
    with pytest.raises(ValueError) as e:
        attribute(tutorial.eval(), torch.rand(1, 1, 8, 8), "foo")
    assert "unknown method 'foo'" in str(e.value) and "methods: " + ", ".join(METHODS) in str(e.value)
