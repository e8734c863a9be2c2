"""The shared model surface, checked on every registered model, for each input kind.

forward + backward at small input shapes, and the contract the trainer, analysis and explanation
code rely on: ``forward_features`` / ``forward_head`` / ``get_classifier`` / ``reset_classifier`` /
``feature_info`` / ``set_grad_checkpointing``. Image and clip models give logits (N, num_classes)
from (N, C, H, W) images or (N, C, T, H, W) clips; segmentation models give per-pixel logits
(N, num_classes, H, W) (``convolab.models._base`` states the contract).
"""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from tests.zoo import BIG, big_model_marks, params_at_default
from torch import nn

import convolab.layers.checkpoint as checkpoint_module
from convolab.models import create_model, get_model_entry, list_models

# Small inputs: one intra-op thread (tests/models/conftest.py); on this shared CPU two threads spin
# against each other and made the file several times slower.
pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = 5_000_000  # the checkpointing test (two models, two backward passes) runs fast only below this

# Narrow forms of big models, built through the models' own width options: the fast suite runs them
# through every test here, so each input kind is covered there; the full-size models run in the slow suite.
NARROW = {
    "unet": dict(base_channels=8),
    "c3d": dict(widths=(8, 16, 32, 32, 32), fc_width=64),
    "r3d_18": dict(widths=(8, 16, 32, 64)),
}


@functools.cache
def _meta_facts(name: str) -> tuple[int, str, bool]:
    """Parameters at the usual configuration, the model's class, whether it has a checkpointing switch."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = create_model(name, **get_model_entry(name).default_cfg)
    return params_at_default(name), type(model).__name__, hasattr(model, "set_grad_checkpointing")


def _model_params() -> list:
    params = []
    for name in list_models():
        # above BIG parameters: the slow suite for the smallest of a family, make test-full for the rest (tests/zoo.py)
        params.append(pytest.param(name, {}, id=name, marks=big_model_marks(name)))
        if name in NARROW:
            params.append(pytest.param(name, NARROW[name], id=f"{name}-narrow"))
    return params


MODELS = _model_params()
NUM_CLASSES = 7
# (frames, side, channels) per input kind; frames is None for images. Odd sides where a kind must handle them.
SHAPES = {
    "image": [(None, 28, 1), (None, 32, 3), (None, 8, 1)],
    "segmentation": [(None, 28, 1), (None, 33, 3)],  # U-Net's four pools need 16 px; odd sizes must round-trip
    "clip": [(8, 28, 1), (4, 32, 3)],
}


def _shape_id(frames: int | None, side: int, chans: int) -> str:
    return f"{frames}x{side}x{side}x{chans}" if frames else f"{side}x{side}x{chans}"


def _cases() -> list:
    """(name, kwargs, frames, side, chans) for every model and every shape of its input kind."""
    cases = []
    for p in MODELS:
        name, kwargs = p.values
        for frames, side, chans in SHAPES[get_model_entry(name).input_kind]:
            cases.append(pytest.param(name, kwargs, frames, side, chans, marks=p.marks,
                                      id=f"{p.id}-{_shape_id(frames, side, chans)}"))
    return cases


CASES = _cases()


def build(name: str, kwargs: dict, frames: int | None, side: int, chans: int, num_classes: int = NUM_CLASSES):
    size = (frames, side, side) if frames else side
    return create_model(name, num_classes=num_classes, in_chans=chans, input_size=size, **kwargs)


def batch(n: int, frames: int | None, side: int, chans: int) -> torch.Tensor:
    """(n, C, H, W) images, or (n, C, T, H, W) clips."""
    return torch.randn(n, chans, *((frames,) if frames else ()), side, side)


def is_segmentation(name: str) -> bool:
    return get_model_entry(name).input_kind == "segmentation"


def _lenet_padded(h: int) -> int:
    """LeNet-5 pads inputs below 32 by ceil((32 - h) / 2) on each side (the module docstring)."""
    return h + 2 * max(0, math.ceil((32 - h) / 2))


# The spatial side of each feature_info map for a square input of side h, derived by hand from the
# layer lists (conv k3 pad 1 keeps the size, k3 unpadded takes 2 off, k5 unpadded takes 4 off,
# 2x2 pooling floors the half).
EXPECTED_MAP_SIDES = {
    "tutorial_cnn": lambda h: [h // 2, h // 2 // 2],
    "mnist_cnn": lambda h: [h - 2, (h - 4) // 2],
    "lenet5": lambda h: [(_lenet_padded(h) - 4) // 2, ((_lenet_padded(h) - 4) // 2 - 4) // 2],
    "lenet5_classic": lambda h: [(_lenet_padded(h) - 4) // 2, ((_lenet_padded(h) - 4) // 2 - 4) // 2],
}


def test_registry_holds_the_four_tutorial_models():
    assert {"tutorial_cnn", "mnist_cnn", "lenet5", "lenet5_classic"} <= set(EXPECTED_MAP_SIDES) <= set(list_models())


def test_every_input_kind_is_covered_by_the_fast_suite():
    kinds = {get_model_entry(name).input_kind for name in list_models()}
    assert kinds == set(SHAPES) == {"image", "clip", "segmentation"}
    fast = {get_model_entry(p.values[0]).input_kind for p in MODELS if not p.marks}
    assert fast == kinds
    # The narrow forms really are narrow (fast), and the full-size forms are the big ones.
    for name, kwargs in NARROW.items():
        with torch.device("meta"):
            model = create_model(name, **get_model_entry(name).default_cfg, **kwargs)
        assert sum(p.numel() for p in model.parameters()) < SMALL < BIG < params_at_default(name)


def test_ci_checks_a_full_size_model_of_every_family_with_big_models():
    """Each family with models above BIG keeps exactly one of them in CI (slow, not exhaustive): its smallest
    model, unless a smaller one of the family already runs in the fast suite, which leaves none."""
    big = [p for p in MODELS if p.marks]
    in_ci = {p.values[0] for p in big if not any(m.name == "exhaustive" for m in p.marks)}
    for family in {get_model_entry(p.values[0]).family for p in big}:
        members = sorted((params_at_default(n), n) for n in list_models() if get_model_entry(n).family == family)
        smallest = members[0][1]
        expected = {smallest} if params_at_default(smallest) > BIG else set()
        assert {n for n in in_ci if get_model_entry(n).family == family} == expected, family


@pytest.mark.parametrize("name,kwargs,frames,side,chans", CASES)
def test_forward_backward_every_parameter_gets_a_gradient(name, kwargs, frames, side, chans):
    torch.manual_seed(0)
    model = build(name, kwargs, frames, side, chans).train()
    x = batch(8, frames, side, chans)
    if is_segmentation(name):  # one label per pixel
        y = torch.randint(0, NUM_CLASSES, (8, side, side), generator=torch.Generator().manual_seed(0))
        expected = (8, NUM_CLASSES, side, side)
    else:
        y = torch.arange(8) % NUM_CLASSES
        expected = (8, NUM_CLASSES)
    out = model(x)
    assert out.shape == expected
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    F.cross_entropy(out, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert p.grad.shape == p.shape
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} has an all-zero gradient"


@pytest.mark.parametrize("name,kwargs,frames,side,chans", CASES)
def test_classifier_contract(name, kwargs, frames, side, chans):
    torch.manual_seed(0)
    model = build(name, kwargs, frames, side, chans).eval()
    expected_size = (frames, side, side) if frames else (side, side)
    assert (model.num_classes, model.in_chans, tuple(model.input_size)) == (NUM_CLASSES, chans, expected_size)
    segmentation = is_segmentation(name)
    x = batch(3, frames, side, chans)
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
        kept = feats.clone()
        head = model.forward_head(feats)
        pre = model.forward_head(feats, pre_logits=True)
    assert feats.dim() == x.dim() and feats.shape[0] == 3, "forward_features must return an unpooled map"
    assert torch.equal(feats, kept), "forward_head must not modify the feature map it is given (inplace ReLU?)"
    fc = model.get_classifier()
    if segmentation:
        # The head scores every position of the feature map; forward brings the scores to the input's size.
        assert head.shape == (3, NUM_CLASSES, *feats.shape[-2:])
        resized = head if head.shape[-2:] == x.shape[-2:] else F.interpolate(
            head, size=x.shape[-2:], mode="bilinear", align_corners=False)
        torch.testing.assert_close(resized, logits, rtol=0, atol=0)
        assert isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1)
        assert fc.out_channels == NUM_CLASSES
        assert pre.shape == (3, fc.in_channels, *feats.shape[-2:])
        width = fc.in_channels
    else:
        assert torch.equal(head, logits)
        assert isinstance(fc, nn.Linear)
        assert fc.out_features == NUM_CLASSES
        assert pre.shape == (3, fc.in_features)
        width = fc.in_features
    torch.testing.assert_close(fc(pre), head, rtol=0, atol=0)

    model.reset_classifier(5)
    assert model.num_classes == 5
    new = model.get_classifier()
    assert type(new) is type(fc)
    if segmentation:
        assert (new.out_channels, new.in_channels) == (5, width)
    else:
        assert (new.out_features, new.in_features) == (5, width)
    with torch.no_grad():
        assert model(x).shape == ((3, 5, side, side) if segmentation else (3, 5))
        # The layers before the classifier are untouched by the reset.
        assert torch.equal(model.forward_head(model.forward_features(x), pre_logits=True), pre)


@pytest.mark.parametrize("name,kwargs,frames,side,chans", CASES)
def test_feature_info_modules_give_maps_of_the_stated_channels_and_stride(name, kwargs, frames, side, chans):
    torch.manual_seed(0)
    model = build(name, kwargs, frames, side, chans).eval()
    modules = dict(model.named_modules())
    info = model.feature_info
    assert info, f"{name} has no feature_info"
    assert all(set(i) >= {"module", "num_chs", "reduction"} for i in info)
    if frames:
        assert all("temporal_reduction" in i for i in info), "clip models give the stride along T too"
    for i in info:
        assert i["module"] in modules, f"{name}: feature_info names {i['module']!r}, not a submodule"
    reductions = [i["reduction"] for i in info]
    assert reductions == sorted(reductions), "feature_info goes from shallow to deep"

    def maps_for(t: int | None, s: int) -> list[torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        hooks = [modules[i["module"]].register_forward_hook(
            lambda _m, _inp, out, key=i["module"]: captured.__setitem__(key, out.detach().clone())) for i in info]
        try:
            with torch.no_grad():
                model.forward_features(batch(2, t, s, chans))
        finally:
            for h in hooks:
                h.remove()
        return [captured[i["module"]] for i in info]

    maps = maps_for(frames, side)
    # A model without hand-derived sizes here still gets the channel and stride checks.
    expected_sides = EXPECTED_MAP_SIDES[name](side) if name in EXPECTED_MAP_SIDES else [None] * len(info)
    for i, fmap, expected_side in zip(info, maps, expected_sides):
        assert fmap.dim() == (5 if frames else 4) and fmap.shape[:2] == (2, i["num_chs"]), f"{name}: {i['module']}"
        if expected_side is not None:
            assert tuple(fmap.shape[2:]) == (expected_side, expected_side), f"{name}: {i['module']} at {side}"
        if name == "tutorial_cnn":  # padded convolutions: the map is exactly input // reduction
            assert fmap.shape[2] == side // i["reduction"]
    # `reduction` is the cumulative stride (timm's meaning): widening the input by `reduction` pixels
    # widens that map by exactly one, by 2 * reduction by exactly two. Unpadded convolutions
    # (mnist_cnn, lenet5) make the map smaller than input / reduction, not the stride different.
    # Clips: the same along T with `temporal_reduction`.
    top = max(reductions)
    top_t = max(i["temporal_reduction"] for i in info) if frames else 0
    for k in (1, 2):
        wider = maps_for(frames and frames + k * top_t, side + k * top)
        for i, fmap, fwide in zip(info, maps, wider):
            step = k * top // i["reduction"]
            assert fwide.shape[-1] - fmap.shape[-1] == step, f"{name}: {i['module']} stride is not {i['reduction']}"
            if frames:
                t_step = k * top_t // i["temporal_reduction"]
                assert fwide.shape[2] - fmap.shape[2] == t_step, f"{name}: {i['module']} temporal stride"


CHECKPOINTING_SHAPE = {"image": (None, 8, 1), "segmentation": (None, 28, 1), "clip": (4, 28, 1)}  # small, cheap


def _checkpointing_cases() -> list:
    """One model per class that has the switch (each class writes its own checkpointed path): the
    smallest at its usual configuration, plus the narrow forms. Above SMALL parameters, the slow suite
    runs it (the family's own tests check those classes' checkpointing in the fast suite)."""
    smallest: dict[str, tuple[int, str]] = {}
    for name in list_models():
        count, cls, switch = _meta_facts(name)
        if switch:
            smallest[cls] = min(smallest.get(cls, (count, name)), (count, name))
    cases = []
    for count, name in sorted(smallest.values(), key=lambda v: v[1]):
        marks = [pytest.mark.slow] if count > SMALL else []
        cases.append(pytest.param(name, {}, marks=marks, id=name))
        if name in NARROW:
            cases.append(pytest.param(name, NARROW[name], id=f"{name}-narrow"))
    return cases


@pytest.mark.parametrize("name,kwargs", _checkpointing_cases())
def test_grad_checkpointing_leaves_outputs_and_gradients_unchanged(name, kwargs, monkeypatch):
    frames, side, chans = CHECKPOINTING_SHAPE[get_model_entry(name).input_kind]
    torch.manual_seed(0)
    model = build(name, kwargs, frames, side, chans).train()
    ckpt = copy.deepcopy(model)
    ckpt.set_grad_checkpointing(True)
    x = batch(2, frames, side, chans)
    calls = []  # every family checkpoints through convolab.layers: count, so a no-op switch fails

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "checkpoint", counting_checkpoint)

    def run(m: nn.Module) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        torch.manual_seed(1)  # the same dropout masks (checkpoint replays the RNG state in the recomputation)
        out = m(x)
        out.square().mean().backward()
        return out.detach(), {k: p.grad for k, p in m.named_parameters()}

    out, grads = run(model)
    assert not calls, "checkpointing must be off by default"
    out_c, grads_c = run(ckpt)
    assert calls, f"{name}: set_grad_checkpointing(True) checkpointed nothing"
    torch.testing.assert_close(out_c, out)
    assert grads.keys() == grads_c.keys()
    for k in grads:
        torch.testing.assert_close(grads_c[k], grads[k], msg=k)
