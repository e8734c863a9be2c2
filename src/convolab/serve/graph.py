"""A model's architecture as a graph laid out for drawing: the explorer's ``/api/graph``.

Nodes are the rows ``convolab summary`` traces at full depth, plus the input; edges are the rows' inputs
(``Row.inputs``: which rows' outputs each row reads). The layout is a small layered ("Sugiyama") drawing,
written by hand:

1. rank = the longest path from the input, so every edge points down;
2. an edge spanning several ranks gets a chain of invisible dummy nodes, one per rank it crosses, so that
   long edges (residual shortcuts, U-Net skips) keep a lane of their own beside the layers they skip;
3. within a rank, nodes are ordered by the barycentre of their neighbours in the rank above, then below,
   a few sweeps each way (fewer crossings: parallel branches end up side by side);
4. x coordinates: per rank, the closest positions to the neighbours' mean (in order, boxes not
   overlapping): a least-squares fit under order constraints (isotonic regression by pooling adjacent
   violators), alternating down and up passes;
5. y: ranks stacked top to bottom, each as tall as its tallest box.
"""

from __future__ import annotations

from torch import nn

from convolab.analysis.summary import summarize

__all__ = ["model_graph"]

_UNUSED = "(parameters not used in forward)"
_CHAR_W, _PAD_W, _NODE_H = 7, 20, 40  # px: a node's box fits its longest label line at 11 px
_MIN_W, _DUMMY_W = 72, 8
_GAP_X, _GAP_Y, _MARGIN = 24, 36, 20
_SWEEPS = 4


def model_graph(model: nn.Module | str, input_shape: tuple[int, ...]) -> dict:
    """The graph of ``model`` (an ``nn.Module`` or a registry name) traced at ``input_shape`` (C, H, W).

    Returns the contract's ``/api/graph`` dict: ``nodes`` (``id``, ``name``, ``type``, ``shape``, ``params``,
    ``macs``, ``receptive_field``, and the box ``x``, ``y`` (top-left), ``w``, ``h`` in px), ``edges`` as
    ``[from_id, to_id]`` pairs, ``routes`` (per edge, the polyline from the source's bottom centre through
    its lane to the target's top centre), and the drawing's ``width`` and ``height``. The input is node 0;
    row ``i`` of the trace is node ``i + 1``.
    """
    summary = summarize(model, tuple(input_shape))
    rows = [r for r in summary.trace.rows if r.name != _UNUSED]
    nodes = [{"id": 0, "name": "input", "type": "input", "shape": list(input_shape), "params": 0, "macs": 0,
              "receptive_field": [1] * (len(input_shape) - 1)}]
    preds: list[list[int]] = [[]]
    for r in rows:
        info = r.info
        nodes.append({"id": len(nodes), "name": r.name, "type": r.type, "shape": list(r.out_shape[1:]),
                      "params": r.params + r.frozen, "macs": r.macs,
                      "receptive_field": [_num(a.r) for a in info.rf] if info else None})
        preds.append([j + 1 for j in r.inputs])
    edges = [[p, v] for v, ps in enumerate(preds) for p in ps]
    sizes = [(_box_width(n), _NODE_H) for n in nodes]
    layout = _Layout(preds, sizes)
    for n, (x, y) in zip(nodes, layout.corners()):
        n["x"], n["y"] = x, y
        n["w"], n["h"] = sizes[n["id"]]
    return {"nodes": nodes, "edges": edges, "routes": [layout.route(a, b) for a, b in edges],
            "width": layout.width, "height": layout.height}


def _num(v: float) -> int | float:
    v = float(v)
    return int(v) if v.is_integer() else v


def _box_width(node: dict) -> int:
    shape = "x".join(str(s) for s in node["shape"])
    return max(_MIN_W, _CHAR_W * max(len(node["type"]), len(shape)) + _PAD_W)


class _Layout:
    """Ranks, dummy chains, order and coordinates of a DAG whose nodes are numbered in topological order."""

    def __init__(self, preds: list[list[int]], sizes: list[tuple[int, int]]):
        n = len(preds)
        rank = [0] * n
        for v in range(1, n):  # a row reads only earlier rows: one pass gives the longest path
            rank[v] = 1 + max((rank[p] for p in preds[v]), default=0)
        # the layered graph: real nodes 0..n-1, then dummies; up/down adjacency between consecutive ranks
        self.n = n
        self.rank = list(rank)
        self.width_of = [w for w, _ in sizes]
        self.height_of = [h for _, h in sizes]
        self.up: list[list[int]] = [[] for _ in range(n)]
        self.down: list[list[int]] = [[] for _ in range(n)]
        self.chains: dict[tuple[int, int], list[int]] = {}
        for v in range(n):
            for p in preds[v]:
                prev, chain = p, []
                for r in range(rank[p] + 1, rank[v]):
                    d = self._add(r)
                    self._link(prev, d)
                    chain.append(d)
                    prev = d
                self._link(prev, v)
                self.chains[(p, v)] = chain
        depth = max(self.rank) + 1
        self.layers: list[list[int]] = [[] for _ in range(depth)]
        for v in range(len(self.rank)):  # real nodes in execution order, dummies as created
            self.layers[self.rank[v]].append(v)
        self._order()
        self._coordinates()
        self._corners = self.corners()

    def _add(self, r: int) -> int:
        self.rank.append(r)
        self.width_of.append(_DUMMY_W)
        self.height_of.append(0)
        self.up.append([])
        self.down.append([])
        return len(self.rank) - 1

    def _link(self, a: int, b: int) -> None:
        self.down[a].append(b)
        self.up[b].append(a)

    # -- order within ranks: barycentre sweeps -------------------------------------------------
    def _order(self) -> None:
        pos = {v: i for layer in self.layers for i, v in enumerate(layer)}
        for _ in range(_SWEEPS):
            for k in range(1, len(self.layers)):
                self._sort(self.layers[k], self.up, pos)
            for k in range(len(self.layers) - 2, -1, -1):
                self._sort(self.layers[k], self.down, pos)
        for k in range(1, len(self.layers)):
            self._sort(self.layers[k], self.up, pos)

    @staticmethod
    def _sort(layer: list[int], nbrs: list[list[int]], pos: dict[int, int]) -> None:
        def key(v: int) -> tuple[float, int]:
            ns = nbrs[v]
            return (sum(pos[u] for u in ns) / len(ns) if ns else pos[v], pos[v])

        layer.sort(key=key)
        for i, v in enumerate(layer):
            pos[v] = i

    # -- coordinates ---------------------------------------------------------------------------
    def _coordinates(self) -> None:
        cx = [0.0] * len(self.rank)  # box centres
        for layer in self.layers:
            x = 0.0
            for v in layer:
                cx[v] = x + self.width_of[v] / 2
                x += self.width_of[v] + _GAP_X
        for _ in range(_SWEEPS):
            for k in range(1, len(self.layers)):
                self._place(self.layers[k], self.up, cx)
            for k in range(len(self.layers) - 2, -1, -1):
                self._place(self.layers[k], self.down, cx)
        for k in range(1, len(self.layers)):
            self._place(self.layers[k], self.up, cx)
        left = min(cx[v] - self.width_of[v] / 2 for v in range(len(cx)))
        self.cx = [c - left + _MARGIN for c in cx]
        self.width = int(round(max(self.cx[v] + self.width_of[v] / 2 for v in range(len(cx))) + _MARGIN))
        self.top, y = [], float(_MARGIN)
        self.rank_h = [max([self.height_of[v] for v in layer] + [0]) for layer in self.layers]
        for h in self.rank_h:
            self.top.append(y)
            y += h + _GAP_Y
        self.height = int(round(y - _GAP_Y + _MARGIN))

    def _place(self, layer: list[int], nbrs: list[list[int]], cx: list[float]) -> None:
        """Centres as close as possible to the neighbours' mean, in the layer's order, without overlap."""
        if not layer:
            return
        want = [sum(cx[u] for u in nbrs[v]) / len(nbrs[v]) if nbrs[v] else cx[v] for v in layer]
        # x_i - x_(i-1) >= (w_(i-1) + w_i) / 2 + gap; with z_i = x_i - offset_i it is z_i >= z_(i-1):
        # isotonic regression of want_i - offset_i, solved by pooling adjacent violators.
        offset = [0.0]
        for a, b in zip(layer, layer[1:]):
            offset.append(offset[-1] + (self.width_of[a] + self.width_of[b]) / 2 + _GAP_X)
        blocks: list[list[float]] = []  # [mean, count]
        for w, o in zip(want, offset):
            blocks.append([w - o, 1])
            while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
                m2, c2 = blocks.pop()
                m1, c1 = blocks[-1]
                blocks[-1] = [(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2]
        i = 0
        for mean, count in blocks:
            for _ in range(int(count)):
                cx[layer[i]] = mean + offset[i]
                i += 1

    def corners(self) -> list[tuple[int, int]]:
        """Top-left corners of the real nodes, each box centred vertically in its rank."""
        out = []
        for v in range(self.n):
            r = self.rank[v]
            out.append((int(round(self.cx[v] - self.width_of[v] / 2)),
                        int(round(self.top[r] + (self.rank_h[r] - self.height_of[v]) / 2))))
        return out

    def route(self, a: int, b: int) -> list[list[int]]:
        """The polyline of edge a -> b: a's bottom centre, its dummies' lane, b's top centre."""
        ya = self._corners[a][1]
        yb = self._corners[b][1]
        pts = [[int(round(self.cx[a])), ya + self.height_of[a]]]
        for d in self.chains[(a, b)]:
            r = self.rank[d]
            x = int(round(self.cx[d]))
            pts += [[x, int(round(self.top[r]))], [x, int(round(self.top[r] + self.rank_h[r]))]]
        pts.append([int(round(self.cx[b])), yb])
        return pts
