"""Row.inputs: which traced rows feed which (the edges of the explorer's graph).

Checked by hand on small networks and the classic branching ones (ResNet's residual add, Inception's
concatenation, U-Net's skips), and against torch.fx's symbolic trace, an independent graph of the same
model, where fx can trace it.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import fx, nn

from convolab.analysis.summary import summarize
from convolab.analysis.trace import trace_model

_UNUSED = "(parameters not used in forward)"


def _rows(model, input_shape):
    return [r for r in summarize(model, input_shape).trace.rows if r.name != _UNUSED]


def _index(rows, name, k=0):
    """Index of the k-th row called ``name`` (a module called twice has two rows of the same name)."""
    return [i for i, r in enumerate(rows) if r.name == name][k]


def test_sequential_is_a_chain():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 3), nn.Flatten(),
                          nn.Linear(4 * 5 * 5, 10))
    rows = _rows(model, (3, 16, 16))
    assert [r.name for r in rows] == ["0", "1", "2", "3", "4", "5"]
    assert [r.inputs for r in rows] == [[-1], [0], [1], [2], [3], [4]]


class _Branches(nn.Module):
    """Two convs on the input, an add, an in-place add, a chunk/cat round trip and a view before the head."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.b = nn.Conv2d(2, 4, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        s = self.a(x) + self.b(x)
        t = self.relu(s)
        t += self.b(x)
        p, q = t.chunk(2, dim=1)
        u = torch.cat([q, p], dim=1)
        return self.fc(u.view(u.shape[0], -1))


def test_branches_add_inplace_and_layout_ops():
    rows = _rows(_Branches(), (2, 6, 6))
    names = [r.name for r in rows]
    assert names == ["a", "b", "add", "relu", "b", "add_", "cat", "fc"]
    inputs = dict(zip(range(len(rows)), (r.inputs for r in rows)))
    assert inputs[0] == [-1] and inputs[1] == [-1]
    assert inputs[2] == [0, 1]  # a(x) + b(x)
    assert inputs[3] == [2]
    assert inputs[5] == [3, 4]  # t (the ReLU's output, written in place) += b(x)
    assert inputs[6] == [5]  # chunk passes the in-place add's output on; both halves come from it
    assert inputs[7] == [6]  # view passes the cat on


def test_resnet18_residual_add_reads_the_block_input_and_bn2():
    rows = _rows("resnet18", (3, 64, 64))
    add = rows[_index(rows, "layer1.0.add_")]
    assert sorted(add.inputs) == sorted([_index(rows, "layer1.0.bn2"), _index(rows, "maxpool")])
    # a downsampling block adds its shortcut branch (downsample.1 = its BatchNorm) instead
    add2 = rows[_index(rows, "layer2.0.add_")]
    assert sorted(add2.inputs) == sorted([_index(rows, "layer2.0.bn2"), _index(rows, "layer2.0.downsample.1")])
    assert rows[_index(rows, "layer2.0.downsample.0")].inputs == [_index(rows, "layer1.1.relu", 1)]
    # the ReLU after the add (the block's relu module, called a second time) reads the add
    assert rows[_index(rows, "layer1.0.relu", 1)].inputs == [_index(rows, "layer1.0.add_")]


def test_googlenet_inception_cat_reads_its_four_branches():
    rows = _rows("googlenet", (3, 224, 224))
    cats = [r for r in rows if r.type == "cat" and r.name.startswith("inception")]
    assert len(cats) == 9
    for cat in cats:
        block = cat.name.rsplit(".", 1)[0]
        assert len(cat.inputs) == 4
        branches = [rows[j].name.split(".")[1] for j in cat.inputs]
        assert branches == ["branch1", "branch2", "branch3", "branch4"]
        assert all(rows[j].name.startswith(block + ".") for j in cat.inputs)
        # each branch starts from the same tensor: the row before the block
        firsts = [j for j, r in enumerate(rows) if r.name.startswith(block + ".") and r.type == "Conv2d"
                  and r.name.endswith(("branch1.conv", "branch2.0.conv", "branch3.0.conv"))]
        assert len({tuple(rows[j].inputs) for j in firsts}) == 1


def test_unet_skip_concatenations():
    rows = _rows("unet", (1, 64, 64))
    cats = {r.name: [rows[j].name for j in r.inputs] for r in rows if r.type == "cat"}
    # decoder stage k concatenates the encoder's map at the same scale with the upsampled (and padded) one
    assert cats == {
        "up.0.cat": ["down.2.1.1.1", "up.0.upconv"],
        "up.1.cat": ["down.1.1.1.1", "up.1.upconv"],
        "up.2.cat": ["down.0.1.1.1", "up.2.upconv"],
        "up.3.cat": ["inc.1.1", "up.3.upconv"],
    }


@pytest.mark.slow
def test_every_row_reads_an_earlier_row_or_the_input():
    for name, shape in (("resnet18", (3, 64, 64)), ("densenet121", (3, 64, 64)), ("se_resnet18", (3, 64, 64))):
        rows = _rows(name, shape)
        for i, r in enumerate(rows):
            assert r.inputs, f"{name}: {r.name} reads nothing"
            assert all(-1 <= j < i for j in r.inputs), (name, r.name, r.inputs)


def _fx_edges(model: nn.Module) -> list[tuple[str, set[int]]]:
    """(what, producer indices) per computing node of torch.fx's graph, in execution order (placeholder -> -1)."""
    graph = fx.symbolic_trace(model).graph
    index: dict[fx.Node, int] = {}
    out = []
    for node in graph.nodes:
        if node.op == "placeholder":
            index[node] = -1
        elif node.op in ("call_module", "call_function", "call_method"):
            index[node] = len(out)
            out.append((node.target if node.op == "call_module" else str(node.target),
                        {index[n] for n in node.all_input_nodes}))
    return out


@pytest.mark.parametrize("make,shape", [
    (lambda: torchvision.models.resnet18(), (3, 64, 64)),
    (lambda: _Branches(), (2, 6, 6)),
])
def test_edges_match_torch_fx(make, shape):
    """fx sees every call; the trace folds layout ops (view, chunk, getitem) into their producers' edges."""
    torch.manual_seed(0)
    model = make().eval()
    rows = _rows(model, shape)
    fx_nodes = _fx_edges(model)
    # collapse fx's layout nodes: a node that is not a row hands its producers on
    hidden = {"getattr", "getitem", "chunk", "view", "size", "<built-in function getitem>",
              "<built-in function getattr>"}
    kept: list[tuple[str, set[int]]] = []
    remap: dict[int, set[int]] = {-1: {-1}}
    for i, (what, deps) in enumerate(fx_nodes):
        ins = set().union(*(remap[d] for d in deps)) if deps else set()
        if what in hidden:
            remap[i] = ins
            continue
        remap[i] = {len(kept)}
        kept.append((what, ins))
    assert len(kept) == len(rows)
    for (what, ins), r in zip(kept, rows):
        if isinstance(what, str) and not what.startswith("<"):
            assert what == r.name or what == r.module_path, (what, r.name)
        assert ins == set(r.inputs), (r.name, ins, r.inputs)


def test_inputs_on_real_tensors_match_meta():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    meta_rows = _rows(model, (3, 32, 32))
    x = torch.rand(1, 3, 32, 32)
    trace, tracer = trace_model(model, (3, 32, 32), device="cpu", x=x, keep_outputs=True)
    assert [r.inputs for r in trace.rows] == [r.inputs for r in meta_rows]
    assert len(tracer.row_outputs) == len(trace.rows)
    # the copies keep each row's value even where a later op wrote in place (bn2's output gets += identity)
    bn2 = _index(trace.rows, "layer1.0.bn2")
    add = _index(trace.rows, "layer1.0.add_")
    block_in = tracer.row_outputs[_index(trace.rows, "maxpool")]
    torch.testing.assert_close(tracer.row_outputs[add], tracer.row_outputs[bn2] + block_in)
    torch.testing.assert_close(tracer.output, tracer.row_outputs[-1])  # the model's output is fc's
    with torch.no_grad():
        torch.testing.assert_close(tracer.output, model(x))
