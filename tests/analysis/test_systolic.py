"""The hardware view: layers as matrix products, SCALE-Sim's systolic-array model against a cycle-by-cycle
simulation, the roofline bound, and ``convolab summary --hardware``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.cli.test_cli import assert_one_line_error, cli
from torch import nn

from convolab.analysis import summarize, systolic
from convolab.analysis.systolic import Machine, MatmulShape, array_cycles, fold_count, simulate

# 40 random shapes (M, K, N up to 16; arrays up to 8x8), the same for both dataflows.
_RNG = np.random.default_rng(18)
_SHAPES = [tuple(int(v) for v in (*_RNG.integers(1, 17, 3), *_RNG.integers(1, 9, 2))) for _ in range(40)]


@pytest.mark.parametrize("dataflow", ["ws", "os"])
@pytest.mark.parametrize("m,k,n,rows,cols", _SHAPES)
def test_simulator_computes_the_product_in_the_model_cycles(m, k, n, rows, cols, dataflow):
    rng = np.random.default_rng(m * 10_000 + k * 1_000 + n * 100 + rows * 10 + cols)
    a, b = rng.integers(-9, 10, (m, k)), rng.integers(-9, 10, (k, n))
    out, cycles = simulate(a, b, rows, cols, dataflow)
    np.testing.assert_array_equal(out, a @ b)  # integers: exact
    assert cycles == array_cycles(m, k, n, rows, cols, dataflow)


def test_simulator_float_product_close():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((7, 11)), rng.standard_normal((11, 5))
    for df in ("ws", "os"):
        np.testing.assert_allclose(simulate(a, b, 3, 4, df)[0], a @ b, rtol=1e-12, atol=1e-12)


def test_model_by_hand():
    # WS, 16x16, lenet5's conv2 (M=100, K=150, N=16): ceil(150/16) * ceil(16/16) = 10 folds of 2*16+16+100-2 = 146
    assert fold_count(100, 150, 16, 16, 16, "ws") == 10
    assert array_cycles(100, 150, 16, 16, 16, "ws") == 1460
    # OS, 8x4, conv1 (M=784, K=25, N=6): ceil(784/8) * ceil(6/4) = 196 folds of 2*8+4+25-2 = 43
    assert array_cycles(784, 25, 6, 8, 4, "os") == 196 * 43
    # a 1x1 array: WS does K*N folds of M+1 cycles (1 to load the weight, M to stream); OS M*N folds of K+1
    assert array_cycles(5, 3, 2, 1, 1, "ws") == 3 * 2 * 6
    assert array_cycles(5, 3, 2, 1, 1, "os") == 5 * 2 * 4


def test_bad_inputs():
    with pytest.raises(ValueError, match="dataflow"):
        array_cycles(2, 2, 2, 2, 2, "is")
    with pytest.raises(ValueError, match="positive"):
        array_cycles(0, 2, 2, 2, 2, "ws")
    with pytest.raises(ValueError, match="A \\(M x K\\)"):
        simulate(np.ones((2, 3)), np.ones((2, 3)), 2, 2, "ws")
    for text in ("16", "0x4", "ax4", "4x4x4", "5000x2"):
        with pytest.raises(ValueError, match="--array"):
            systolic.parse_array(text)
    assert systolic.parse_array("8X4") == (8, 4)


def test_lenet5_layers_as_matmuls():
    shapes, skipped = systolic.layer_matmuls(summarize("lenet5"))
    got = {s.name: (s.m, s.k, s.n, s.repeats) for s in shapes}
    assert got == {  # by hand: conv1 5x5 on 1x28x28 (pad 2) -> 6x28x28; conv2 5x5 6 -> 16 on 14x14 -> 10x10
        "features.conv1": (28 * 28, 1 * 5 * 5, 6, 1), "features.conv2": (10 * 10, 6 * 5 * 5, 16, 1),
        "classifier.fc1": (1, 400, 120, 1), "classifier.fc2": (1, 120, 84, 1), "classifier.fc3": (1, 84, 10, 1)}
    assert skipped == []
    conv1 = shapes[0]
    assert (conv1.input_elements, conv1.weight_elements, conv1.output_elements) == (784, 156, 6 * 784)


def test_grouped_conv_matmul_is_the_im2col_product():
    """M, K, N from the trace are the sizes of the im2col product that reproduces the convolution."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 9, 3, stride=2, padding=1, groups=3, bias=False)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(9 * 4 * 5, 7))
    x = torch.randn(1, 6, 7, 9)
    shapes, _ = systolic.layer_matmuls(summarize(model, (6, 7, 9)))
    s = shapes[0]
    assert (s.m, s.k, s.n, s.repeats) == (4 * 5, 2 * 9, 3, 3)
    cols = F.unfold(x, 3, padding=1, stride=2)[0]  # (C*9, L)
    outs = []
    for g in range(s.repeats):
        a = cols[g * s.k:(g + 1) * s.k].T  # (M, K)
        b = conv.weight[g * s.n:(g + 1) * s.n].reshape(s.n, s.k).T  # (K, N)
        assert a.shape == (s.m, s.k) and b.shape == (s.k, s.n)
        outs.append(a @ b)
    np.testing.assert_allclose(torch.cat(outs, 1).T.reshape(1, 9, 4, 5).detach(), conv(x).detach(), atol=1e-5)
    assert shapes[1].m == 1 and shapes[1].k == 180 and shapes[1].n == 7


def test_linear_on_tokens_and_matmul_and_transposed_conv():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):  # (1, 4, 3, 8)
            y = self.fc(x)  # (1, 4, 3, 5)
            return torch.matmul(y, y.transpose(-1, -2)), self.up(x)  # (1, 4, 3, 3)

    shapes, skipped = systolic.layer_matmuls(summarize(Net(), (4, 3, 8)))
    got = {s.type: (s.m, s.k, s.n, s.repeats) for s in shapes}
    assert got == {"Linear": (12, 8, 5, 1), "matmul": (3, 5, 3, 4)}
    assert skipped == ["up"]


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_matmul_macs_equal_torch_flop_counter(name):
    from torch.utils.flop_counter import FlopCounterMode

    from convolab.models import create_model

    s = summarize(name, "3,64,64")
    shapes, skipped = systolic.layer_matmuls(s)
    assert skipped == []
    model = create_model(name, num_classes=1000, in_chans=3, input_size=(64, 64)).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, 64, 64))
    assert 2 * sum(x.macs for x in shapes) == fc.get_total_flops()


def test_hardware_rows_utilisation_and_roofline():
    shape = MatmulShape("l", "Conv2d", 784, 25, 6, 1, 784, 156, 4704)
    slow_memory = Machine(peak_flops=1e12, bandwidth=1e9)
    (h,) = systolic.hardware_rows([shape], 16, 16, "ws", slow_memory)
    assert h.cycles == 2 * (2 * 16 + 16 + 784 - 2)
    assert h.utilisation == pytest.approx(117_600 / (1660 * 256))
    assert h.intensity == pytest.approx(2 * 117_600 / (4 * (784 + 156 + 4704)))
    assert h.bound_flops == pytest.approx(h.intensity * 1e9)  # memory-bound
    (h,) = systolic.hardware_rows([shape], 16, 16, "ws", Machine(peak_flops=1e9, bandwidth=1e12))
    assert h.bound_flops == 1e9  # compute-bound
    two = MatmulShape("g", "Conv2d", 10, 4, 3, 2, 1, 1, 1)
    assert systolic.hardware_rows([two], 4, 4, "os")[0].cycles == 2 * array_cycles(10, 4, 3, 4, 4, "os")


def test_measure_machine_smoke():
    m = systolic.measure_machine(size=64, copy_elements=1 << 12, repeats=1)
    assert math.isfinite(m.peak_flops) and m.peak_flops > 0
    assert math.isfinite(m.bandwidth) and m.bandwidth > 0


_FAKE = Machine(peak_flops=100e9, bandwidth=10e9)


def test_cli_lenet5_hardware(capsys, monkeypatch):
    monkeypatch.setattr(systolic, "measure_machine", lambda: _FAKE)
    code, out, err = cli(["summary", "lenet5", "--hardware", "--array", "8x4", "--dataflow", "os"], capsys)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("features.conv1"))
    # by hand: M=784, K=25, N=6; OS on 8x4: ceil(784/8)*ceil(6/4) = 196 folds of 2*8+4+25-2 = 43 cycles = 8,428;
    # utilisation 117,600 / (8,428 * 32) = 43.6 %; intensity 2*117,600 / (4*(784+156+4,704)) = 10.42 FLOP/B;
    # roofline min(100, 10.42 * 10) = 100.0 GFLOP/s (compute-bound at these fake figures)
    assert line.split() == ["features.conv1", "784", "25", "6", "1", "117,600", "8,428", "43.6%", "10.42",
                            "100.0", "GFLOP/s"]
    fc1 = next(x for x in out.splitlines() if x.startswith("classifier.fc1")).split()
    # fc1: M=1, K=400, N=120: ceil(1/8)*ceil(120/4) = 30 folds of 2*8+4+400-2 = 418; intensity
    # 2*48,000 / (4*(400 + 48,120 + 120)) = 0.4934 -> bound 4.9 GFLOP/s (memory-bound)
    assert fc1[6] == "12,540" and fc1[8] == "0.49" and fc1[9] == "4.9"
    total = 196 * 43 + 1 * math.ceil(16 / 4) * (16 + 4 + 150 - 2) * math.ceil(100 / 8) + 12_540 \
        + math.ceil(84 / 4) * (16 + 4 + 120 - 2) + math.ceil(10 / 4) * (16 + 4 + 84 - 2)
    assert "OS dataflow" in out and f"{total:,} cycles for 416,520 MACs" in out


def test_cli_json_and_errors(capsys, monkeypatch):
    monkeypatch.setattr(systolic, "measure_machine", lambda: _FAKE)
    code, out, _ = cli(["summary", "lenet5", "--hardware", "--json"], capsys)
    assert code == 0
    hw = json.loads(out)["hardware"]
    assert hw["array"] == [16, 16] and hw["dataflow"] == "ws"
    conv2 = next(x for x in hw["layers"] if x["name"] == "features.conv2")
    assert (conv2["m"], conv2["k"], conv2["n"], conv2["cycles"]) == (100, 150, 16, 1460)
    code, _, err = cli(["summary", "lenet5", "--hardware", "--array", "0x4"], capsys)
    assert_one_line_error(code, err, "--array")
    code, _, err = cli(["summary", "lenet5", "--array", "8x8"], capsys)
    assert_one_line_error(code, err, "--hardware")
    code, _, err = cli(["summary", "lenet5", "--hardware", "--dataflow", "is"], capsys)
    assert code == 2 and "--dataflow" in err
