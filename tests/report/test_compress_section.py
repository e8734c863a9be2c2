"""The report's compression section: convolab compress's rows as a table, speed-ups against the baselines."""

import re
from pathlib import Path

from convolab.report.data import ReportData
from convolab.report.html import _compress_section


def _data(compress):
    return ReportData(Path("runs/x"), "t", "classification", {}, {"compress": compress}, [], ["a"], (1, 8, 8),
                      compress=compress)


def test_compress_section_shows_every_row_and_the_ratios():
    rows = [{"name": "fp32 eager", "accuracy": 0.9, "size_bytes": 800_000, "ms": {"1": 1.0, "256": 12.0}},
            {"name": "fp32 compiled", "accuracy": 0.9, "size_bytes": 800_000, "ms": {"1": 0.5, "256": 6.0}},
            {"name": "int8 torchao", "accuracy": 0.8955, "size_bytes": 200_000, "ms": {"1": 0.4, "256": 3.0}}]
    page = _compress_section(_data({"method": "ptq", "from": "runs/demo", "rows": rows}))
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", page)
    int8 = cells[cells.index("int8 torchao"):][:8]
    assert int8 == ["int8 torchao", "0.8955", "200.0 kB", "4.00x", "0.400", "3.000", "1.25x", "2.00x"]
    assert "runs/demo" in page and "not eager float32" in page


def test_no_compress_section_for_a_trained_run():
    assert _compress_section(_data(None)) == ""
    assert _compress_section(_data({"method": "ptq"})) == ""
