"""Tasks (issue 16): segmentation's metrics against scikit-learn and its losses against hand-computed values,
video accuracy by hand, the task registry, the refusals of a model on the wrong kind of data, and short real
segmentation and clip runs through the one loop."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import accuracy_score, confusion_matrix, jaccard_score
from tests.cli.test_cli import assert_one_line_error, cli
from torch import nn

import convolab
from convolab.atomic import read_jsonl
from convolab.models import list_models
from convolab.models._registry import get_model_entry
from convolab.train import tasks as tasks_mod
from convolab.train.config import TrainConfig
from convolab.train.tasks import Classification, ClipClassification, Segmentation, Task, register_task, task_for_model
from convolab.train.tasks.clips import video_accuracy
from convolab.train.tasks.segmentation import soft_dice_loss

IGNORE = 255


# -- tiny datasets on disk (test_kill_tasks.py uses them too) ------------------------------------------------------
SEG_CLASSES = ("background", "square", "bar")


def write_segmentation_folder(root: Path, n_train: int = 24, n_test: int = 8, size: int = 16, seed: int = 0) -> Path:
    """A segmentation folder (``train/`` and ``test/`` with ``images/`` + ``masks/``, ``classes.txt``): grey images
    of a bright square (class 1) and a dimmer horizontal bar (class 2) on noise, the square's outline ignored (255)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            image = rng.integers(0, 60, (size, size), dtype=np.uint8)
            mask = np.zeros((size, size), np.uint8)
            r, c = rng.integers(0, size - 6, 2)
            image[r:r + 6, c:c + 6], mask[r:r + 6, c:c + 6] = 230, 1
            mask[r, c:c + 6] = mask[r + 5, c:c + 6] = IGNORE  # the square's top and bottom edges: ignored
            row = int(rng.integers(0, size - 2))
            free = mask[row:row + 2] == 0
            image[row:row + 2][free], mask[row:row + 2][free] = 140, 2
            Image.fromarray(image, "L").save(root / split / "images" / f"{i:03d}.png")
            Image.fromarray(mask, "L").save(root / split / "masks" / f"{i:03d}.png")
    (root / "classes.txt").write_text("\n".join(SEG_CLASSES) + "\n")
    return root


CLIP_CLASSES = ("left", "right")


def write_video_folder(root: Path, per_class: int = 10, per_class_test: int = 3, frames: int = 8,
                       size: int = 16, seed: int = 0) -> Path:
    """A folder of grey .mkv videos (``train/<class>/``, ``test/<class>/``) of a bright bar moving left or right
    over noise; ``frames`` frames each (with --frames frames/2, two clips per video)."""
    from convolab.data.video_io import write_video

    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", per_class_test)):
        for label, name in enumerate(CLIP_CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                video = rng.integers(0, 50, (frames, size, size, 1), dtype=np.uint8)  # (T, H, W, C)
                start = int(rng.integers(3, size - 3))
                for t in range(frames):
                    x = (start + (t if label else -t)) % size
                    video[t, :, x] = 220
                write_video(root / split / name / f"v{i:02d}.mkv", video, fps=8)
    return root


# -- segmentation metrics against scikit-learn --------------------------------------------------------------------
def _seg_task(k: int, dice_weight: float = 0.0) -> Segmentation:
    config = SimpleNamespace(ignore_index=IGNORE, label_smoothing=0.0, dice_weight=dice_weight, monitor="val_mean_iou",
                             model="m")
    data = SimpleNamespace(num_classes=k, classes=[f"c{i}" for i in range(k)], task="segmentation", name="d")
    return Segmentation(config, data)


def _fixed_seg_problem(k: int = 4):
    """A 1x1-convolution "model" whose class k-1 never wins (its bias is -100) and masks without class k-1: that
    class occurs nowhere. Batches of 3, 3 and 2 images of 5x6 pixels, about a tenth of the pixels ignored."""
    g = torch.Generator().manual_seed(0)
    model = nn.Conv2d(2, k, 1)
    with torch.no_grad():
        model.weight.copy_(torch.randn(k, 2, 1, 1, generator=g))
        model.bias.copy_(torch.randn(k, generator=g))
        model.bias[k - 1] = -100.0
    loader = []
    for n in (3, 3, 2):
        x = torch.randn(n, 2, 5, 6, generator=g)
        y = torch.randint(0, k - 1, (n, 5, 6), generator=g).to(torch.uint8)
        y[torch.rand(n, 5, 6, generator=g) < 0.1] = IGNORE
        loader.append((x, y))
    return model, loader


def test_segmentation_evaluate_matches_sklearn():
    k = 4
    model, loader = _fixed_seg_problem(k)
    result = _seg_task(k).evaluate(model, loader, keep=True)
    with torch.no_grad():
        logits = [model(x) for x, _ in loader]
    pred = torch.cat([lg.argmax(1).flatten() for lg in logits]).numpy()
    true = torch.cat([y.flatten() for _, y in loader]).numpy().astype(np.int64)
    valid = true != IGNORE
    assert 0 < (~valid).sum() < valid.sum()
    p, t = pred[valid], true[valid]
    assert torch.equal(result.metrics["confusion"], torch.from_numpy(confusion_matrix(t, p, labels=range(k))))
    assert result.accuracy == pytest.approx(accuracy_score(t, p), abs=1e-12)
    present = sorted(set(t) | set(p))
    assert present == [0, 1, 2]  # class 3: in no mask and never predicted
    per_class = jaccard_score(t, p, labels=present, average=None)
    expected = {f"c{c}": round(float(v), 6) for c, v in zip(present, per_class)} | {"c3": None}
    assert result.metrics["per_class_iou"] == expected
    assert result.metrics["mean_iou"] == pytest.approx(jaccard_score(t, p, labels=present, average="macro"),
                                                       abs=1e-12)
    # the loss: each batch's mean cross-entropy over its valid pixels, weighted by the batch's images
    losses = [F.cross_entropy(lg.permute(0, 2, 3, 1)[y != IGNORE], y[y != IGNORE].long()) for lg, (_, y) in
              zip(logits, loader)]
    assert result.loss == pytest.approx(float(sum(ce * len(y) for ce, (_, y) in zip(losses, loader))) / 8, rel=1e-6)
    assert result.n == 8
    assert torch.equal(result.predictions.flatten().long(), torch.from_numpy(pred))


def test_segmentation_iou_of_a_split_not_an_average_of_images():
    """IoU over the whole split: a class seen in one image only is not averaged with images that lack it."""
    task = _seg_task(2)
    model = nn.Identity()  # the "logits" are the inputs
    # image 1: all class 0, predicted 0; image 2: 4 pixels of class 1, 2 predicted 1 and 2 predicted 0
    x1 = torch.tensor([[[[9.0, 9], [9, 9]]], [[[0.0, 0], [0, 0]]]]).view(1, 2, 2, 2)
    x2 = torch.tensor([[[[0.0, 0], [9, 9]]], [[[9.0, 9], [0, 0]]]]).view(1, 2, 2, 2)
    y1, y2 = torch.zeros(1, 2, 2, dtype=torch.uint8), torch.ones(1, 2, 2, dtype=torch.uint8)
    result = task.evaluate(model, [(x1, y1), (x2, y2)])
    # class 0: TP 4, FP 2, FN 0 -> 4/6; class 1: TP 2, FP 0, FN 2 -> 2/4
    assert result.metrics["per_class_iou"] == {"c0": round(4 / 6, 6), "c1": 0.5}
    assert result.metrics["mean_iou"] == pytest.approx((4 / 6 + 0.5) / 2)
    assert result.accuracy == pytest.approx(6 / 8)


def test_soft_dice_loss_by_hand():
    """Two classes, a 2x2 image, one pixel ignored. Probabilities (softmax of 0 and ln 3 = 1/4, 3/4):
    pixel (0,0) p=(1/4, 3/4) class 1; (0,1) p=(3/4, 1/4) class 0; (1,0) p=(1/2, 1/2) class 1; (1,1) ignored.
    Class 0: |P∩G| = 3/4, |P| = 3/2, |G| = 1 -> (2·3/4 + 1) / (3/2 + 1 + 1) = 5/7.
    Class 1: |P∩G| = 3/4 + 1/2, |P| = 3/2, |G| = 2 -> (5/2 + 1) / (7/2 + 1) = 7/9.
    Loss = 1 - (5/7 + 7/9) / 2 = 16/63 (the +1 of both terms is the implementation's smoothing)."""
    ln3 = math.log(3)
    logits = torch.tensor([[[0.0, ln3], [0.0, 0.0]],   # class 0's logit per pixel
                           [[ln3, 0.0], [0.0, ln3]]])[None]  # class 1's; (1, 2, 2, 2)
    target = torch.tensor([[[1, 0], [1, IGNORE]]])
    assert soft_dice_loss(logits, target, IGNORE).item() == pytest.approx(16 / 63, abs=1e-6)
    # the ignored pixel counts nowhere: whatever its logits, the loss is the same
    other = logits.clone()
    other[0, :, 1, 1] = torch.tensor([5.0, -5.0])
    assert soft_dice_loss(other, target, IGNORE).item() == pytest.approx(16 / 63, abs=1e-6)


def test_segmentation_loss_is_cross_entropy_on_the_valid_pixels():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 5, 6, generator=g)
    y = torch.randint(0, 4, (3, 5, 6), generator=g)
    y[torch.rand(3, 5, 6, generator=g) < 0.3] = IGNORE
    valid = y != IGNORE
    reference = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], y[valid])  # (pixels, K) against (pixels,)
    assert _seg_task(4).loss(logits, y.to(torch.uint8)).item() == pytest.approx(reference.item(), rel=1e-6)
    with_dice = _seg_task(4, dice_weight=0.5).loss(logits, y)
    assert with_dice.item() == pytest.approx(reference.item() + 0.5 * soft_dice_loss(logits, y, IGNORE).item(),
                                             rel=1e-6)


def test_segmentation_batch_stats_count_valid_pixels_only():
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 1, 0, :2] = 1.0  # predicted: 1 1 0 0
    y = torch.tensor([[[1, 0, 0, IGNORE]]])
    stats = _seg_task(2).batch_stats(logits, y)
    assert (int(stats["correct"]), int(stats["pixels"])) == (2, 3)


def test_video_accuracy_by_hand():
    """Three videos (ids 7, 2, 5, in no order): video 7's clips average to (0.467, 0.533) -> class 1, its label: right
    although its first clip alone is wrong; video 2 averages (0.45, 0.55) -> 1, its label 0: wrong; video 5, one
    clip, right. 2 of 3 videos."""
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.3, 0.7], [0.8, 0.2]])
    groups = torch.tensor([7, 2, 7, 2, 7, 5])
    labels = torch.tensor([1, 0, 1, 0, 1, 0])
    assert video_accuracy(probs, labels, groups) == pytest.approx(2 / 3)
    assert video_accuracy(probs, labels, torch.arange(6)) == pytest.approx(4 / 6)  # one clip a video: clip accuracy


# -- what the report asks of a task --------------------------------------------------------------------------------
def _labelled_data(k: int, n: int, task: str = "classification", seed: int = 0) -> SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    test = SimpleNamespace(images=torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8))
    return SimpleNamespace(num_classes=k, classes=[f"c{i}" for i in range(k)], task=task, name="d", test=test)


def _labelled_result(k: int, n: int, seed: int = 0):
    """A kept evaluation of ``n`` samples of classes 0..k-2 (class k-1 occurs in no label, but is predicted)."""
    from convolab.train.metrics import EvalResult

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k - 1, n)
    predictions = np.where(rng.random(n) < 0.6, labels, rng.integers(0, k, n))
    probabilities = torch.from_numpy(rng.dirichlet(np.ones(k), n)).float()
    result = EvalResult(0.5, float((labels == predictions).mean()), n)
    result.labels, result.predictions = torch.from_numpy(labels), torch.from_numpy(predictions)
    result.probabilities = probabilities
    return result


@pytest.mark.parametrize("task_class", [Classification, ClipClassification])
def test_report_per_class_is_the_accuracy_of_each_class_by_hand(task_class):
    k, n = 5, 60
    result = _labelled_result(k, n)
    cm, rows = task_class(SimpleNamespace(), _labelled_data(k, n)).report_per_class(result)
    labels, predictions = result.labels.numpy(), result.predictions.numpy()
    assert np.array_equal(cm.numpy(), confusion_matrix(labels, predictions, labels=range(k)))
    assert [name for name, _, _ in rows] == [f"c{i}" for i in range(k)]
    for c, (_, count, value) in enumerate(rows):
        mine = labels == c
        assert count == int(mine.sum())
        right = sum(1 for t, p in zip(labels, predictions) if t == c and p == c)
        assert value == (pytest.approx(right / count, abs=1e-12) if count else 0.0)
    assert rows[k - 1][1] == 0 and rows[k - 1][2] == 0.0  # no test sample of the class: 0, as the page has it


def test_report_per_class_of_segmentation_is_pixels_and_iou():
    k = 4
    model, loader = _fixed_seg_problem(k)
    task = _seg_task(k)
    cm, rows = task.report_per_class(task.evaluate(model, loader, keep=True))
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1).flatten() for x, _ in loader]).numpy()
    true = torch.cat([y.flatten() for _, y in loader]).numpy().astype(np.int64)
    valid = true != IGNORE
    assert np.array_equal(cm.numpy(), confusion_matrix(true[valid], pred[valid], labels=range(k)))
    iou = jaccard_score(true[valid], pred[valid], labels=[0, 1, 2], average=None)
    for c, (name, count, value) in enumerate(rows):
        assert name == f"c{c}" and count == int((true[valid] == c).sum())
        assert value == (None if c == 3 else pytest.approx(iou[c], abs=1e-6))  # class 3 occurs nowhere


def test_report_figures_of_each_task():
    from convolab.plotting import plt

    k, n = 3, 12
    result = _labelled_result(k, n)
    figures = Classification(SimpleNamespace(), _labelled_data(k, n)).report_figures(result)
    assert list(figures) == ["confusion", "predictions"]
    clip_figures = ClipClassification(SimpleNamespace(), _labelled_data(k, n, "clips")).report_figures(result)
    assert list(clip_figures) == ["confusion"]  # a clip has no one picture to show

    model, loader = _fixed_seg_problem(4)
    task = _seg_task(4)
    task.data.test = SimpleNamespace(images=torch.randint(0, 256, (8, 1, 5, 6), dtype=torch.uint8))
    seg = task.evaluate(model, loader, keep=True)
    seg_figures = task.report_figures(seg)
    assert list(seg_figures) == ["iou", "masks"]
    bars = [p.get_width() for p in seg_figures["iou"].axes[0].patches]
    assert bars == [pytest.approx(v or 0.0, abs=1e-6) for v in seg.metrics["per_class_iou"].values()]
    assert len(seg_figures["masks"].axes) == 4 * 3  # image | true | predicted, for the first 4 test images
    for fig in (*figures.values(), *clip_figures.values(), *seg_figures.values()):
        plt.close(fig)


def test_each_tasks_report_sections():
    from convolab.report.html import SECTIONS

    assert Classification.report_skipped == {} and Classification.one_class_images
    assert set(Segmentation.report_skipped) == {"gradcam", "sanity"} and not Segmentation.report_confused_pairs
    assert set(ClipClassification.report_skipped) == {"kernels", "features", "gradcam", "sanity"}
    assert not Segmentation.one_class_images and not ClipClassification.one_class_images
    for cls in tasks_mod.TASKS.values():
        for anchor, why in cls.report_skipped.items():
            assert anchor in dict(SECTIONS), (cls.name, anchor)
            assert "left out" in why and why.endswith(".") and "\n" not in why, (cls.name, anchor)


def test_a_new_task_says_which_report_sections_it_skips(monkeypatch):
    """A task registered here, with no edit to the report: the progress bar's stages follow its skipped sections
    (the report of a run of it: tests/report/test_tasks.py)."""
    from convolab.report.data import gather_stages

    class Thumbnails(Classification):
        name = "thumbnails"
        report_skipped = {"sanity": "The attribution sanity checks are left out: thumbnails are too small."}

    monkeypatch.setitem(tasks_mod.TASKS, "thumbnails", Thumbnails)  # (taken out afterwards)
    stages = gather_stages("thumbnails")
    assert stages == [s for s in gather_stages("classification") if not s.startswith(("randomization", "deletion"))
                      and s not in ("completeness", "CAM")]
    assert "Grad-CAM" in stages and "kernels" in stages and "feature maps" in stages
    assert gather_stages("segmentation") == [s for s in stages if s != "Grad-CAM"]


# -- the registry ----------------------------------------------------------------------------------------------
def test_task_for_each_input_kind():
    assert task_for_model("image") is Classification
    assert task_for_model("segmentation") is Segmentation
    assert task_for_model("clip") is ClipClassification
    with pytest.raises(ValueError, match=r"no task trains models of input kind 'graph'; the tasks are "):
        task_for_model("graph")


def test_every_registered_model_has_a_task():
    for name in list_models():
        kind = get_model_entry(name).input_kind
        assert task_for_model(kind).input_kind == kind, name


def test_registering_a_task(monkeypatch):
    monkeypatch.setattr(tasks_mod, "TASKS", dict(tasks_mod.TASKS))  # (put back afterwards)

    class PointClouds(Task):
        name, input_kind = "points", "points"

    assert register_task(PointClouds) is PointClouds
    assert task_for_model("points") is PointClouds
    with pytest.raises(ValueError, match=r"^task 'points' is registered twice$"):
        register_task(PointClouds)
    with pytest.raises(ValueError, match=r"^task 'classification' is registered twice$"):
        register_task(type("Other", (Classification,), {}))


# -- the wrong kind of data -----------------------------------------------------------------------------------
@pytest.mark.parametrize("task_class, model, data_name, data_task", [
    (Classification, "tutorial_cnn", "fashion-scenes", "segmentation"),
    (Segmentation, "unet", "digits", "classification"),
    (ClipClassification, "r3d_18", "digits", "classification"),
])
def test_task_check_refuses_the_wrong_kind_of_data(task_class, model, data_name, data_task):
    config = TrainConfig(model=model, data=data_name, monitor="val_accuracy")
    data = SimpleNamespace(task=data_task, name=data_name)
    with pytest.raises(ValueError) as excinfo:
        task_class(config, data).check()
    text = str(excinfo.value)
    assert "\n" not in text and model in text and data_name in text and data_task in text, text


def test_task_check_refuses_a_monitor_it_does_not_measure():
    config = TrainConfig(model="tutorial_cnn", data="digits", monitor="val_mean_iou")
    with pytest.raises(ValueError, match=r"^--monitor val_mean_iou is not measured for classification; choose one of "
                                         r"val_accuracy, val_loss$"):
        Classification(config, SimpleNamespace(task="classification", name="digits")).check()


def test_cli_segmentation_model_on_a_classification_dataset(capsys, tmp_path):
    code, _, err = cli(["train", "--model", "unet", "--data", "digits", "--device", "cpu", "--quiet",
                        "--out", tmp_path / "run"], capsys)
    assert_one_line_error(code, err, "unet", "digits", "segmentation", "classification")
    assert not (tmp_path / "run").exists(), "a refused run leaves no folder"


def test_classifier_on_a_segmentation_folder_is_refused(tmp_path):
    root = write_segmentation_folder(tmp_path / "seg", n_train=6, n_test=2)
    with pytest.raises(ValueError) as excinfo:
        convolab.train(model="tutorial_cnn", data=str(root), epochs=1, device="cpu", progress=False,
                       out=str(tmp_path / "run"))
    text = str(excinfo.value)
    assert "\n" not in text and "tutorial_cnn" in text and str(root) in text and "segmentation" in text, text


# -- short real runs ----------------------------------------------------------------------------------------------
def seg_config(root: Path, out: Path, **overrides) -> TrainConfig:
    """unet at widths 4, 8, 16 (depth 2) on the tiny folder: 2 epochs of 3 steps."""
    cfg = dict(model="unet", data=str(root), out=str(out), model_kwargs=dict(base_channels=4, depth=2), epochs=2,
               batch_size=8, lr=3e-3, optimizer="adam", seed=0, device="cpu", progress=False, precision="32")
    return TrainConfig(**{**cfg, **overrides})


def clip_config(root: Path, out: Path, **overrides) -> TrainConfig:
    """R3D-18 at widths 4, 4, 8, 8 on the tiny video folder, clips of 4 frames (two per video): 2 epochs."""
    cfg = dict(model="r3d_18", data=str(root), out=str(out), model_kwargs=dict(widths=[4, 4, 8, 8]), frames=4,
               epochs=2, batch_size=8, lr=3e-3, optimizer="adam", seed=0, device="cpu", progress=False,
               precision="32")
    return TrainConfig(**{**cfg, **overrides})


@pytest.mark.slow
def test_segmentation_run(tmp_path):
    root = write_segmentation_folder(tmp_path / "seg")
    out = tmp_path / "run"
    result = convolab.train(seg_config(root, out))
    s = json.loads((out / "summary.json").read_text())
    assert s == json.loads(json.dumps(result.summary))
    assert s["task"] == "segmentation" and s["epochs"] == 2
    assert set(s["test_per_class_iou"]) == set(SEG_CLASSES)
    ious = [v for v in s["test_per_class_iou"].values() if v is not None]
    assert all(0 <= v <= 1 for v in ious) and s["test_mean_iou"] == pytest.approx(np.mean(ious), abs=1e-5)
    assert s["test_pixel_accuracy"] == s["test_accuracy"]
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2] and all(0 <= r["val_mean_iou"] <= 1 for r in rows)
    assert (out / "plots" / "masks.png").stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["task"] == "segmentation"
    # the saved model reproduces the summary's figures: the test split through the run's own model, by sklearn
    run = convolab.load_run(out)
    data = convolab.load_dataset(str(root))
    x = (data.test.images.float() / 255 - torch.tensor(data.mean).view(1, -1, 1, 1)) / torch.tensor(
        data.std).view(1, -1, 1, 1)
    with torch.no_grad():
        pred = run.model.eval()(x).argmax(1).flatten().numpy()
    true = data.test.labels.flatten().numpy().astype(np.int64)
    valid = true != IGNORE
    present = sorted(set(true[valid]) | set(pred[valid]))
    assert s["test_mean_iou"] == pytest.approx(jaccard_score(true[valid], pred[valid], labels=present,
                                                             average="macro"), abs=1e-9)


@pytest.mark.slow
def test_clip_run(tmp_path):
    root = write_video_folder(tmp_path / "videos")
    out = tmp_path / "run"
    result = convolab.train(clip_config(root, out))
    s = result.summary
    assert s["task"] == "clips" and s["epochs"] == 2
    assert 0 <= s["test_video_accuracy"] <= 1 and s["test_clip_accuracy"] == s["test_accuracy"]
    assert s["test_samples"] == 2 * 3 * 2  # 2 classes x 3 test videos x 2 clips of 4 frames
    rows = read_jsonl(out / "metrics.jsonl")
    assert all(r["val_video_accuracy"] is not None for r in rows)
    # video accuracy recomputed from the saved model's clip probabilities and the clips' videos
    run = convolab.load_run(out)
    data = convolab.load_dataset(str(root), frames=4)
    x = (data.test.images.float() / 255 - torch.tensor(data.mean).view(1, -1, 1, 1, 1)) / torch.tensor(
        data.std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        probs = run.model.eval()(x).softmax(1)
    assert s["test_video_accuracy"] == pytest.approx(video_accuracy(probs, data.test.labels, data.test.groups))
    assert len(torch.unique(data.test.groups)) == 6


def test_augmented_segmentation_run_resumes(tmp_path, monkeypatch):
    from convolab.runs.session import resume
    from convolab.train.loop import Trainer

    real = Trainer._train_epoch

    def train_epoch(self, epoch):  # Ctrl-C at the start of epoch 2
        if epoch == 2:
            raise KeyboardInterrupt
        return real(self, epoch)

    root = write_segmentation_folder(tmp_path / "seg", n_train=10, n_test=2)
    out = tmp_path / "run"
    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    with pytest.raises(KeyboardInterrupt):
        convolab.train(seg_config(root, out, augment="light", plots=False))
    monkeypatch.undo()
    assert resume(out).summary["resumes"] == 1
