"""The explorer's computations (convolab.serve.inspect) against torch itself and against `convolab summary`.

References: forward hooks on the modules (what each layer really output), torch's own conv/pool/softmax,
summarize()'s rows, and receptive-field boxes worked out by hand for tutorial_cnn.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from convolab.analysis.summary import summarize
from convolab.models import create_model
from convolab.serve.inspect import MAX_CHANNELS, UnknownLayerError, elastic, inspect_image, kernels, png_b64, unit_field


def _tutorial() -> nn.Module:
    torch.manual_seed(0)
    return create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=(28, 28)).eval()


def _decode_maps(maps: dict) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(maps["data"]), dtype=np.uint8)
    return raw.reshape(maps["channels"], maps["height"], maps["width"])


def _decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _hooked(model: nn.Module, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Every leaf module's outputs (copied: in-place ReLUs would overwrite them), by module name."""
    outs: dict[str, list[torch.Tensor]] = {}
    handles = [m.register_forward_hook(lambda mod, a, o, n=n: outs.setdefault(n, []).append(o.detach().clone()))
               for n, m in model.named_modules() if next(m.children(), None) is None]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return outs


def _collapse(v):
    if v is None:
        return None
    return v[0] if len(set(v)) == 1 else v


# -- inspect_image ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,shape", [("tutorial_cnn", (1, 28, 28)),
                                        pytest.param("resnet18", (3, 64, 64), marks=pytest.mark.slow)])
def test_layers_are_the_summary_rows_with_their_fields(name, shape):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=shape[0], input_size=shape[1:]).eval()
    x = torch.rand(1, *shape)
    logits, layers = inspect_image(model, x)
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(logits), model(x)[0])
    expected = summarize(model, shape).layers()
    assert [v["name"] for v in layers] == [r["name"] for r in expected]
    for v, r in zip(layers, expected):
        assert v["type"] == r["type"]
        assert v["shape"] == r["output_shape"][1:]
        assert v["params"] == r["params"] + r["frozen_params"] and v["macs"] == r["macs"]
        assert _collapse(v["receptive_field"]) == r["receptive_field"], v["name"]
        assert _collapse(v["jump"]) == r["effective_stride"], v["name"]
        assert _collapse(v["start"]) == r["receptive_field_start"], v["name"]
        assert v["global_context"] == r["global_context"]
        assert (v["maps"] is not None) == (len(v["shape"]) == 3)
        assert (v["vector"] is not None) == (len(v["shape"]) == 1)


@pytest.mark.slow
def test_maps_decode_to_the_hooked_outputs_scaled_per_channel():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, in_chans=3, input_size=(32, 32)).eval()
    model.relu.inplace = True  # bn1's output is then overwritten in place: the view must show it before that
    x = torch.rand(1, 3, 32, 32)
    _, layers = inspect_image(model, x)
    hooked = _hooked(model, x)
    seen: dict[str, int] = {}
    checked = 0
    for v in layers:
        if v["name"] not in hooked:
            continue  # op rows (add_, flatten): no module to hook
        k = seen[v["name"]] = seen.get(v["name"], -1) + 1  # a module called twice has two rows
        ref = hooked[v["name"]][k][0]
        if v["maps"] is None:
            np.testing.assert_allclose(v["vector"]["values"], ref[:512].numpy(), rtol=1e-6, atol=1e-6)
            continue
        maps = v["maps"]
        assert maps["total"] == ref.shape[0] and maps["channels"] == min(ref.shape[0], MAX_CHANNELS)
        ref = ref[:MAX_CHANNELS].double()
        lo, hi = ref.amin((1, 2)), ref.amax((1, 2))
        np.testing.assert_allclose(maps["min"], lo.numpy(), rtol=1e-6)
        np.testing.assert_allclose(maps["max"], hi.numpy(), rtol=1e-6)
        span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        want = ((ref - lo[:, None, None]) / span[:, None, None] * 255).numpy()
        got = _decode_maps(maps).astype(np.float64)
        assert np.abs(got - want).max() <= 0.5 + 1e-3, v["name"]
        checked += 1
    assert checked > 40
    assert any(v["maps"] and v["maps"]["total"] > MAX_CHANNELS for v in layers)


# -- unit_field ----------------------------------------------------------------------------------
def test_unit_box_of_tutorial_conv2_by_hand():
    """conv2 of tutorial_cnn: RF 8, jump 2, start 0.5 (`convolab summary tutorial_cnn`).

    Unit i's field is centred at 0.5 + 2i and spans 8 pixels: [2i - 3, 2i + 4], clipped to 0..27.
    """
    model = _tutorial()
    x = torch.rand(1, 1, 28, 28)
    _, layers = inspect_image(model, x)
    view = next(v for v in layers if v["name"] == "features.conv2")
    assert (view["receptive_field"], view["jump"], view["start"]) == ([8, 8], [2, 2], [0.5, 0.5])
    image = (x[0] * 255).round().to(torch.uint8).numpy()
    row = next(r for r in summarize(model, (1, 28, 28)).trace.rows if r.name == "features.conv2")
    cases = {(0, 0): ([0.5, 0.5], [0, 0, 5, 5]), (7, 7): ([14.5, 14.5], [11, 11, 19, 19]),
             (13, 13): ([26.5, 26.5], [23, 23, 28, 28]), (0, 13): ([0.5, 26.5], [0, 23, 5, 28])}
    for (y, xx), (centre, box) in cases.items():
        for layer in (view, row):  # the nominal field clipped, and the exact one: the same box
            got = unit_field(layer, y, xx, (28, 28), image)
            assert got["receptive_field"] == [8, 8] and got["jump"] == [2, 2]
            assert got["center"] == centre and got["box"] == box, (y, xx, type(layer))
            y0, x0, y1, x1 = box
            np.testing.assert_array_equal(_decode_png(got["patch_png"]), image[0, y0:y1, x0:x1])
    with pytest.raises(ValueError, match="outside"):
        unit_field(view, 14, 0, (28, 28))
    flat = next(v for v in layers if v["name"] == "classifier.fc1")
    with pytest.raises(ValueError, match="no receptive field"):
        unit_field(flat, 0, 0, (28, 28))


def test_unit_box_holds_every_pixel_the_unit_depends_on():
    """An impulse check: the input gradient of one unit is zero outside the box (avg-pools: every tap counts)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(2, 2, 3, stride=2, padding=1),
                          nn.Conv2d(2, 1, 3, dilation=2, padding=2)).eval()
    x = torch.rand(1, 1, 20, 20, requires_grad=True)
    _, layers = inspect_image(model, x.detach())
    last = layers[-1]
    row = summarize(model, (1, 20, 20)).trace.rows[-1]
    nominal = {**last, "extent": None}  # without the exact extent: the nominal field clipped, a larger box
    for y, xx in ((0, 0), (2, 3), (4, 4)):
        x.grad = None
        model(x)[0, 0, y, xx].backward()
        nz = x.grad[0, 0].abs() > 0
        rows, cols = nz.any(1).nonzero().flatten(), nz.any(0).nonzero().flatten()
        seen = [int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1]
        assert unit_field(last, y, xx, (20, 20))["box"] == seen
        assert unit_field(row, y, xx, (20, 20))["box"] == seen
        y0, x0, y1, x1 = unit_field(nominal, y, xx, (20, 20))["box"]
        assert y0 <= seen[0] and x0 <= seen[1] and y1 >= seen[2] and x1 >= seen[3]
    assert unit_field(nominal, 2, 3, (20, 20))["box"] != unit_field(last, 2, 3, (20, 20))["box"]


# -- elastic -------------------------------------------------------------------------------------
class _Zoo(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(3, 6, 3, padding=1)
        self.c1 = nn.Conv2d(6, 8, 3, stride=2, padding=2, dilation=2)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.c3 = nn.Conv2d(8, 4, (3, 5), stride=(1, 2), padding=(1, 2), padding_mode="reflect")
        self.c4 = nn.Conv2d(4, 4, 4, padding="same")  # an even window: padded 1 before, 2 after
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.avgpool = nn.AvgPool2d(3, 2, padding=1, count_include_pad=False, ceil_mode=True)
        self.adaptive = nn.AdaptiveAvgPool2d((3, 3))
        self.fc = nn.Linear(36, 5)

    def forward(self, x):
        x = F.relu(self.c0(x))  # a functional op in the container: a row named "relu"
        x = self.act(self.c1(x))
        x = self.c4(self.c3(self.c2(x)))
        x = self.adaptive(self.avgpool(self.maxpool(x)))
        return self.fc(torch.flatten(x, 1))


def _zoo():
    torch.manual_seed(0)
    return _Zoo().eval(), torch.randn(1, 3, 23, 21)


@pytest.mark.parametrize("layer", ["c0", "c1", "c2", "c3", "c4"])
def test_elastic_conv_arithmetic_equals_the_module_output(layer):
    model, x = _zoo()
    hooked = _hooked(model, x)
    out = hooked[layer][0]
    module = getattr(model, layer)
    _, c, h, w = out.shape
    for ch, y, xx in ((0, 0, 0), (c - 1, h - 1, w - 1), (c // 2, h // 2, w // 2), (1, 0, w - 1)):
        e = elastic(model, x, layer, ch, y, xx)
        assert e["kind"] == "conv"
        assert e["actual"] == pytest.approx(float(out[0, ch, y, xx]), abs=1e-6)
        assert e["output"] == pytest.approx(e["actual"], abs=1e-4)
        assert e["output"] == pytest.approx(sum(i["sum"] for i in e["in_channels"]) + e["bias"], abs=1e-9)
        for item in e["in_channels"]:
            np.testing.assert_allclose(np.multiply(item["patch"], item["kernel"]), item["products"], rtol=1e-12)
            np.testing.assert_allclose(item["kernel"], module.weight[ch, item["channel"] % len(e["in_channels"])]
                                       .detach().double().numpy(), rtol=1e-7)
        # the groups: output channel ch reads the input channels of its group only
        per_group = module.in_channels // module.groups
        group = ch // (module.out_channels // module.groups)
        assert [i["channel"] for i in e["in_channels"]] == list(range(group * per_group, (group + 1) * per_group))
        kh, kw = module.kernel_size
        assert len(e["positions"]) == kh * kw and e["positions"][0] == e["origin"]


def test_elastic_conv_window_positions_and_zero_padding():
    model, x = _zoo()
    e = elastic(model, x, "c1", 3, 0, 0)  # stride 2, padding 2, dilation 2: taps at -2, 0, 2
    assert e["origin"] == [-2, -2]
    assert [p[0] for p in e["positions"][::3]] == [-2, 0, 2] and [p[1] for p in e["positions"][:3]] == [-2, 0, 2]
    assert e["input_layer"] == "relu"  # c1 reads the functional relu's output
    for item in e["in_channels"]:
        assert item["patch"][0] == [0.0, 0.0, 0.0] and [r[0] for r in item["patch"]] == [0.0, 0.0, 0.0]
    assert elastic(model, x, "c0", 0, 0, 0)["input_layer"] == "input"


def test_elastic_activations_pools_and_softmax():
    model, x = _zoo()
    hooked = _hooked(model, x)
    with torch.no_grad():
        pre = F.relu(model.c0(x))
        pre_act = model.c1(pre)
    e = elastic(model, x, "act", 2, 1, 2)  # LeakyReLU(0.2, inplace=True): its input is c1's output
    assert e["kind"] == "activation" and e["input"] == pytest.approx(float(pre_act[0, 2, 1, 2]), abs=1e-6)
    v = e["input"]
    assert e["output"] == pytest.approx(v if v > 0 else 0.2 * v, abs=1e-6) == e["actual"]
    negative = (pre_act[0] < 0).nonzero()[0].tolist()
    e = elastic(model, x, "act", *negative)
    assert e["input"] < 0 and e["output"] == pytest.approx(0.2 * e["input"], rel=1e-6)
    e = elastic(model, x, "relu", 1, 3, 4)  # the functional relu (an op row)
    assert e["function"] == "relu" and e["output"] == max(0.0, e["input"]) == pytest.approx(e["actual"])
    for layer, op in (("maxpool", "max"), ("avgpool", "avg"), ("adaptive", "avg")):
        out = hooked[layer][0]
        _, c, h, w = out.shape
        for ch, y, xx in ((0, 0, 0), (c - 1, h - 1, w - 1), (1, h // 2, w // 2)):
            e = elastic(model, x, layer, ch, y, xx)
            assert e["kind"] == "pool" and e["op"] == op
            assert e["actual"] == pytest.approx(float(out[0, ch, y, xx]), abs=1e-6)
            assert e["output"] == pytest.approx(e["actual"], abs=1e-5), (layer, ch, y, xx)
    # a max-pool corner window hangs over the padding: those taps are null
    assert elastic(model, x, "maxpool", 0, 0, 0)["patch"][0] == [None, None, None]
    e = elastic(model, x, "softmax", 0, 0, 0)
    with torch.no_grad():
        logits = model(x)[0].double()
    np.testing.assert_allclose(e["logits"], logits.numpy(), rtol=1e-6)
    np.testing.assert_allclose(e["probabilities"], torch.softmax(logits, 0).numpy(), rtol=1e-6)
    assert sum(e["exp"]) == pytest.approx(e["sum"]) and sum(e["probabilities"]) == pytest.approx(1.0)


def test_elastic_refuses_what_it_cannot_explain():
    model, x = _zoo()
    with pytest.raises(UnknownLayerError, match="no layer named 'nope'"):
        elastic(model, x, "nope", 0, 0, 0)
    with pytest.raises(ValueError, match="is a Linear; the elastic explanation covers Conv2d"):
        elastic(model, x, "fc", 0, 0, 0)
    with pytest.raises(ValueError, match="outside"):
        elastic(model, x, "c0", 6, 0, 0)


# -- kernels and images --------------------------------------------------------------------------
def test_kernels_decode_to_the_weights():
    model, _ = _zoo()
    k = kernels(model, "c2")
    w = model.c2.weight.detach().numpy()
    assert k["shape"] == [8, 2, 3, 3]
    got = np.frombuffer(base64.b64decode(k["data"]), dtype="<f4").reshape(k["shape"])
    np.testing.assert_array_equal(got, w)
    assert (k["min"], k["max"]) == (float(w.min()), float(w.max()))
    with pytest.raises(ValueError, match="Conv2d"):
        kernels(model, "fc")
    with pytest.raises(UnknownLayerError):
        kernels(model, "nope")


@pytest.mark.parametrize("shape", [(1, 5, 7), (3, 5, 7), (5, 7)])
def test_png_b64_round_trips(shape):
    a = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    got = _decode_png(png_b64(a))
    want = a[0] if shape[0] == 1 else a.transpose(1, 2, 0) if len(shape) == 3 else a
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="uint8"):
        png_b64(a.astype(np.float32))
