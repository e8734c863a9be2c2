"""``convolab report``: the page's content, and the page in a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import re

import pytest
from PIL import Image
from tests.cli.test_cli import assert_one_line_error, cli
from tests.report.browser import chromium, open_page

from convolab.report.html import build_report


@pytest.fixture(scope="module")
def report(digits_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    return build_report(digits_run.run_dir, samples=12, out=out)


def test_sections_and_figures(report, digits_run):
    page = report.read_text()
    for anchor in ("config", "curves", "test", "model", "kernels", "features", "gradcam", "sanity"):
        assert f'id="{anchor}"' in page
    acc = digits_run.summary["test_accuracy"]
    assert f"test accuracy <b>{100 * acc:.2f}%</b>" in page  # the evaluation reproduces the run's figure
    assert "most-confused pairs" in page and "parameter randomization" in page and "completeness" in page
    assert f"{digits_run.summary['params']:,} parameters" in page


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
