"""The data of a report: everything ``convolab report`` shows, gathered once, before any HTML is written.

:func:`gather` loads the run (``convolab.runs``), its dataset with the settings the run recorded, evaluates the
test split ONCE through the run's task (``convolab.train.tasks``) and computes and draws what each section
needs; :mod:`convolab.report.html` then only renders the resulting :class:`ReportData`. What a section shows
is the task's to say (``Task.report_*``): classification gets the confusion matrix, the prediction grid, Grad-CAM
and the attribution sanity checks; segmentation pixel accuracy, (mean) IoU and mask overlays; clips clip and video
accuracy. The calibration section (:func:`convolab.explain.uncertainty.calibration`) bins the plain test predictions
and those of MC-dropout passes over the same batches, for a model with dropout layers (else
:attr:`ReportData.calibration` is the sentence why not). A section that does not apply to the task
(``Task.report_skipped``) is listed in :attr:`ReportData.skipped` with the reason. Nothing here names a task.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from convolab.report.figures import Figure, png
from convolab.runs.reader import Run, load_run
from convolab.runs.recipe import load_data, run_config

__all__ = ["ReportData", "TestResults", "ClassRow", "ConfusedPair", "ModelTable", "TaskLayout", "SanityData",
           "CalibrationData", "MC_SAMPLES", "gather", "gather_stages", "run_config", "load_data"]

log = logging.getLogger("convolab")

Step = Callable[[str], None]

MC_SAMPLES = 30  # MC-dropout passes over the test split for the calibration section (seed 0)

# -- the data ------------------------------------------------------------------------------------
@dataclass
class ClassRow:
    """One class's line of the per-class table."""

    name: str
    count: int  # test images (clips) of the class, or its test pixels (segmentation)
    value: float | None  # accuracy, or IoU for segmentation (None: the class occurs nowhere)
    # where the task writes summary.json's test_per_class_precision/recall/f1 (classification, clips): the class's
    # figures from there (None: undefined, see convolab.train.metrics); all three None for the other tasks
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None


@dataclass
class ConfusedPair:
    """A true class often predicted as another, with examples."""

    true: str
    predicted: str
    count: int  # test samples of ``true`` predicted as ``predicted``
    of_true: int  # test samples of ``true``
    examples: Figure | None  # a row of such images (None for clips)


@dataclass
class TestResults:
    """The test split's evaluation through the run's task, done once.

    ``fields`` are named and valued as summary.json names them: ``test_accuracy`` and ``test_loss`` for every
    task, then the task's own (``Task.summary_fields``: ``test_mean_iou``, ``test_video_accuracy`` ...).
    """

    n: int  # test samples (images or clips)
    loss: float
    accuracy: float  # of labels (classification), pixels (segmentation) or clips (clips)
    fields: dict[str, Any]
    describe: str  # the task's one line of these figures
    confusion: torch.Tensor  # (K, K) counts, row: true class, column: predicted (pixels for segmentation)
    per_class: list[ClassRow]
    figures: dict[str, Figure]  # "confusion", "predictions", "iou", "masks" (those the task has)
    confused_pairs: list[ConfusedPair] | None = None  # None: the task has none
    tta: bool = False  # evaluated flip-averaged, as the run was (--tta)


@dataclass
class TaskLayout:
    """How the run's task words and orders its figures (the ``Task`` attributes of the same names)."""

    unit: str = "images"  # what one test sample is called
    headline: tuple[tuple[str, str, str], ...] = (("test accuracy", "test_accuracy", "%"),)  # (label, key, "%"|"")
    note: str = ""  # how the figures are computed
    columns: tuple[str, str] = ("images", "accuracy")  # the per-class table: what it counts, what it measures
    one_class_images: bool = True  # a test sample is one image of one class

    @classmethod
    def of(cls, task) -> TaskLayout:
        return cls(task.unit, tuple(task.headline), task.report_note, tuple(task.report_columns),
                   task.one_class_images)


@dataclass
class ModelTable:
    """``convolab summary`` of the model: totals and one row per layer."""

    totals: dict
    layers: list[dict]
    unit: str  # what one input is: "image" or "clip"


@dataclass
class SanityData:
    """The attribution sanity checks (``convolab.explain.sanity.sanity_checks``) and the figure of their maps."""

    checks: dict
    randomization: Figure


@dataclass
class CalibrationData:
    """The test split's calibration (``convolab.explain.uncertainty``): the plain predictions (the test section's)
    and the MC-dropout ones, binned by confidence, and their reliability diagrams."""

    plain: Any  # convolab.explain.uncertainty.Calibration of the plain predictions
    mc: Any  # ... of the mean probabilities of the MC-dropout passes
    samples: int  # MC-dropout passes
    seed: int  # their seed
    mean_std: float  # mean over the test split of the top class's standard deviation over the passes
    mean_mutual_information: float  # mean over the test split of the mutual information (nats)
    diagram: Figure  # the reliability diagrams, plain beside MC dropout


@dataclass
class ReportData:
    """Everything a report shows; :func:`convolab.report.html.render` turns it into the page."""

    path: Path  # the run folder
    title: str
    task: str  # the run's task ("classification", "segmentation", "clips")
    config: dict  # config.json
    summary: dict  # summary.json
    metrics: list[dict]  # metrics.jsonl rows
    classes: list[str]
    input_size: tuple[int, ...]  # (C, H, W), or (C, T, H, W) for clips
    curves: list[Figure] = field(default_factory=list)
    test: TestResults | None = None
    model: ModelTable | None = None
    kernels: Figure | str | None = None  # the mosaic, or why there is none
    feature_maps: list[tuple[str, Figure]] = field(default_factory=list)  # (caption, figure)
    feature_maps_note: str = ""
    gradcam: dict | None = None  # {"layer", "right", "wrong"}: a Figure each, or a note
    sanity: SanityData | None = None
    calibration: CalibrationData | str | None = None  # or the one sentence why the run has none
    compress: dict | None = None  # summary.json's "compress" (convolab compress's table), if any
    pareto: bytes | None = None  # plots/pareto.png beside it
    skipped: dict[str, str] = field(default_factory=dict)  # section anchor -> why it is left out
    layout: TaskLayout = field(default_factory=TaskLayout)  # how the task words its figures

    def shows(self, anchor: str) -> bool:
        """Whether the section ``anchor`` applies to this run's task."""
        return anchor not in self.skipped


# -- gathering -----------------------------------------------------------------------------------
def gather_stages(task: str) -> list[str]:
    """The stages :func:`gather` reports through ``step``, in order, for a run of ``task`` (the progress bar's;
    a task this convolab does not know gets only the stages every task has: :func:`gather` refuses it at once)."""
    from convolab.explain.sanity import SANITY_METHODS
    from convolab.train.tasks import TASKS

    skipped = TASKS[task].report_skipped if task in TASKS else {a: "" for cls in TASKS.values()
                                                                for a in cls.report_skipped}
    stages = ["data", "config", "curves", "test", "calibration", "model"]
    stages += [s for a, s in (("kernels", "kernels"), ("features", "feature maps"), ("gradcam", "Grad-CAM"))
               if a not in skipped]
    if "sanity" not in skipped:
        stages += [*(f"randomization {m}" for m in SANITY_METHODS), "completeness", "CAM",
                   *(f"deletion {m}" for m in SANITY_METHODS)]
    return stages


def gather(run: str | os.PathLike | Run, *, data_dir: str | os.PathLike | None = None, samples: int = 32,
           step: Step | None = None) -> ReportData:
    """Everything the report of ``run`` (a run folder or a loaded run) shows.

    The test split is evaluated once, through the run's task, with the settings the run was evaluated with
    (batch size, memory format, --tta), so the figures are summary.json's. ``samples``: test images for the
    Grad-CAM examples and the sanity checks. ``step(name)`` is called after each of :func:`gather_stages`.

    Raises:
        FileNotFoundError, ValueError: the run or its dataset cannot be loaded, or the dataset no longer fits the
            model (image size, channels or classes differ).
    """
    from convolab.train.tasks import TASKS

    run = run if isinstance(run, Run) else load_run(run)
    step = step or (lambda _name: None)
    if run.task not in TASKS:
        raise ValueError(f"{run.path}: config.json names task {run.task!r}; this convolab reports "
                         f"{', '.join(TASKS)}")
    config = run_config(run)
    data = load_data(run, config, data_dir)
    step("data")
    task = TASKS[run.task](config, data)
    ds = run.config.get("dataset", {})
    out = ReportData(run.path, f"{run.config.get('model', type(run.model).__name__)} on {ds.get('name', '?')}",
                     run.task, run.config, run.summary, run.metrics(), list(run.classes), tuple(run.input_size),
                     skipped=dict(task.report_skipped), layout=TaskLayout.of(task))
    if run.build.get("kind") == "int8-pt2e":  # layers are graph nodes, not modules: no hooks, no kernels to draw
        why = ("an int8 graph (convolab compress): its layers are graph nodes, not modules, so this section is in the "
               f"report of the float run it came from ({(run.config.get('compress') or {}).get('from', '?')})")
        out.skipped.update({a: why for a in ("kernels", "features", "gradcam", "sanity", "model")})
    out.compress = run.summary.get("compress")
    pareto = run.path / "plots" / "pareto.png"
    out.pareto = pareto.read_bytes() if out.compress and pareto.is_file() else None
    step("config")
    out.curves = _curves(run, out.metrics)
    step("curves")
    ev = _evaluate_test(run, task, config, data)
    out.test = _test_results(task, data, ev, config.tta)
    step("test")
    out.calibration = _calibration(run, task, config, data, ev)
    step("calibration")
    out.model = _model_table(run) if out.shows("model") else None
    step("model")
    if out.shows("kernels"):
        out.kernels = _kernels(run.model)
        step("kernels")
    if out.shows("features"):
        out.feature_maps, out.feature_maps_note = _feature_maps(run, task, data, ev)
        step("feature maps")
    if out.shows("gradcam"):
        out.gradcam = _gradcam(run, data, ev)
        step("Grad-CAM")
    if out.shows("sanity"):
        out.sanity = _sanity(run, data, ev, samples, step)
    return out


def _test_loader(run: Run, config, data):
    """The test split's batches as the training loop evaluated it (its batch size and memory format)."""
    from convolab.data.loader import memory_format
    from convolab.train.loop import make_loader

    channels_last = config.channels_last and run.device.type != "mps"
    # The weights' layout too: it picks the convolution kernels, so the loss agrees with summary.json to the bit.
    run.model.to(memory_format=memory_format(channels_last, data.test.images.ndim))
    return make_loader(data.test, config.eval_batch_size, mean=run.mean, std=run.std, device=run.device,
                       channels_last=channels_last)


def _evaluate_test(run: Run, task, config, data):
    """The test split through ``task.evaluate``, as the training loop evaluated it (its batch size, memory format
    and --tta), predictions kept."""
    return task.evaluate(task.eval_model(run.model, config.tta), _test_loader(run, config, data), keep=True)


def _calibration(run: Run, task, config, data, ev, samples: int = MC_SAMPLES, seed: int = 0) -> CalibrationData | str:
    """Calibration of the plain test predictions (``ev``'s) and of ``samples`` MC-dropout passes over the same
    batches (through the same --tta wrapper), or the sentence why the run has none: its evaluation has no class
    probabilities per test sample, or its model no dropout layers."""
    from convolab.explain.uncertainty import calibration, dropout_layers, mc_dropout_batches
    from convolab.plotting import reliability_figure

    if ev.probabilities is None or ev.probabilities.dim() != 2 or ev.labels is None or ev.labels.dim() != 1:
        return (f"Calibration is left out: it compares each test sample's class probabilities with its label, and "
                f"a {run.task} run's evaluation has no such probabilities per sample.")
    if not dropout_layers(run.model):
        return (f"Calibration with MC dropout is left out: this {type(run.model).__name__} has no dropout layers "
                "(MC dropout needs them; mnist_cnn, mlp or a spec with dropout have them).")
    plain = calibration(ev.probabilities, ev.labels)
    mc, labels = mc_dropout_batches(task.eval_model(run.model, config.tta), _test_loader(run, config, data), samples,
                                    seed)
    mc_cal = calibration(mc.probabilities, labels)
    diagram = reliability_figure(plain.edges.tolist(), [
        ("plain predictions", plain.accuracy.tolist(), plain.confidence.tolist(), plain.counts.tolist(), plain.ece),
        (f"MC dropout, {mc.samples} passes", mc_cal.accuracy.tolist(), mc_cal.confidence.tolist(),
         mc_cal.counts.tolist(), mc_cal.ece)])
    return CalibrationData(plain, mc_cal, mc.samples, seed, float(mc.top_std.mean()),
                           float(mc.mutual_information.mean()), png(diagram))


def _curves(run: Run, rows: list[dict]) -> list[Figure]:
    """Loss and accuracy per epoch, the task's validation figure (mean IoU, video accuracy), the rate per step."""
    from convolab.atomic import read_jsonl
    from convolab.plotting import curve_figures, lr_steps_figure
    from convolab.report.figures import metric_curve_figure

    if not rows:
        return []
    recipe, augment = run.config.get("recipe") or {}, run.config.get("augment") or {}
    # another --loss than cross-entropy: the curve is named the training objective (as the run's own plot is)
    cross_entropy = (run.config.get("config") or {}).get("loss", "cross_entropy") == "cross_entropy"
    figs = [fig for _, fig in curve_figures(rows, label_smoothing=recipe.get("label_smoothing") if cross_entropy
                                            else None,
                                            num_classes=len(run.classes),
                                            mixed=bool(augment.get("mixup") or augment.get("cutmix")))]
    for key, label in (("val_mean_iou", "val mean IoU"), ("val_video_accuracy", "val video accuracy")):
        if any(r.get(key) is not None for r in rows):
            figs.append(metric_curve_figure(rows, key, label))
    steps_file = run.path / "steps.jsonl"
    if steps_file.exists():
        steps = read_jsonl(steps_file)
        if steps and "lr" in steps[0]:
            figs.append(lr_steps_figure(steps))
    return [png(f) for f in figs]


def _test_results(task, data, ev, tta: bool) -> TestResults:
    """The evaluation's figures, tables and plots for the test section, as the run's task breaks them down."""
    fields_ = {"test_accuracy": ev.accuracy, "test_loss": ev.loss, **task.summary_fields(ev)}
    cm, rows = task.report_per_class(ev)
    scores = {s: fields_[f"test_per_class_{s}"] for s in ("precision", "recall", "f1") if f"test_per_class_{s}" in
              fields_}  # (classification and clips: the class's precision, recall and F1 beside its accuracy)
    per_class = [ClassRow(*r, **{s: by_class[r[0]] for s, by_class in scores.items()}) for r in rows]
    figures = {name: png(fig) for name, fig in task.report_figures(ev).items()}
    pairs = None
    if task.report_confused_pairs:
        pairs = _confused_pairs(list(data.classes), data.test.images if task.one_class_images else None, ev, cm)
    return TestResults(ev.n, ev.loss, ev.accuracy, fields_, task.describe(ev), cm, per_class, figures, pairs, tta)


def _confused_pairs(classes: list[str], images: torch.Tensor | None, ev, cm: torch.Tensor, pairs: int = 5,
                    examples: int = 8) -> list[ConfusedPair]:
    """The ``pairs`` largest off-diagonal counts, with up to ``examples`` of their images."""
    from convolab.report.figures import examples_figure

    off = cm.clone()
    off.fill_diagonal_(0)
    flat = off.flatten()
    k = len(classes)
    out = []
    for idx in (int(i) for i in flat.argsort(descending=True)[:pairs] if flat[i] > 0):
        t, p = divmod(idx, k)
        fig = None
        if images is not None:
            where = ((ev.labels == t) & (ev.predictions == p)).nonzero().flatten()[:examples]
            fig = png(examples_figure(images[where]))  # (n, C, H, W) uint8
        out.append(ConfusedPair(classes[t], classes[p], int(off[t, p]), int(cm[t].sum()), fig))
    return out


def _model_table(run: Run) -> ModelTable:
    from convolab.analysis import summarize

    s = summarize(run)  # the loaded run: analysis does not read run folders
    depth = None if len(s.trace.rows) <= 60 else 2
    return ModelTable(s.totals(), s.layers(depth), "clip" if len(run.input_size) == 4 else "image")


def _kernels(model) -> Figure | str:
    from convolab.explain.viz import kernel_figure, kernel_grid

    try:
        grid = kernel_grid(model)
    except ValueError as e:
        return str(e)
    return png(kernel_figure(grid))


def _normalised(run: Run, images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> the model's normalised float input on its device."""
    from convolab.data.loader import Normalizer

    return Normalizer(run.mean, run.std, run.device)(images.to(run.device))


def _feature_maps(run: Run, task, data, ev, max_classes: int = 10) -> tuple[list[tuple[str, Figure]], str]:
    """Feature maps of one test image per class (where a test sample is one image of one class), or of the first
    two test images."""
    from convolab.explain.viz import feature_map_figure, feature_maps

    if task.one_class_images:
        picks = []
        for c in range(min(len(run.classes), max_classes)):
            idx = (ev.labels == c).nonzero().flatten()
            if len(idx):
                picks.append((run.classes[c], int(idx[0])))
        note = "" if len(run.classes) <= max_classes else f"first {max_classes} classes shown."
    else:
        picks = [(f"test image {i}", i) for i in range(min(2, len(data.test)))]
        note = task.report_first_images
    out = []
    for caption, i in picks:
        image = data.test.images[i]
        maps = feature_maps(run.model, _normalised(run, image[None]))
        out.append((caption, png(feature_map_figure(maps, image.numpy(), max_channels=16))))
    return out, note


def _gradcam(run: Run, data, ev, n: int = 6) -> dict:
    """Grad-CAM of the predicted class for the first ``n`` right and ``n`` wrong test predictions."""
    from convolab.explain.attribution import attribute
    from convolab.explain.layers import resolve_layer
    from convolab.report.figures import gradcam_figure

    out: dict = {"layer": resolve_layer(run.model, None)[0]}
    for label, idx in (("right", (ev.predictions == ev.labels).nonzero().flatten()[:n]),
                       ("wrong", (ev.predictions != ev.labels).nonzero().flatten()[:n])):
        if not len(idx):
            out[label] = f"no {label} predictions on the test split."
            continue
        x = _normalised(run, data.test.images[idx])
        maps = attribute(run.model, x, "gradcam", ev.predictions[idx].to(x.device))
        truth, pred = ev.labels[idx].tolist(), ev.predictions[idx].tolist()
        captions = [run.classes[p] if t == p else f"{run.classes[p]}\n(true {run.classes[t]})"
                    for t, p in zip(truth, pred)]
        out[label] = png(gradcam_figure(data.test.images[idx], maps, captions, [t == p for t, p in zip(truth, pred)]))
    return out


def _sanity(run: Run, data, ev, samples: int, step: Step) -> SanityData:
    """The sanity checks of the attributions on a seeded sample of ``samples`` test images."""
    from convolab.explain.sanity import SANITY_METHODS, pixel_importance, sanity_checks
    from convolab.report.figures import randomization_figure

    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ev.labels), generator=g)[:samples]
    checks = sanity_checks(run.model, _normalised(run, data.test.images[idx]), SANITY_METHODS, step=step)
    maps = [(m, pixel_importance(r["trained"][:4]), pixel_importance(r["randomized"][:4]))
            for m, r in checks["randomization"].items()]
    return SanityData(checks, png(randomization_figure(maps)))
