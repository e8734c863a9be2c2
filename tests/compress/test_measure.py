"""compress.measure: the table's figures from the rows, accuracy fed in fixed-size batches, the Pareto front."""

import time

import matplotlib
import pytest
import torch

from convolab.compress.measure import Row, accuracy, normalise, pareto_figure, table, time_call


def _rows():
    return [Row("fp32 eager", 0.90, 800_000, {1: 1.0, 256: 12.0}),
            Row("fp32 compiled", 0.90, 800_000, {1: 0.5, 256: 6.0}),
            Row("fp32 onnxruntime", 0.90, 810_000, {1: 0.1, 256: 5.0}),
            Row("int8 torchao", 0.8955, 200_000, {1: 0.4, 256: 3.0})]


def test_table_ratios_are_the_baselines_time_over_the_rows():
    lines = table(_rows()).splitlines()
    assert lines[0].split()[:5] == ["variant", "accuracy", "size", "ms@1", "ms@256"]
    int8 = lines[-1]
    assert "0.8955 (-0.45)" in int8  # points against the first row
    assert "200.0 kB (4.00x smaller)" in int8
    assert "1.25x / 2.00x" in int8  # compiled: 0.5/0.4, 6/3
    assert "0.25x / 1.67x" in int8  # onnxruntime: 0.1/0.4, 5/3
    assert "1.00x / 1.00x" in lines[3]  # the compiled baseline against itself


def test_accuracy_pads_the_last_batch_and_drops_the_padding():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (37, 1, 4, 4), dtype=torch.uint8)
    targets = torch.randint(0, 3, (37,))
    w = torch.randn(16, 3)
    seen = []

    def model(x):
        seen.append(len(x))
        return x.flatten(1) @ w
    got = accuracy(model, images, targets, (0.5,), (0.25,), batch=16)
    want = ((normalise(images, (0.5,), (0.25,)).flatten(1) @ w).argmax(1) == targets).float().mean().item()
    assert got == pytest.approx(want)
    assert seen == [16, 16, 16]  # every batch the compiled size


def test_normalise_matches_the_formula():
    x = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)
    got = normalise(x, (0.5, 0.2), (0.5, 0.1))
    want = torch.tensor([[[[-1.0, 1.0]], [[0.0, 2.0]]]])
    assert torch.allclose(got, want, atol=1e-6)


def test_time_call_measures_per_call_time():
    t = time_call(lambda x: time.sleep(0.004), None, warmup=1, repeats=3, min_seconds=0.05)
    assert 0.004 <= t < 0.05


def test_pareto_front_joins_the_points_no_other_beats():
    matplotlib.use("Agg")
    rows = _rows() + [Row("dominated", 0.85, 900_000, {1: 2.0, 256: 20.0})]
    fig = pareto_figure(rows)
    ax = fig.axes[0]
    (front,) = [line for line in ax.get_lines() if line.get_label() == "Pareto front"]
    xs, ys = list(front.get_xdata()), list(front.get_ydata())
    # fastest first: int8 (3.0 ms, 0.8955), then onnxruntime (5.0, 0.90); compiled, eager and dominated are beaten
    assert xs == [3.0, 5.0] and ys == [0.8955, 0.90]
