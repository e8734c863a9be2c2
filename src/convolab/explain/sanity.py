"""Sanity checks: evidence that an attribution map says something about the model.

(a) ``parameter_randomization``: Adebayo et al., "Sanity Checks for Saliency Maps" (2018). A map
    that barely changes when the trained weights are replaced by fresh random ones explains the
    input, not the model. The rank correlation (Spearman) between the two maps should be low.
(b) ``ig_completeness``: integrated gradients' attributions sum to y_c(x) - y_c(baseline)
    (Sundararajan et al. 2017, Prop. 1); the relative gap measures the integration error.
(c) ``cam_gradcam_agreement``: for a global-average-pool + linear head, Grad-CAM's weights are the
    classifier's row divided by h*w, so the two maps agree up to a positive scale.
(d) ``deletion_insertion``: faithfulness (Petsiuk et al., RISE, 2018): delete the most important
    pixels first and the class probability should fall fast (low deletion area); insert them into
    the baseline first and it should rise fast (high insertion area). Random orderings are the
    reference.

Each check gets a verdict computed from its numbers and their spread (:func:`sanity_checks`), and
each method a trust verdict from the checks it went through: a map that survives randomization of
the weights, or deletes the class no faster than a random order, does not explain this model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from convolab.explain.attribution import (
    CAM_METHODS,
    IG_STEPS,
    _targets,
    _upsample,
    attribute,
    cam,
    integrated_gradients_gap,
)

__all__ = ["randomized_copy", "rank_correlation", "parameter_randomization", "ig_completeness",
           "cam_gradcam_agreement", "deletion_insertion", "pixel_importance", "sanity_checks", "SANITY_METHODS",
           "RANDOMIZATION_SEEDS", "RANDOMIZATION_THRESHOLD", "COMPLETENESS_THRESHOLD", "CAM_TOLERANCE"]

RANDOMIZATION_SEEDS = 5  # re-initialisations averaged: one draw swung from -0.08 to 0.56 on a resnet20
RANDOMIZATION_THRESHOLD = 0.5  # a map whose rank correlation with the random model's stays above this fails
COMPLETENESS_THRESHOLD = 0.05  # integrated gradients' largest relative completeness gap that passes
CAM_TOLERANCE = 1e-3  # CAM and Grad-CAM (each scaled to 1) must agree this closely: they are equal in exact arithmetic
SANITY_METHODS = ("gradcam", "saliency", "integrated-gradients", "occlusion")  # what the report checks


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy with every layer re-initialized by its own ``reset_parameters`` (BatchNorm statistics too)."""
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        for m in clone.modules():
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return clone.eval()


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman rank correlation per sample of two batches of maps (a constant map correlates 0)."""
    from scipy.stats import spearmanr

    out = []
    for x, y in zip(a.flatten(1).double().cpu().numpy(), b.flatten(1).double().cpu().numpy()):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            out.append(0.0)
            continue
        out.append(float(spearmanr(x, y).statistic))
    return np.array(out)


def pixel_importance(maps: torch.Tensor) -> torch.Tensor:
    """``[N, H, W]`` importance per pixel: CAM maps as they are, pixel attributions as sum_c |a_c|."""
    return maps if maps.dim() == 3 else maps.abs().sum(1)


def parameter_randomization(model: nn.Module, x: torch.Tensor, method: str, target=None, layer: str | None = None,
                            seed: int = 0, *, seeds: Sequence[int] | None = None, **kwargs) -> dict:
    """Maps of the trained model and of randomized copies, and their rank correlation, over several seeds.

    One re-initialisation on a few images is a noisy figure, so the maps of ``seeds`` re-initialised
    copies (default: ``RANDOMIZATION_SEEDS`` seeds from ``seed``) are each compared with the trained
    model's. Returns ``mean_correlation`` and ``std_correlation``: the mean and standard deviation over
    seeds of the per-seed mean over the sample; ``seed_correlations`` the per-seed means;
    ``correlation`` each sample's mean over seeds; ``randomized`` the first seed's maps; ``verdict``
    ("passes", "fails" or "inconclusive": mean ± std on both sides of ``RANDOMIZATION_THRESHOLD``).
    """
    seeds = list(range(seed, seed + RANDOMIZATION_SEEDS)) if seeds is None else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("parameter_randomization needs at least one seed")
    tgt = _targets(model, x, target)
    trained = attribute(model, x, method, tgt, layer, **kwargs)
    importance = pixel_importance(trained)
    per_seed, randomized = [], None
    for s in seeds:
        maps = attribute(randomized_copy(model, s), x, method, tgt, layer, **kwargs)
        per_seed.append(rank_correlation(importance, pixel_importance(maps)))
        randomized = maps if randomized is None else randomized
    corr = np.stack(per_seed)  # (seeds, N)
    seed_means = corr.mean(1)
    mean = float(seed_means.mean())
    std = float(seed_means.std(ddof=1)) if len(seeds) > 1 else 0.0
    return {"method": method, "seeds": seeds, "correlation": corr.mean(0).tolist(),
            "seed_correlations": seed_means.tolist(), "mean_correlation": mean, "std_correlation": std,
            "verdict": _randomization_verdict(mean, std), "trained": trained, "randomized": randomized}


def _randomization_verdict(mean: float, std: float) -> str:
    if mean + std < RANDOMIZATION_THRESHOLD:
        return "passes"
    if mean - std >= RANDOMIZATION_THRESHOLD:
        return "fails"
    return "inconclusive"


def ig_completeness(model: nn.Module, x: torch.Tensor, target=None, steps: int = IG_STEPS,
                    baseline: torch.Tensor | float = 0.0) -> dict:
    """Integrated gradients and their completeness gap per sample (see the module docstring)."""
    tgt = _targets(model, x, target)
    attr = attribute(model, x, "integrated-gradients", tgt, baseline=baseline, steps=steps)
    gap = integrated_gradients_gap(model, x, attr, tgt, baseline)
    std = float(gap.std()) if len(gap) > 1 else 0.0
    return {"steps": steps, "gap": gap.tolist(), "max_gap": float(gap.max()), "mean_gap": float(gap.mean()),
            "std_gap": std, "verdict": "passes" if float(gap.max()) < COMPLETENESS_THRESHOLD else "fails",
            "attributions": attr}


def cam_gradcam_agreement(model: nn.Module, x: torch.Tensor, target=None) -> dict:
    """Largest difference between CAM and Grad-CAM, each scaled to a maximum of 1 (ReLU applied to CAM)."""
    tgt = _targets(model, x, target)
    # ReLU at the feature map's resolution, then the same bilinear upsampling as Grad-CAM's
    c = _upsample(torch.relu(cam(model, x, tgt, upsample=False)), x.shape[-2:])
    g = attribute(model, x, "gradcam", tgt)

    def unit(m):
        return m / m.flatten(1).amax(1).clamp_min(1e-30)[:, None, None]

    diff = (unit(c) - unit(g)).abs().flatten(1).amax(1)
    return {"max_abs_difference": float(diff.max()), "per_sample": diff.tolist(),
            "verdict": "passes" if float(diff.max()) < CAM_TOLERANCE else "fails"}


@torch.no_grad()
def deletion_insertion(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target=None, steps: int = 16,
                       baseline: float = 0.0, seed: int = 0) -> dict:
    """Areas under the deletion and insertion curves of the target's probability, against random orders.

    ``maps``: ``[N, H, W]`` or ``[N, C, H, W]`` attributions for ``x``. Pixels are removed (set to
    ``baseline`` in every channel) or inserted in order of importance, in ``steps`` equal chunks.
    Returns the mean areas over the sample, each sample's (``per_sample``), and a verdict for each
    curve from the paired differences with the random order: "better than random" or "worse than
    random" when the mean difference is more than two standard errors from 0, else "no better than
    random"; ``deletion_margin`` and ``insertion_margin`` are those differences (positive: better),
    with their standard errors.
    """
    tgt = _targets(model, x, target)
    importance = pixel_importance(maps).flatten(1)  # (N, H*W)
    n, c, h, w = x.shape
    g = torch.Generator().manual_seed(seed)
    rand_order = torch.stack([torch.randperm(h * w, generator=g) for _ in range(n)]).to(x.device)
    order = importance.argsort(dim=1, descending=True)
    fractions = torch.linspace(0, 1, steps + 1)

    def curve(order: torch.Tensor, insert: bool) -> torch.Tensor:
        probs = []
        for f in fractions:
            k = int(round(float(f) * h * w))
            mask = torch.zeros(n, h * w, device=x.device, dtype=torch.bool)
            if k:
                mask.scatter_(1, order[:, :k], True)
            mask = mask.view(n, 1, h, w)
            if insert:
                img = torch.where(mask, x, torch.full_like(x, baseline))
            else:
                img = torch.where(mask, torch.full_like(x, baseline), x)
            probs.append(model(img).softmax(1).gather(1, tgt[:, None])[:, 0])
        p = torch.stack(probs, 1)  # (N, steps + 1)
        return torch.trapezoid(p, dx=1.0 / steps, dim=1)

    out = {"deletion_auc": curve(order, False), "insertion_auc": curve(order, True),
           "random_deletion_auc": curve(rand_order, False), "random_insertion_auc": curve(rand_order, True)}
    result: dict = {k: float(v.mean()) for k, v in out.items()}
    result["per_sample"] = {k: v.tolist() for k, v in out.items()}
    for name, better in (("deletion", out["random_deletion_auc"] - out["deletion_auc"]),  # lower is better
                         ("insertion", out["insertion_auc"] - out["random_insertion_auc"])):  # higher is better
        d = better.double().cpu()
        se = float(d.std() / math.sqrt(len(d))) if len(d) > 1 else 0.0
        result[f"{name}_margin"], result[f"{name}_margin_se"] = float(d.mean()), se
        result[f"{name}_verdict"] = _against_random(float(d.mean()), se)
    return result


def _against_random(margin: float, se: float) -> str:
    if margin - 2 * se > 0:
        return "better than random"
    if margin + 2 * se < 0:
        return "worse than random"
    return "no better than random"


def _trust(checks: list[tuple[str, str]]) -> tuple[str, str]:
    """(verdict, reason) of a method from its checks' (name, verdict) pairs."""
    bad = [f"{name} {v}" for name, v in checks if v in ("fails", "worse than random")]
    unsure = [f"{name} {v}" for name, v in checks if v in ("inconclusive", "no better than random")]
    if bad:
        return "not trusted", "; ".join(bad + unsure)
    if unsure:
        return "uncertain", "; ".join(unsure)
    return "trusted", "passes every check"


def sanity_checks(model: nn.Module, x: torch.Tensor, methods: Sequence[str] = SANITY_METHODS, *,
                  seeds: Sequence[int] | None = None, step: Callable[[str], None] | None = None) -> dict:
    """Every sanity check on the sample ``x`` for ``methods``, each with its verdict, and a trust verdict per method.

    Returns ``randomization`` and ``faithfulness`` (method -> the result of :func:`parameter_randomization`
    / :func:`deletion_insertion`), ``completeness`` (:func:`ig_completeness`), ``cam`` (the result of
    :func:`cam_gradcam_agreement`, or ``{"not_applicable": why}``) and ``trust``: method -> (verdict,
    reason), the verdict "trusted" (every check passes), "not trusted" (one fails or is worse than
    random) or "uncertain". ``step(name)`` is called after each part (progress).
    """
    from convolab.explain.attribution import check_cam_head

    step = step or (lambda name: None)
    out: dict = {"n": len(x), "randomization": {}, "faithfulness": {}}
    tgt = _targets(model, x, None)
    for method in methods:
        out["randomization"][method] = parameter_randomization(model, x, method, tgt, seeds=seeds)
        step(f"randomization {method}")
    out["completeness"] = ig_completeness(model, x, tgt)
    step("completeness")
    try:
        with torch.no_grad():
            check_cam_head(model, model.forward_features(x[:1]))
        out["cam"] = cam_gradcam_agreement(model, x, tgt)
    except (ValueError, AttributeError) as e:
        out["cam"] = {"not_applicable": str(e)}
    step("CAM")
    for method in methods:
        maps = out["randomization"][method]["trained"]
        out["faithfulness"][method] = deletion_insertion(model, x, maps, tgt)
        step(f"deletion {method}")
    trust = {}
    for method in methods:
        checks = [("randomization", out["randomization"][method]["verdict"]),
                  ("deletion", out["faithfulness"][method]["deletion_verdict"]),
                  ("insertion", out["faithfulness"][method]["insertion_verdict"])]
        if method == "integrated-gradients":
            checks.append(("completeness", out["completeness"]["verdict"]))
        trust[method] = _trust(checks)
    out["trust"] = trust
    return out


def is_cam_method(method: str) -> bool:
    return method in CAM_METHODS
