"""The explorer's architecture graph (convolab.serve.graph): its nodes are summary's traced rows, its edges the
rows' inputs, and its layout is drawable (edges point down, boxes apart, branches side by side)."""

from __future__ import annotations

import itertools

import pytest
from torch import nn

from convolab.analysis.summary import summarize
from convolab.serve.graph import model_graph

_UNUSED = "(parameters not used in forward)"


def _rows(model, shape):
    return [r for r in summarize(model, shape).trace.rows if r.name != _UNUSED]


def _check_drawable(g: dict) -> None:
    nodes = {n["id"]: n for n in g["nodes"]}
    for a, b in g["edges"]:  # every edge goes downward: the target's box starts below the source's
        assert nodes[a]["y"] + nodes[a]["h"] < nodes[b]["y"], (nodes[a]["name"], nodes[b]["name"])
    for p, q in itertools.combinations(g["nodes"], 2):  # no two boxes overlap
        apart = (p["x"] + p["w"] <= q["x"] or q["x"] + q["w"] <= p["x"] or p["y"] + p["h"] <= q["y"]
                 or q["y"] + q["h"] <= p["y"])
        assert apart, (p["name"], q["name"])
    for n in g["nodes"]:
        assert 0 <= n["x"] and n["x"] + n["w"] <= g["width"] and 0 <= n["y"] and n["y"] + n["h"] <= g["height"]
    # each edge's route runs from the source's bottom centre down to the target's top centre, beside the boxes
    assert len(g["routes"]) == len(g["edges"])
    for (a, b), route in zip(g["edges"], g["routes"]):
        src, dst = nodes[a], nodes[b]
        assert route[0][1] == src["y"] + src["h"] and route[-1][1] == dst["y"]
        assert abs(route[0][0] - (src["x"] + src["w"] / 2)) <= 1 and abs(route[-1][0] - (dst["x"] + dst["w"] / 2)) <= 1
        assert all(p[1] <= q[1] for p, q in zip(route, route[1:]))
        for (x0, y0), (x1, y1) in zip(route[1:-1:2], route[2:-1:2]):  # a long edge's lane past the skipped ranks
            assert x0 == x1
            for n in g["nodes"]:
                inside = n["x"] < x0 < n["x"] + n["w"] and n["y"] < y1 and y0 < n["y"] + n["h"]
                assert not inside, (src["name"], dst["name"], n["name"])


@pytest.mark.parametrize("name,shape", [
    ("resnet18", (3, 224, 224)),
    pytest.param("googlenet", (3, 224, 224), marks=pytest.mark.slow),
    pytest.param("unet", (1, 572, 572), marks=pytest.mark.slow),
])
def test_nodes_are_the_traced_rows_plus_the_input(name, shape):
    g = model_graph(name, shape)
    summary = summarize(name, shape)
    rows = [r for r in summary.trace.rows if r.name != _UNUSED]
    assert len(g["nodes"]) == len(rows) + 1
    assert g["nodes"][0]["name"] == "input" and g["nodes"][0]["type"] == "input"
    assert [n["name"] for n in g["nodes"][1:]] == [r.name for r in rows]
    assert sorted(map(tuple, g["edges"])) == sorted((j + 1, i + 1) for i, r in enumerate(rows) for j in r.inputs)
    layers = [layer for layer in summary.layers() if layer["name"] != _UNUSED]
    for n, layer in zip(g["nodes"][1:], layers):
        assert n["shape"] == layer["output_shape"][1:] and n["macs"] == layer["macs"]
        rf = n["receptive_field"]
        assert (rf[0] if rf and len(set(rf)) == 1 else rf) == layer["receptive_field"]
    _check_drawable(g)


def _same_rank(g, *names) -> bool:
    ys = {n["y"] for n in g["nodes"] if n["name"] in names}
    return len(ys) == 1


def test_branches_are_side_by_side():
    g = model_graph("googlenet", (3, 224, 224))
    # an Inception module's four branches start on one rank, left to right in some order, apart
    firsts = ["inception3a.branch1.conv", "inception3a.branch2.0.conv", "inception3a.branch3.0.conv",
              "inception3a.branch4.0"]
    assert _same_rank(g, *firsts)
    r = model_graph("resnet18", (3, 224, 224))
    # a downsampling block's shortcut conv sits beside the block's first conv
    assert _same_rank(r, "layer2.0.conv1", "layer2.0.downsample.0")
    by_name = {n["name"]: n for n in r["nodes"]}
    assert by_name["layer2.0.conv1"]["x"] != by_name["layer2.0.downsample.0"]["x"]


@pytest.mark.slow
def test_unet_and_densenet_are_drawable():
    for name, shape in (("unet", (1, 64, 64)), ("densenet121", (3, 64, 64))):
        g = model_graph(name, shape)
        assert len(g["nodes"]) == len(_rows(name, shape)) + 1
        _check_drawable(g)


def test_a_chain_is_a_straight_column():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    g = model_graph(model, (1, 8, 8))
    assert g["edges"] == [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]
    centres = {n["x"] + n["w"] / 2 for n in g["nodes"]}
    assert max(centres) - min(centres) <= 1
    assert [n["y"] for n in g["nodes"]] == sorted(n["y"] for n in g["nodes"])
    assert g["nodes"][1]["receptive_field"] == [3, 3] and g["nodes"][4]["receptive_field"] is None
    _check_drawable(g)
