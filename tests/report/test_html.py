"""``convolab report``: the page's content, and the page in a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import errno
import re
import shutil

import pytest
from PIL import Image
from tests.cli.test_cli import assert_one_line_error, cli
from tests.report.browser import chromium, open_page

from convolab.explain.sanity import RANDOMIZATION_SEEDS, SANITY_METHODS
from convolab.report import data as data_module
from convolab.report import html as html_module
from convolab.report.data import ReportData, gather_stages
from convolab.report.html import build_report
from convolab.runs.reader import load_run


def build_counting(run_dir, task_class, **kwargs):
    """``build_report`` with the task's ``evaluate`` counted: (page path, the gathered ReportData, calls)."""
    calls, gathered = [], []
    real_evaluate, real_gather = task_class.evaluate, html_module.gather

    def evaluate(self, *args, **kw):
        calls.append(args)
        return real_evaluate(self, *args, **kw)

    def spy(*args, **kw):
        gathered.append(real_gather(*args, **kw))
        return gathered[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_class, "evaluate", evaluate)
        mp.setattr(html_module, "gather", spy)
        path = build_report(run_dir, **kwargs)
    return path, gathered[0], len(calls)


@pytest.fixture(scope="module")
def built(digits_run, tmp_path_factory):
    from convolab.train.tasks import Classification

    out = tmp_path_factory.mktemp("report") / "report.html"
    return build_counting(digits_run.run_dir, Classification, samples=12, out=out)


@pytest.fixture(scope="module")
def report(built):
    return built[0]


def test_sections_and_figures(report, digits_run):
    page = report.read_text()
    for anchor in ("config", "curves", "test", "model", "kernels", "features", "gradcam", "sanity"):
        assert f'id="{anchor}"' in page
    acc = digits_run.summary["test_accuracy"]
    assert f"test accuracy <b>{100 * acc:.2f}%</b>" in page  # the evaluation reproduces the run's figure
    assert "most-confused pairs" in page and "parameter randomization" in page and "completeness" in page
    assert f"{digits_run.summary['params']:,} parameters" in page


def test_the_test_split_is_evaluated_once_and_agrees_with_the_summary(built, digits_run):
    """One evaluation through the run's task (rendering evaluates nothing), with the training's settings: the
    figures are summary.json's exactly, and the confusion matrix gives the accuracy it claims."""
    _, data, calls = built
    assert calls == 1
    keys = ("test_accuracy", "test_loss", "test_macro_precision", "test_macro_recall", "test_macro_f1",
            "test_top5_accuracy", "test_per_class_precision", "test_per_class_recall", "test_per_class_f1")
    assert data.test.fields == {k: digits_run.summary[k] for k in keys}
    cm = data.test.confusion
    assert int(cm.sum()) == data.test.n == digits_run.summary["test_samples"]
    assert int(cm.trace()) / int(cm.sum()) == digits_run.summary["test_accuracy"]
    assert [r.count for r in data.test.per_class] == cm.sum(1).tolist()
    assert data.skipped == {} and data.sanity is not None
    # precision, recall and F1 of each class again from the confusion matrix, by the textbook formulas (issue 17)
    for k, row in enumerate(data.test.per_class):
        tp, predicted, present = int(cm[k, k]), int(cm[:, k].sum()), int(cm[k].sum())
        assert row.precision == (tp / predicted if predicted else None)
        assert row.recall == (tp / present if present else None)
        assert row.f1 == pytest.approx(2 * tp / (predicted + present)) if predicted + present else row.f1 is None


def test_the_per_class_table_has_precision_recall_and_f1(report, built, digits_run):
    page, s = report.read_text(), digits_run.summary
    _, data, _ = built
    assert (f"macro precision <b>{s['test_macro_precision']:.4f}</b>, recall <b>{s['test_macro_recall']:.4f}</b>, "
            f"F1 <b>{s['test_macro_f1']:.4f}</b>; top-5 accuracy <b>{100 * s['test_top5_accuracy']:.2f}%</b>") in page
    assert '<th class="">precision</th><th class="">recall</th><th class="">F1</th>' in page
    for row in data.test.per_class:
        cells = "".join(f'<td class="">{"n/a" if v is None else f"{100 * v:.1f}%"}</td>'
                        for v in (row.precision, row.recall, row.f1))
        assert cells + "</tr>" in page, row.name
    assert "zero_division=nan" in page


def test_self_contained(report):
    page = report.read_text()
    assert not re.search(r"""(src|href)=["'](https?:)?//""", page)  # nothing fetched
    assert "<script" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 10
    for data in images:
        Image.open(__import__("io").BytesIO(base64.b64decode(data))).verify()


def test_in_chromium(report, tmp_path):
    """The page loads with no console errors, every image decodes, and a screenshot is saved."""
    with chromium() as driver:
        open_page(driver, report)
        assert driver.title.startswith("convolab report")
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        count = driver.execute_script("return document.images.length")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
    assert count >= 10 and broken == 0
    assert errors == []
    assert Image.open(shot).size[0] >= 1000


def test_cli_writes_into_the_run(digits_run, tmp_path, capsys):
    out = tmp_path / "r.html"
    code, stdout, err = cli(["report", digits_run.run_dir, "--out", out, "--samples", "4"], capsys)
    assert code == 0, err
    assert f"report: {out}" in stdout and out.stat().st_size > 10_000


def test_cli_errors(tmp_path, capsys):
    code, _, err = cli(["report", tmp_path / "nope"], capsys)
    assert_one_line_error(code, err, "no such run directory")


# -- verdicts and the summary ---------------------------------------------------------------------
def test_every_sanity_check_has_a_verdict_and_the_summary_says_whom_to_trust(report):
    page = report.read_text()
    assert page.index('id="trust"') < page.index('id="config"')  # the summary comes first
    trust = page[page.index('id="trust"'):page.index('id="config"')]
    for method in SANITY_METHODS:
        assert re.search(rf"<td class=\"l\">{method}</td><td class=\"l\"><span class=\"\w+\">"
                         r"(trusted|not trusted|uncertain)</span>", trust), method
    sanity = page[page.index('id="sanity"'):]
    assert f"over {RANDOMIZATION_SEEDS} seeded re-initialisations" in sanity
    randomization = sanity[:sanity.index("(b)")]
    assert len(re.findall(r'<td class="">-?\d\.\d{3} ± \d\.\d{3}</td>', randomization)) == len(SANITY_METHODS)
    assert len(re.findall(r"(passes|fails|inconclusive)</span>", randomization)) == len(SANITY_METHODS)
    verdicts = re.findall(r"(better than random|worse than random|no better than random)</span>", sanity)
    assert len(verdicts) == 2 * len(SANITY_METHODS)  # deletion and insertion, per method


def test_the_curves_know_the_recipe(digits_run, monkeypatch):
    """The report's loss plot gets the run's label smoothing and class count, so its labels say what each loss is."""
    from convolab import plotting as plots

    seen = {}
    real = plots.curve_figures

    def spy(rows, **kwargs):
        seen.update(kwargs)
        return real(rows, **kwargs)

    monkeypatch.setattr(plots, "curve_figures", spy)
    run = load_run(digits_run.run_dir)
    assert len(data_module._curves(run, run.metrics())) == 3  # loss, accuracy, the rate per step
    assert seen == {"label_smoothing": 0.0, "num_classes": 10, "mixed": False}


# -- where the page goes --------------------------------------------------------------------------
@pytest.fixture
def no_work(monkeypatch):
    """Any work (loading the data) fails the test: refusals must come before it."""
    def work(*_args, **_kwargs):
        raise AssertionError("the report's work started")

    monkeypatch.setattr(data_module, "load_data", work)


def test_an_existing_out_file_is_refused_before_the_work(digits_run, tmp_path, no_work):
    out = tmp_path / "mine.html"
    out.write_text("the user's page")
    with pytest.raises(FileExistsError, match=r"--out .*mine.html exists; pass --overwrite"):
        build_report(digits_run.run_dir, out=out)
    assert out.read_text() == "the user's page"
    assert html_module._destination(load_run(digits_run.run_dir), out, True) == out  # overwrite: allowed


def test_the_runs_own_report_is_replaced_as_before(digits_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(digits_run.run_dir, run_dir)
    (run_dir / "report.html").write_text("an older report")
    assert html_module._destination(load_run(run_dir), None, False) == run_dir / "report.html"


def test_a_folder_or_an_unwritable_place_is_refused_before_the_work(digits_run, tmp_path, no_work):
    with pytest.raises(IsADirectoryError, match=rf"--out {tmp_path} is a folder; give a file name"):
        build_report(digits_run.run_dir, out=tmp_path)
    (tmp_path / "f").write_text("a file")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        build_report(digits_run.run_dir, out=tmp_path / "f" / "r.html")
    with pytest.raises(PermissionError, match=r"^cannot write /proc/convolab/r.html \("):
        build_report(digits_run.run_dir, out="/proc/convolab/r.html")


@pytest.fixture
def stub_sections(monkeypatch):
    """Nothing gathered: the stages are stepped through and an empty report is rendered at once (for tests of
    the write and the progress bar)."""
    def gather(run, *, step, **_kwargs):
        for stage in gather_stages(run.task):
            step(stage)
        return ReportData(run.path, "stub", run.task, run.config, run.summary, [], run.classes, run.input_size)

    monkeypatch.setattr(html_module, "gather", gather)


def test_a_full_disk_while_writing_the_page_is_one_line(digits_run, tmp_path, monkeypatch, stub_sections):
    import convolab.atomic

    def full(dest, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(convolab.atomic, "write_text", full)
    out = tmp_path / "r.html"
    with pytest.raises(PermissionError) as e:
        build_report(digits_run.run_dir, out=out, progress=False)
    assert str(e.value) == f"cannot write {out} (No space left on device)"


def test_progress_on_a_terminal_unless_quiet(digits_run, tmp_path, monkeypatch, stub_sections):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for progress in (True, False):
        monkeypatch.setattr(sys, "stderr", Terminal())
        build_report(digits_run.run_dir, out=tmp_path / f"{progress}.html", progress=progress)
        assert ("report" in sys.stderr.getvalue() and "step" in sys.stderr.getvalue()) is progress


def test_cli_refuses_an_existing_out(digits_run, tmp_path, capsys, no_work):
    out = tmp_path / "mine.html"
    out.write_text("the user's page")
    code, _, err = cli(["report", digits_run.run_dir, "--out", out], capsys)
    assert_one_line_error(code, err, str(out), "exists")
    assert out.read_text() == "the user's page"


def test_a_tasks_own_figures_reach_the_header_and_the_test_section():
    """A task the page was never written for: its headline, unit, note, columns and figures come from its layout."""
    import torch

    from convolab.report.data import ClassRow, TaskLayout, TestResults
    from convolab.report.figures import Figure

    tiny = Figure(b"\x89PNG")
    fields = {"test_accuracy": 0.5, "test_loss": 1.25, "test_dice": 0.123456, "test_recall": None}
    test = TestResults(n=7, loss=1.25, accuracy=0.5, fields=fields, describe="", confusion=torch.zeros(2, 2),
                       per_class=[ClassRow("a", 3, 0.25), ClassRow("b", 4, None)], figures={"bars": tiny,
                       "outlines": tiny}, confused_pairs=None)
    layout = TaskLayout(unit="volumes", headline=(("dice", "test_dice", ""), ("voxel accuracy", "test_accuracy", "%"),
                                                   ("recall", "test_recall", "%")),
                        note="dice over all voxels <of the split>", columns=("voxels", "dice"), one_class_images=False)
    data = ReportData(path=None, title="t", task="volumes", config={}, summary={}, metrics=[], classes=["a", "b"],
                      input_size=(1, 4, 4, 4), test=test, layout=layout)
    assert html_module._headline(data) == " · dice 0.1235 · voxel accuracy 50.00%"  # recall is None: left out
    section = html_module._test_section(data)
    assert "<p>dice <b>0.1235</b> on 7 volumes (loss 1.2500); voxel accuracy <b>50.00%</b>.</p>" in section
    assert "dice over all voxels &lt;of the split&gt;" in section
    assert "<h3>per-class dice</h3>" in section and '<th class="">voxels</th>' in section
    assert "25.0%" in section and "n/a" in section
    assert "precision" not in section and "macro" not in section  # the task wrote no per-class precision, recall, F1
    assert "most-confused pairs" not in section  # the task has none
    assert section.count("<img") == 2 and "<h3>outlines</h3>" in section  # the first figure by the table


# -- calibration (issue 17: uncertainty with dropout) ----------------------------------------------------------
def test_a_model_without_dropout_gets_a_one_line_calibration_note(report, built):
    """tutorial_cnn has no dropout: the calibration section is one sentence saying so (and its stage is stepped)."""
    _, data, _ = built
    assert isinstance(data.calibration, str) and "has no dropout layers" in data.calibration
    assert "calibration" in gather_stages("classification")
    page = report.read_text()
    section = page[page.index('id="calibration"'):]
    section = section[:section.index("</section>")]
    assert section.count("<p") == 1 and "no dropout layers" in section and "<img" not in section
    assert page.index('id="test"') < page.index('id="calibration"') < page.index('id="model"')


@pytest.fixture(scope="module")
def mlp_run_dir(tmp_path_factory, digits_config):
    """mlp (dropout 0.2) trained 1 epoch on digits."""
    import convolab

    return convolab.train(digits_config(tmp_path_factory.mktemp("mlp-report") / "run", model="mlp", epochs=1)).run_dir


def test_the_calibration_of_a_dropout_model_against_references(mlp_run_dir):
    """The plain ECE from the test evaluation, the MC-dropout ECE from seeded passes over the same batch (6 here, 30
    in the report): both
    equal the ECE and the passes written out (tests/explain/test_uncertainty.py) on the model's own outputs; the
    section shows both, says which is lower and embeds the reliability diagrams."""
    import numpy as np
    import torch
    from tests.explain.test_uncertainty import ece_reference, mc_reference

    from convolab.data import load_dataset
    from convolab.train.tasks import TASKS

    run = load_run(mlp_run_dir)
    config = data_module.run_config(run)
    data = data_module.load_data(run, config)
    task = TASKS[run.task](config, data)
    ev = data_module._evaluate_test(run, task, config, data)
    cal = data_module._calibration(run, task, config, data, ev, samples=6)
    assert (cal.samples, cal.seed, data_module.MC_SAMPLES) == (6, 0, 30)

    test = load_dataset("digits").test
    mean, std = torch.tensor(run.mean).view(1, -1, 1, 1), torch.tensor(run.std).view(1, -1, 1, 1)
    x, y = (test.images.float() / 255 - mean) / std, test.labels.numpy()
    with torch.no_grad():
        plain = run.model.eval()(x).softmax(1).double().numpy()
    ref, counts, _, _ = ece_reference(plain, y, 15)
    assert cal.plain.ece == pytest.approx(ref, abs=1e-6) and cal.plain.counts.tolist() == counts
    assert cal.plain.accuracy_all == run.summary["test_accuracy"]
    mc = mc_reference(run.model, x, 6, seed=0)  # the test split is one evaluation batch (359 < eval batch size)
    ref_mc, counts_mc, _, _ = ece_reference(mc["probabilities"], y, 15)
    assert cal.mc.ece == pytest.approx(ref_mc, abs=1e-6) and cal.mc.counts.tolist() == counts_mc
    top = mc["probabilities"].argmax(1)
    assert cal.mean_std == pytest.approx(float(mc["std"][np.arange(len(y)), top].mean()), rel=1e-6)
    assert cal.mean_mutual_information == pytest.approx(float(mc["mutual_information"].mean()), rel=1e-5)

    page = ReportData(run.path, "t", run.task, run.config, run.summary, [], run.classes, run.input_size,
                      calibration=cal)
    section = html_module._calibration_section(page)
    assert f"<b>{cal.plain.ece:.4f}</b>" in section and f"<b>{cal.mc.ece:.4f}</b>" in section
    assert "MC dropout (6 passes, seed 0)" in section and "ECE (15 bins)" in section
    lower = "MC dropout is better calibrated" if cal.mc.ece < cal.plain.ece else \
        "the plain predictions are better calibrated"
    assert lower in section
    assert section.count("<img") == 1
    Image.open(__import__("io").BytesIO(cal.diagram.png)).verify()


@pytest.mark.slow
def test_the_report_of_a_dropout_model_has_the_calibration_section(mlp_run_dir, tmp_path):
    out = build_report(mlp_run_dir, out=tmp_path / "r.html", samples=4, progress=False)
    page = out.read_text()
    assert '<a href="#calibration">calibration</a>' in page
    section = page[page.index('id="calibration"'):]
    section = section[:section.index("</section>")]
    assert "ECE (15 bins)" in section and 'alt="reliability diagrams"' in section
    assert "MC dropout (30 passes, seed 0)" in section


@pytest.mark.parametrize("loss, smoothing", [("cross_entropy", 0.1), ("mse", None), (None, 0.1)])
def test_the_reports_loss_curve_names_the_runs_loss(tmp_path, monkeypatch, loss, smoothing):
    """Label smoothing (and its floor) belongs to a cross-entropy curve only; a run of another --loss gets its
    curve named the training objective, as the run's own plot does (a config without 'loss' is cross-entropy)."""
    import types

    import convolab.plotting as plotting

    seen = {}

    def curve_figures(rows, **kw):
        seen.update(kw)
        return []

    monkeypatch.setattr(plotting, "curve_figures", curve_figures)
    config = {"recipe": {"label_smoothing": 0.1}, "config": {} if loss is None else {"loss": loss}}
    run = types.SimpleNamespace(config=config, classes=["a", "b"], path=tmp_path)
    data_module._curves(run, [{"epoch": 1, "train_loss": 1.0}])
    assert seen["label_smoothing"] == smoothing
