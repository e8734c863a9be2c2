"""ONNX Runtime's static int8 quantization: the second post-training int8 path (beside torchao's PT2E flow).

:func:`quantize_onnx_static` takes an fp32 ``.onnx`` file (as :func:`convolab.compress.onnx.export_onnx` writes it),
runs ORT's pre-processing (symbolic shape inference and graph optimisation, as ORT's quantization guide asks),
calibrates activation ranges (min/max) on normalised training images fed in batches, and writes a QDQ model: int8
weights (per output channel by default) and 8-bit activations, one self-contained file, written atomically.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from convolab.atomic import atomic_path

__all__ = ["quantize_onnx_static", "ArrayCalibrationReader", "relu_before_maxpool", "MIN_CALIBRATION_IMAGES",
           "ACTIVATION_TYPES"]

# Min/max calibration on fewer images gives ranges that one unusual image can stretch or a rare class never reaches.
MIN_CALIBRATION_IMAGES = 32
CALIBRATION_BATCH = 64  # images per calibration batch (bounds the memory of the augmented model's outputs)
ACTIVATION_TYPES = ("uint8", "int8")


class ArrayCalibrationReader(CalibrationDataReader):
    """Feeds ORT's calibrator ``images`` (N, C, H, W) float32 in batches of ``batch_size`` under ``input_name``."""

    def __init__(self, images: np.ndarray, input_name: str, batch_size: int = CALIBRATION_BATCH):
        self.images = images
        self.input_name = input_name
        self.batch_size = batch_size
        self._batches: Iterator[dict[str, np.ndarray]] | None = None
        self.rewind()

    def _iterate(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.images), self.batch_size):
            yield {self.input_name: np.ascontiguousarray(self.images[start:start + self.batch_size])}

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or None when all have been given."""
        return next(self._batches, None)

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._batches = self._iterate()

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)


def x86_without_vnni() -> bool:
    """Whether this is an x86 CPU without VNNI (AVX512-VNNI or AVX-VNNI), read from the kernel's CPU flags.

    There, ORT's u8 x s8 kernels add pairs of products into 16 bits (``vpmaddubsw``), which saturates with full
    8-bit weights: measured on an AVX2-only AMD EPYC, tutorial_cnn's int8 logits were 0.051 off the float ones
    (16 % of their spread) with 8-bit weights and within 10 % with 7-bit ones. ORT's guide gives ``reduce_range``
    (7-bit weights) for such CPUs. Outside Linux the flags are not read, and an x86 CPU counts as without VNNI."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return True
    return not ({"avx512_vnni", "avx_vnni"} & flags)


def quantize_onnx_static(fp32_path: str | os.PathLike, out_path: str | os.PathLike, calibration: np.ndarray, *,
                         per_channel: bool = True, activations: str = "uint8", overwrite: bool = False) -> Path:
    """Quantize an fp32 ONNX classifier to int8 with ORT's static (calibrated) quantization, in QDQ format.

    Weights are int8, symmetric (per output channel when ``per_channel``); activations are 8-bit with ranges from
    min/max calibration on ``calibration``. ``activations="uint8"`` (the default) is the u8 x s8 layout ORT's x86
    kernels (VNNI's u8 x s8 dot products) take natively; on this project's AVX512-VNNI CPU the two measured within
    5 % of each other, either ahead from run to run (tutorial_cnn, batch 256, 2 threads: 4.63 against 4.69 ms, then
    5.66 against 5.40 ms); ``"int8"`` is the alternative. On an x86 CPU without VNNI the weights get 7 bits
    (ORT's ``reduce_range``), which its kernels there need to avoid saturating (:func:`x86_without_vnni`).

    Args:
        fp32_path: the float model, one input (N, C, H, W) with a dynamic batch.
        out_path: the int8 model to write (one file).
        calibration: normalised float32 images (N, C, H, W), as the model takes them; at least
            ``MIN_CALIBRATION_IMAGES``.
        per_channel: one weight scale per output channel (better accuracy for convolutions) instead of per tensor.
        activations: "uint8" or "int8".
        overwrite: replace an existing ``out_path``.

    Returns:
        ``out_path`` as a Path.

    Raises:
        FileNotFoundError: no file at ``fp32_path``.
        FileExistsError: ``out_path`` exists and ``overwrite`` is not set.
        ValueError: too few calibration images, a calibration array of the wrong shape, type or values, or an
            unknown ``activations``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dest = Path(fp32_path), Path(out_path)
    if not src.is_file():
        raise FileNotFoundError(f"no ONNX file at {src}")
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass overwrite=True (--overwrite) to replace it, or choose another path")
    if dest.resolve() == src.resolve():
        raise ValueError(f"the int8 model would replace its own fp32 source {src}; choose another output path")
    if activations not in ACTIVATION_TYPES:
        raise ValueError(f"activations must be one of {', '.join(ACTIVATION_TYPES)}; got {activations!r}")
    model = onnx.load(str(src), load_external_data=False)
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ValueError(f"{src} has {len(inputs)} inputs; static quantization here takes a model with one image input")
    input_name = inputs[0].name
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    images = _calibration_array(calibration, dims)

    activation_type = QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8
    with tempfile.TemporaryDirectory(prefix="convolab-ort-quant-") as work:
        prepared = Path(work) / "prepared.onnx"
        # ORT's guide: run shape inference and the graph optimisations (BatchNorm folding ...) before quantizing.
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=False)
        swapped = relu_before_maxpool(onnx.load(str(prepared)))
        if swapped:
            onnx.save(swapped, str(prepared))
        with atomic_path(dest, suffix=".onnx") as tmp:
            quantize_static(
                str(prepared), str(tmp), ArrayCalibrationReader(images, input_name),
                quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=activation_type,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                use_external_data_format=False, reduce_range=x86_without_vnni(),
                extra_options={"WeightSymmetric": True})  # int8 weights with zero point 0, as the s8 kernels want
    return dest


def relu_before_maxpool(model):
    """Rewrite every ``MaxPool -> Relu`` pair into ``Relu -> MaxPool`` (in place); returns ``model`` if any pair was
    rewritten, else None.

    ``relu(max(S)) = max(relu(S))`` for any window ``S`` (ReLU is non-decreasing), so the outputs are unchanged. The
    order matters to the int8 graph: after the swap ORT fuses Conv + Relu into one QLinearConv and pools in int8
    (NhwcMaxPool); before it, the ReLU's range folds into the pool's output QuantizeLinear, whose scale then differs
    from the pool's input, so the pool runs in float between a DequantizeLinear, layout changes and a QuantizeLinear
    (tutorial_cnn, which pools before its ReLUs: 9.2 ms at batch 256 unswapped, 5.7 ms swapped, 2 threads).
    """
    import onnx

    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    nodes, changed = list(graph.node), []
    for i, pool in enumerate(nodes):
        if pool.op_type != "MaxPool" or pool.domain not in ("", "ai.onnx") or len(pool.output) != 1:
            continue
        mid = pool.output[0]
        users = consumers.get(mid, [])
        if mid in outputs or len(users) != 1 or users[0].op_type != "Relu" or users[0].domain not in ("", "ai.onnx"):
            continue
        relu = users[0]
        j = next(k for k, n in enumerate(nodes) if n is relu)
        # Same positions, roles exchanged: the ReLU takes the pool's slot (its input is produced before it), so the
        # node list stays topologically sorted; ``mid`` now holds the un-pooled, rectified map.
        nodes[i] = onnx.helper.make_node("Relu", [pool.input[0]], [mid], name=relu.name)
        nodes[j] = onnx.helper.make_node("MaxPool", [mid], [relu.output[0]], name=pool.name)
        nodes[j].attribute.extend(pool.attribute)
        changed.append(mid)
    if not changed:
        return None
    del graph.node[:]
    graph.node.extend(nodes)
    stale = [v for v in graph.value_info if v.name in changed]  # their shapes were the pooled ones
    for v in stale:
        graph.value_info.remove(v)
    return model


def _calibration_array(calibration: np.ndarray, dims: list[int | None]) -> np.ndarray:
    """``calibration`` checked against the model's input ``dims`` (None where dynamic), as float32."""
    if not isinstance(calibration, np.ndarray):
        raise ValueError(f"calibration must be a NumPy array (N, C, H, W) of normalised float32 images; got "
                         f"{type(calibration).__name__}")
    if calibration.ndim != len(dims):
        raise ValueError(f"calibration must have {len(dims)} dimensions (N, C, H, W); got shape {calibration.shape}")
    if not np.issubdtype(calibration.dtype, np.floating):
        raise ValueError(f"calibration must be normalised float images; got {calibration.dtype} (normalise uint8 "
                         "images as the model was trained first)")
    n = calibration.shape[0]
    if n < MIN_CALIBRATION_IMAGES:
        raise ValueError(f"calibration on {n} image{'s' if n != 1 else ''} refused: static quantization needs at least "
                         f"{MIN_CALIBRATION_IMAGES} images (training images, normalised)")
    fixed = [(i, d) for i, d in enumerate(dims) if d and i > 0]
    if any(calibration.shape[i] != d for i, d in fixed):
        want = tuple(d if d else "N" for d in dims)
        raise ValueError(f"calibration images of shape {calibration.shape[1:]} do not fit the model's input {want}")
    images = np.ascontiguousarray(calibration, dtype=np.float32)
    if not np.isfinite(images).all():
        raise ValueError("calibration holds NaN or infinite values")
    return images
