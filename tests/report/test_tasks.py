"""``convolab report`` of a segmentation run and of a clip run: the task's sections, figures and numbers.

Each run is trained here on tiny data (a folder of 16x16 PNG pairs written with PIL; a folder of moving-fashion
videos of two clips each), then reported once with the task's ``evaluate`` counted.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image
from tests.report.test_html import build_counting

from convolab.runs.session import train
from convolab.train import TrainConfig

pytestmark = pytest.mark.slow  # each module fixture trains a model (10 to 40 s on one core)

_TINY = dict(epochs=3, batch_size=8, device="cpu", progress=False, precision="32", seed=0)


def _images(page: str) -> list[Image.Image]:
    out = []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        im.load()
        out.append(im)
    return out


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}">')
    return page[start:page.index("</section>", start)]


# -- segmentation ---------------------------------------------------------------------------------
def write_segmentation_folder(root, n_train: int = 24, n_test: int = 8, size: int = 16, seed: int = 0) -> None:
    """ROOT/{train,test}/{images,masks}/NNN.png + classes.txt: dark noise with a bright and a mid-grey square
    (classes 1 and 2 of the mask; the mid square drawn last, so it may cover part of the bright one)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 60, (size, size), dtype=np.uint8)
            mask = np.zeros((size, size), np.uint8)
            for cls, side, grey in ((1, 6, 200), (2, 5, 120)):
                y, x = rng.integers(0, size - side, 2)
                mask[y:y + side, x:x + side] = cls
                image[y:y + side, x:x + side] = grey
            Image.fromarray(image).save(root / split / "images" / f"{i:03d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i:03d}.png")
    (root / "classes.txt").write_text("background\nbright\nmid\n")


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    write_segmentation_folder(root / "data")
    return train(TrainConfig(model="unet", model_kwargs=dict(base_channels=4, depth=2), data=str(root / "data"),
                             out=str(root / "run"), lr=1e-2, **_TINY))


@pytest.fixture(scope="module")
def seg_report(seg_run, tmp_path_factory):
    from convolab.train.tasks import Segmentation

    path, data, calls = build_counting(seg_run.run_dir, Segmentation, samples=4, progress=False,
                                       out=tmp_path_factory.mktemp("seg-report") / "report.html")
    return path.read_text(), data, calls


def test_segmentation_is_evaluated_once_and_its_numbers_are_the_summarys(seg_run, seg_report):
    page, data, calls = seg_report
    s = seg_run.summary
    assert calls == 1  # the test split, once: no section (nor the rendering) evaluates again
    for key in ("test_accuracy", "test_loss", "test_pixel_accuracy", "test_mean_iou", "test_per_class_iou"):
        assert data.test.fields[key] == s[key], key
    # The figures again from the pixel confusion matrix, by the textbook formulas.
    cm = data.test.confusion.double()
    assert float(cm.trace() / cm.sum()) == pytest.approx(s["test_pixel_accuracy"], abs=1e-12)
    assert int(cm.sum()) == 8 * 16 * 16  # no ignored pixels in these masks
    iou = {}
    for k, name in enumerate(data.classes):
        union = cm[k].sum() + cm[:, k].sum() - cm[k, k]
        iou[name] = None if union == 0 else float(cm[k, k] / union)
    for name, v in iou.items():
        assert (s["test_per_class_iou"][name] is None) if v is None else s["test_per_class_iou"][name] == \
            pytest.approx(v, abs=1e-6)
    present = [v for v in iou.values() if v is not None]
    assert s["test_mean_iou"] == pytest.approx(sum(present) / len(present), abs=1e-12)
    # ... and the page shows them
    test = _section(page, "test")
    assert f"pixel accuracy <b>{100 * s['test_pixel_accuracy']:.2f}%</b>" in test
    assert f"mean IoU <b>{s['test_mean_iou']:.4f}</b>" in test
    for row in data.test.per_class:
        v = s["test_per_class_iou"][row.name]
        cell = "n/a" if v is None else f"{100 * v:.1f}%"
        assert f'<td class="l">{row.name}</td><td class="">{row.count:,}</td><td class="">{cell}</td>' in test


def test_segmentation_page_has_the_iou_chart_and_the_mask_overlays(seg_report):
    page, data, _ = seg_report
    assert set(data.test.figures) == {"iou", "masks"}
    masks = Image.open(io.BytesIO(data.test.figures["masks"].png))
    iou = Image.open(io.BytesIO(data.test.figures["iou"].png))
    assert masks.height > masks.width  # rows of image | true | predicted for 4 test images
    assert "masks: image | true | predicted" in page and "per-class IoU" in page
    embedded = [base64.b64decode(d) for d in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    assert data.test.figures["masks"].png in embedded and data.test.figures["iou"].png in embedded
    assert iou.width > 200
    # the mean IoU per epoch joins the curves (loss, accuracy, mean IoU, the rate)
    assert len(data.curves) == 4 and all(math.isfinite(r["val_mean_iou"]) for r in data.metrics)
    assert len(_images(page)) >= 8


def test_segmentation_leaves_out_gradcam_and_the_sanity_checks_with_a_reason(seg_report):
    page, data, _ = seg_report
    assert set(data.skipped) == {"gradcam", "sanity"}
    assert data.gradcam is None and data.sanity is None
    for anchor in ("gradcam", "sanity"):
        body = _section(page, anchor)
        assert "left out" in body and "scores every pixel" in body and "<img" not in body
    assert 'id="trust"' not in page  # the summary of the sanity checks has nothing to summarise
    for anchor in ("config", "curves", "test", "model", "kernels", "features"):
        assert "<img" in _section(page, anchor) or anchor in ("config", "model"), anchor
    assert f"{data.summary['params']:,} parameters" in page


# -- clips ----------------------------------------------------------------------------------------
def write_video_folder(root, frames: int = 8, size: int = 16) -> None:
    """ROOT/{train,test}/<motion>/vNNN.mkv: moving-fashion videos of ``frames`` frames (4 of its 8 motions)."""
    from convolab.data.moving import MOTIONS, load_moving_fashion
    from convolab.data.video_io import write_video

    tr_x, tr_y, te_x, te_y = load_moving_fashion(frames=frames, n_train=160, n_test=24, size=size, seed=0)
    for split, x, y in (("train", tr_x, tr_y), ("test", te_x, te_y)):
        for i in range(len(x)):
            if int(y[i]) < 4:  # the four moves: the fastest to learn
                write_video(root / split / MOTIONS[int(y[i])] / f"v{i:03d}.mkv", x[i].permute(1, 2, 3, 0).numpy(), 8)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    write_video_folder(root / "data")
    # frames=4 of videos of 8: two clips per video, so the video accuracy averages two clips. A narrow R3D-18
    # learns the moves in 4 epochs (here clip 0.42, video 0.67 on CPU), where a narrow C3D stays at chance.
    return train(TrainConfig(model="r3d_18", model_kwargs=dict(widths=(8, 8, 8, 8)), data=str(root / "data"),
                             frames=4, out=str(root / "run"), lr=1e-2, **{**_TINY, "epochs": 4}))


@pytest.fixture(scope="module")
def clip_report(clip_run, tmp_path_factory):
    from convolab.train.tasks import ClipClassification

    path, data, calls = build_counting(clip_run.run_dir, ClipClassification, samples=4, progress=False,
                                       out=tmp_path_factory.mktemp("clip-report") / "report.html")
    return path.read_text(), data, calls


def test_clips_are_evaluated_once_and_the_numbers_are_the_summarys(clip_run, clip_report):
    page, data, calls = clip_report
    s = clip_run.summary
    assert calls == 1
    for key in ("test_accuracy", "test_loss", "test_clip_accuracy", "test_video_accuracy", "test_macro_f1",
                "test_per_class_precision", "test_per_class_recall", "test_per_class_f1"):
        assert data.test.fields[key] == s[key], key
    assert [r.f1 for r in data.test.per_class] == list(s["test_per_class_f1"].values())  # per clip (issue 17)
    cm = data.test.confusion
    assert int(cm.sum()) == data.test.n == s["test_samples"]
    assert data.test.n == 2 * len(list((clip_run.run_dir / "..").resolve().glob("data/test/*/*.mkv")))
    assert int(cm.trace()) / int(cm.sum()) == s["test_clip_accuracy"]
    assert [r.count for r in data.test.per_class] == cm.sum(1).tolist()
    test = _section(page, "test")
    assert f"clip accuracy <b>{100 * s['test_clip_accuracy']:.2f}%</b> on {data.test.n:,} clips" in test
    assert f"video accuracy <b>{100 * s['test_video_accuracy']:.2f}%</b>" in test
    assert f"F1 <b>{s['test_macro_f1']:.4f}</b>." in test and "top-5" not in test  # 2 classes: no top-5
    assert '<th class="">precision</th><th class="">recall</th><th class="">F1</th>' in test
    assert f"clip accuracy {100 * s['test_clip_accuracy']:.2f}%" in page[:page.index("</header>")]


def test_clip_page_has_the_confusion_matrix_and_leaves_out_the_image_sections(clip_report):
    page, data, _ = clip_report
    assert set(data.test.figures) == {"confusion"}
    embedded = [base64.b64decode(d) for d in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    assert data.test.figures["confusion"].png in embedded
    assert len(data.curves) == 4  # loss, accuracy, video accuracy, the rate
    assert set(data.skipped) == {"kernels", "features", "gradcam", "sanity"}
    for anchor in data.skipped:
        body = _section(page, anchor)
        assert "left out" in body and "<img" not in body, anchor
    assert "per clip" in _section(page, "model")
    assert 'id="trust"' not in page


def test_the_video_accuracy_averages_each_videos_clips(clip_run):
    """The figure summary.json (and so the page) reports, against a by-hand average over each video's two clips."""
    from convolab.data.loader import DeviceLoader
    from convolab.report.data import load_data, run_config
    from convolab.runs.reader import load_run

    run = load_run(clip_run.run_dir)
    data = load_data(run, run_config(run))
    test = data.test
    x = torch.cat([b for b, _ in DeviceLoader(test, 64, mean=run.mean, std=run.std, device="cpu")])
    with torch.no_grad():
        p = run.model(x).softmax(1).double()
    right = []
    for g in test.groups.unique():
        idx = (test.groups == g).nonzero().flatten()
        assert len(idx) == 2 and len(set(test.labels[idx].tolist())) == 1
        right.append(int(p[idx].mean(0).argmax()) == int(test.labels[idx[0]]))
    assert sum(right) / len(right) == pytest.approx(clip_run.summary["test_video_accuracy"], abs=1e-12)


# -- a task the report has never heard of ---------------------------------------------------------------------
def test_a_new_task_gets_its_sections_skipped_without_editing_the_report(digits_run, monkeypatch):
    """A task registered here (a classification that leaves out the kernels and the sanity checks): the report asks
    the task, so its run's page leaves those sections out with the task's reasons and shows the rest."""
    from convolab.report.data import gather, gather_stages
    from convolab.report.html import render
    from convolab.runs.reader import load_run
    from convolab.train.tasks import TASKS, Classification

    class Thumbnails(Classification):
        name = "thumbnails"
        report_skipped = {"kernels": "First-layer kernels are left out: a thumbnail's kernels are a blur.",
                          "sanity": "The attribution sanity checks are left out: thumbnails are too small."}

    monkeypatch.setitem(TASKS, "thumbnails", Thumbnails)  # (taken out afterwards)
    run = load_run(digits_run.run_dir)
    run.task = "thumbnails"  # as config.json would name it
    stepped = []
    data = gather(run, samples=4, step=stepped.append)
    assert stepped == gather_stages("thumbnails")
    assert "kernels" not in stepped and "Grad-CAM" in stepped and "completeness" not in stepped
    assert data.skipped == Thumbnails.report_skipped
    assert data.kernels is None and data.sanity is None
    assert data.gradcam is not None and len(data.feature_maps) == len(data.classes)  # one test image per class
    assert list(data.test.figures) == ["confusion", "predictions"] and data.test.confused_pairs is not None
    assert data.test.fields == {k: v for k, v in digits_run.summary.items() if k in data.test.fields}
    assert {"test_accuracy", "test_loss", "test_macro_f1", "test_per_class_f1"} <= set(data.test.fields)
    page = render(data)
    for anchor, why in Thumbnails.report_skipped.items():
        body = _section(page, anchor)
        assert html.escape(why) in body and "<img" not in body, anchor
    assert "<img" in _section(page, "gradcam") and "<img" in _section(page, "features")
