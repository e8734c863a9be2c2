"""The sanity checks, and the figures the issue asks for on a model trained on Fashion-MNIST."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convolab
from convolab.explain.sanity import (
    deletion_insertion,
    ig_completeness,
    parameter_randomization,
    randomized_copy,
    rank_correlation,
)
from convolab.models import create_model


def test_rank_correlation_against_scipy_free_reference():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    b = torch.tensor([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]])
    np.testing.assert_allclose(rank_correlation(a, b), [1.0, -1.0])
    assert rank_correlation(torch.ones(1, 4), torch.rand(1, 4))[0] == 0.0  # a constant map has no ranking


def test_randomized_copy_changes_every_layer_and_keeps_the_original():
    model = create_model("resnet20", num_classes=3, in_chans=1, input_size=16).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rand = randomized_copy(model, seed=1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    changed = [k for k, v in rand.state_dict().items()
               if k.endswith("weight") and before[k].dim() > 1 and not torch.equal(v, before[k])]
    assert len(changed) == len([k for k, v in before.items() if k.endswith("weight") and v.dim() > 1])


def test_deletion_ranks_a_faithful_map_above_random():
    """A linear model's true attribution (w * x) deletes the class faster than a random order."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)).eval()
    x = torch.rand(8, 1, 8, 8)
    maps = (model[1].weight[1] - model[1].weight[0]).view(1, 1, 8, 8) * x
    r = deletion_insertion(model, x, maps.clamp_min(0), target=1)
    assert r["deletion_auc"] < r["random_deletion_auc"]
    assert r["insertion_auc"] > r["random_insertion_auc"]


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fm") / "run"
    convolab.train(model="tutorial_cnn", data="fashion-mnist", epochs=1, out=str(out), progress=False, plots=False,
                   device="cpu", data_dir="/usr/share/datasets/fashion-mnist")
    run = convolab.load_run(out)
    data = convolab.load_dataset("fashion-mnist", data_dir="/usr/share/datasets/fashion-mnist")
    return run, run.preprocess(list(data.test.images[:32]))


@pytest.mark.slow
def test_gradcam_fails_to_survive_randomization(fashion_run):
    """Adebayo et al.: trained and randomized Grad-CAM maps must differ (rank correlation well below 0.5)."""
    run, x = fashion_run
    r = parameter_randomization(run.model, x, "gradcam")
    assert r["mean_correlation"] < 0.3, r["mean_correlation"]


@pytest.mark.slow
def test_integrated_gradients_gap_with_default_steps(fashion_run):
    run, x = fashion_run
    r = ig_completeness(run.model, x)
    assert r["max_gap"] < 0.05, r["max_gap"]


@pytest.mark.slow
def test_integrated_gradients_are_faithful(fashion_run):
    run, x = fashion_run
    ig = ig_completeness(run.model, x)["attributions"]
    r = deletion_insertion(run.model, x, ig)
    assert r["deletion_auc"] < r["random_deletion_auc"] and r["insertion_auc"] > r["random_insertion_auc"]
