"""The fuzz targets: one function per reader or parser, each taking the bytes of one input.

A target turns its input into whatever the reader takes (a file in a fresh folder, a run directory
with one file replaced, a string) and calls the reader. The reader may return anything or raise one
of the user-error exceptions (:data:`USER_ERRORS`); any other exception, or a call that does not end
within :data:`HANG_SECONDS`, is a crash. Inputs that crashed are kept in ``tests/fuzz/corpus/TARGET/``
and replayed by ``test_corpus.py``.

Inputs of the run-directory and checkpoint targets are small JSON edits of a base run (trained once
per session by the tests: tutorial_cnn on digits), so the corpus stays small and survives a change
of the weights' bytes:

- ``run_config``, ``run_summary``, ``run_marker``: the raw bytes of ``config.json`` (also read back as
  eval, explain and report read it: ``run_dataset``), ``summary.json``,
  ``.convolab-run``;
- ``run_weights``: ``{"header": TEXT, "length_delta": N}``, the safetensors header (its JSON text,
  possibly broken) put in front of the base file's tensor bytes, its 8-byte length field off by N;
- ``checkpoint``: ``{"edits": [[PATH, VALUE] or [PATH] (delete) ...], "patch": [[OFFSET, BYTE] ...],
  "truncate": N or null}``: edits applied to the loaded base checkpoint (VALUE is JSON; ``{"$tensor":
  [shape...]}`` is a float tensor of zeros (``"fill"``: of that value), ``{"$meta": [...]}`` a meta tensor,
  ``{"$sparse": [...]}`` a sparse one), saved with ``torch.save``, then its bytes patched and cut;
- ``init_from``: the same edits of tutorial_cnn's state dict, saved as ``.pth`` or (``"format":
  "safetensors"``) ``.safetensors``, read by ``--init-from``'s ``load_initial_weights``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import struct
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
HANG_SECONDS = 60


class Hang(Exception):
    """The target did not return within HANG_SECONDS."""


@dataclass
class Crash:
    target: str
    data: bytes
    error: BaseException
    where: str  # the innermost frame in convolab (else the innermost frame) that raised

    @property
    def signature(self) -> tuple[str, str, str]:
        return self.target, type(self.error).__name__, self.where

    def line(self) -> str:
        first = (str(self.error).strip().splitlines() or [""])[0][:160]
        return f"{self.target}: {type(self.error).__name__} at {self.where}: {first}"


@contextlib.contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    def raise_hang(signum, frame):
        raise Hang(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, raise_hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "/convolab/" in f.filename and "/tests/" not in f.filename]
    f = (ours or frames or [None])[-1]
    return f"{Path(f.filename).name}:{f.lineno} ({f.name})" if f is not None else "?"


def check(target: str, data: bytes, ctx: Context) -> Crash | None:
    """Run ``target`` on ``data``; the crash, or None when it returned or raised a user error."""
    try:
        with _alarm(HANG_SECONDS):
            TARGETS[target][0](data, ctx)
    except USER_ERRORS:
        return None
    except Exception as e:  # noqa: BLE001 - everything else is what the fuzzer looks for
        return Crash(target, data, e, _where(e))
    return None


def save(crash: Crash, folder: Path = CORPUS) -> Path:
    """Keep a crashing input as ``folder/TARGET/crash-HASH.EXT`` (its name is its content's hash)."""
    import hashlib

    ext = TARGETS[crash.target][1]
    path = folder / crash.target / f"crash-{hashlib.sha1(crash.data).hexdigest()[:12]}{ext}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(crash.data)
    return path


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*/*") if p.is_file() and p.parent.name in TARGETS)


# -- context: a scratch folder and, for the run targets, a base run ---------------------------------------
@dataclass
class Context:
    scratch: Path  # a folder the target may fill (emptied before each call)
    base_run: Path | None = None  # a finished run of tutorial_cnn on digits, 1 epoch, never modified

    def fresh(self) -> Path:
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.scratch.mkdir(parents=True)
        return self.scratch

    def run_copy(self) -> Path:
        if self.base_run is None:
            raise RuntimeError("this target needs a base run (the fuzz tests' base_run fixture)")
        run = self.fresh() / "run"
        shutil.copytree(self.base_run, run)
        return run


def make_base_run(out: Path) -> Path:
    """The run the run-directory and checkpoint targets edit: tutorial_cnn, digits, 1 epoch, no plots."""
    import convolab
    from convolab.train import TrainConfig

    cfg = TrainConfig(model="tutorial_cnn", data="digits", out=str(out), epochs=1, batch_size=128, seed=0,
                      device="cpu", progress=False, plots=False, download=False)
    return convolab.train(cfg).run_dir


# -- the targets --------------------------------------------------------------------------------------------
def idx(data: bytes, ctx: Context) -> None:
    from convolab.data.idx import read_idx

    path = ctx.fresh() / "images-idx3-ubyte"
    path.write_bytes(data)
    read_idx(path)


def _image(ext: str) -> Callable[[bytes, Context], None]:
    def target(data: bytes, ctx: Context) -> None:
        from convolab.data.images import load_image

        path = ctx.fresh() / f"x{ext}"
        path.write_bytes(data)
        for channels in (1, 3):
            load_image(path, (8, 8), channels)

    return target


def parse_input(data: bytes, ctx: Context) -> None:
    """``convolab summary tutorial_cnn --input TEXT``: the parser, then the shape it gives to the analysis."""
    from convolab.analysis import parse_input as parse
    from convolab.analysis import summarize

    dims = parse(data.decode("utf-8", "replace"))
    summarize("tutorial_cnn", dims)


def layer_stack(data: bytes, ctx: Context) -> None:
    """``convolab summary SPEC --input C,H,W``: the input is ``C,H,W|SPEC``."""
    from convolab.analysis import parse_input as parse
    from convolab.analysis import summarize

    text = data.decode("utf-8", "replace")
    shape, _, spec = text.partition("|")
    summarize(spec, parse(shape))


def _load_run_dir(run: Path) -> None:
    from convolab.runs.reader import load_run, read_weights_metadata

    read_weights_metadata(run / "model.safetensors")
    r = load_run(run)
    r.metrics()


def _replace_file(name: str) -> Callable[[bytes, Context], None]:
    def target(data: bytes, ctx: Context) -> None:
        run = ctx.run_copy()
        (run / name).write_bytes(data)
        _load_run_dir(run)
        if name == "config.json":  # eval, explain and report then reload the run's data as config.json says
            from convolab.explain.inputs import run_dataset
            from convolab.runs.reader import load_run

            run_dataset(load_run(run), download=False)

    return target


def split_safetensors(raw: bytes) -> tuple[dict, bytes]:
    """(header as a dict, tensor bytes) of a safetensors file."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def run_weights(data: bytes, ctx: Context) -> None:
    spec = json.loads(data)
    run = ctx.run_copy()
    weights = run / "model.safetensors"
    _, tensors = split_safetensors(weights.read_bytes())
    header = spec["header"].encode("utf-8", "surrogateescape")
    weights.write_bytes(struct.pack("<Q", max(0, len(header) + spec.get("length_delta", 0))) + header + tensors)
    _load_run_dir(run)


def _newest_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*.pt"))[-1]


def _to_value(v):
    import torch

    if isinstance(v, dict) and v.keys() in ({"$tensor"}, {"$tensor", "fill"}):  # fill: e.g. NaN
        return torch.full(tuple(int(s) for s in v["$tensor"]), float(v.get("fill", 0.0)))
    if isinstance(v, dict) and set(v) == {"$meta"}:
        return torch.empty(tuple(int(s) for s in v["$meta"]), device="meta")
    if isinstance(v, dict) and set(v) == {"$sparse"}:
        return torch.zeros(tuple(int(s) for s in v["$sparse"])).to_sparse()
    if isinstance(v, dict):
        return {k: _to_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_to_value(x) for x in v]
    return v


def apply_edits(state, edits: list) -> None:
    """Set (``[path, value]``) or delete (``[path]``) entries of a nested dict/list; paths that do not exist
    are created at their last step and skipped before it."""
    for edit in edits:
        path, node = edit[0], state
        for key in path[:-1]:
            try:
                node = node[key if isinstance(node, dict) else int(key)]
            except (KeyError, IndexError, ValueError, TypeError):
                node = None
                break
        if not isinstance(node, (dict, list)) or not path:
            continue
        key = path[-1] if isinstance(node, dict) else int(path[-1]) if str(path[-1]).lstrip("-").isdigit() else None
        if key is None or (isinstance(node, list) and not -len(node) <= key < len(node)):
            continue
        if len(edit) == 1:
            if isinstance(node, dict):
                node.pop(key, None)
            else:
                del node[key]
        else:
            node[key] = _to_value(edit[1])


class _ReachedTraining(Exception):
    """The resumed run got as far as its next training epoch: everything it read was accepted."""


def _resume(run: Path) -> None:
    from convolab.runs.session import resume
    from convolab.train.loop import Trainer

    original = Trainer._train_epoch

    def stop(self, epoch):
        raise _ReachedTraining

    Trainer._train_epoch = stop
    try:
        resume(run, device="cpu", progress=False, plots=False, download=False)
    except _ReachedTraining:
        pass
    finally:
        Trainer._train_epoch = original


def checkpoint(data: bytes, ctx: Context) -> None:
    """``load_checkpoint`` on the edited checkpoint, then ``resume`` of its run up to the next training step."""
    import io

    import torch

    from convolab.train.checkpoint import load_checkpoint

    spec = json.loads(data)
    run = ctx.run_copy()
    path = _newest_checkpoint(run)
    if spec.get("edits"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        apply_edits(state, spec["edits"])
        buf = io.BytesIO()
        torch.save(state, buf)
        raw = bytearray(buf.getvalue())
    else:
        raw = bytearray(path.read_bytes())
    for offset, byte in spec.get("patch") or []:
        if raw:
            raw[offset % len(raw)] = byte & 0xFF
    if spec.get("truncate") is not None:
        raw = raw[:spec["truncate"]]
    path.write_bytes(bytes(raw))
    load_checkpoint(path)
    _resume(run)


def _init_model():
    import torch

    from convolab.models import create_model

    torch.manual_seed(0)
    return create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=(8, 8))


def init_from(data: bytes, ctx: Context) -> None:
    """``--init-from FILE``: tutorial_cnn's own state dict, edited, saved as ``.pth`` (or ``.safetensors`` when
    every value is still a tensor), its bytes patched and cut, then loaded into a fresh tutorial_cnn."""
    import io

    import torch
    from safetensors.torch import save

    from convolab.train.init_from import load_initial_weights

    spec = json.loads(data)
    state = dict(_init_model().state_dict())
    apply_edits(state, spec.get("edits") or [])
    as_safetensors = spec.get("format") == "safetensors"
    if as_safetensors:
        try:
            raw = bytearray(save(state))
        except Exception:  # noqa: BLE001 - safetensors cannot hold this edit: nothing to read
            return
    else:
        buf = io.BytesIO()
        torch.save(state, buf)
        raw = bytearray(buf.getvalue())
    for offset, byte in spec.get("patch") or []:
        if raw:
            raw[offset % len(raw)] = byte & 0xFF
    if spec.get("truncate") is not None:
        raw = raw[:spec["truncate"]]
    path = ctx.fresh() / ("init.safetensors" if as_safetensors else "init.pth")
    path.write_bytes(bytes(raw))
    load_initial_weights(_init_model(), path)


def run_marker(data: bytes, ctx: Context) -> None:
    """A damaged ``.convolab-run`` marker, then ``resume`` of the run (which reads it)."""
    run = ctx.run_copy()
    (run / ".convolab-run").write_bytes(data)
    _resume(run)


# name -> (target, file extension of its corpus entries, needs the base run)
TARGETS: dict[str, tuple[Callable[[bytes, Context], None], str, bool]] = {
    "idx": (idx, ".bin", False),
    "png": (_image(".png"), ".png", False),
    "jpeg": (_image(".jpg"), ".jpg", False),
    "image_other": (_image(".tif"), ".bin", False),  # TIFF, GIF, BMP, WebP, PPM ... (Pillow reads the content)
    "parse_input": (parse_input, ".txt", False),
    "layer_stack": (layer_stack, ".txt", False),
    "run_config": (_replace_file("config.json"), ".json", True),
    "run_summary": (_replace_file("summary.json"), ".json", True),
    "run_weights": (run_weights, ".json", True),
    "run_marker": (run_marker, ".json", True),
    "checkpoint": (checkpoint, ".json", True),
    "init_from": (init_from, ".json", False),
}


if __name__ == "__main__":  # python -m tests.fuzz.targets FILE...: replay inputs and print what each did
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(Path(tmp) / "scratch")
        for name in sys.argv[1:]:
            p = Path(name)
            if TARGETS[p.parent.name][2] and ctx.base_run is None:
                ctx.base_run = make_base_run(Path(tmp) / "base")
            crash = check(p.parent.name, p.read_bytes(), ctx)
            print(f"{p}: {crash.line() if crash else 'ok'}")
