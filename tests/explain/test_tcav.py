"""TCAV on a model whose class is defined by a visual concept: stripes.

Class 1 images hold a bright horizontal stripe over noise; class 0 images hold the same number of
bright pixels, scattered. A small CNN learns to tell them apart, so the stripe concept must push
class 1 up (score near 1, significant) and class 0 down (score near 0, significant), while a
concept made of random images like the random folders must not be significant.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convolab.explain.tcav import MIN_CONCEPT_IMAGES, tcav, tcav_figure
from convolab.models import create_model

S = 12  # image side
_MEAN, _STD = 0.4, 0.3


def _noise(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, 1, S, S, generator=g) * 0.5


def dots(n: int, g: torch.Generator) -> torch.Tensor:
    """Noise with S bright pixels at random places (class 0, and the random images)."""
    x = _noise(n, g)
    for i in range(n):
        x[i, 0].view(-1)[torch.randperm(S * S, generator=g)[:S]] = 1.0
    return x


def stripes(n: int, g: torch.Generator) -> torch.Tensor:
    """Noise with one bright row of S pixels (class 1, and the concept)."""
    x = _noise(n, g)
    x[torch.arange(n), 0, torch.randint(0, S, (n,), generator=g), :] = 1.0
    return x


def norm(x: torch.Tensor) -> torch.Tensor:
    return (x - _MEAN) / _STD


@pytest.fixture(scope="module")
def striped_model():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = create_model("tutorial_cnn", num_classes=2, in_chans=1, input_size=(S, S))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    y = torch.cat([torch.zeros(32), torch.ones(32)]).long()
    for _ in range(150):
        loss = F.cross_entropy(model(norm(torch.cat([dots(32, g), stripes(32, g)]))), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        test = norm(torch.cat([dots(100, g), stripes(100, g)]))
        accuracy = (model(test).argmax(1) == torch.cat([torch.zeros(100), torch.ones(100)])).float().mean()
    assert accuracy > 0.97
    return model


@pytest.fixture(scope="module")
def sets():
    g = torch.Generator().manual_seed(100)
    return dict(concepts={"stripes": norm(stripes(20, g)), "random": norm(dots(20, g))},
                randoms={f"random{i}": norm(dots(20, g)) for i in range(6)},
                striped=norm(stripes(100, g)), dotted=norm(dots(100, g)))


@pytest.fixture(scope="module")
def on_stripes(striped_model, sets, tmp_path_factory):
    return tcav(striped_model, sets["striped"], sets["concepts"], sets["randoms"], target=1, layers="features.relu1",
                target_name="stripe", batch_size=32)


def test_the_stripe_concept_drives_the_stripe_class(on_stripes):
    stripe, random = on_stripes.scores
    assert stripe.concept == "stripes" and stripe.layer == "features.relu1"
    assert len(stripe.scores) == 6 and len(stripe.random_scores) == 6 * 5  # every ordered pair of random sets
    assert stripe.mean > 0.9 and stripe.significant and stripe.p_value < 1e-3
    # The layer separates stripes from scattered dots. Each CAV is scored on 14 held-out images, so one image is
    # 7 points; the trained model's float rounding differs between CPUs (one image was misread on an AVX2 CPU).
    assert np.mean(stripe.cav_accuracies) > 0.9 and min(stripe.cav_accuracies) > 0.8
    assert abs(stripe.random_mean - 0.5) < 0.15  # a random direction is a coin flip on average
    assert stripe.separable and len(stripe.random_cav_accuracies) == 30
    assert random.concept == "random" and not random.significant and random.p_value > 0.05
    assert np.mean(random.cav_accuracies) < 0.75 and not random.separable  # random images are not a concept
    assert on_stripes.alpha_corrected == pytest.approx(0.05 / 2)  # Bonferroni over the two concepts


def test_the_stripe_concept_pushes_the_other_class_down(striped_model, sets):
    res = tcav(striped_model, sets["dotted"], {"stripes": sets["concepts"]["stripes"]}, sets["randoms"], target=0,
               layers="features.relu1")
    (stripe,) = res.scores
    assert stripe.mean < 0.1 and stripe.significant and res.alpha_corrected == 0.05


def test_scores_match_directional_derivatives_by_hand(striped_model, sets, on_stripes):
    """The score is the share of inputs whose logit gradient at the layer has a positive dot product with the CAV."""
    a = striped_model.features[:3](sets["striped"]).detach().requires_grad_(True)  # features.relu1's output
    logit = striped_model.forward_head(striped_model.features[3:](a))[:, 1]
    (grad,) = torch.autograd.grad(logit.sum(), a)  # rows are independent: the sum's gradient is each row's
    grad = grad.flatten(1)  # (N, F)
    stripe = on_stripes.scores[0]
    for cav, score in zip(stripe.cavs, stripe.scores):
        assert cav.shape == (grad.shape[1],) and float(cav.norm()) == pytest.approx(1)
        assert float((grad @ cav > 0).float().mean()) == pytest.approx(score, abs=1e-6)


def test_result_as_dict_and_figure(on_stripes):
    doc = on_stripes.to_dict()
    assert doc["target"] == 1 and doc["target_name"] == "stripe" and doc["inputs"] == 100 and doc["tests"] == 2
    first = doc["results"][0]
    assert first["concept"] == "stripes" and first["significant"] is True
    assert first["score"] == pytest.approx(np.mean(first["scores"])) and first["separable"] is True
    assert "cavs" not in first
    fig = tcav_figure(on_stripes)
    assert "TCAV for class 'stripe'" in fig.axes[0].get_title()


def test_progress_on_a_terminal_unless_quiet(striped_model, sets, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    few = {k: v for k, v in list(sets["randoms"].items())[:2]}
    for progress in (True, False):
        monkeypatch.setattr(sys, "stderr", Terminal())
        tcav(striped_model, sets["striped"][:10], {"stripes": sets["concepts"]["stripes"]}, few, target=1,
             batch_size=5, progress=progress)
        assert ("tcav" in sys.stderr.getvalue() and "/3 [" in sys.stderr.getvalue()) is progress


def test_a_layer_the_forward_pass_skips_is_one_line(striped_model, sets):
    """captum's AssertionError 'Forward hook did not obtain any outputs for given layer' before."""
    few = {k: v for k, v in list(sets["randoms"].items())[:2]}
    with pytest.raises(ValueError, match="layer 'classifier' does not run in TutorialCNN's forward pass, so TCAV"):
        tcav(striped_model, sets["striped"][:4], {"stripes": sets["concepts"]["stripes"]}, few, target=1,
             layers="classifier", progress=False)


def test_nothing_is_written_to_the_working_directory(striped_model, sets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    few = {k: v for k, v in list(sets["randoms"].items())[:2]}
    tcav(striped_model, sets["striped"][:10], {"stripes": sets["concepts"]["stripes"]}, few, target=1)
    assert list(tmp_path.iterdir()) == []


def test_a_segmentation_model_is_refused():
    model = create_model("unet", num_classes=2, in_chans=1, input_size=16, depth=2).eval()
    x = torch.zeros(20, 1, 16, 16)
    with pytest.raises(ValueError, match="needs a classifier's logits"):
        tcav(model, x[:2], {"c": x}, {"a": x, "b": x}, target=1, layers="inc")


@pytest.mark.parametrize("change,match", [
    (dict(concepts={"stripes": torch.zeros(MIN_CONCEPT_IMAGES - 1, 1, S, S)}),
     f"concept 'stripes' has 9 images; TCAV needs at least {MIN_CONCEPT_IMAGES}"),
    (dict(random_sets={"r": torch.zeros(20, 1, S, S)}), "needs at least 2 random sets, got 1"),
    (dict(layers="features.relu9"), "unknown layer 'features.relu9'"),
    (dict(target=2), "target 2 is out of range: the model has 2 classes"),
    (dict(alpha=1.5), "alpha must be between 0 and 1"),
])
def test_bad_arguments(striped_model, change, match):
    args = dict(inputs=torch.zeros(4, 1, S, S), concepts={"stripes": torch.zeros(20, 1, S, S)},
                random_sets={"a": torch.zeros(20, 1, S, S), "b": torch.zeros(20, 1, S, S)}, target=1)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        tcav(striped_model, **args)
