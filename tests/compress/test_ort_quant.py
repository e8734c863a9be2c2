"""ONNX Runtime static int8 quantization (convolab.compress.ort_quant): the trained digits run keeps its accuracy
within 1 point of fp32 under onnxruntime, the file shrinks >= 3x where weights dominate, the MaxPool/Relu swap
changes no output and lets the pools run in int8, and bad calibration is refused with the minimum.

References: accuracy is counted here from labels (fp32 and int8 both through onnxruntime); the swap is checked
against the unswapped graph's outputs; sizes are the files' sizes on disk.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import convolab
from convolab.compress.onnx import export_onnx, ort_session, run_onnx
from convolab.compress.ort_quant import MIN_CALIBRATION_IMAGES, quantize_onnx_static, relu_before_maxpool
from convolab.data import load_dataset
from convolab.data.loader import Normalizer
from convolab.models import create_model


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits(digits_run, tmp_path_factory):
    """The trained digits run exported to fp32 ONNX, with its normalised train and test splits."""
    run = convolab.load_run(digits_run.run_dir)
    data = load_dataset("digits")
    norm = Normalizer(run.mean, run.std)
    train, test = norm(data.train.images), norm(data.test.images)
    assert len(test) == run.config["dataset"]["sizes"]["test"]  # the run's own test split
    fp32 = tmp_path_factory.mktemp("digits-onnx") / "fp32.onnx"
    export_onnx(run.model, train[:8], fp32, check=test)
    return dict(run=run, fp32=fp32, train=train.numpy(), test=test.numpy(), labels=data.test.labels.numpy())


@pytest.fixture(scope="module")
def fashion_cnn(tmp_path_factory):
    """A fresh tutorial_cnn at 28x28 (0.2 M parameters: weights dominate its file) exported, and 256 normalised
    Fashion-MNIST training images."""
    data = load_dataset("fashion-mnist")
    images = Normalizer(data.mean, data.std)(data.train.images[:256])
    torch.manual_seed(0)
    model = create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=(28, 28)).eval()
    fp32 = tmp_path_factory.mktemp("fashion-onnx") / "fp32.onnx"
    export_onnx(model, images[:8], fp32)
    return dict(fp32=fp32, images=images.numpy())


def accuracy(path, x: np.ndarray, labels: np.ndarray) -> float:
    logits = run_onnx(ort_session(path, threads=1), x)
    return float((logits.argmax(1) == labels).mean() * 100)


@pytest.mark.slow  # trains the shared digits run when no other test has (about 10 s)
@pytest.mark.parametrize("activations", ["uint8", "int8"])
def test_int8_digits_run_keeps_accuracy_within_one_point(digits, tmp_path, activations):
    out = quantize_onnx_static(digits["fp32"], tmp_path / "int8.onnx", digits["train"][:256], activations=activations)
    assert out == tmp_path / "int8.onnx" and sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]
    fp32_acc = accuracy(digits["fp32"], digits["test"], digits["labels"])
    int8_acc = accuracy(out, digits["test"], digits["labels"])
    assert fp32_acc > 80  # a trained model: the comparison means something
    assert abs(int8_acc - fp32_acc) <= 1.0, f"fp32 {fp32_acc:.2f} %, int8 {int8_acc:.2f} %"
    # Really int8: every conv and linear weight is stored as int8 behind a DequantizeLinear (biases as int32).
    proto = onnx.load(str(out))
    kinds = {t.name: t.data_type for t in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    layers = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(layers) == 4  # tutorial_cnn: two convolutions, two linear layers
    for layer in layers:
        dq = producer[layer.input[1]]
        assert dq.op_type == "DequantizeLinear" and kinds[dq.input[0]] == onnx.TensorProto.INT8
        if len(layer.input) > 2:
            assert kinds[producer[layer.input[2]].input[0]] == onnx.TensorProto.INT32
    activation = {"uint8": onnx.TensorProto.UINT8, "int8": onnx.TensorProto.INT8}[activations]
    zero_points = [kinds[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and set(zero_points) == {activation}


def test_int8_file_is_at_least_3x_smaller_and_close_to_fp32(fashion_cnn, tmp_path):
    out = quantize_onnx_static(fashion_cnn["fp32"], tmp_path / "int8.onnx", fashion_cnn["images"])
    fp32_size, int8_size = fashion_cnn["fp32"].stat().st_size, out.stat().st_size
    assert fp32_size >= 3 * int8_size, f"fp32 {fp32_size} B, int8 {int8_size} B"
    x = fashion_cnn["images"][:64]
    fp32 = run_onnx(ort_session(fashion_cnn["fp32"], threads=1), x)
    int8 = run_onnx(ort_session(out, threads=1), x)
    spread = fp32.max() - fp32.min()
    assert np.abs(int8 - fp32).max() < 0.1 * spread  # 8-bit rounding, not a different function
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.9
    # A model exported at another batch size takes any batch after quantization too.
    assert run_onnx(ort_session(out, threads=1), x[:1]).shape == (1, 10)


def test_relu_before_maxpool_changes_no_output_and_pools_in_int8(fashion_cnn, tmp_path):
    # tutorial_cnn pools before its ReLUs: conv -> maxpool -> relu, twice.
    proto = onnx.load(str(fashion_cnn["fp32"]))
    before = [n.op_type for n in proto.graph.node if n.op_type in ("Conv", "MaxPool", "Relu")]
    assert before[:6] == ["Conv", "MaxPool", "Relu", "Conv", "MaxPool", "Relu"]
    swapped = relu_before_maxpool(proto)
    assert swapped is not None
    after = [n.op_type for n in swapped.graph.node if n.op_type in ("Conv", "MaxPool", "Relu")]
    assert after[:6] == ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool"]
    onnx.checker.check_model(swapped, full_check=True)
    path = tmp_path / "swapped.onnx"
    onnx.save(swapped, str(path))
    x = fashion_cnn["images"][:32]
    ref = run_onnx(ort_session(fashion_cnn["fp32"], threads=1), x)
    np.testing.assert_array_equal(run_onnx(ort_session(path, threads=1), x), ref)  # max and relu commute exactly
    assert relu_before_maxpool(swapped) is None  # nothing left to swap

    # In the int8 model each MaxPool reads and writes the same scale, which lets ORT drop its Q/DQ pair and pool in
    # int8 (without the swap, the ReLU's range folded into the pool's output scale).
    out = quantize_onnx_static(fashion_cnn["fp32"], tmp_path / "int8.onnx", fashion_cnn["images"])
    q = onnx.load(str(out))
    producer = {o: n for n in q.graph.node for o in n.output}
    consumers = {}
    for n in q.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    values = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    pools = [n for n in q.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 2
    for pool in pools:
        dq = producer[pool.input[0]]
        (qn,) = consumers[pool.output[0]]
        assert (dq.op_type, qn.op_type) == ("DequantizeLinear", "QuantizeLinear")
        assert values[dq.input[1]] == values[qn.input[1]]


def test_too_few_calibration_images_are_refused_with_the_minimum(fashion_cnn, tmp_path):
    few = fashion_cnn["images"][:MIN_CALIBRATION_IMAGES - 1]
    with pytest.raises(ValueError, match=f"at least {MIN_CALIBRATION_IMAGES} images") as err:
        quantize_onnx_static(fashion_cnn["fp32"], tmp_path / "int8.onnx", few)
    assert "\n" not in str(err.value) and f"on {MIN_CALIBRATION_IMAGES - 1} images" in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("calibration,match", [
    (np.zeros((40, 1, 14, 14), np.float32), "do not fit the model's input"),
    (np.zeros((40, 28, 28), np.float32), "4 dimensions"),
    (np.zeros((40, 1, 28, 28), np.uint8), "normalised float"),
    (np.full((40, 1, 28, 28), np.nan, np.float32), "NaN"),
    ([[0.0]], "NumPy array"),
])
def test_bad_calibration_is_refused_in_one_line(fashion_cnn, tmp_path, calibration, match):
    with pytest.raises(ValueError, match=match) as err:
        quantize_onnx_static(fashion_cnn["fp32"], tmp_path / "int8.onnx", calibration)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_paths_and_options_are_checked(fashion_cnn, tmp_path):
    images = fashion_cnn["images"][:64]
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        quantize_onnx_static(tmp_path / "missing.onnx", tmp_path / "int8.onnx", images)
    dest = tmp_path / "int8.onnx"
    dest.write_bytes(b"the user's file")
    with pytest.raises(FileExistsError, match="overwrite"):
        quantize_onnx_static(fashion_cnn["fp32"], dest, images)
    assert dest.read_bytes() == b"the user's file"
    with pytest.raises(ValueError, match="activations must be one of uint8, int8"):
        quantize_onnx_static(fashion_cnn["fp32"], dest, images, activations="int4", overwrite=True)
    with pytest.raises(ValueError, match="its own fp32 source"):
        quantize_onnx_static(fashion_cnn["fp32"], fashion_cnn["fp32"], images, overwrite=True)
    quantize_onnx_static(fashion_cnn["fp32"], dest, images, overwrite=True, per_channel=False)
    assert run_onnx(ort_session(dest, threads=1), images[:3]).shape == (3, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]


@pytest.mark.parametrize("reduce", [True, False])
def test_weights_get_7_bits_on_an_x86_cpu_without_vnni(fashion_cnn, tmp_path, monkeypatch, reduce):
    from convolab.compress import ort_quant

    monkeypatch.setattr(ort_quant, "x86_without_vnni", lambda: reduce)
    out = quantize_onnx_static(fashion_cnn["fp32"], tmp_path / "int8.onnx", fashion_cnn["images"])
    proto = onnx.load(str(out))
    int8 = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    weights = [a for a in int8 if a.ndim >= 2]  # (the rest are the per-channel zero points, all 0)
    assert len(weights) == 4  # tutorial_cnn's two convolutions and two linear layers
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert largest == (64 if reduce else 127)  # symmetric: each channel's largest weight maps to the range's end


def test_x86_without_vnni_reads_the_cpu_flags(monkeypatch):
    import platform

    from convolab.compress.ort_quant import x86_without_vnni

    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert x86_without_vnni() is False  # ORT's ARM kernels do not saturate this way
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    if sys.platform == "linux":
        flags = set(open("/proc/cpuinfo").read().split())
        assert x86_without_vnni() is not bool({"avx512_vnni", "avx_vnni"} & flags)
