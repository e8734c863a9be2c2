"""Fuzzers (hypothesis) for the readers and parsers a user's files and strings reach.

Each fuzzer feeds one target of ``targets.py`` random and mutated inputs for a fixed time and fails
with the list of crashes — exceptions outside the user-error family, or hangs — one input per
(exception type, raising line). ``CONVOLAB_FUZZ_SAVE=1`` keeps those inputs in ``tests/fuzz/corpus/``
(check them in: ``test_corpus.py`` replays them in the fast suite); otherwise they are kept in the
test's temporary folder, named in the failure. ``CONVOLAB_FUZZ_SECONDS`` sets the time box (default
8 s per target, which keeps the slow suite short; run with 60 or more when hardening a reader). Under CI
(``CI=true``) the inputs are derandomized, so a build fails only on inputs a developer can replay; a
developer's runs draw new ones each time.

The generated sizes stay small on purpose (layer stacks of at most 8 channels, images' claimed sizes
either tiny or past Pillow's bomb limit): a fuzzer must not take the machine's memory.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tests.fuzz.targets import CORPUS, TARGETS, check, save, split_safetensors

SECONDS = float(os.environ.get("CONVOLAB_FUZZ_SECONDS", "8"))
DERANDOMIZE = os.environ.get("CI") == "true"
MAX_EXAMPLES = 100_000  # the time box ends a fuzzer, not the count


class _TimeUp(BaseException):
    """Ends hypothesis's run when the time box is spent (a BaseException: hypothesis lets it through)."""


class Fuzzer:
    """Calls a target until its time is up, keeping one crashing input (the shortest) per crash signature."""

    def __init__(self, target: str, ctx, keep: Path):
        self.target, self.ctx, self.keep = target, ctx, keep
        self.deadline = time.monotonic() + SECONDS
        self.crashes: dict = {}
        self.calls = 0

    def __call__(self, data: bytes) -> None:
        if time.monotonic() > self.deadline:
            raise _TimeUp
        self.calls += 1
        crash = check(self.target, data, self.ctx)
        if crash is not None:
            old = self.crashes.get(crash.signature)
            if old is None or len(crash.data) < len(old.data):
                self.crashes[crash.signature] = crash

    def run(self, strategy) -> None:
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), derandomize=DERANDOMIZE)
        @given(strategy)
        def fuzz(data):
            self(data)

        try:
            fuzz()
        except _TimeUp:
            pass
        folder = CORPUS if os.environ.get("CONVOLAB_FUZZ_SAVE") == "1" else self.keep
        lines = [f"{c.line()}  -> {save(c, folder)}" for c in self.crashes.values()]
        assert self.calls > 0
        assert not lines, f"{len(lines)} crash(es) in {self.calls} inputs:\n" + "\n".join(lines)


# -- generic mutations ------------------------------------------------------------------------------------
@st.composite
def mutated(draw, base: bytes, max_edits: int = 4) -> bytes:
    """``base`` with a few bytes overwritten, inserted or deleted, and perhaps cut short."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, max_edits))):
        kind = draw(st.sampled_from(["set", "insert", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "set" and data:
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif data:
            del data[at:at + draw(st.integers(1, 8))]
    if draw(st.integers(0, 3)) == 0:
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


SPECIAL_INTS = [-(2**63), -(2**31), -1, 0, 1, 2, 3, 255, 256, 2**31 - 1, 2**31, 2**32, 2**40, 2**63 - 1, 2**64]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.sampled_from(SPECIAL_INTS)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text("abcxyz019 ._-[]{}\"\\", max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz_", max_size=12),
                                                                inner, max_size=4),
    max_leaves=12)


def _dump(value) -> str:
    return json.dumps(value, allow_nan=True)


def _paths(value, prefix=()) -> list[tuple]:
    """Every path into a nested dict/list (lists: their first two items)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:2]):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc, path, value):
    node = doc
    for k in path[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value


_DELETE = object()


@st.composite
def edited_json(draw, base: dict) -> str:
    """A JSON document like ``base``: one or more fields replaced (another type, absurd values) or dropped,
    or the whole document replaced, or its text broken, or nested very deeply."""
    kind = draw(st.sampled_from(["edit", "edit", "edit", "whole", "text", "deep"]))
    if kind == "whole":
        return _dump(draw(json_values))
    if kind == "deep":
        depth = draw(st.sampled_from([100, 1000, 10_000, 100_000]))
        return "[" * depth + "]" * depth if draw(st.booleans()) else '{"a":' * depth + "1" + "}" * depth
    doc = json.loads(json.dumps(base))
    paths = _paths(doc)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        try:
            _set(doc, path, _DELETE if draw(st.integers(0, 4)) == 0 else draw(json_values))
        except (KeyError, IndexError, TypeError):
            pass
    text = _dump(doc)
    if kind == "text":
        text = draw(mutated(text.encode())).decode("utf-8", "surrogateescape")
    return text


# -- IDX -----------------------------------------------------------------------------------------------------
IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@st.composite
def idx_files(draw) -> bytes:
    if draw(st.booleans()):  # a valid file of a small random array, then mutated
        code = draw(st.sampled_from(sorted(IDX_DTYPES)))
        shape = draw(st.lists(st.integers(0, 6), min_size=0, max_size=4))
        arr = np.frombuffer(draw(st.binary(min_size=int(np.prod(shape)) * np.dtype(IDX_DTYPES[code]).itemsize,
                                           max_size=int(np.prod(shape)) * np.dtype(IDX_DTYPES[code]).itemsize)),
                            IDX_DTYPES[code])
        data = bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + arr.tobytes()
        data = draw(mutated(data))
    else:  # a header of our own: any type code, dimension count and sizes
        code = draw(st.sampled_from(sorted(IDX_DTYPES)) | st.integers(0, 255))
        ndim = draw(st.integers(0, 5) | st.integers(0, 255))
        dims = draw(st.lists(st.integers(0, 8) | st.sampled_from([2**16, 2**31 - 1, 2**31, 2**32 - 1]),
                             min_size=min(ndim, 6), max_size=min(ndim, 6)))
        data = bytes([0, 0, code, ndim]) + struct.pack(f">{len(dims)}I", *dims) + draw(st.binary(max_size=300))
    if draw(st.booleans()):
        data = gzip.compress(data)
        if draw(st.booleans()):
            data = draw(mutated(data, max_edits=2))
    return data


# -- images --------------------------------------------------------------------------------------------------
@st.composite
def pil_images(draw, modes):
    from PIL import Image

    mode = draw(st.sampled_from(modes))
    w, h = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if mode in ("I;16", "I"):
        arr = rng.integers(0, 2**16, (h, w)).astype(np.uint16 if mode == "I;16" else np.int32)
        return Image.fromarray(arr)  # uint16 -> I;16, int32 -> I
    if mode == "F":
        return Image.fromarray(rng.normal(100, 200, (h, w)).astype(np.float32))
    bands = {"1": 1, "L": 1, "P": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    arr = rng.integers(0, 256, (h, w, bands), dtype=np.uint8)
    base = Image.fromarray(arr[..., 0] if bands == 1 else arr, "L" if bands == 1 else mode)
    return base.convert(mode) if mode in ("1", "P") else base


def _png_with_size(raw: bytes, width: int, height: int) -> bytes:
    """Rewrite the IHDR chunk's width and height, with a valid CRC (so that the decoder gets past it)."""
    if raw[12:16] != b"IHDR":
        return raw
    chunk = b"IHDR" + struct.pack(">II", width, height) + raw[24:29]
    return raw[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


def _jpeg_with_size(raw: bytes, width: int, height: int) -> bytes:
    at = raw.find(b"\xff\xc0")
    at = raw.find(b"\xff\xc2") if at < 0 else at
    if at < 0:
        return raw
    return raw[:at + 5] + struct.pack(">HH", height & 0xFFFF, width & 0xFFFF) + raw[at + 9:]


CLAIMED = st.integers(0, 64) | st.sampled_from([65535, 2**20, 2**31 - 1, 2**32 - 1])


@st.composite
def png_files(draw) -> bytes:
    buf = io.BytesIO()
    draw(pil_images(["1", "L", "LA", "P", "RGB", "RGBA", "I;16"])).save(buf, "PNG")
    raw = buf.getvalue()
    if draw(st.booleans()):
        w, h = draw(CLAIMED), draw(CLAIMED)
        if w * h <= 2**16 or w * h > 4 * 89_478_485:  # tiny, or refused by Pillow's bomb check before allocating
            raw = _png_with_size(raw, w, h)
    return draw(mutated(raw))


@st.composite
def jpeg_files(draw) -> bytes:
    buf = io.BytesIO()
    draw(pil_images(["L", "RGB", "CMYK"])).save(buf, "JPEG", quality=draw(st.integers(1, 95)),
                                                 progressive=draw(st.booleans()))
    raw = buf.getvalue()
    if draw(st.booleans()):
        w, h = draw(st.integers(0, 64) | st.sampled_from([65535])), draw(st.integers(0, 64) | st.sampled_from([65535]))
        if w * h <= 2**16 or w * h > 4 * 89_478_485:
            raw = _jpeg_with_size(raw, w, h)
    return draw(mutated(raw))


@st.composite
def other_image_files(draw) -> bytes:
    """The other formats of IMAGE_EXTENSIONS, each a small image saved by Pillow, then mutated."""
    fmt = draw(st.sampled_from(["TIFF", "GIF", "BMP", "WEBP", "PPM"]))
    modes = {"TIFF": ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "F"], "GIF": ["L", "P", "RGB"],
             "BMP": ["1", "L", "P", "RGB"], "WEBP": ["RGB", "RGBA"], "PPM": ["1", "L", "RGB"]}[fmt]
    buf = io.BytesIO()
    draw(pil_images(modes)).save(buf, fmt)
    return draw(mutated(buf.getvalue(), max_edits=6))


# -- user strings --------------------------------------------------------------------------------------------
NUMBERS = st.integers(-2, 40).map(str) | st.sampled_from(["0", "00", "1e3", "2**8", "1_0", "\u0661", "+3", " 4",
                                                          "99999999999999999999", "nan", "", "-0"])


@st.composite
def input_shapes(draw) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text("0123456789,x -+.eE_\u0661\x00", max_size=20)).encode()
    sep = draw(st.sampled_from([",", "x", ", ", ",,", ";"]))
    return sep.join(draw(st.lists(NUMBERS, min_size=1, max_size=5))).encode()


STACK_NUMBERS = st.integers(0, 12).map(str) | st.sampled_from(["00", "99", "007", "64"])


@st.composite
def stack_items(draw) -> str:
    kind = draw(st.sampled_from(["conv", "pool", "maxpool", "avgpool", "relu", "other"]))
    if kind == "relu":
        return "relu"
    if kind == "other":
        return draw(st.sampled_from(["", "conv", "convx", "conv3s", "Conv3", "relu3", "pool3s2p", "conv-1", "linear3",
                                     " ", "conv3d2s1", "conv3p1s1"]))
    item = kind + draw(STACK_NUMBERS)
    for flag in "spd":
        if draw(st.integers(0, 2)) == 0:
            item += flag + draw(STACK_NUMBERS)
    return item


@st.composite
def layer_stacks(draw) -> bytes:
    shape = ",".join(map(str, (draw(st.integers(1, 8)), draw(st.integers(1, 40)), draw(st.integers(1, 40)))))
    spec = draw(st.sampled_from([",", ", ", ",,"])).join(draw(st.lists(stack_items(), min_size=1, max_size=5)))
    return f"{shape}|{spec}".encode()


# -- run directories and checkpoints -----------------------------------------------------------------------
@st.composite
def weights_headers(draw, base_header: dict) -> bytes:
    header = json.loads(json.dumps(base_header))
    meta = json.loads(header["__metadata__"]["convolab"])
    kind = draw(st.sampled_from(["meta", "meta", "metadata", "tensors", "text"]))
    delta = draw(st.sampled_from([0, 0, 0, -1, 1, 8, -8, 10**6]))
    if kind == "meta":  # the convolab metadata (model, model_kwargs, classes, mean, std, input_size ...)
        header["__metadata__"]["convolab"] = draw(edited_json(meta))
    elif kind == "metadata":  # safetensors' own metadata table: must map strings to strings
        header["__metadata__"] = draw(json_values)
    else:
        name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        header[name][field] = draw(json_values | st.lists(st.integers(-2, 100) | st.sampled_from([2**40]), max_size=5)
                                   | st.sampled_from(["F16", "BF16", "I64", "U8", "BOOL", "F64", "F8_E4M3"]))
    text = json.dumps(header)
    if kind == "text":
        text = draw(mutated(text.encode())).decode("utf-8", "surrogateescape")
    return json.dumps({"header": text, "length_delta": delta}).encode()


def _checkpoint_paths(state) -> list[list]:
    """Where the fuzzer edits a checkpoint: every top-level key and the entries one or two levels below."""
    paths = []
    for k, v in state.items():
        paths.append([k])
        if isinstance(v, dict):
            for k2, v2 in list(v.items())[:200]:  # (all of config's fields)
                paths.append([k, k2])
                if isinstance(v2, dict):
                    paths += [[k, k2, k3] for k3 in list(v2)[:10]]
        elif isinstance(v, list) and v:
            paths.append([k, 0])
            if isinstance(v[0], dict):
                paths += [[k, 0, k3] for k3 in v[0]]
    return paths


TENSORS = st.builds(lambda shape: {"$tensor": shape}, st.lists(st.integers(0, 4), max_size=3))


@st.composite
def checkpoint_edits(draw, paths) -> bytes:
    if draw(st.integers(0, 3)) == 0:  # the bytes of the saved file
        return json.dumps({"patch": draw(st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)),
                                                  max_size=6)),
                           "truncate": draw(st.none() | st.integers(0, 4096))}).encode()
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        edits.append([path] if draw(st.integers(0, 4)) == 0 else [path, draw(json_values | TENSORS)])
    return json.dumps({"edits": edits}, allow_nan=True).encode()


# -- the fuzzers ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fuzz_idx(ctx, tmp_path):
    Fuzzer("idx", ctx, tmp_path / "crashes").run(idx_files())


@pytest.mark.slow
def test_fuzz_png(ctx, tmp_path):
    Fuzzer("png", ctx, tmp_path / "crashes").run(png_files())


@pytest.mark.slow
def test_fuzz_jpeg(ctx, tmp_path):
    Fuzzer("jpeg", ctx, tmp_path / "crashes").run(jpeg_files())


@pytest.mark.slow
def test_fuzz_other_images(ctx, tmp_path):
    Fuzzer("image_other", ctx, tmp_path / "crashes").run(other_image_files())


@pytest.mark.slow
def test_fuzz_parse_input(ctx, tmp_path):
    Fuzzer("parse_input", ctx, tmp_path / "crashes").run(input_shapes())


@pytest.mark.slow
def test_fuzz_layer_stack(ctx, tmp_path):
    Fuzzer("layer_stack", ctx, tmp_path / "crashes").run(layer_stacks())


@pytest.mark.slow
@pytest.mark.parametrize("target,name", [("run_config", "config.json"), ("run_summary", "summary.json"),
                                         ("run_marker", ".convolab-run")])
def test_fuzz_run_json(target, name, run_ctx, tmp_path):
    base = json.loads((run_ctx.base_run / name).read_text())
    Fuzzer(target, run_ctx, tmp_path / "crashes").run(edited_json(base).map(lambda t: t.encode("utf-8",
                                                                                                "surrogateescape")))


@pytest.mark.slow
def test_fuzz_run_weights(run_ctx, tmp_path):
    header, _ = split_safetensors((run_ctx.base_run / "model.safetensors").read_bytes())
    Fuzzer("run_weights", run_ctx, tmp_path / "crashes").run(weights_headers(header))


@pytest.mark.slow
def test_fuzz_checkpoint(run_ctx, tmp_path):
    import torch

    newest = sorted((run_ctx.base_run / "checkpoints").glob("step-*.pt"))[-1]
    state = torch.load(newest, map_location="cpu", weights_only=True)
    Fuzzer("checkpoint", run_ctx, tmp_path / "crashes").run(checkpoint_edits(_checkpoint_paths(state)))


SPECIAL_TENSORS = (st.builds(lambda shape, fill: {"$tensor": shape, "fill": fill},
                             st.lists(st.integers(0, 4), max_size=3),
                             st.sampled_from([0.0, float("nan"), float("inf"), -float("inf"), 1e38]))
                   | st.builds(lambda shape: {"$meta": shape}, st.lists(st.integers(0, 4), max_size=3))
                   | st.builds(lambda shape: {"$sparse": shape}, st.lists(st.integers(1, 4), min_size=1, max_size=2)))


@st.composite
def init_from_edits(draw, names) -> bytes:
    spec = {"format": draw(st.sampled_from(["pth", "safetensors"]))}
    if draw(st.integers(0, 3)) == 0:
        spec["patch"] = draw(st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=6))
        spec["truncate"] = draw(st.none() | st.integers(0, 4096))
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names) | st.sampled_from([0, 1, "module." + names[0], "state_dict", "model"]))
        value = draw(SPECIAL_TENSORS | TENSORS | json_values)
        edits.append([[name]] if draw(st.integers(0, 5)) == 0 else [[name], value])
    spec["edits"] = edits
    return json.dumps(spec, allow_nan=True).encode()


@pytest.mark.slow
def test_fuzz_init_from(ctx, tmp_path):
    from tests.fuzz.targets import _init_model

    names = sorted(_init_model().state_dict())
    Fuzzer("init_from", ctx, tmp_path / "crashes").run(init_from_edits(names))


def test_every_target_has_a_fuzzer():
    fuzzed = {"idx", "png", "jpeg", "image_other", "parse_input", "layer_stack", "run_config", "run_summary",
              "run_marker", "run_weights", "checkpoint", "init_from"}
    assert fuzzed == set(TARGETS)
