"""Post-training int8 quantization of a run through torchao's PT2E flow, lowered by inductor to oneDNN int8 kernels.

The flow (torchao's, where torch moved its quantization; eager and FX quantization are deprecated):
``torch.export`` (dynamic batch) -> ``prepare_pt2e`` with the x86 inductor quantizer (int8 activations per tensor,
int8 weights per channel) -> calibration on training images -> ``convert_pt2e`` -> ``torch.compile`` with inductor's
freezing, one static shape per batch size (the int8 lowering of some layers fails with a dynamic batch).

Convolutions with fewer than 4 input channels (a grayscale or RGB first layer) stay float32 by default: measured on
this project's 2-core AVX512-VNNI CPU, quantizing tutorial_cnn's 1-channel first convolution made the whole model
*slower* than compiled float32 (7.2 ms against 6.5 ms per batch of 256), keeping it float32 made it 1.7x faster --
the int8 dot-product instructions work on groups of 4 input channels, and the layer holds 0.1 % of the weights.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from convolab.runs.quantized import KIND, convert, prepare, stored_tensors

__all__ = ["MIN_CALIBRATION_IMAGES", "DEFAULT_CALIBRATION_IMAGES", "float_first_layers", "quantize_ptq",
           "calibration_images", "build_record", "ptq_run"]

log = logging.getLogger(__name__)

MIN_CALIBRATION_IMAGES = 32  # fewer gives activation ranges that one outlier image decides
DEFAULT_CALIBRATION_IMAGES = 512
_CALIBRATION_BATCH = 128


def float_first_layers(model: nn.Module, max_in_channels: int = 3) -> list[str]:
    """Names of the convolutions whose input has at most ``max_in_channels`` channels (kept float32: see the module
    docstring)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels <= max_in_channels]


def check_calibration(count: int) -> None:
    """Refuse fewer than :data:`MIN_CALIBRATION_IMAGES` calibration images, saying the minimum."""
    if count < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"--calibration {count}: too few images to calibrate int8 ranges; the minimum is "
                         f"{MIN_CALIBRATION_IMAGES}")


def calibration_images(split, count: int, mean, std, seed: int = 0) -> torch.Tensor:
    """``count`` images of a dataset split (uint8 ``[N,C,H,W]``), drawn without replacement with ``seed`` and
    normalised with the run's ``mean``/``std``, as float32.

    Raises:
        ValueError: ``count`` below :data:`MIN_CALIBRATION_IMAGES`, or more than the split holds.
    """
    check_calibration(count)
    n = len(split.images)
    if count > n:
        raise ValueError(f"--calibration {count}: the training split has only {n} images; give at most {n}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:count]
    x = split.images[idx].float().div_(255)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, *([1] * (x.dim() - 2)))
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, *([1] * (x.dim() - 2)))
    return (x - m) / s


def quantize_ptq(model: nn.Module, calibration: torch.Tensor, keep_float: list[str] | None = None,
                 rewrite: bool = True) -> tuple[dict[str, torch.Tensor], torch.fx.GraphModule, list[str], list[str]]:
    """``model`` (float32, CPU) quantized to int8 after training.

    Args:
        model: the trained model (not changed).
        calibration: normalised float32 images ``[N,C,H,W]``, at least :data:`MIN_CALIBRATION_IMAGES`.
        keep_float: modules left float32 (default: :func:`float_first_layers` of the rewritten model).
        rewrite: first apply the exact rewrites that make int8 faster (:mod:`convolab.models.rewrite`).

    Returns:
        (what an int8 run's ``model.safetensors`` stores, the int8 graph, the modules kept float32, the rewrites
        applied).

    Raises:
        ValueError: too few calibration images, or a model the flow cannot export (the cause in one line).
    """
    import copy

    if len(calibration) < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"{len(calibration)} calibration images are too few; the minimum is {MIN_CALIBRATION_IMAGES}")
    from convolab.models.rewrite import inference_rewrites

    model = copy.deepcopy(model).float().cpu().eval()
    example = calibration[:2].contiguous()
    rewrites = inference_rewrites(model, example) if rewrite else []
    keep = float_first_layers(model) if keep_float is None else list(keep_float)
    prepared = prepare(model, example, keep)
    with torch.no_grad():
        for i in range(0, len(calibration), _CALIBRATION_BATCH):
            prepared(calibration[i:i + _CALIBRATION_BATCH].contiguous())
    tensors = stored_tensors(prepared)  # (before converting: convert_pt2e changes the graph in place)
    return tensors, convert(prepared), keep, rewrites


def build_record(run, keep: list[str], qat: bool = False) -> dict:
    """config.json's ``build`` of an int8 run made from ``run``."""
    cfg = dict(getattr(run.model, "convolab_cfg", {}) or {})
    name = cfg.pop("name", run.build.get("name"))
    kwargs = cfg or dict(run.build.get("kwargs") or {})
    if run.build.get("kind") != "registry":
        raise ValueError(f"{run.path}: int8 quantization starts from a registry model's run; this run's model is "
                         f"built as {run.build.get('kind')!r}")
    return {"kind": KIND, "base": {"name": name, "kwargs": kwargs}, "input_shape": list(run.input_size),
            "rewrites": [], "keep_float": keep, "qat": qat}



def ptq_run(run_path, out, *, calibration: int = DEFAULT_CALIBRATION_IMAGES, keep_float: list[str] | None = None,
            rewrite: bool = True, ort: bool = True, bf16: bool = True, overwrite: bool = False,
            test_limit: int | None = None, repeats: int = 5, say=print) -> list:
    """Post-training int8 of the run at ``run_path`` into the run folder ``out``, measured against its baselines.

    Calibrates on ``calibration`` training images (drawn with the run's seed), converts with torchao's PT2E flow,
    writes ``out`` (config.json's build ``int8-pt2e``: ``load_run``, ``eval``, ``predict`` and ``explain`` use the
    int8 model), and with ``ort`` also quantizes the run's ONNX export with ONNX Runtime's static quantization
    (``out/model.int8.onnx``, from the original model). With ``rewrite`` the model is first rewritten exactly where
    that makes int8 faster (:mod:`convolab.models.rewrite`). Then measures accuracy on the test split (its first
    ``test_limit`` images), size
    and latency at batch 1 and 256 of: float32 eager, compiled and in ONNX Runtime, both int8 models, and with
    ``bf16`` on a CPU with bfloat16 instructions the float model compiled under bf16 autocast and the int8 graph
    with its float layers in bf16 (:func:`convolab.compress.result.measure_and_record`).

    Returns:
        the measured rows (:class:`convolab.compress.measure.Row`).

    Raises:
        ValueError: too few calibration images, a run that is not a registry model's classification run, a model the
            flow cannot export; FileExistsError: ``out`` exists (without ``overwrite``).
    """
    from convolab.compress.result import bf16_variants, check_destinations, compiled_variant, measure_run, onnx_variant
    from convolab.runs.layout import CONFIG, WEIGHTS, prepare_run_dir
    from convolab.runs.reader import load_run, read_weights_metadata
    from convolab.runs.recipe import load_data, run_config
    from convolab.runs.writer import RunWriter, save_state

    run = load_run(run_path)
    if run.task != "classification":
        raise ValueError(f"{run.path}: int8 quantization here takes a classification run; this one is {run.task}")
    check_destinations(run.path, out, overwrite=overwrite)
    check_calibration(calibration)  # (before the data loads)
    name = run.config.get("model") or run.build.get("name") or "model"
    dest = prepare_run_dir(out, name, "int8", overwrite, create=False)
    build = build_record(run, [])  # refuses a run whose model is not a registry model's, before the data loads
    config = run_config(run)
    data = load_data(run, config)
    say(f"calibrating int8 ranges on {calibration:,} training images of {data.name}")
    cal = calibration_images(data.train, calibration, run.mean, run.std, seed=config.seed)
    tensors, converted, keep, rewrites = quantize_ptq(run.model, cal, keep_float, rewrite=rewrite)
    build["keep_float"], build["rewrites"] = keep, rewrites
    if rewrites:
        say(f"rewritten exactly for int8 speed: {', '.join(rewrites)} (see convolab.models.rewrite)")
    if keep:
        why = " (a convolution on at most 3 input channels gains nothing from int8)" if keep_float is None else ""
        say(f"kept in float32: {', '.join(keep)}{why}")
    dest = prepare_run_dir(dest, name, "int8", overwrite, create=True)
    writer = RunWriter(dest)
    method = {"method": "ptq", "from": str(run.path), "calibration_images": calibration, "keep_float": keep,
              "rewrites": rewrites, "backend": "torchao PT2E, x86 inductor quantizer"}
    writer.write_config({**run.config, "kind": "compress", "build": build, "compress": method})
    save_state(tensors, dest / WEIGHTS, read_weights_metadata(run.path / WEIGHTS))
    again = load_run(dest)  # what was written rebuilds the same int8 graph, or it is not reported as good
    probe = cal[:8].contiguous()
    with torch.no_grad():
        if not torch.equal(again.model(probe), converted(probe)):
            raise ValueError(f"{dest / CONFIG}: the saved int8 model does not rebuild to the same graph; "
                             "please report this")
    def int8_variants(example: torch.Tensor, onnx_fp32) -> list:
        variants = [compiled_variant("int8 torchao", converted, example, dest / WEIGHTS,
                                     "PT2E, x86 inductor (oneDNN int8)")]
        if bf16:
            variants += bf16_variants(run.model, converted, example, dest / WEIGHTS)
        if onnx_fp32 is not None:
            from convolab.compress.ort_quant import quantize_onnx_static

            int8_onnx = quantize_onnx_static(onnx_fp32, dest / "model.int8.onnx", cal.numpy(), overwrite=overwrite)
            variants.append(onnx_variant("int8 onnxruntime", int8_onnx, "ORT static quantization (QDQ)"))
        return variants
    return measure_run(run, dest, data, int8_variants, method=method, main="int8 torchao", ort=ort,
                       test_limit=test_limit, repeats=repeats, say=say)
