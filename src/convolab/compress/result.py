"""One compression result: the variants measured side by side, and the run folder that holds the compressed model.

Every method ends here: the baselines (the run's float32 model eager, compiled by inductor, and in ONNX Runtime) and
the method's variants are measured on the run's own test images (:mod:`convolab.compress.measure`); the table goes
to the console, to the new run's ``summary.json`` (``compress``), to ``compress.txt`` and, as a Pareto plot, to
``plots/pareto.png``; ``convolab report`` shows all three.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from convolab.compress.measure import BATCHES, Row, Variant, compile_for_batch, measure, pareto_figure, table
from convolab.runs.layout import PLOTS, SUMMARY, WEIGHTS
from convolab.runs.reader import Run

__all__ = ["baseline_variants", "compiled_variant", "onnx_variant", "bf16_variants", "Autocast", "measure_and_record",
           "measure_run", "check_destinations", "COMPRESS_TXT", "PARETO_PNG"]

log = logging.getLogger(__name__)

COMPRESS_TXT = "compress.txt"  # the table, as the console printed it
PARETO_PNG = "pareto.png"  # under plots/


def check_destinations(run_path, out, *, control: bool = False, overwrite: bool = False) -> None:
    """Before any work: refuse an ``out`` (or, with ``control``, ``out``-control) that is the run being compressed
    (``--overwrite`` would replace the weights it starts from) or that may not be written."""
    from convolab.runs.layout import prepare_run_dir

    source = Path(run_path).expanduser().resolve()
    for dest in [Path(out)] + ([Path(f"{out}-control")] if control else []):
        if dest.expanduser().resolve() == source:
            raise ValueError(f"--out {dest} is the run being compressed; choose another folder (its weights are what "
                             "the method starts from)")
        prepare_run_dir(dest, "compress", "run", overwrite, create=False)


def compiled_variant(name: str, model: nn.Module, example: torch.Tensor, file: Path | None, note: str = "",
                     batches: Sequence[int] = BATCHES) -> Variant:
    """``model`` compiled by inductor (freezing on) once per batch size (static shapes)."""
    model.eval()
    forwards = {b: compile_for_batch(model, _batch(example, b)) for b in batches}
    return Variant(name, file, forwards, note)


class Autocast(nn.Module):
    """``model`` run under CPU autocast to bfloat16, logits back in float32: the layers an int8 graph keeps in float
    (and a float model's every layer) compute in bfloat16 -- inductor's "int8-mixed-bf16" configuration."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(x).float()


def bf16_variants(float_model: nn.Module, int8_model: nn.Module | None, example: torch.Tensor, int8_file: Path | None
                  ) -> list[Variant]:
    """With bfloat16 instructions on this CPU: the float model compiled under bf16 autocast (the other fair
    baseline), and the int8 graph with its float layers in bf16."""
    from convolab.train.step import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        return []
    out = [compiled_variant("bf16 compiled", Autocast(copy.deepcopy(float_model).float().cpu()), example, None,
                            "torch.compile under bf16 autocast")]
    if int8_model is not None:
        out.append(compiled_variant("int8 torchao + bf16", Autocast(int8_model), example, int8_file,
                                    "int8 layers, the float ones in bf16 (int8-mixed-bf16)"))
    return out


def onnx_variant(name: str, path: Path, note: str = "", batches: Sequence[int] = BATCHES) -> Variant:
    """An ONNX file in ONNX Runtime on the CPU, with torch's thread count."""
    from convolab.compress.onnx import ort_session, run_onnx

    session = ort_session(path, threads=torch.get_num_threads())

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run_onnx(session, x.numpy()))
    return Variant(name, path, {b: forward for b in batches}, note)


def baseline_variants(run: Run, example: torch.Tensor, onnx_path: Path | None, check: torch.Tensor | None = None
                      ) -> list[Variant]:
    """The run's float32 model eager, compiled, and (when ``onnx_path`` is given: exported there, checked against
    onnxruntime on ``check``) in ONNX Runtime."""
    model = copy.deepcopy(run.model).float().cpu().eval()
    weights = run.path / WEIGHTS
    eager = Variant("fp32 eager", weights, {b: model for b in BATCHES}, "torch, no compilation")
    out = [eager, compiled_variant("fp32 compiled", model, example, weights, "torch.compile (inductor, freezing)")]
    if onnx_path is not None:
        from convolab.compress.onnx import export_onnx

        export_onnx(model, example, onnx_path, check=check if check is not None else example, overwrite=True)
        out.append(onnx_variant("fp32 onnxruntime", onnx_path, "ONNX Runtime, CPU"))
    return out


def _batch(example: torch.Tensor, b: int) -> torch.Tensor:
    """A batch of ``b`` images made from ``example`` (repeated when it has fewer)."""
    reps = -(-b // len(example))
    return example.repeat(reps, *([1] * (example.dim() - 1)))[:b].contiguous()


def measure_and_record(run: Run, out: Path, variants: Sequence[Variant], images: torch.Tensor, targets: torch.Tensor,
                       *, method: dict, main: str, repeats: int = 5, min_seconds: float = 0.2,
                       say: Callable[[str], None] = print) -> list[Row]:
    """Measure ``variants`` on ``images``, print the table, and record it in ``out`` (a run folder): summary.json's
    ``compress`` (the method's settings, every row) and its ``test_accuracy`` (the ``main`` variant's), compress.txt
    and plots/pareto.png."""
    from convolab.atomic import write_text
    from convolab.plotting import save_figure
    from convolab.runs.schema import SUMMARY_SCHEMA
    from convolab.runs.writer import RunWriter
    from convolab.structure import read_json

    rows = measure(variants, images, targets, run.mean, run.std, repeats=repeats, min_seconds=min_seconds,
                   progress=lambda s: log.info(s))
    text = table(rows)
    threads = torch.get_num_threads()
    header = (f"{method.get('method', 'compress')} of {run.path} -- {len(images):,} test images, latency in ms per "
              f"batch (median of {repeats}), {threads} threads")
    say(header)
    say(text)
    main_row = next(r for r in rows if r.name == main)
    summary_path = out / SUMMARY
    summary = read_json(summary_path, SUMMARY_SCHEMA) if summary_path.exists() else dict(run.summary)
    summary.update(test_accuracy=main_row.accuracy, test_samples=len(images),
                   compress={**method, "main": main, "threads": threads, "rows": [r.to_dict() for r in rows]})
    writer = RunWriter(out)
    writer.write_summary(summary)
    write_text(out / COMPRESS_TXT, header + "\n" + text + "\n")
    (out / PLOTS).mkdir(exist_ok=True)
    save_figure(pareto_figure(rows, f"{method.get('method', '')}: {run.path.name}"), out / PLOTS / PARETO_PNG)
    return rows


def measure_run(run: Run, out: Path, data, extra: Callable[[torch.Tensor, Path | None], list[Variant]], *,
                method: dict, main: str, ort: bool = True, test_limit: int | None = None, repeats: int = 5,
                say: Callable[[str], None] = print) -> list[Row]:
    """Every method's last step: the run's baselines (:func:`baseline_variants`; the float32 ONNX export in a
    temporary folder when ``ort``) and the variants ``extra(example, onnx_fp32_path)`` makes, measured on the
    run's test split (its first ``test_limit`` images) and recorded in ``out`` (:func:`measure_and_record`)."""
    import tempfile

    from convolab.compress.measure import normalise

    images, targets = data.test.images, data.test.labels
    if test_limit is not None:
        images, targets = images[:test_limit], targets[:test_limit]
    example = normalise(images[:256], run.mean, run.std).contiguous()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_fp32 = Path(tmp) / "model.onnx" if ort else None
        variants = baseline_variants(run, example, onnx_fp32) + extra(example, onnx_fp32)
        return measure_and_record(run, out, variants, images, targets, method=method, main=main, repeats=repeats,
                                  say=say)
