"""Networks from a spec: one line (or a JSON/YAML file) that ``convolab train``, ``summary``, ``explain``,
``viz``, ``report`` and ``--engine numpy`` all accept, as Keras' Sequential or d2l's "build it and print the
shapes" let a learner write a network.

The grammar (``spec:`` then layers separated by commas; spaces, newlines and ``# comments`` are ignored)::

    spec   := item ("," item)*
    item   := [INT "*"] atom                     3*(conv(32,3,p=same), relu): the atom repeated
    atom   := NAME ["(" args ")"]                a layer: conv(16, 5), maxpool(2), relu, fc(120)
            | "res" "(" spec ")"                 y = body(x) + x (a 1x1 projection where the shape changes)
            | "dense" "(" spec ")"               y = [x, body(x)] along the channels (DenseNet)
            | "cat" "(" spec ("|" spec)+ ")"     y = [b1(x), b2(x), ...] along the channels (Inception)
            | "(" spec ")"                       a group, for repeats
    args   := value ("," value)* ("," NAME "=" value)*     positional first, then by name
    value  := INT | FLOAT | NAME (same, reflect, true, false, none ...)

The tutorials' SimpleCNN and LeNet-5, one line each::

    spec:conv(6,5),relu,maxpool(2),conv(16,5),relu,maxpool(2),flatten,fc(120),relu,fc(84),relu,fc(10)
    spec:conv(6,5,p=2),tanh,avgpool(2),conv(16,5),tanh,avgpool(2),flatten,fc(120),tanh,fc(84),tanh,fc

The head. A spec that ends in ``fc`` without a width ends in one of the dataset's classes; one that ends in
``fc(N)`` must have N classes; one that ends elsewhere gets ``gap, fc`` (a map: global average pooling and a
linear layer, Lin et al.'s NiN head) or ``fc`` (a vector) added, and the log says so. The layers up to the
first ``flatten``/``gap``/``gmp`` are the ``features`` (the maps Grad-CAM and ``viz`` look at), the rest the
``classifier``; the layers are named by kind and count (``features.conv1``, ``features.relu1``,
``classifier.fc2``).

Shapes are followed while the network is built (each layer runs once on a zero input of the given size), so a
spec whose maps collapse (a pool on a 1x1 map) or that puts ``fc`` on a map is refused with one line naming the
layer, before any data loads. :data:`LAYERS` lists every layer with its arguments and defaults
(``convolab models --spec-help`` prints them).

The JSON/YAML form is a list of the same items: ``"relu"``, ``{"conv": [6, 5]}``, ``{"conv": {"out": 6,
"k": 5, "p": "same"}}``, ``{"res": [...]}``, ``{"dense": [...]}``, ``{"cat": [[...], [...]]}``,
``{"repeat": 3, "body": [...]}``. A file is read once and recorded as the one-line spec, so a run never needs
the file again.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from convolab import layers
from convolab.layers.branches import Concat, DenseConcat, Residual
from convolab.models._base import ConvClassifier

__all__ = ["SpecNet", "parse_spec", "format_spec", "build_spec", "resolve_model_name", "is_spec", "read_spec_file",
           "final_width", "LAYERS", "SPEC_HELP", "PREFIX", "spec_help"]

log = logging.getLogger(__name__)

PREFIX = "spec:"
SPEC_FILE_SUFFIXES = (".json", ".yaml", ".yml", ".spec", ".txt")
MAX_SPEC_CHARS = 20_000  # what a run records as the model's name; a longer network belongs in a model file
MAX_PARAMS = 1 << 28  # 1 GiB of float32 weights: refused before it is allocated
MAX_REPEAT = 1000
SPEC_HELP = ("write layers separated by commas, e.g. spec:conv(6,5),relu,maxpool(2),flatten,fc(120),relu,fc; "
             "blocks: res(...), dense(...), cat(... | ...), N*(...); `convolab models --spec-help` lists the layers")


class SpecError(ValueError):
    """A spec that does not parse or does not fit its input (one line naming the token or the layer)."""


# -- the syntax tree -----------------------------------------------------------------------------------------------
@dataclass
class Layer:
    name: str
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    pos: int = 0  # where it starts in the text (for messages)


@dataclass
class Block:
    kind: str  # "res", "dense", "cat", "group"
    paths: list[list]  # one path (res, dense, group) or several (cat); each a list of nodes
    pos: int = 0


@dataclass
class Repeat:
    times: int
    node: Layer | Block
    pos: int = 0


# -- parsing ---------------------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(?:(#[^\n]*)|(-?\d+\.\d*(?:[eE][-+]?\d+)?|-?\d*\.\d+(?:[eE][-+]?\d+)?|-?\d+[eE][-+]?\d+)"
                    r"|(-?\d+)|([A-Za-z_][A-Za-z0-9_]*)|([(),|*=]))")
_BLOCKS = ("res", "dense", "cat")


def _tokens(text: str) -> list[tuple[str, object, int]]:
    """(kind, value, position) with kind one of "float", "int", "name", "op", and a final ("end", None, len)."""
    out, i = [], 0
    while i < len(text):
        if text[i:].strip() == "":
            break
        m = _TOKEN.match(text, i)
        if not m or m.end() == i:
            j = i + len(text[i:]) - len(text[i:].lstrip())
            raise SpecError(f"cannot read {text[j:j + 12]!r} at character {j + 1} of the spec; {SPEC_HELP}")
        start = m.start(m.lastindex)
        if m.group(2):
            out.append(("float", float(m.group(2)), start))
        elif m.group(3):
            out.append(("int", int(m.group(3)), start))
        elif m.group(4):
            out.append(("name", m.group(4), start))
        elif m.group(5):
            out.append(("op", m.group(5), start))
        i = m.end()
    out.append(("end", None, len(text)))
    return out


class _Parser:
    def __init__(self, text: str):
        self.text, self.toks, self.i = text, _tokens(text), 0

    def peek(self, offset: int = 0):
        return self.toks[min(self.i + offset, len(self.toks) - 1)]

    def take(self):
        tok = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return tok

    def fail(self, what: str, tok=None) -> SpecError:
        kind, value, pos = tok or self.peek()
        seen = "the end of the spec" if kind == "end" else f"{value!r}"
        return SpecError(f"{what}, found {seen} at character {pos + 1}: {self.text[max(0, pos - 20):pos]}"
                         f">>>{self.text[pos:pos + 20]}; {SPEC_HELP}")

    def expect(self, op: str) -> None:
        kind, value, _ = self.peek()
        if kind != "op" or value != op:
            raise self.fail(f"expected {op!r}")
        self.take()

    def sequence(self, stops: tuple[str, ...]) -> list:
        nodes = [self.item()]
        while self.peek()[0] == "op" and self.peek()[1] == ",":
            self.take()
            nodes.append(self.item())
        kind, value, _ = self.peek()
        if not (kind == "end" and "end" in stops or kind == "op" and value in stops):
            raise self.fail("expected ',' or " + " or ".join(repr(s) if s != "end" else "the end" for s in stops))
        return nodes

    def item(self):
        kind, value, pos = self.peek()
        if kind == "int" and self.peek(1)[:2] == ("op", "*"):
            self.take(), self.take()
            if not 1 <= value <= MAX_REPEAT:
                raise SpecError(f"a repeat count must be 1 to {MAX_REPEAT}; got {value} at character {pos + 1}")
            return Repeat(value, self.atom(), pos)
        return self.atom()

    def atom(self):
        kind, value, pos = self.peek()
        if kind == "op" and value == "(":
            self.take()
            body = self.sequence((")",))
            self.expect(")")
            return Block("group", [body], pos)
        if kind != "name":
            raise self.fail("expected a layer name")
        self.take()
        name = value.lower()
        if name in _BLOCKS:
            self.expect("(")
            paths = [self.sequence((")", "|") if name == "cat" else (")",))]
            while name == "cat" and self.peek()[:2] == ("op", "|"):
                self.take()
                paths.append(self.sequence((")", "|")))
            self.expect(")")
            if name == "cat" and len(paths) < 2:
                raise SpecError(f"cat(...) at character {pos + 1} of the spec needs at least 2 branches separated "
                                "by '|'")
            return Block(name, paths, pos)
        layer = Layer(name, [], {}, pos)
        if self.peek()[:2] == ("op", "("):
            self.take()
            if self.peek()[:2] != ("op", ")"):
                while True:
                    self.argument(layer)
                    if self.peek()[:2] == ("op", ","):
                        self.take()
                        continue
                    break
            self.expect(")")
        return layer

    def argument(self, layer: Layer) -> None:
        kind, value, pos = self.peek()
        if kind == "name" and self.peek(1)[:2] == ("op", "="):
            self.take(), self.take()
            if value in layer.kwargs:
                raise SpecError(f"{layer.name}(...) at character {layer.pos + 1} gives {value!r} twice")
            layer.kwargs[value] = self.value()
            return
        if layer.kwargs:
            raise self.fail(f"{layer.name}(...): positional arguments come before named ones")
        layer.args.append(self.value())

    def value(self):
        kind, value, pos = self.take()
        if kind in ("int", "float"):
            return value
        if kind == "name":
            return {"true": True, "false": False, "none": None}.get(value.lower(), value)
        raise self.fail("expected a value (a number or a word)", (kind, value, pos))


def parse_spec(text: str) -> list:
    """The syntax tree of a one-line spec (``spec:`` optional). Raises :class:`SpecError` naming the token."""
    text = text[len(PREFIX):] if text.startswith(PREFIX) else text
    if not text.strip():
        raise SpecError(f"the spec is empty; {SPEC_HELP}")
    parser = _Parser(text)
    return parser.sequence(("end",))


def _format_value(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v).lower()
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _canonical(node: Layer) -> Layer:
    """``conv(out=8, k=3, p=1)`` -> ``conv(8,3,p=1)``: a known layer's first two arguments written by position."""
    kind = LAYERS.get(node.name)
    if kind is None:
        return node
    args, kwargs = list(node.args), dict(node.kwargs)
    while len(args) < min(2, len(kind.params)) and kind.params[len(args)] in kwargs:
        args.append(kwargs.pop(kind.params[len(args)]))
    return Layer(node.name, args, kwargs, node.pos)


def format_spec(nodes: list) -> str:
    """The canonical one-line text of a syntax tree (``spec:`` not included); ``parse_spec`` reads it back."""
    def one(node) -> str:
        if isinstance(node, Repeat):
            return f"{node.times}*{one(node.node)}"
        if isinstance(node, Block):
            inner = "|".join(",".join(one(n) for n in path) for path in node.paths)
            return f"({inner})" if node.kind == "group" else f"{node.kind}({inner})"
        node = _canonical(node)
        args = [_format_value(a) for a in node.args] + [f"{k}={_format_value(v)}" for k, v in node.kwargs.items()]
        return f"{node.name}({','.join(args)})" if args else node.name
    return ",".join(one(n) for n in nodes)


# -- the JSON/YAML form ----------------------------------------------------------------------------------------------
def _from_data(items, where: str) -> list:
    if not isinstance(items, list) or not items:
        raise SpecError(f"{where}: expected a non-empty list of layers, e.g. [\"relu\", {{\"conv\": [6, 5]}}]")
    nodes = []
    for i, item in enumerate(items):
        here = f"{where}[{i}]"
        if isinstance(item, str):
            nodes.extend(parse_spec(item))  # "relu", or a one-line piece "conv(6,5),relu"
            continue
        if not isinstance(item, dict) or not item:
            raise SpecError(f"{here}: expected a layer name or a one-key object such as {{\"conv\": [6, 5]}}; "
                            f"got {item!r}")
        if "repeat" in item:
            times, body = item.get("repeat"), item.get("body")
            if not isinstance(times, int) or isinstance(times, bool) or not 1 <= times <= MAX_REPEAT or body is None:
                raise SpecError(f"{here}: a repeat is {{\"repeat\": N, \"body\": [...]}} with N 1 to {MAX_REPEAT}")
            nodes.append(Repeat(times, Block("group", [_from_data(body, f"{here}.body")])))
            continue
        if len(item) != 1:
            raise SpecError(f"{here}: one layer per object; got the keys {', '.join(map(str, item))}")
        (name, value), = item.items()
        name = str(name).lower()
        if name in ("res", "dense"):
            nodes.append(Block(name, [_from_data(value, f"{here}.{name}")]))
        elif name == "cat":
            if not isinstance(value, list) or len(value) < 2:
                raise SpecError(f"{here}: cat takes a list of at least 2 branches, each a list of layers")
            nodes.append(Block("cat", [_from_data(b, f"{here}.cat[{j}]") for j, b in enumerate(value)]))
        elif isinstance(value, list):
            nodes.append(Layer(name, list(value)))
        elif isinstance(value, dict):
            nodes.append(Layer(name, [], {str(k): v for k, v in value.items()}))
        elif value is None:
            nodes.append(Layer(name))
        else:
            nodes.append(Layer(name, [value]))
    return nodes


def read_spec_file(path: str | Path) -> str:
    """A spec file (JSON, YAML, or the one-line grammar in a .spec/.txt file) -> its one-line ``spec:`` text."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read the spec file {path}: {getattr(e, 'strerror', None) or e}") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"{path}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
        nodes = _from_data(data.get("layers") if isinstance(data, dict) else data, str(path))
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SpecError(f"{path}: not YAML ({str(e).splitlines()[0]})") from None
        nodes = _from_data(data.get("layers") if isinstance(data, dict) else data, str(path))
    else:
        try:
            nodes = parse_spec(text)
        except SpecError as e:
            raise SpecError(f"{path}: {e}") from None
    return PREFIX + format_spec(nodes)


def is_spec(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def resolve_model_name(name: str) -> str:
    """A model name as a run records it: ``spec:...`` in its canonical form, a spec file read into one, any other
    name unchanged (the registry judges it)."""
    if is_spec(name):
        text = PREFIX + format_spec(parse_spec(name))
    elif name.lower().endswith(SPEC_FILE_SUFFIXES) and ("/" in name or Path(name).expanduser().exists()):
        if not Path(name).expanduser().is_file():
            raise SpecError(f"--model {name}: no such spec file")
        text = read_spec_file(name)
    else:
        return name
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(f"the spec is {len(text):,} characters; at most {MAX_SPEC_CHARS:,} (use repeats: N*(...))")
    return text


# -- the layers ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerKind:
    """One layer the grammar knows: its arguments (positional order), defaults and a builder
    ``build(shape, **arguments) -> nn.Module`` (``shape``: the input without the batch, (C, H, W) or (F,))."""

    params: tuple[str, ...]
    defaults: dict
    build: Callable[..., nn.Module]
    help: str
    needs: str = "any"  # "map": a (C, H, W) input; "vector": an (F,) input
    required: tuple[str, ...] = ()


def _int(name: str, v, lo: int = 1, hi: int = 1 << 16) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise SpecError(f"{name} must be an integer {lo} to {hi}; got {v!r}")
    return v


def _num(name: str, v, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise SpecError(f"{name} must be a number in [{lo}, {hi}]; got {v!r}")
    return float(v)


def _bool(name: str, v) -> bool:
    if not isinstance(v, bool):
        raise SpecError(f"{name} must be true or false; got {v!r}")
    return v


def _padding(k: int, p, d: int, s: int):
    if p == "same":
        if s != 1:
            raise SpecError("p=same needs stride 1 (the output would not be the input's size otherwise)")
        if (d * (k - 1)) % 2:
            return "same"  # torch pads the extra row/column on one side
        return d * (k - 1) // 2
    return _int("p", p, 0, 1 << 12)


_MODES = ("zeros", "reflect", "replicate", "circular")


def _weights(n: int) -> None:
    """Refuse a layer of more than MAX_PARAMS weights before it is allocated."""
    if n > MAX_PARAMS:
        raise SpecError(f"would hold {n:,} weights; at most {MAX_PARAMS:,}: make it smaller")


def _conv(shape, out, k=3, s=1, p=0, d=1, g=1, bias=True, mode="zeros"):
    c = shape[0]
    out, k, s, d, g = _int("out", out), _int("k", k), _int("s", s), _int("d", d), _int("g", g)
    if c % g or out % g:
        raise SpecError(f"groups g={g} must divide the input channels ({c}) and out ({out})")
    _check_mode(mode)
    _weights(out * (c // g) * k * k)
    return nn.Conv2d(c, out, k, s, _padding(k, p, d, s), d, g, _bool("bias", bias), mode)


def _dwconv(shape, k=3, s=1, p=0, d=1, m=1, bias=True, mode="zeros"):
    c = shape[0]
    return _conv(shape, c * _int("m", m), k, s, p, d, c, bias, mode)


def _sepconv(shape, out, k=3, s=1, p=0, d=1, bias=True, mode="zeros", m=1):
    # depthwise k x k per channel, then a pointwise 1x1 across channels (MobileNet's separable convolution)
    c = shape[0]
    out, k, s, d, m = _int("out", out), _int("k", k), _int("s", s), _int("d", d), _int("m", m, 1, 64)
    _check_mode(mode)
    _weights(c * m * k * k + c * m * out)
    return layers.SeparableConv2d(c, out, k, s, _padding(k, p, d, s), d, _bool("bias", bias), mode, m)


def _ssconv(shape, out, k=3, s=1, p=0, d=1, bias=True, mode="zeros"):
    # a k x 1 convolution then a 1 x k one: a rank-1 k x k kernel in 2k weights per channel pair
    c = shape[0]
    out, k, s, d = _int("out", out), _int("k", k), _int("s", s), _int("d", d)
    _check_mode(mode)
    _weights(c * out * k + out * out * k)
    return layers.SpatiallySeparableConv2d(c, out, k, s, _padding(k, p, d, s), d, _bool("bias", bias), mode)


def _trueconv(shape, out, k=3, s=1, p=0, d=1, bias=True):
    c = shape[0]
    out, k, s, d = _int("out", out), _int("k", k), _int("s", s), _int("d", d)
    _weights(c * out * k * k)
    return layers.TrueConv2d(c, out, k, s, _padding(k, p, d, s), d, bias=_bool("bias", bias))


def _check_mode(mode) -> None:
    if mode not in _MODES:
        raise SpecError(f"mode must be one of {', '.join(_MODES)}; got {mode!r}")


def _fracpool(shape, ratio=0.5, seq="pseudo_random", overlap=False, seed=0):
    if seq not in ("pseudo_random", "random"):
        raise SpecError(f"seq must be pseudo_random or random; got {seq!r}")
    return layers.FractionalMaxPool2d(output_ratio=_num("ratio", ratio, 0.01, 0.99), sequence=seq,
                                      overlapping=_bool("overlap", overlap), seed=_int("seed", seed, 0, 1 << 31))


def _ln(shape):
    # on a map: over (C, H, W) with a gain and bias per channel (GroupNorm with one group); on a vector: nn.LayerNorm
    return layers.GroupNorm1(shape[0]) if len(shape) == 3 else nn.LayerNorm(shape[0])


def _gn(shape, g=32):
    g = _int("g", g)
    if shape[0] % g:
        raise SpecError(f"g={g} groups must divide the {shape[0]} channels")
    return nn.GroupNorm(g, shape[0])


def _gelu(shape, approx="none"):
    if approx not in ("none", "tanh", None):
        raise SpecError(f"approx must be none or tanh; got {approx!r}")
    return nn.GELU(approximate=approx or "none")


def _pool(kind):
    def build(shape, k=2, s=None, p=0, ceil=False):
        k = _int("k", k)
        s = k if s is None else _int("s", s)
        p = _int("p (at most k // 2: a window is never mostly padding)", p, 0, k // 2)
        if kind == "max":
            return nn.MaxPool2d(k, s, p, ceil_mode=_bool("ceil", ceil))
        return nn.AvgPool2d(k, s, p, ceil_mode=_bool("ceil", ceil))
    return build


def _global(kind):
    def build(shape):
        return layers.GlobalAvgPool2d(flatten=True) if kind == "avg" else layers.GlobalMaxPool2d(flatten=True)
    return build


def _norm(shape, **_):
    return nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])


def _fc(shape, out):
    out = _int("out", out, 1, 1 << 20)
    _weights(shape[0] * out)
    return nn.Linear(shape[0], out)


LAYERS: dict[str, LayerKind] = {
    "conv": LayerKind(("out", "k", "s", "p", "d", "g", "bias", "mode"), dict(k=3, s=1, p=0, d=1, g=1, bias=True,
                      mode="zeros"), _conv, "2-D convolution (cross-correlation); p=same keeps the size at s=1; "
                      "mode: zeros, reflect, replicate, circular", "map", ("out",)),
    "dwconv": LayerKind(("k", "s", "p", "d", "m", "bias", "mode"), dict(k=3, s=1, p=0, d=1, m=1, bias=True,
                        mode="zeros"), _dwconv, "depthwise convolution: one k x k filter per channel (m per channel)",
                        "map"),
    "sepconv": LayerKind(("out", "k", "s", "p", "d", "bias", "mode", "m"), dict(k=3, s=1, p=0, d=1, bias=True,
                         mode="zeros", m=1), _sepconv, "depthwise-separable convolution: depthwise k x k (m filters "
                         "per channel), then 1x1", "map", ("out",)),
    "ssconv": LayerKind(("out", "k", "s", "p", "d", "bias", "mode"), dict(k=3, s=1, p=0, d=1, bias=True,
                        mode="zeros"), _ssconv, "spatially separable convolution: k x 1, then 1 x k", "map", ("out",)),
    "trueconv": LayerKind(("out", "k", "s", "p", "d", "bias"), dict(k=3, s=1, p=0, d=1, bias=True), _trueconv,
                          "true convolution (the kernel flipped), beside conv's cross-correlation", "map", ("out",)),
    "maxpool": LayerKind(("k", "s", "p", "ceil"), dict(k=2, s=None, p=0, ceil=False), _pool("max"),
                         "max pooling (stride = k unless given)", "map"),
    "avgpool": LayerKind(("k", "s", "p", "ceil"), dict(k=2, s=None, p=0, ceil=False), _pool("avg"),
                         "average pooling (stride = k unless given)", "map"),
    "gap": LayerKind((), {}, _global("avg"), "global average pooling to a vector (ends the features)", "map"),
    "gmp": LayerKind((), {}, _global("max"), "global max pooling to a vector (ends the features)", "map"),
    "fracpool": LayerKind(("ratio", "seq", "overlap", "seed"), dict(ratio=0.5, seq="pseudo_random", overlap=False,
                          seed=0), _fracpool, "fractional max pooling (Graham 2014): the map scaled by ratio, regions "
                          "from a pseudo_random or random sequence", "map"),
    "stochpool": LayerKind(("k", "s"), dict(k=2, s=None),
                           lambda shape, k=2, s=None: layers.StochasticPool2d(_int("k", k), None if s is None else
                                                                              _int("s", s)),
                           "stochastic pooling (Zeiler & Fergus 2013): sampled by value in training, the weighted "
                           "mean in evaluation", "map"),
    "relu": LayerKind((), {}, lambda shape: nn.ReLU(), "max(0, x)"),
    "leakyrelu": LayerKind(("a",), dict(a=0.01), lambda shape, a=0.01: nn.LeakyReLU(_num("a", a, 0, 1)),
                           "x, or a*x below 0"),
    "elu": LayerKind(("a",), dict(a=1.0), lambda shape, a=1.0: nn.ELU(_num("a", a, 0)), "x, or a*(exp(x) - 1)"),
    "sigmoid": LayerKind((), {}, lambda shape: nn.Sigmoid(), "1 / (1 + exp(-x))"),
    "tanh": LayerKind((), {}, lambda shape: nn.Tanh(), "tanh(x)"),
    "silu": LayerKind((), {}, lambda shape: nn.SiLU(), "x * sigmoid(x) (Swish with beta 1)"),
    "swish": LayerKind(("b", "learn"), dict(b=1.0, learn=False),
                       lambda shape, b=1.0, learn=False: layers.Swish(_num("b", b), _bool("learn", learn)),
                       "x * sigmoid(b x); learn=true makes b a parameter"),
    "gelu": LayerKind(("approx",), dict(approx="none"), _gelu, "x * Phi(x), the Gaussian error linear unit "
                      "(approx=tanh: its tanh form)"),
    "bn": LayerKind((), {}, _norm, "batch normalisation (2-D on maps, 1-D on vectors)"),
    "ln": LayerKind((), {}, _ln, "layer normalisation: over C x H x W of each image (a gain and bias per channel), "
                    "or over a vector"),
    "gn": LayerKind(("g",), dict(g=32), _gn, "group normalisation over g groups of channels", "map"),
    "lrn": LayerKind(("size", "alpha", "beta", "k"), dict(size=5, alpha=1e-4, beta=0.75, k=1.0),
                     lambda shape, size=5, alpha=1e-4, beta=0.75, k=1.0: nn.LocalResponseNorm(
                         _int("size", size), _num("alpha", alpha, 0), _num("beta", beta, 0), _num("k", k, 0)),
                     "local response normalisation across size neighbouring channels (AlexNet; torch's alpha/size)",
                     "map"),
    "se": LayerKind(("r",), dict(r=16), lambda shape, r=16: layers.SqueezeExcite(shape[0], max(1, shape[0] // _int(
                    "r", r))), "squeeze-and-excitation: channel weights from the pooled map (reduction r)", "map"),
    "cbam": LayerKind(("r", "k"), dict(r=16, k=7), lambda shape, r=16, k=7: layers.CBAM(
                      shape[0], _int("r", r), _int("k", k)), "CBAM: channel attention, then spatial attention "
                      "(a k x k convolution over the channel mean and max)", "map"),
    "nonlocal": LayerKind(("ci", "sub"), dict(ci=None, sub=False), lambda shape, ci=None, sub=False:
                          layers.NonLocalBlock(shape[0], None if ci is None else _int("ci", ci), _bool("sub", sub)),
                          "non-local self-attention (embedded Gaussian) with a residual; starts as the identity",
                          "map"),
    "dropout": LayerKind(("p",), dict(p=0.5), lambda shape, p=0.5: nn.Dropout(_num("p", p, 0, 1)),
                         "zero each value with probability p in training"),
    "dropout2d": LayerKind(("p",), dict(p=0.5), lambda shape, p=0.5: nn.Dropout2d(_num("p", p, 0, 1)),
                           "zero whole channels with probability p in training", "map"),
    "flatten": LayerKind((), {}, lambda shape: nn.Flatten(1), "a map to a vector (ends the features)"),
    "fc": LayerKind(("out",), dict(out=None), _fc, "fully connected; without a width, the last layer: the classes",
                    "vector"),
}
LAYERS["linear"] = LAYERS["fc"]
_HEAD_STARTERS = ("flatten", "gap", "gmp")


def spec_help() -> str:
    """The grammar and every layer with its arguments and defaults, as ``convolab models --spec-help`` prints."""
    grammar = "\n\n".join(__doc__.split("\n\n")[1:5]).replace("``", "").replace("::", ":")
    lines = [grammar, "", "Layers (arguments by position in this order, or by name; defaults after =):"]
    for name, kind in LAYERS.items():
        if name == "linear":
            continue
        args = ", ".join(p if p in kind.required else f"{p}={_format_value(kind.defaults.get(p))}" for p in kind.params)
        lines.append(f"  {name}({args})" if args else f"  {name}")
        lines.append(f"      {kind.help}")
    lines.append("  linear: the same as fc")
    return "\n".join(lines)


# -- building --------------------------------------------------------------------------------------------------------
def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


class _Builder:
    def __init__(self, in_chans: int, input_size: tuple[int, int], num_classes: int):
        self.num_classes = num_classes
        self.shape: tuple[int, ...] = (in_chans, *input_size)
        self.index = 0  # layers built so far (messages count from 1)
        self.params = 0

    def run(self, module: nn.Module, shape: tuple[int, ...], what: str) -> tuple[int, ...]:
        """The output shape of ``module`` on a zero input of ``shape`` (eval mode: no statistics change)."""
        self.params += sum(p.numel() for p in module.parameters())
        if self.params > MAX_PARAMS:
            raise SpecError(f"layer {self.index} {what}: the network passes {MAX_PARAMS:,} parameters; make it "
                            "smaller")
        was = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = module(torch.zeros(1, *shape))
        except RuntimeError as e:
            detail = str(e).splitlines()[0]
            raise SpecError(f"layer {self.index} {what} does not fit its {_shape_text(shape)} input: the map "
                            f"collapses or the sizes do not match ({detail})") from None
        finally:
            module.train(was)
        if out.numel() == 0 or min(out.shape[1:], default=1) < 1:
            raise SpecError(f"layer {self.index} {what} turns its {_shape_text(shape)} input into "
                            f"{_shape_text(tuple(out.shape[1:]))}: the map collapses; use a larger input or fewer "
                            "pools/strides")
        return tuple(out.shape[1:])

    def layer(self, node: Layer, last: bool) -> tuple[str, nn.Module]:
        kind = LAYERS.get(node.name)
        what = format_spec([node])
        if kind is None:
            import difflib

            close = difflib.get_close_matches(node.name, [*LAYERS, *_BLOCKS], n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise SpecError(f"unknown layer {node.name!r} at character {node.pos + 1}; {hint}the layers are: "
                            f"{', '.join(sorted(LAYERS))}, and the blocks res, dense, cat")
        if len(node.args) > len(kind.params):
            raise SpecError(f"{what}: {node.name} takes at most {len(kind.params)} arguments "
                            f"({', '.join(kind.params) or 'none'})")
        values = dict(zip(kind.params, node.args))
        for k, v in node.kwargs.items():
            if k not in kind.params:
                raise SpecError(f"{what}: {node.name} has no argument {k!r}; it takes "
                                f"{', '.join(kind.params) or 'none'}")
            if k in values:
                raise SpecError(f"{what}: {k!r} is given twice (by position and by name)")
            values[k] = v
        missing = [p for p in kind.required if p not in values]
        if missing:
            raise SpecError(f"{what}: {node.name} needs {', '.join(missing)} (e.g. {node.name}(16))")
        if node.name in ("fc", "linear") and values.get("out") is None:
            if not last:
                raise SpecError(f"{what} at character {node.pos + 1}: fc without a width is the last layer (the "
                                "classes); give the width of a hidden layer, e.g. fc(120)")
            values["out"] = self.num_classes
        if kind.needs == "map" and len(self.shape) != 3:
            raise SpecError(f"layer {self.index} {what} needs a map (C x H x W), but gets a vector of "
                            f"{self.shape[0]}; put it before flatten/gap")
        if kind.needs == "vector" and len(self.shape) != 1:
            raise SpecError(f"layer {self.index} {what} gets a {_shape_text(self.shape)} map; put flatten (or gap) "
                            "before it")
        try:
            module = kind.build(self.shape, **values)
        except SpecError as e:
            raise SpecError(f"layer {self.index} {what}: {e}") from None
        return node.name, module

    def sequence(self, nodes: list, names: dict[str, int] | None = None,
                 ends_network: bool = False) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
        """Build ``nodes`` in order from ``self.shape``: (name, module, output shape) per built module.
        ``names`` counts the kinds already named in this scope; ``ends_network``: its last node is the network's."""
        names = {} if names is None else names
        flat = _expand(nodes)
        built = []
        for i, node in enumerate(flat):
            self.index += 1
            if isinstance(node, Layer):
                kind, module = self.layer(node, ends_network and i == len(flat) - 1)
                what = format_spec([node])
            else:
                kind, module, what = self.block(node)
            names[kind] = names.get(kind, 0) + 1
            self.shape = self.run(module, self.shape, what)
            built.append((f"{kind}{names[kind]}", module, self.shape))
        return built

    def block(self, node: Block) -> tuple[str, nn.Module, str]:
        what = format_spec([node])
        start = self.shape
        if len(start) != 3:
            raise SpecError(f"layer {self.index} {node.kind}(...) needs a map (C x H x W), but gets a vector")
        outs = []
        for path in node.paths:
            self.shape = start
            inner = self.sequence(path)
            outs.append((nn.Sequential(OrderedDict((n, m) for n, m, _ in inner)), self.shape))
        self.shape = start
        if node.kind == "res":
            (body, out), = outs
            shortcut = None
            if out != start:
                if len(out) != 3 or start[1] % out[1] or start[2] % out[2] or start[1] // out[1] != start[2] // out[2]:
                    raise SpecError(f"{what}: the body turns {_shape_text(start)} into {_shape_text(out)}; a "
                                    "residual sum needs the same size, or a size a strided 1x1 projection can reach")
                stride = start[1] // out[1]
                shortcut = nn.Conv2d(start[0], out[0], 1, stride=stride, bias=False)
            return "res", Residual(body, shortcut), what
        if node.kind == "dense":
            (body, out), = outs
            if len(out) != 3 or out[1:] != start[1:]:
                raise SpecError(f"{what}: the body turns {_shape_text(start)} into {_shape_text(out)}; dense(...) "
                                "concatenates, so the body must keep the height and width (use p=same)")
            return "dense", DenseConcat(body), what
        if node.kind == "cat":
            sizes = {out[1:] for _, out in outs}
            if any(len(out) != 3 for _, out in outs) or len(sizes) != 1:
                raise SpecError(f"{what}: the branches give {', '.join(_shape_text(o) for _, o in outs)}; "
                                "a concatenation needs the same height and width in every branch")
            return "cat", Concat([b for b, _ in outs]), what
        raise AssertionError(node.kind)  # groups are expanded before


def _expand(nodes: list) -> list:
    """Repeats and groups flattened into the sequence they stand for (blocks stay blocks)."""
    out = []
    for node in nodes:
        if isinstance(node, Repeat):
            out.extend(n for _ in range(node.times) for n in _expand([node.node]))
        elif isinstance(node, Block) and node.kind == "group":
            out.extend(_expand(node.paths[0]))
        else:
            out.append(node)
    return out


def final_width(nodes: list) -> int | None:
    """The class count a spec fixes itself: N when it ends in ``fc(N)`` (``fc(out=N)``), else None."""
    flat = _expand(nodes)
    last = _canonical(flat[-1]) if flat and isinstance(flat[-1], Layer) else None
    if last is None or last.name not in ("fc", "linear") or not last.args:
        return None
    width = last.args[0]
    return width if isinstance(width, int) and not isinstance(width, bool) else None


class SpecNet(ConvClassifier):
    """A classifier built from a spec: ``features`` (up to the first flatten/gap/gmp) then ``classifier`` (ending
    in the linear layer that gives the logits). ``spec`` is the canonical one-line text it was built from."""

    def __init__(self, spec: str, features: nn.Sequential, classifier: nn.Sequential, num_classes: int,
                 in_chans: int, input_size: tuple[int, int], feature_info: list[dict]):
        super().__init__()
        self.spec = spec
        self.features, self.classifier = features, classifier
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, tuple(input_size)
        self.feature_info = feature_info


def build_spec(spec: str, *, num_classes: int, in_chans: int, input_size: tuple[int, int] | None) -> SpecNet:
    """The network a spec describes, for ``in_chans`` x ``input_size`` inputs and ``num_classes`` classes (see the
    module docstring for the head). Raises :class:`SpecError` (a ``ValueError``) with one line."""
    nodes = parse_spec(spec)
    text = PREFIX + format_spec(nodes)
    size = tuple(input_size) if input_size is not None else (28, 28)
    builder = _Builder(in_chans, size, num_classes)
    flat = _expand(nodes)
    built = builder.sequence(flat, ends_network=True)
    added = []
    if not (flat and isinstance(flat[-1], Layer) and flat[-1].name in ("fc", "linear")):
        names = {}
        for name, _, _ in built:
            kind = name.rstrip("0123456789")
            names[kind] = max(names.get(kind, 0), int(name[len(kind):]))
        tail = [Layer("fc")] if len(builder.shape) == 1 else [Layer("gap"), Layer("fc")]
        built += builder.sequence(tail, names, ends_network=True)
        added = [n.name for n in tail]
    out = builder.shape
    if out != (num_classes,):
        raise SpecError(f"the spec ends in {_shape_text(out)} outputs but the data has {num_classes} classes; end it "
                        f"in fc (no width: the number of classes) or fc({num_classes})")
    split = next((i for i, (name, _, _) in enumerate(built) if name.rstrip("0123456789") in _HEAD_STARTERS),
                 len(built) - 1)
    features = nn.Sequential(OrderedDict((n, m) for n, m, _ in built[:split]))
    classifier = nn.Sequential(OrderedDict((n, m) for n, m, _ in built[split:]))
    info, reduction, shape = [], 1, (in_chans, *size)
    for name, _, out_shape in built[:split]:  # timm's feature_info: where the cumulative stride grows
        step = shape[1] // out_shape[1] if len(out_shape) == 3 and len(shape) == 3 else 1
        if step >= 2:  # (an unpadded convolution shrinks the map by a few pixels: not a stride)
            reduction *= step
            info.append(dict(module=f"features.{name}", num_chs=out_shape[0], reduction=reduction))
        shape = out_shape
    if split and (not info or info[-1]["module"] != f"features.{built[split - 1][0]}") and len(shape) == 3:
        info.append(dict(module=f"features.{built[split - 1][0]}", num_chs=shape[0], reduction=reduction))
    model = SpecNet(text, features, classifier, num_classes, in_chans, size, info)
    model.spec_added_head = added  # what build_spec appended ([] when the spec had its own head)
    if added and torch.get_default_device().type != "meta":  # (not for the shape checks before the data loads)
        log.info("the spec ends in a %s, not in fc: convolab added %s (%d classes)",
                 "vector" if added == ["fc"] else "map", ", ".join(added), num_classes)
    return model
