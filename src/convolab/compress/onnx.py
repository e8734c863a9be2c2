"""Export a model to ONNX, checked against onnxruntime on real images every time.

:func:`export_onnx` writes ONE self-contained ``.onnx`` file (weights inside, no external data) with a dynamic batch
dimension. The file is written to a temporary name beside the destination, run through onnxruntime's CPU provider
on the check images (the whole batch and its first image alone, so the dynamic batch is exercised too) and
compared with torch's output; only a file whose largest absolute difference is within ``atol`` is renamed into
place. The dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which needs onnxscript) is tried first; a model
it cannot take goes through the TorchScript exporter, and :class:`OnnxExport` says which one wrote the file.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convolab.atomic import atomic_path

__all__ = ["OnnxExport", "ExportCheckError", "export_onnx", "ort_session", "run_onnx", "float64_errors", "INPUT_NAME",
           "OUTPUT_NAME"]

INPUT_NAME = "input"  # the graph's input: a normalised float32 batch (N, C, H, W)
OUTPUT_NAME = "logits"  # the graph's output: (N, num_classes)
PROTOBUF_LIMIT = 2**31 - 1  # bytes: one ONNX file cannot be larger (its weights would need external data)


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote and how well it matched torch."""

    path: Path  # the .onnx file (one file, weights inside)
    max_abs_diff: float  # largest |onnxruntime - torch| over the check images' outputs
    checked_images: int  # images in the check batch
    opset: int  # the default-domain (ai.onnx) opset of the file
    size_bytes: int  # the file's size
    input_name: str  # the graph input's name, its batch dimension dynamic
    output_name: str  # the graph output's name
    exporter: str = "dynamo"  # "dynamo" (torch.export based) or "torchscript" (the fallback)
    atol: float = 1e-4  # the tolerance the check used


class ExportCheckError(ValueError):
    """The exported file's outputs under onnxruntime differ from torch's by more than the tolerance (or onnxruntime
    cannot run it); the file was not written."""


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike, *, check: torch.Tensor | None = None,
                atol: float = 1e-4, opset: int | None = None, overwrite: bool = False) -> OnnxExport:
    """Export ``model`` to one ``.onnx`` file with a dynamic batch dimension, checked against onnxruntime.

    The model is exported in eval mode, in float32 on the CPU (a model elsewhere is copied there; the caller's model
    keeps its mode, device and dtype).

    Args:
        model: a module mapping a float batch ``(N, C, H, W)`` (or clips ``(N, C, T, H, W)``) to one tensor.
        example: a normalised input batch that fixes every dimension but the batch.
        path: the destination file.
        check: the normalised images the export is checked on (real images; default ``example``).
        atol: the largest absolute difference between onnxruntime's and torch's outputs accepted.
        opset: the ai.onnx opset to target (default: the exporter's recommended one).
        overwrite: replace an existing file at ``path``.

    Returns:
        An :class:`OnnxExport` describing the file.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is not set.
        ValueError: a bad example or check batch, or a model with an operator neither exporter can translate
            (the message names the operator and, where it can be found, the layer).
        ExportCheckError: onnxruntime's outputs differ from torch's by more than ``atol``; nothing is written.
    """
    dest = Path(path)
    if dest.is_dir():
        raise ValueError(f"{dest} is a folder; give a file name such as {dest / 'model.onnx'}")
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass overwrite=True (--overwrite) to replace it, or choose another path")
    if isinstance(atol, bool) or not (isinstance(atol, (int, float)) and atol >= 0):
        raise ValueError(f"atol must be a number >= 0; got {atol!r}")
    example = _as_batch(example, "example")
    check = example if check is None else _as_batch(check, "check")
    if check.shape[1:] != example.shape[1:]:
        raise ValueError(f"check images of shape {tuple(check.shape[1:])} do not match the example's "
                         f"{tuple(example.shape[1:])} (batch dimension aside)")

    with _exportable(model) as net:
        # torch.export specialises a dimension of size 1, so the batch is traced at 2 or more.
        traced = example if example.shape[0] >= 2 else example.expand(2, *example.shape[1:]).contiguous()
        with torch.no_grad():
            expected = net(check)
        if not isinstance(expected, torch.Tensor):
            raise ValueError(f"the model returns {type(expected).__name__}; ONNX export here needs one output tensor")
        with atomic_path(dest, suffix=".onnx") as tmp:
            exporter = _write(net, traced, tmp, opset)
            size = tmp.stat().st_size
            found_opset = _opset(tmp)
            diff = _check(tmp, check, expected.float().numpy(), atol, net)
    return OnnxExport(path=dest, max_abs_diff=diff, checked_images=int(check.shape[0]), opset=found_opset,
                      size_bytes=size, input_name=INPUT_NAME, output_name=OUTPUT_NAME, exporter=exporter,
                      atol=float(atol))


def ort_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime ``InferenceSession`` on the CPU for ``path``; ``threads`` sets the intra-op thread count (one
    inter-op thread: these graphs are sequential).

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``threads`` below 1, or a file onnxruntime cannot load.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an integer >= 1; got {threads!r}")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the session's warnings about unused initializers are noise here
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, NotImplemented ...)
        raise ValueError(f"onnxruntime cannot load {path}: {_first_line(e)}") from None


def run_onnx(session, x: np.ndarray) -> np.ndarray:
    """Run a one-input ``session`` on the batch ``x`` (converted to float32) and return its first output."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"run_onnx takes a graph with one input; this one has {len(inputs)}")
    return session.run(None, {inputs[0].name: x})[0]


def _as_batch(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor batch (N, C, H, W); got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"{what} must be a batch (N, C, H, W) with N >= 1; got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be normalised float images; got {x.dtype} (normalise uint8 images first)")
    x = x.detach().to("cpu", torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    return x


@contextlib.contextmanager
def _exportable(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode, float32, on the CPU: itself when it already is (its mode restored afterwards), else a
    copy."""
    tensors = list(model.parameters()) + list(model.buffers())
    moved = any(t.device.type != "cpu" or (t.is_floating_point() and t.dtype != torch.float32) for t in tensors)
    net = copy.deepcopy(model).to("cpu", torch.float32) if moved else model
    modes = {m: m.training for m in net.modules()}
    net.eval()
    try:
        yield net
    finally:
        for m, training in modes.items():
            m.training = training


def _write(net: nn.Module, x: torch.Tensor, tmp: Path, opset: int | None) -> str:
    """Export with the dynamo exporter, else the TorchScript one; returns which one wrote ``tmp``."""
    # float32 weights alone over the limit cannot go in one file (the exporters would spill them as external data)
    _check_size(4 * sum(t.numel() for t in list(net.parameters()) + list(net.buffers())))
    failures = []
    with warnings.catch_warnings(), _quiet_logging():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer warnings are not the user's concern
        try:
            program = torch.onnx.export(
                net, (x,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset,
                dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False, optimize=True)
            program.save(str(tmp), external_data=False)
            return "dynamo"
        except _TooLarge:
            raise
        except Exception as e:  # the exporter raises many types (TorchExportError, ConversionError, UserError ...)
            failures.append(e)
        try:
            with _quiet_stdout():  # the TorchScript exporter prints its whole IR graph when it fails
                torch.onnx.export(
                    net, (x,), str(tmp), dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    opset_version=opset, dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    do_constant_folding=True, verbose=False)
            return "torchscript"
        except _TooLarge:
            raise
        except Exception as e:
            failures.append(e)
    raise ValueError(_unsupported_message(net, x, failures)) from None


class _TooLarge(ValueError):
    def __init__(self, size: int):
        super().__init__(f"the model's ONNX file would be {size / 2**30:.2f} GiB, over protobuf's 2 GiB limit for one "
                         "file; export a smaller model (a single-file export cannot hold these weights)")


def _check_size(size: int) -> None:
    if size > PROTOBUF_LIMIT:
        raise _TooLarge(size)


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Hold back log records up to WARNING while exporting: torch.export logs whole graphs when it gives up on a
    model (the fallback exporter may still take it, and a failure is reported in one line)."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.WARNING))
    try:
        yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1 (C++ writes to it directly, around Python's ``sys.stdout``)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (an embedded interpreter): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            try:
                yield
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
    finally:
        os.close(saved)


# The operator named in each exporter's message: TorchScript "Exporting the operator 'aten::erfinv' to ONNX ...",
# dynamo "No ONNX function found for <OpOverload(op='prims.erf_inv', overload='default')>".
_OP_PATTERNS = (re.compile(r"operator '([\w:.]+)'"), re.compile(r"OpOverload\(op='([\w.]+)'"),
                re.compile(r"target=torch\.ops\.([\w.]+?)(?:\.default)?\]"))


def _unsupported_message(net: nn.Module, x: torch.Tensor, failures: list[Exception]) -> str:
    """One line: the operator neither exporter could translate and the layer that calls it (or the first line of
    the last error when no operator is named)."""
    ops = []
    for e in reversed(failures):  # TorchScript's message names the operator as the model calls it: prefer it
        text = str(e)
        for pattern in _OP_PATTERNS:
            ops += [m for m in pattern.findall(text) if m not in ops]
    if not ops:
        return f"cannot export {type(net).__name__} to ONNX: {_first_line(failures[-1])}"
    op = ops[0]
    layer = _layer_calling(net, x, op)
    where = f" in layer {layer[0]!r} ({layer[1]})" if layer else ""
    return (f"cannot export {type(net).__name__} to ONNX: operator {op}{where} has no ONNX translation "
            "(replace that layer, or export without it)")


def _layer_calling(net: nn.Module, x: torch.Tensor, op: str) -> tuple[str, str] | None:
    """(module path, class name) of the innermost module whose forward calls the torch function named like ``op``
    ("aten::special_i0e" -> ``torch.special.i0e``, whose ``__name__`` is ``special_i0e``), found in one forward pass
    under a ``TorchFunctionMode``; None when no call matches."""
    from torch.overrides import TorchFunctionMode

    want = _bare(op)
    stack: list[tuple[str, str]] = [("", type(net).__name__)]
    found: list[tuple[str, str]] = []

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if not found and _bare(getattr(func, "__name__", "")) == want:
                found.append(stack[-1])
            return func(*args, **(kwargs or {}))

    def leave(_module, _inputs, _output) -> None:  # returns None: a forward hook's result would replace the output
        stack.pop()

    def enter(module, _inputs) -> None:
        stack.append(names[module])

    names = {module: (name, type(module).__name__) for name, module in net.named_modules()}
    hooks = [h for module in names for h in (module.register_forward_pre_hook(enter),
                                              module.register_forward_hook(leave))]
    try:
        with torch.no_grad(), Spy():
            net(x[:1])
    except Exception:
        return None
    finally:
        for h in hooks:
            h.remove()
    if not found:
        return None
    path, cls = found[0]
    return (path or "(the model itself)", cls)


def _bare(op: str) -> str:
    """An operator's bare name: "aten::linalg_svdvals" / "aten.erfinv.default" / "erfinv_" -> "linalg_svdvals",
    "erfinv", "erfinv"."""
    name = re.split(r"::|\.", op)
    name = [part for part in name if part not in ("aten", "prims", "default", "Tensor", "torch", "")]
    return name[0].rstrip("_") if name else op


def _opset(path: Path) -> int:
    """The file's ai.onnx opset, after checking that every weight is inside it (no external data)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    outside = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if outside:
        raise ValueError(f"the exporter put {len(outside)} weight tensors outside the .onnx file ({outside[0]} ...); "
                         "a single-file export needs them inside")
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _check(path: Path, check: torch.Tensor, expected: np.ndarray, atol: float, net: nn.Module) -> float:
    """Largest |onnxruntime - torch| over the check batch and its first image alone; ``ExportCheckError`` above
    ``atol``, saying whether float32 rounding explains the difference (see :func:`_rounding_note`)."""
    try:
        session = ort_session(path)
        got = run_onnx(session, check.numpy())
        one = run_onnx(session, check[:1].numpy())  # batch 1: the batch dimension really is dynamic
    except Exception as e:
        raise ExportCheckError(f"onnxruntime cannot run the exported model: {_first_line(e)}") from None
    if got.shape != expected.shape or one.shape != expected[:1].shape:
        raise ExportCheckError(f"onnxruntime gives outputs of shape {got.shape} (batch 1: {one.shape}); torch gives "
                               f"{expected.shape}")
    diff = max(float(np.abs(got - expected).max(initial=0.0)), float(np.abs(one - expected[:1]).max(initial=0.0)))
    if not np.isfinite(diff) or diff > atol:
        raise ExportCheckError(f"ONNX export check failed: onnxruntime's outputs differ from torch's by up to "
                               f"{diff:.3g} on {len(check)} images, over the tolerance {atol:.3g}; the file was not "
                               f"written{_rounding_note(net, check, expected, got)}")
    return diff


def float64_errors(net: nn.Module, x: torch.Tensor, torch_out: np.ndarray, ort_out: np.ndarray) -> tuple[float, float]:
    """(max |torch float32 - float64 forward|, max |onnxruntime - float64 forward|) on ``x``: how far each float32
    runtime is from the model's exact arithmetic (a float64 copy of ``net``)."""
    with torch.no_grad():
        exact = copy.deepcopy(net).double()(x.double()).numpy()
    return float(np.abs(torch_out - exact).max()), float(np.abs(ort_out - exact).max())


def _rounding_note(net: nn.Module, check: torch.Tensor, expected: np.ndarray, got: np.ndarray) -> str:
    """Deep networks' logits can differ by more than 1e-4 between two correct float32 runtimes that sum in different
    orders; a float64 forward tells that apart from a wrong export."""
    try:
        torch_err, ort_err = float64_errors(net, check, expected, got)
    except Exception:  # a model that cannot run in float64: no diagnosis, the failure stands
        return ""
    if not np.isfinite(ort_err) or ort_err > 4 * torch_err:  # 4x: rounding noise of two float32 runtimes
        return (f" (onnxruntime is far further from a float64 forward, {ort_err:.3g}, than torch's float32 forward "
                f"is, {torch_err:.3g}: not float rounding)")
    return (f" (float32 rounding: torch's float32 forward differs from a float64 forward by {torch_err:.3g}, "
            f"onnxruntime's by {ort_err:.3g}; pass a larger atol to accept it)")


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__
