"""``summarize``: hand-computed figures from the tutorials, known values from the literature, the JSON shape."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import convolab
from convolab.analysis import build_stack, format_side_by_side, parse_input, receptive_field, summarize, trace_model
from convolab.analysis.summary import looks_like_run


def test_tutorial_cnn_by_hand():
    """28x28 through conv 3x3 pad 1 (28), pool 2 (14), conv (14), pool (7); counts worked out by hand."""
    s = summarize("tutorial_cnn", (1, 28, 28), num_classes=10)
    shapes = {r.name: r.out_shape for r in s.trace.rows}
    assert shapes["features.conv1"] == (1, 16, 28, 28)
    assert shapes["features.pool1"] == (1, 16, 14, 14)
    assert shapes["features.conv2"] == (1, 32, 14, 14)
    assert shapes["features.pool2"] == (1, 32, 7, 7)
    conv1, conv2 = 1 * 16 * 9 + 16, 16 * 32 * 9 + 32
    fc1, fc2 = 32 * 7 * 7 * 128 + 128, 128 * 10 + 10
    assert s.totals()["params"] == conv1 + conv2 + fc1 + fc2 == 206_922
    macs = 28 * 28 * 16 * 9 + 14 * 14 * 32 * 16 * 9 + 32 * 7 * 7 * 128 + 128 * 10
    assert s.totals()["macs"] == macs and s.totals()["flops"] == 2 * macs
    # conv3 -> 3, pool2 -> 4 (jump 2), conv3 -> 4 + 2*2 = 8, pool2 -> 10 (jump 4)
    assert s.totals()["receptive_field"] == 10 and s.totals()["effective_stride"] == 4


def test_lenet5_parameters_by_hand():
    s = summarize("lenet5", (1, 32, 32), num_classes=10)
    expected = (6 * 25 + 6) + (16 * 6 * 25 + 16) + (16 * 5 * 5 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert s.totals()["params"] == expected == 61_706


def test_two_3x3_against_one_5x5():
    """The tutorials' claim: two stacked 3x3 convolutions see as far as one 5x5, with 18C^2 weights instead of 25C^2."""
    c = 64
    one, two = summarize("conv5", (c, 32, 32)), summarize("conv3,conv3", (c, 32, 32))
    assert one.totals()["receptive_field"] == two.totals()["receptive_field"] == 5
    assert one.totals()["params"] == 25 * c * c + c
    assert two.totals()["params"] == 18 * c * c + 2 * c
    assert two.totals()["macs"] == 18 * c * c * 32 * 32 < one.totals()["macs"] == 25 * c * c * 32 * 32
    table = format_side_by_side([one, two])
    assert "conv5" in table and "conv3,conv3" in table and "102,464" in table and "73,856" in table
    assert receptive_field([(3, 1), (3, 1)]).size == receptive_field([(5, 1)]).size == 5


@pytest.mark.parametrize("name,rf", [("alexnet", 195), ("vgg16", 212)])
def test_distill_table(name, rf):
    """Araujo et al. (Distill 2019) list AlexNet's receptive field as 195 and VGG-16's as 212, both with stride 32."""
    s = summarize(name, (3, 224, 224))
    assert s.totals()["receptive_field"] == rf
    assert s.totals()["effective_stride"] == 32


def test_resnet50_macs_match_torchvision_figure_and_torch_counter():
    """torchvision lists ResNet-50 at 4.09 GFLOPS (multiply-adds) for 224x224; torch's counter agrees exactly."""
    import torchvision

    s = summarize("resnet50", (3, 224, 224))
    assert round(s.totals()["macs"] / 1e9, 2) == 4.09
    with torch.device("meta"):
        tv = torchvision.models.resnet50()
    with FlopCounterMode(display=False) as counter:
        tv(torch.empty(1, 3, 224, 224, device="meta"))
    assert s.totals()["macs"] == counter.get_total_flops() // 2
    # torchvision's ResNet puts the stride in the 3x3 (v1.5): 427, not the 483 of Distill's TF-slim v1
    assert s.totals()["receptive_field"] == 427


def test_receptive_field_helper_matches_the_recursion():
    # AlexNet's feature extractor as (kernel, stride, dilation, padding)
    layers = [(11, 4, 1, 2), (3, 2), (5, 1, 1, 2), (3, 2), (3, 1, 1, 1), (3, 1, 1, 1), (3, 1, 1, 1), (3, 2)]
    rf = receptive_field(layers)
    assert (rf.size, rf.jump) == (195, 32)
    assert rf.size == summarize("alexnet", (3, 224, 224)).totals()["receptive_field"]
    assert receptive_field([(3, 1, 2)]).size == 5  # dilation 2 spans 5
    with pytest.raises(ValueError, match="kernel, stride"):
        receptive_field([(3,)])


def test_non_square_fields_are_lists():
    model = nn.Sequential(nn.Conv2d(1, 2, (3, 5)), nn.Conv2d(2, 2, (1, 3), stride=(1, 2)))
    s = summarize(model, (1, 20, 20))
    t = s.totals()
    assert t["receptive_field"] == [3, 7] and t["effective_stride"] == [1, 2]
    layer = s.layers()[0]
    assert layer["kernel_size"] == [3, 5] and layer["receptive_field"] == [3, 5]


def test_json_shape():
    s = summarize("resnet18", (3, 64, 64), num_classes=10)
    doc = json.loads(json.dumps(s.to_dict()))
    assert set(doc["totals"]) >= {"params", "macs", "flops", "activation_bytes", "receptive_field", "effective_stride"}
    layer = doc["layers"][0]
    assert set(layer) >= {"name", "type", "kernel_size", "stride", "padding", "dilation", "groups", "output_shape",
                          "params", "frozen_params", "macs", "activation_bytes", "receptive_field",
                          "effective_stride", "receptive_field_start"}
    assert layer["name"] == "conv1" and layer["kernel_size"] == 7 and layer["stride"] == 2 and layer["padding"] == 3
    assert sum(r["params"] for r in doc["layers"]) == doc["totals"]["params"]
    assert sum(r["macs"] for r in doc["layers"]) == doc["totals"]["macs"]


def test_depth_folds_rows_and_keeps_totals():
    s = summarize("resnet18", (3, 64, 64), num_classes=10)
    folded = s.layers(depth=1)
    names = [r["name"] for r in folded]
    assert names[:8] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    assert folded[4]["type"] == "Sequential"
    assert sum(r["params"] for r in folded) == s.totals()["params"]
    assert sum(r["macs"] for r in folded) == s.totals()["macs"]
    assert folded[7]["receptive_field"] == s.totals()["receptive_field"]


def test_frozen_parameters_are_counted_apart():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    model[0].requires_grad_(False)
    t = summarize(model, (3, 8, 8)).totals()
    assert t["frozen_params"] == 3 * 4 * 9 + 4 and t["trainable_params"] == 4 * 4 * 9 + 4


def test_peak_activation_memory_by_hand():
    """Inference frees each output once the next layer has read it; the input is held by the caller."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 2, 1))
    x, a, b, c = (n * 16 * 16 * 4 for n in (3, 8, 16, 2))
    t = summarize(model, (3, 16, 16)).totals()
    assert t["activation_bytes"] == x + max(a + b, b + c)
    assert t["output_activation_bytes"] == a + b + c


def test_input_too_small_names_the_layer_and_the_smallest_input():
    model = nn.Sequential(nn.Conv2d(1, 2, 5), nn.MaxPool2d(2), nn.Conv2d(2, 2, 5))
    with pytest.raises(ValueError) as e:
        summarize(model, (1, 10, 10))
    msg = str(e.value)
    # 10 -> 6 -> 3 -> collapses at the second conv (index 2); 12 -> 8 -> 4 -> 0 still collapses; 13 -> 9 -> 4 -> 0;
    # 14 -> 10 -> 5 -> 1 works.
    assert "collapses at 2" in msg and "smallest input that works is 1x14x14" in msg


def test_unknown_model_has_close_matches():
    with pytest.raises(ValueError, match="did you mean"):
        summarize("resnet5")


def test_a_loaded_run(digits_run):
    """A Run (what convolab.load_run returns) is analysed at its training size, named by its folder."""
    run = convolab.load_run(digits_run.run_dir)
    s = summarize(run)
    assert (s.name, s.input_shape) == ("run", (1, 8, 8))
    assert s.totals()["params"] == sum(p.numel() for p in run.model.parameters()) == digits_run.summary["params"]


def test_a_run_path_says_to_load_it_first(digits_run):
    """analysis does not read run folders (a lower layer than the run format): the caller loads the run."""
    assert looks_like_run(str(digits_run.run_dir)) and looks_like_run("w.safetensors")
    assert not looks_like_run("resnet18") and not looks_like_run("conv3,conv3")
    with pytest.raises(ValueError, match=r"a run directory or weights file; load it first and pass the run"):
        summarize(str(digits_run.run_dir))


def test_bad_stack_spec_says_how_to_write_it():
    with pytest.raises(ValueError, match="cannot read 'conv'"):
        build_stack("conv3,conv", 4)


def test_meta_trace_allocates_nothing_for_big_inputs():
    """Shapes only: ResNet-152 at 1024x1024 traces in the meta device (no 10 GB of activations)."""
    from convolab.models import create_model

    with torch.device("meta"):
        model = create_model("resnet152")
    trace, _ = trace_model(model, (3, 1024, 1024))
    assert trace.output_shape == (1, 1000)
    assert trace.peak_bytes > 100 * 2**20  # the figure is still computed


@pytest.mark.parametrize("spec, match", [
    ("pool2p2", "a pooling window of 2 takes a padding of at most 1, got 2"),
    ("pool7p7", "a pooling window of 7 takes a padding of at most 3, got 7"),
    ("avgpool3d2", "average pooling has no dilation"),
    ("conv0", "kernel size, stride and dilation must be 1 to 4096"),
    ("conv3s0", "kernel size, stride and dilation must be 1 to 4096"),
    ("conv99999999999999999999", "kernel size, stride and dilation must be 1 to 4096"),
])
def test_stack_values_torch_would_refuse_are_one_clear_error(spec, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        build_stack(spec, 3)


def test_stack_pooling_padding_at_torchs_limit_builds():
    for spec in ("pool2p1", "pool7p3", "pool3p1d2", "avgpool3p1"):
        model = build_stack(spec, 3)
        assert model(torch.zeros(1, 3, 9, 9)).shape[1] == 3  # torch accepts what the check lets through


@pytest.mark.parametrize("text", ["99999999999999999999x4x8", "3x99999999999999999999x8", "3,70000,8",
                                  "4096,4096,4096"])
def test_input_sizes_past_any_real_input_are_refused(text):
    with pytest.raises(ValueError, match=r"at most 65,536 per dimension and 2,147,483,648 values"):
        parse_input(text)


@pytest.mark.parametrize("target, shape, want", [("tutorial_cnn", (8, 8, 4, 4), "C,H,W: it takes images"),
                                                 ("conv3,conv3", (3, 4, 8, 8), "C,H,W: it takes images"),
                                                 ("c3d", (3, 16, 16), "C,T,H,W: it takes clips")])
def test_an_input_of_the_wrong_rank_names_what_the_model_takes(target, shape, want):
    with pytest.raises(ValueError, match=rf"does not fit {target}: give {re.escape(want)}"):
        summarize(target, shape)


def test_a_stack_whose_weights_would_take_gigabytes_is_refused_before_building():
    with pytest.raises(ValueError, match=r"'conv4000' brings its weights past 268,435,456"):
        build_stack("conv3,conv4000", 64)  # 64 * 64 * 4000 * 4000 weights: 262 GB
