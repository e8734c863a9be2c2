"""TCAV: how much a human concept ("stripes") pushes a model towards a class (Kim et al., ICML 2018).

1. Activations of a layer for concept images and for random images train a linear classifier; the
   concept activation vector (CAV) is the normal of its decision boundary, pointing to the concept.
2. For each input of the target class, the directional derivative of the class logit along the CAV,
   ``grad_layer(logit_k) . cav``, says whether moving towards the concept raises the class.
3. The TCAV score is the fraction of inputs where it is positive (Kim et al.'s TCAV_Q).

A score means something only if a random direction would not give it as well. The concept is
tested against each random folder in turn (one CAV and one score per folder), and random folders
against each other (random-vs-random scores: what a concept with no meaning gets). A two-sided
Student t-test compares the two sets of scores; with several concepts or layers the significance
level is divided by the number of tests (Bonferroni). Random-vs-random runs use every ordered pair of
random folders, so two folders already give a null distribution; more folders give the test power
(Kim et al. use tens to hundreds of random runs).

**Reading the result.** Check the CAVs' held-out accuracy (``separable``: the concept is told from
random images better than random folders are told from each other, by a one-sided Welch t-test):
otherwise the CAV is a direction fitted to noise. Its runs all share the one
concept folder, so such a direction can still point the same way in every run and look significant
(the t-test takes the runs as independent, which they are not quite); with a small network whose
gradient barely changes between inputs, scores also saturate at 0 or 1 and random-vs-random scores
split into 0s and 1s. More random folders and more varied inputs make the test more trustworthy.

**Implementation.** captum's ``captum.concept.TCAV`` does steps 1-3 (activations by forward hooks,
gradients by ``LayerGradientXActivation`` without the multiplication, sign-count scores), with a
classifier of our own: scikit-learn's ``SGDClassifier`` as in Kim et al.'s reference code (hinge loss,
``alpha=0.01``), seeded, with balanced class weights, scored on a held-out third of the images.
captum caches activations and CAVs on disk under its ``save_path`` and reuses them by concept id;
each call gets a fresh temporary folder, so nothing is written to the working directory and nothing
stale is reused. The t-test and the correction are ours (``scipy.stats.ttest_ind``).
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convolab.explain.layers import check_map_layer, resolve_layer

__all__ = ["MIN_CONCEPT_IMAGES", "MIN_RANDOM_SETS", "ConceptScore", "TCAVResult", "tcav", "tcav_run", "tcav_figure"]

MIN_CONCEPT_IMAGES = 10  # a linear classifier on fewer examples gives a CAV that is mostly noise
MIN_RANDOM_SETS = 2  # the random-vs-random null needs two random folders at least
_TEST_FRACTION = 0.33  # share of concept + random images held out to score each CAV


@dataclass
class ConceptScore:
    """One concept at one layer: its TCAV score against each random set, and the significance test."""

    concept: str
    layer: str
    scores: list[float]  # TCAV score of the concept's CAV against each random set
    random_scores: list[float]  # scores of random-vs-random CAVs: the null distribution
    cav_accuracies: list[float]  # held-out accuracy of each concept-vs-random classifier
    random_cav_accuracies: list[float]  # the same for the random-vs-random classifiers
    p_value: float  # two-sided t-test, scores against random_scores
    significant: bool  # p_value < the (Bonferroni-corrected) level
    cavs: list[torch.Tensor] = field(default_factory=list, repr=False)  # unit CAVs (F,), one per random set

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        return float(np.std(self.scores))

    @property
    def separable(self) -> bool:
        """Whether the layer tells the concept from random images better than it tells random sets apart.

        A one-sided Welch t-test at 0.05: the concept's CAV accuracies above the random-vs-random ones.
        """
        return _greater(self.cav_accuracies, self.random_cav_accuracies) < 0.05

    @property
    def random_mean_accuracy(self) -> float:
        return float(np.mean(self.random_cav_accuracies))

    @property
    def random_mean(self) -> float:
        return float(np.mean(self.random_scores))

    @property
    def random_std(self) -> float:
        return float(np.std(self.random_scores))

    def to_dict(self) -> dict:
        return {"concept": self.concept, "layer": self.layer, "score": self.mean, "score_std": self.std,
                "scores": self.scores, "random_score": self.random_mean, "random_score_std": self.random_std,
                "random_scores": self.random_scores, "cav_accuracy": float(np.mean(self.cav_accuracies)),
                "cav_accuracies": self.cav_accuracies,
                "random_cav_accuracy": self.random_mean_accuracy, "separable": self.separable,
                "p_value": self.p_value, "significant": self.significant}


@dataclass
class TCAVResult:
    """TCAV scores of every concept at every layer for one target class."""

    target: int
    target_name: str
    n_inputs: int
    random_sets: list[str]
    alpha: float  # the requested significance level
    alpha_corrected: float  # alpha / number of tests (concepts x layers)
    scores: list[ConceptScore]

    def to_dict(self) -> dict:
        return {"target": self.target, "target_name": self.target_name, "inputs": self.n_inputs,
                "random_sets": self.random_sets, "alpha": self.alpha, "alpha_corrected": self.alpha_corrected,
                "tests": len(self.scores), "results": [s.to_dict() for s in self.scores]}


def _classifier(seed: int):
    """A captum ``Classifier``: scikit-learn's SGDClassifier on the activations, seeded, scored held out."""
    from captum.concept._utils.classifier import Classifier
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import train_test_split

    class _SGD(Classifier):
        def __init__(self) -> None:
            self.lm: SGDClassifier | None = None

        def train_and_eval(self, dataloader, **kwargs) -> dict:
            xs, ys = zip(*dataloader)
            x = torch.cat(xs).float().cpu().numpy()  # (n, F) flattened activations
            y = torch.cat(ys).cpu().numpy()
            x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=_TEST_FRACTION, random_state=seed,
                                                                stratify=y)
            self.lm = SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3, class_weight="balanced", random_state=seed)
            self.lm.fit(x_train, y_train)
            return {"accs": float(self.lm.score(x_test, y_test))}

        def weights(self) -> torch.Tensor:
            w = torch.from_numpy(self.lm.coef_[0]).float()  # points to classes_[1]
            return torch.stack([-w, w])  # one row per class, in classes() order

        def classes(self) -> list[int]:
            return [int(c) for c in self.lm.classes_]  # plain ints: captum's weights-only reload accepts them

    return _SGD()


def _batches(x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [x[i:i + batch_size] for i in range(0, len(x), batch_size)]


def _check_set(name: str, images: torch.Tensor, what: str) -> None:
    if len(images) < MIN_CONCEPT_IMAGES:
        raise ValueError(f"{what} {name!r} has {len(images)} images; TCAV needs at least {MIN_CONCEPT_IMAGES}")


def _greater(a: Sequence[float], b: Sequence[float]) -> float:
    """One-sided Welch t-test p-value that ``a``'s mean exceeds ``b``'s (constant samples: 0 or 1)."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)
    if math.isnan(p):
        return 0.0 if float(np.mean(a)) > float(np.mean(b)) else 1.0
    return p


def _t_test(scores: Sequence[float], null: Sequence[float]) -> float:
    """Two-sided Student t-test p-value; 1 when both sides are constant and equal, 0 when constant and apart."""
    from scipy import stats

    with warnings.catch_warnings():  # identical scores (all 1.0) make scipy warn about precision; handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(scores, null).pvalue)
    if math.isnan(p):
        return 1.0 if math.isclose(float(np.mean(scores)), float(np.mean(null))) else 0.0
    return p


def tcav(model: nn.Module, inputs: torch.Tensor, concepts: Mapping[str, torch.Tensor],
         random_sets: Mapping[str, torch.Tensor], target: int, layers: str | Sequence[str] | None = None, *,
         alpha: float = 0.05, seed: int = 0, batch_size: int = 64, target_name: str | None = None,
         progress: bool = True) -> TCAVResult:
    """TCAV scores and their significance for each concept at each layer, for class ``target``.

    Args:
        model: the classifier (in eval mode; its weights are not changed).
        inputs: normalised images (N, C, H, W) of the target class: the inputs whose logit is probed.
        concepts: name -> normalised concept images (at least ``MIN_CONCEPT_IMAGES`` each).
        random_sets: name -> normalised random images; at least ``MIN_RANDOM_SETS`` sets.
        target: the class index whose logit is differentiated.
        layers: layer names (``named_modules()``); default the last ``feature_info`` stage.
        alpha: significance level before the Bonferroni correction.
        batch_size: images per forward/backward pass.
        progress: a bar on stderr when it is a terminal (the CAVs, then the batches of inputs).

    Raises:
        ValueError: too few images or random sets, an unknown layer, a bad target or alpha.
    """
    from captum.concept import TCAV, Concept

    from convolab.explain.progress import progress_bar

    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not concepts:
        raise ValueError("give at least one concept")
    if len(random_sets) < MIN_RANDOM_SETS:
        raise ValueError(f"TCAV's significance test needs at least {MIN_RANDOM_SETS} random sets, got "
                         f"{len(random_sets)}")
    for name, images in concepts.items():
        _check_set(name, images, "concept")
    for name, images in random_sets.items():
        _check_set(name, images, "random set")
    if len(inputs) == 0:
        raise ValueError("no inputs to score")
    layer_list = [layers] if isinstance(layers, str) or layers is None else list(layers)
    layer_names = [resolve_layer(model, name)[0] for name in layer_list]
    for name in layer_names:  # captum's "Forward hook did not obtain any outputs" otherwise
        check_map_layer(model, name, inputs[:1], "TCAV", spatial=False)
    with torch.no_grad():
        out = model(inputs[:1])
    if out.dim() != 2:
        raise ValueError(f"TCAV needs a classifier's logits (N, num_classes); this model gives {tuple(out.shape)}")
    num_classes = out.shape[1]
    if not 0 <= target < num_classes:
        raise ValueError(f"target {target} is out of range: the model has {num_classes} classes")

    # captum names its cache folders "<name>-<id>": give it safe names and keep ours aside
    concept_objs = [Concept(i, f"concept{i}", _batches(x, batch_size)) for i, x in enumerate(concepts.values())]
    k = len(concept_objs)
    random_objs = [Concept(k + j, f"random{j}", _batches(x, batch_size)) for j, x in enumerate(random_sets.values())]
    pairs = [[c, r] for c in concept_objs for r in random_objs]
    null_pairs = [[a, b] for a in random_objs for b in random_objs if a is not b]
    sets = pairs + null_pairs
    key = {id(s): f"{s[0].id}-{s[1].id}" for s in sets}

    was_training = model.training
    model.eval()
    signs: dict[tuple[str, str], float] = {}  # (layer, set key) -> positive-count over all inputs
    try:
        with tempfile.TemporaryDirectory(prefix="convolab-tcav-") as tmp, warnings.catch_warnings():
            # captum 0.9 reloads its cached CAVs through numpy.core, deprecated in NumPy 2
            warnings.filterwarnings("ignore", message="numpy.core is deprecated", category=DeprecationWarning)
            explainer = TCAV(model, layer_names, model_id="convolab", classifier=_classifier(seed), save_path=tmp)
            chunks = list(_batches(inputs, batch_size))
            with progress_bar(total=1 + len(chunks), desc="tcav", unit="step", enabled=progress) as bar:
                bar.set_postfix_str(f"{len(sets)} CAVs x {len(layer_names)} layers")
                explainer.compute_cavs(sets)
                bar.update()
                bar.set_postfix_str("scoring inputs")
                for chunk in chunks:
                    out = explainer.interpret(chunk, sets, target=target)
                    for s in sets:
                        for layer in layer_names:
                            frac = float(out[key[id(s)]][layer]["sign_count"][0])  # the first concept of the pair
                            signs[(layer, key[id(s)])] = signs.get((layer, key[id(s)]), 0.0) + frac * len(chunk)
                    bar.update()
            cav_stats = {(layer, key[id(s)]): explainer.cavs[key[id(s)]][layer].stats
                         for s in sets for layer in layer_names}
    finally:
        model.train(was_training)

    n_tests = len(concepts) * len(layer_names)
    alpha_corrected = alpha / n_tests
    results = []
    names = list(concepts)
    for layer in layer_names:
        null = [signs[(layer, key[id(s)])] / len(inputs) for s in null_pairs]
        null_accuracies = [float(cav_stats[(layer, key[id(s)])]["accs"]) for s in null_pairs]
        for i, c in enumerate(concept_objs):
            mine = [s for s in pairs if s[0] is c]
            scores = [signs[(layer, key[id(s)])] / len(inputs) for s in mine]
            stats = [cav_stats[(layer, key[id(s)])] for s in mine]
            cavs = []
            for st in stats:
                v = torch.as_tensor(st["weights"][list(st["classes"]).index(c.id)]).float()
                cavs.append(v / v.norm().clamp_min(1e-12))
            p = _t_test(scores, null)
            results.append(ConceptScore(names[i], layer, scores, null, [float(st["accs"]) for st in stats],
                                        null_accuracies, p, p < alpha_corrected, cavs))
    return TCAVResult(target, target_name if target_name is not None else str(target), len(inputs),
                      list(random_sets), alpha, alpha_corrected, results)


def tcav_figure(result: TCAVResult):
    """Bars of each concept's mean TCAV score (error bars: std over random sets) beside the random-vs-random
    scores, one group per layer; significant concepts are marked with ``*``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(s.layer for s in result.scores))
    concepts = list(dict.fromkeys(s.concept for s in result.scores))
    width = 0.8 / (len(concepts) + 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 + 1.6 * len(layers) * (len(concepts) + 1) * 0.6), 3.8))
    for g, layer in enumerate(layers):
        row = {s.concept: s for s in result.scores if s.layer == layer}
        for i, name in enumerate(concepts):
            s = row[name]
            x = g + (i - len(concepts) / 2) * width
            ax.bar(x, s.mean, width, yerr=s.std, capsize=3, color=f"C{i}", label=name if g == 0 else None)
            ax.text(x, min(1.02, s.mean + s.std + 0.02), ("*" if s.significant else "") + f"{s.mean:.2f}",
                    ha="center", fontsize=8)
        any_s = next(iter(row.values()))
        x = g + (len(concepts) / 2) * width
        ax.bar(x, any_s.random_mean, width, yerr=any_s.random_std, capsize=3, color="0.7",
               label="random" if g == 0 else None)
    ax.axhline(0.5, color="0.5", lw=0.8, ls="--")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("TCAV score")
    ax.set_title(f"TCAV for class {result.target_name!r} ({result.n_inputs} inputs; * p < "
                 f"{result.alpha_corrected:.3g})", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def _folder_names(folders: Sequence[str | os.PathLike]) -> list[str]:
    """Short unique names for folders: the folder's own name, or its whole path where two share a name."""
    paths = [Path(f) for f in folders]
    base = [p.name or str(p) for p in paths]
    return [b if base.count(b) == 1 else str(p) for b, p in zip(base, paths)]


def tcav_run(run, concepts: Sequence[str | os.PathLike], random_folders: Sequence[str | os.PathLike],
             target: str | int, layers: str | Sequence[str] | None = None, *, inputs: str | os.PathLike | None = None,
             max_inputs: int | None = 200, alpha: float = 0.05, seed: int = 0, batch_size: int = 64,
             progress: bool = True) -> TCAVResult:
    """TCAV for a trained run, with concept and random images read from folders (what ``convolab tcav`` does).

    Images of any size or channel count are converted as the training images were. ``target`` is a
    class name or index. ``inputs`` is a folder of images of the target class; by default a seeded
    sample of ``max_inputs`` test images of that class from the run's dataset.

    Raises:
        ValueError: a folder with fewer than ``MIN_CONCEPT_IMAGES`` images, fewer than ``MIN_RANDOM_SETS``
            random folders, an unknown class or layer.
        FileNotFoundError: a folder that does not exist.
    """
    from convolab.explain.inputs import class_images, load_folder, resolve_class

    if len(random_folders) < MIN_RANDOM_SETS:
        raise ValueError(f"TCAV's significance test needs at least {MIN_RANDOM_SETS} random folders (--random DIR "
                         f"--random DIR ...), got {len(random_folders)}")
    # The same folder twice makes a test against itself: a concept scored against its own images, or two "random"
    # sets whose random-vs-random CAV separates nothing.
    seen: dict[Path, str] = {}
    for option, folder in [("--concept", f) for f in concepts] + [("--random", f) for f in random_folders]:
        key = Path(folder).expanduser().resolve()
        if key in seen:
            raise ValueError(f"{option} {folder}: already given as {seen[key]}; each concept and random folder must "
                             "be a different set of images")
        seen[key] = f"{option} {folder}"
    target_index = resolve_class(run.classes, target)
    layer_list = [layers] if isinstance(layers, str) or layers is None else list(layers)
    for name in layer_list:  # a typo fails before any image is read
        resolve_layer(run.model, name)
    concept_sets = {name: load_folder(run, f, min_images=MIN_CONCEPT_IMAGES, what="concept folder")
                    for name, f in zip(_folder_names(concepts), concepts)}
    random_sets = {name: load_folder(run, f, min_images=MIN_CONCEPT_IMAGES, what="random folder")
                   for name, f in zip(_folder_names(random_folders), random_folders)}
    if inputs is not None:
        x = load_folder(run, inputs, what="inputs folder", limit=max_inputs)
    else:
        x = class_images(run, target_index, limit=max_inputs, seed=seed)
    return tcav(run.model, x, concept_sets, random_sets, target_index, layer_list, alpha=alpha, seed=seed,
                batch_size=batch_size, target_name=run.classes[target_index], progress=progress)
