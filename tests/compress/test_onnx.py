"""ONNX export (convolab.compress.onnx): every classification model of the zoo exports to one self-contained file
whose onnxruntime outputs match torch's to 1e-4 on real Fashion-MNIST images, at any batch size; a failed check, an
existing file and an untranslatable operator are refused as the brief says.

The reference is torch itself (the model's eval-mode forward); onnxruntime is run again here, outside
``export_onnx``, on batches the export never saw (1 and 7 images).
"""

from __future__ import annotations

import functools
import re
import time
import warnings

import numpy as np
import onnx
import pytest
import torch
from tests.models._helpers import randomize_norms
from torch import nn

from convolab.compress.onnx import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportCheckError,
    OnnxExport,
    export_onnx,
    float64_errors,
    ort_session,
    run_onnx,
)
from convolab.data import load_dataset
from convolab.data.loader import Normalizer
from convolab.models import create_model, get_model_entry, list_models

ATOL = 1e-4  # the Must-reach: <= 1e-4 max abs difference

# Exports measured under 3 s (dynamo exporter, 1x28x28, one thread, a quiet moment of this shared 2-core machine;
# under load they take 2-4x longer); every other classification model runs in the slow suite.
FAST = ("tutorial_cnn", "mnist_cnn", "lenet5", "lenet5_classic", "mlp", "perceptron", "fastcnn", "fastcnn_wide",
        "resnet20")


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on this shared CPU more threads spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def _fashion(n: int = 64) -> torch.Tensor:
    """``n`` normalised Fashion-MNIST test images (1, 28, 28): real images, each model's smallest usual input."""
    data = load_dataset("fashion-mnist")
    return Normalizer(data.mean, data.std)(data.test.images[:n])


def images(n: int) -> torch.Tensor:
    return _fashion()[:n].clone()


def classifiers() -> list[str]:
    """The zoo's classification image models, told apart by the registry's input_kind (no name lists)."""
    return [n for n in list_models() if get_model_entry(n).input_kind == "image"]


def realistic(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """``model`` made to behave like a trained one on ``x``, in eval mode: random norm affines, BatchNorm statistics
    measured on other Fashion-MNIST images (as training leaves them), and the classifier scaled so the logits spread
    by 1 across ``x``.

    Fresh models make a weak check: zero-initialised last norms give logits of exactly 0, VGG's and AlexNet's small
    initial weights logits of 0.005, and random running statistics blow deep residual networks' logits up to 1e5,
    where float32 rounding alone exceeds 1e-4. At unit scale 1e-4 is a relative error, as for a trained model."""
    randomize_norms(model)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one pass gives the batch's statistics
    model.train()
    with torch.no_grad():
        model(_fashion()[16:])  # 48 other images than the checked ones: statistics of the data, not of x
        for bn in norms:
            # A channel nearly constant over the images (random deep features of 28x28 images pooled to 1x1) gets a
            # variance near 0 and a gain up to 1/sqrt(eps) = 316, amplifying float rounding 300-fold; trained
            # networks do not keep such channels. A floor of 1e-3 caps the gain near 32.
            bn.running_var.clamp_(min=1e-3)
        model.eval()
        spread = model(x).std().item()
        assert spread > 1e-6, "logits that do not depend on the image would make the comparison vacuous"
        head = model.get_classifier()  # a Linear for every classifier of the zoo: logits scale with it exactly
        head.weight /= spread
        head.bias /= spread
    return model


def assert_matches_onnxruntime(model: nn.Module, result: OnnxExport, x: torch.Tensor) -> float:
    """onnxruntime, run here on batches of 1 and len(x), against torch; the largest difference."""
    session = ort_session(result.path, threads=1)
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME]
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a named, dynamic batch dimension
    with torch.no_grad():
        expected = model(x).numpy()
    worst = 0.0
    for batch in (x[:1], x):
        got = run_onnx(session, batch.numpy())
        assert got.shape == (len(batch), expected.shape[1])
        worst = max(worst, float(np.abs(got - expected[:len(batch)]).max()))
    assert worst <= ATOL, f"onnxruntime differs from torch by {worst:.3g} (logits up to {np.abs(expected).max():.3g})"
    return worst


def assert_single_file(result: OnnxExport) -> None:
    """One file in its folder, every weight inside it, a valid model of the opset reported."""
    assert sorted(p.name for p in result.path.parent.iterdir()) == [result.path.name]
    assert result.size_bytes == result.path.stat().st_size
    proto = onnx.load(str(result.path), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in proto.graph.initializer)
    onnx.checker.check_model(proto)
    assert result.opset == next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


# One model of every other family in the slow suite (CI); the rest of the zoo (deeper and wider members of the same
# families: 45-76 s each for efficientnet_b6/b7, resnet152, convnext_large) only in `make test-full`, marked
# exhaustive. A test below keeps this list covering every family.
PER_FAMILY = ("alexnet", "convnext_tiny", "darts_net", "densenet121", "efficientnet_b0", "googlenet",
              "mobilenet_v3_small", "nin", "se_resnet18", "shufflenet_v2_x0_5", "vgg11_bn")


def _zoo_params() -> list:
    def marks(n):
        if n in FAST:
            return ()
        return (pytest.mark.slow,) if n in PER_FAMILY else (pytest.mark.slow, pytest.mark.exhaustive)

    return [pytest.param(n, id=n, marks=marks(n)) for n in classifiers()]


def test_ci_exports_a_model_of_every_family():
    families = {get_model_entry(n).family for n in classifiers()}
    covered = {get_model_entry(n).family for n in (*FAST, *PER_FAMILY)}
    assert covered == families, f"families with no model in FAST or PER_FAMILY: {sorted(families - covered)}"
    assert set(PER_FAMILY) <= set(classifiers())


@pytest.mark.parametrize("name", _zoo_params())
def test_every_classifier_exports_and_matches_onnxruntime(name, tmp_path):
    x = images(7)
    torch.manual_seed(0)
    model = realistic(create_model(name, num_classes=10, in_chans=1, input_size=(28, 28)), x)
    with torch.no_grad():
        assert model(x).std().item() == pytest.approx(1, rel=1e-3)
    path = tmp_path / f"{name}.onnx"
    try:
        result = export_onnx(model, x[:2], path, check=x)
    except ExportCheckError as err:
        # Over 1e-4 (resnet152 1.4e-4, efficientnet_b6 1.01e-4, b7 1.8e-4): accepted only where float32 rounding gives
        # it, and reported (a warning here, and in the issue), never by a quietly larger tolerance: onnxruntime is
        # within 1e-4 of the model's float64 forward, or at least as close to it as torch's own float32 forward.
        assert "float32 rounding" in str(err)
        result = export_onnx(model, x[:2], path, check=x, atol=1e-3)
        with torch.no_grad():
            torch_out = model(x).numpy()
        ort_out = run_onnx(ort_session(path, threads=1), x.numpy())
        torch_err, ort_err = float64_errors(model, x, torch_out, ort_out)
        assert ort_err <= max(ATOL, torch_err), f"onnxruntime {ort_err:.3g}, torch {torch_err:.3g} from float64"
        warnings.warn(f"{name}: onnxruntime and torch (float32) differ by {result.max_abs_diff:.3g} > {ATOL}; "
                      f"from the float64 forward: onnxruntime {ort_err:.3g}, torch {torch_err:.3g}", stacklevel=1)
    else:
        assert result.max_abs_diff <= ATOL
        assert assert_matches_onnxruntime(model, result, x) <= ATOL
    assert result.path == path and result.checked_images == 7
    assert_single_file(result)


def test_fast_list_names_registered_classifiers_only():
    assert set(FAST) <= set(classifiers())
    kinds = {get_model_entry(n).input_kind for n in list_models()}
    assert {"segmentation", "clip"} <= kinds  # what the filter leaves out exists, so the filter is doing something
    assert not {"unet", "fcn_resnet50", "c3d", "r3d_18"} & set(classifiers())


def test_export_leaves_the_model_as_found_and_uses_eval_mode(tmp_path):
    # mnist_cnn has dropout: in training mode its output is random, so a match with the eval-mode forward shows the
    # export used eval mode; the caller's model stays in training mode.
    x = images(7)
    torch.manual_seed(0)
    model = create_model("mnist_cnn", num_classes=10, in_chans=1, input_size=(28, 28)).train()
    assert any(isinstance(m, nn.Dropout) for m in model.modules())
    result = export_onnx(model, x[:1], tmp_path / "m.onnx", check=x)  # an example of batch 1 still gives any batch
    assert model.training and all(m.training for m in model.modules())
    assert result.exporter == "dynamo"
    assert_matches_onnxruntime(model.eval(), result, x)


def test_a_failed_check_raises_and_writes_nothing(tmp_path):
    class ExportsDifferently(nn.Module):  # the exported graph adds 1 to every logit
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(28 * 28, 10)

        def forward(self, x):
            y = self.fc(x.flatten(1))
            return y + 1.0 if torch.compiler.is_exporting() else y

    dest = tmp_path / "bad.onnx"
    with pytest.raises(ExportCheckError) as err:
        export_onnx(ExportsDifferently().eval(), images(4), dest)
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg
    assert "by up to 1 " in msg and "tolerance 0.0001" in msg
    assert "not float rounding" in msg  # the float64 forward tells a wrong export from rounding
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_the_tolerance_is_what_decides(tmp_path):
    # A faithful export fails once the tolerance is squeezed below its real (float rounding) difference, which the
    # message reports and which is within the default 1e-4.
    x = images(7)
    torch.manual_seed(0)
    model = realistic(create_model("lenet5", num_classes=10, in_chans=1, input_size=(28, 28)), x)
    with pytest.raises(ExportCheckError, match=r"tolerance 1e-12") as err:
        export_onnx(model, x[:2], tmp_path / "tight.onnx", check=x, atol=1e-12)
    diff = float(re.search(r"by up to (\S+) on 7 images", str(err.value)).group(1))
    assert 1e-12 < diff <= ATOL
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_refused_unless_asked(tmp_path):
    dest = tmp_path / "model.onnx"
    dest.write_bytes(b"the user's file")
    model = create_model("lenet5", num_classes=10, in_chans=1, input_size=(28, 28)).eval()
    with pytest.raises(FileExistsError, match="overwrite"):
        export_onnx(model, images(2), dest)
    assert dest.read_bytes() == b"the user's file"
    result = export_onnx(model, images(2), dest, overwrite=True)
    assert_single_file(result)
    assert_matches_onnxruntime(model, result, images(7))


def test_an_untranslatable_operator_is_named_with_its_layer(tmp_path):
    class InverseErf(nn.Module):
        def forward(self, x):
            return torch.erfinv(torch.tanh(x))  # no ONNX translation in either exporter

    model = nn.Sequential(nn.Conv2d(1, 4, 3), InverseErf(), nn.Flatten(), nn.LazyLinear(10))
    model(images(2))  # materialise the lazy layer
    with pytest.raises(ValueError) as err:
        export_onnx(model.eval(), images(2), tmp_path / "m.onnx")
    msg = str(err.value)
    assert not isinstance(err.value, ExportCheckError) and "\n" not in msg
    assert "erfinv" in msg and "'1' (InverseErf)" in msg
    assert list(tmp_path.iterdir()) == []


def test_a_model_torch_export_refuses_goes_through_torchscript(tmp_path):
    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(28 * 28, 10)

        def forward(self, x):
            if x.abs().sum() > 0:  # data-dependent control flow: torch.export gives up, the tracer records a branch
                return self.fc(x.flatten(1))
            return -self.fc(x.flatten(1))

    model = Branches().eval()
    result = export_onnx(model, images(3), tmp_path / "b.onnx", check=images(7))
    assert result.exporter == "torchscript"
    assert_single_file(result)
    assert_matches_onnxruntime(model, result, images(7))  # the TorchScript export's batch is dynamic too


def test_a_model_on_another_dtype_is_exported_in_float32_and_left_alone(tmp_path):
    model = create_model("lenet5", num_classes=10, in_chans=1, input_size=(28, 28)).double().eval()
    result = export_onnx(model, images(2).double(), tmp_path / "m.onnx", check=images(7).double())
    assert next(model.parameters()).dtype == torch.float64
    proto = onnx.load(str(result.path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert_matches_onnxruntime(model.float(), result, images(7))


@pytest.mark.parametrize("example,check,match", [
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), None, "normalised float"),
    (torch.zeros(0, 1, 28, 28), None, "N >= 1"),
    (torch.zeros(2, 1, 28, 28), torch.zeros(3, 1, 14, 14), "do not match"),
    (torch.full((2, 1, 28, 28), float("nan")), None, "NaN"),
])
def test_bad_batches_are_refused_in_one_line(tmp_path, example, check, match):
    model = create_model("lenet5", num_classes=10, in_chans=1, input_size=(28, 28)).eval()
    start = time.perf_counter()
    with pytest.raises(ValueError, match=match) as err:
        export_onnx(model, example, tmp_path / "m.onnx", check=check)
    assert "\n" not in str(err.value)
    assert time.perf_counter() - start < 1  # refused before any export work
    assert list(tmp_path.iterdir()) == []


def test_ort_session_refuses_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        ort_session(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot load"):
        ort_session(tmp_path / "junk.onnx")
    with pytest.raises(ValueError, match="threads"):
        ort_session(tmp_path / "junk.onnx", threads=0)
