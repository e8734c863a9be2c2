"""Precision, recall, F1 (per class and macro) and top-5 accuracy (issue 17, "metrics the tutorials name") against
scikit-learn's ``precision_recall_fscore_support(..., zero_division=np.nan)`` and ``top_k_accuracy_score``: on
random and hand-made confusions (the classes never predicted, never present, or neither), on the outputs of a
model trained here on scikit-learn's digits, through the classification and clip tasks, and through the NumPy
engine's kind of evaluation (kept predictions, no confusion matrix)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import precision_recall_fscore_support, top_k_accuracy_score
from torch import nn

from convolab.data import load_dataset
from convolab.train.metrics import EvalResult, class_scores, class_summary, confusion_matrix, evaluate, top_k_correct
from convolab.train.tasks import Classification, ClipClassification


def _sk(labels, predictions, k: int, average=None):
    """scikit-learn's figures with the convention convolab follows: undefined -> NaN, left out of macro means."""
    return precision_recall_fscore_support(labels, predictions, labels=list(range(k)), average=average,
                                           zero_division=np.nan)


def _same(mine, theirs) -> bool:
    """Equal to 1e-12, NaN (or None) where scikit-learn has NaN."""
    mine = [math.nan if v is None else float(v) for v in mine]
    return all((math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-12 for a, b in zip(mine, theirs, strict=True))


def _classes(k: int) -> list[str]:
    return [f"c{i}" for i in range(k)]


# -- the formulas -------------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 7).flatmap(lambda k: st.tuples(
    st.just(k), st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=40))))
def test_per_class_and_macro_equal_sklearns_on_any_confusion(case):
    k, pairs = case
    labels = np.array([t for t, _ in pairs])
    predictions = np.array([p for _, p in pairs])
    cm = confusion_matrix(torch.from_numpy(labels), torch.from_numpy(predictions), k)
    scores = class_scores(cm)
    precision, recall, f1, support = _sk(labels, predictions, k)
    assert _same(scores["precision"].tolist(), precision)
    assert _same(scores["recall"].tolist(), recall)
    assert _same(scores["f1"].tolist(), f1)
    assert scores["support"].tolist() == support.tolist()
    result = EvalResult(0.0, float((labels == predictions).mean()), len(labels), metrics={"confusion": cm})
    fields = class_summary(result, _classes(k))
    macro = _sk(labels, predictions, k, average="macro")
    assert _same([fields["test_macro_precision"], fields["test_macro_recall"], fields["test_macro_f1"]], macro[:3])
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        assert list(fields[f"test_per_class_{name}"]) == _classes(k)
        assert _same(fields[f"test_per_class_{name}"].values(), values)


def test_the_edge_cases_by_hand():
    """c0: 2 samples, 1 right (the other taken for c1); c1: 2 samples, both right; c2: 1 sample, taken for c3, never
    predicted; c3: predicted once, no sample; c4: neither present nor predicted."""
    labels = torch.tensor([0, 0, 1, 1, 2])
    predictions = torch.tensor([0, 1, 1, 1, 3])
    cm = confusion_matrix(labels, predictions, 5)
    fields = class_summary(EvalResult(0.0, 0.6, 5, metrics={"confusion": cm}), _classes(5))
    # precision: c0 1/1, c1 2/3, c2 never predicted (undefined), c3 0/1, c4 undefined
    assert fields["test_per_class_precision"] == {"c0": 1.0, "c1": 2 / 3, "c2": None, "c3": 0.0, "c4": None}
    # recall: c0 1/2, c1 2/2, c2 0/1, c3 no sample (undefined), c4 undefined
    assert fields["test_per_class_recall"] == {"c0": 0.5, "c1": 1.0, "c2": 0.0, "c3": None, "c4": None}
    # F1 = 2TP / (2TP + FP + FN): c0 2/3, c1 4/5, c2 0 (a sample missed), c3 0 (a wrong prediction), c4 undefined
    assert fields["test_per_class_f1"] == pytest.approx({"c0": 2 / 3, "c1": 0.8, "c2": 0.0, "c3": 0.0, "c4": None})
    # the macro means leave the undefined out (scikit-learn's zero_division=np.nan), they do not count them as 0
    assert fields["test_macro_precision"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert fields["test_macro_recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert fields["test_macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0 + 0) / 4)
    zero = precision_recall_fscore_support(labels, predictions, labels=range(5), average="macro", zero_division=0)
    assert fields["test_macro_precision"] != pytest.approx(zero[0])  # not the zero_division=0 convention
    assert fields["test_top5_accuracy"] is None  # 5 classes: top-5 accuracy would be 1 by construction


def test_an_empty_evaluation_has_no_figures():
    fields = class_summary(EvalResult(math.nan, math.nan, 0), _classes(7))
    assert fields["test_macro_f1"] is None and fields["test_top5_accuracy"] is None
    assert set(fields["test_per_class_recall"].values()) == {None}


@pytest.mark.parametrize("n,k,seed", [(300, 10, 0), (57, 6, 1), (1, 8, 2), (400, 100, 3)])
def test_top_k_correct_equals_sklearns_top_k_accuracy(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, k, generator=g)
    labels = torch.randint(0, k, (n,), generator=g)
    for top in (1, 3, 5):
        expected = top_k_accuracy_score(labels.numpy(), scores.numpy(), k=top, labels=list(range(k)))
        assert int(top_k_correct(scores, labels, top)) / n == pytest.approx(expected, abs=1e-12)


def test_top_k_by_hand():
    scores = torch.tensor([[0.0, 1, 2, 3, 4, 5, 6],  # label 2: 5th highest -> in the top 5
                           [6.0, 5, 4, 3, 2, 1, 0],  # label 5: 6th highest -> out
                           [0.0, 0.5, 0.1, 0.2, 0.3, 0.4, 0.6]])  # label 6: highest -> in
    assert int(top_k_correct(scores, torch.tensor([2, 5, 6]), 5)) == 2


# -- real model outputs -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_model():
    """A linear classifier trained here for 6 full-batch Adam steps on scikit-learn's digits, stopped early on
    purpose: 68 % on the test split, 96 % top-5 (so both figures are informative): (model, normalised test images,
    test labels, the dataset)."""
    data = load_dataset("digits")
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)

    def prepare(split):
        return (split.images.float() / 255 - mean) / std, split.labels.long()

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x, y = prepare(data.train)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(6):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, *prepare(data.test), data


def _batches(x, y, size):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


@pytest.mark.parametrize("batch", [359, 50, 7])
def test_a_trained_models_figures_equal_sklearns(digits_model, batch):
    model, x, y, data = digits_model
    with torch.no_grad():
        logits = model(x)
    pred = logits.argmax(1)
    assert 0.6 < float((pred == y).double().mean()) < 0.8  # some mistakes, so the figures differ from class to class
    result = Classification(SimpleNamespace(), data).evaluate(model, _batches(x, y, batch), keep=True)
    assert torch.equal(result.metrics["confusion"], confusion_matrix(y, pred, 10))
    fields = Classification(SimpleNamespace(), data).summary_fields(result)
    precision, recall, f1, _ = _sk(y.numpy(), pred.numpy(), 10)
    assert _same(fields["test_per_class_precision"].values(), precision)
    assert _same(fields["test_per_class_recall"].values(), recall)
    assert _same(fields["test_per_class_f1"].values(), f1)
    macro = _sk(y.numpy(), pred.numpy(), 10, average="macro")
    assert _same([fields["test_macro_precision"], fields["test_macro_recall"], fields["test_macro_f1"]], macro[:3])
    top5 = top_k_accuracy_score(y.numpy(), logits.numpy(), k=5, labels=list(range(10)))
    assert fields["test_top5_accuracy"] == pytest.approx(top5, abs=1e-12)
    assert result.accuracy < fields["test_top5_accuracy"] < 1


def test_an_evaluation_without_the_confusion_counts_it_from_its_predictions(digits_model):
    """The NumPy engine keeps labels, predictions and probabilities but no confusion matrix: the same figures."""
    model, x, y, data = digits_model
    full = evaluate(model, _batches(x, y, 100), keep_predictions=True)
    bare = EvalResult(full.loss, full.accuracy, full.n, predictions=full.predictions,
                      probabilities=full.probabilities, labels=full.labels)
    assert class_summary(bare, data.classes) == class_summary(full, data.classes)
    with pytest.raises(ValueError, match="confusion matrix or its kept predictions"):
        class_summary(EvalResult(full.loss, full.accuracy, full.n), data.classes)


def test_five_classes_or_fewer_have_no_top5(digits_model):
    model, x, y, _ = digits_model
    keep = y < 5
    five = nn.Sequential(model, nn.Unflatten(1, (1, 10)), nn.AdaptiveMaxPool1d(5), nn.Flatten())  # (N, 5) scores
    result = evaluate(five, [(x[keep], y[keep])])
    assert result.metrics["top5_accuracy"] is None
    fields = class_summary(result, _classes(5))
    assert "test_top5_accuracy" in fields and fields["test_top5_accuracy"] is None
    assert fields["test_macro_f1"] is not None


def test_clip_runs_get_the_figures_per_clip():
    """The clip task: precision, recall, F1 and top-5 of the clips (not of the videos), beside clip and video
    accuracy."""
    k, n = 7, 90
    g = torch.Generator().manual_seed(0)
    clips = torch.randn(n, 1, 2, 4, 4, generator=g)
    labels = torch.randint(0, k, (n,), generator=g)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, k))
    data = SimpleNamespace(classes=_classes(k), num_classes=k)
    task = ClipClassification(SimpleNamespace(), data)
    result = task.evaluate(model, _batches(clips, labels, 16))
    fields = task.summary_fields(result)
    with torch.no_grad():
        logits = model(clips)
    pred = logits.argmax(1)
    assert fields["test_clip_accuracy"] == pytest.approx(float((pred == labels).double().mean()))
    precision, recall, f1, _ = _sk(labels.numpy(), pred.numpy(), k)
    assert _same(fields["test_per_class_precision"].values(), precision)
    assert _same(fields["test_per_class_recall"].values(), recall)
    assert _same(fields["test_per_class_f1"].values(), f1)
    assert _same([fields["test_macro_f1"]], [_sk(labels.numpy(), pred.numpy(), k, average="macro")[2]])
    top5 = top_k_accuracy_score(labels.numpy(), logits.numpy(), k=5, labels=list(range(k)))
    assert fields["test_top5_accuracy"] == pytest.approx(top5, abs=1e-12)


# -- data parallelism ---------------------------------------------------------------------------------------------
@pytest.mark.slow  # two processes through torchrun, one epoch of digits (10-30 s on a shared CPU)
def test_a_two_process_ddp_run_counts_the_whole_test_split(tmp_path):
    """Every process evaluates the whole test split (its loader is not sharded), so rank 0's summary.json has the
    figures of all 359 test images: scikit-learn's on the saved model's outputs."""
    import json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import convolab

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port",
                           str(port), "-m", "convolab", "train", "--data", "digits", "--device", "cpu", "--epochs",
                           "1", "--precision", "32", "--quiet", "--no-plots", "--no-checkpoints", "--out", str(out)],
                          capture_output=True, text=True, timeout=300,  # torchrun's log folder under tmp_path
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["test_samples"] == 359
    run, test = convolab.load_run(out), load_dataset("digits").test
    mean, std = torch.tensor(run.mean).view(1, -1, 1, 1), torch.tensor(run.std).view(1, -1, 1, 1)
    with torch.no_grad():
        logits = run.model((test.images.float() / 255 - mean) / std)
    y, pred = test.labels.numpy(), logits.argmax(1).numpy()
    assert summary["test_accuracy"] == pytest.approx((y == pred).mean(), abs=1e-12)
    macro = _sk(y, pred, 10, average="macro")
    assert _same([summary["test_macro_precision"], summary["test_macro_recall"], summary["test_macro_f1"]], macro[:3])
    assert _same(summary["test_per_class_recall"].values(), _sk(y, pred, 10)[1])
    top5 = top_k_accuracy_score(y, logits.numpy(), k=5, labels=list(range(10)))
    assert summary["test_top5_accuracy"] == pytest.approx(top5, abs=1e-12)
