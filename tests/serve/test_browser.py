"""The explorer's page driven in headless Chromium (Playwright, Debian's /usr/bin/chromium) against a real uvicorn
server on a free port: what the page shows is checked against the CLI (`convolab predict`, `summary`, `explain`),
torch and `conv_output_size`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import shutil
import socket
import threading
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
import uvicorn
from PIL import Image
from playwright.sync_api import sync_playwright

from convolab.cli import main as cli_main
from convolab.models._sizes import conv_output_size
from convolab.serve.app import create_app

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 30_000


class Server:
    """uvicorn serving ``create_app(folders)`` in a background thread on a free port of 127.0.0.1."""

    def __init__(self, folders: list[Path]):
        app = create_app(folders)
        app.state.stream_poll = 0.1  # the live-run test need not wait half a second per poll
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the explorer's server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _cli_json(args: list[str]):
    """Run a convolab verb in-process and parse its --json output."""
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = cli_main(args)
    assert rc == 0, buf.getvalue()
    return json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def bare_server():
    """No runs served: zoo and spec models only."""
    server = Server([])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runs_server(digits_run, tmp_path_factory):
    """The shared digits run as `digits`, and a copy cut after 2 epochs, without summary, as `live` (running)."""
    root = tmp_path_factory.mktemp("served") / "runs"
    shutil.copytree(digits_run.run_dir, root / "digits")
    live = root / "live"
    shutil.copytree(digits_run.run_dir, live)
    (live / "summary.json").unlink()
    epochs = (live / "metrics.jsonl").read_text().splitlines()
    (live / "metrics.jsonl").write_text("\n".join(epochs[:2]) + "\n")
    steps = [json.loads(line) for line in (live / "steps.jsonl").read_text().splitlines()]
    (live / "steps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps if r["epoch"] <= 2))
    server = Server([root])
    server.root = root  # type: ignore[attr-defined]
    server.full_epochs = epochs  # type: ignore[attr-defined]
    server.full_steps = steps  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture
def page(browser):
    """A fresh page; any uncaught script error fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"script errors in the page: {errors}"


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", state="attached")


def _message(page) -> str | None:
    box = page.locator("[data-testid=message]")
    return box.text_content() if box.is_visible() else None


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory, digits_run) -> Path:
    """A test digit (8x8, upscaled to 32x32 as a user's file would be) as a PNG file."""
    from sklearn.datasets import load_digits

    image = (load_digits().images[13] * 16).clip(0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("upload") / "digit.png"
    Image.fromarray(image).resize((32, 32), Image.NEAREST).save(path)
    return path


def _upload(page, url: str, png: Path) -> dict:
    _open(page, url + "?ref=run:digits#predict")
    page.set_input_files("[data-testid=file-input]", str(png))
    page.wait_for_selector("[data-testid=prob-row]")
    page.wait_for_selector("[data-testid=layer]", state="attached")
    return page.evaluate("window.__convolab.analysis")


# -- fast smoke test ---------------------------------------------------------------------------------------------------
def test_page_loads_and_playground_matches_conv_output_size(page, bare_server):
    page.goto(bare_server.url + "?ref=zoo:tutorial_cnn#playground")
    # the page is up: the picker lists the zoo (the playground needs no model, so no wait for one to load)
    page.wait_for_selector("[data-testid=model-select] option[value='zoo:resnet18']", state="attached")
    assert page.locator("[data-testid=view-playground]").is_visible()
    assert not page.locator("[data-testid=view-runs]").is_visible()
    rng = random.Random(20)
    checked = 0
    while checked < 20:
        groups = rng.choice([1, 1, 2, 4])
        cfg = {"pg-n": rng.randint(1, 40), "pg-k": rng.randint(1, 7), "pg-s": rng.randint(1, 4),
               "pg-p": rng.randint(0, 3), "pg-d": rng.randint(1, 3), "pg-g": groups,
               "pg-in": groups * rng.randint(1, 4), "pg-out": groups * rng.randint(1, 4)}
        n, k, s, p, d = (cfg[f] for f in ("pg-n", "pg-k", "pg-s", "pg-p", "pg-d"))
        expected = conv_output_size(n, k, s, p, d)
        if expected < 1:
            continue
        # set the fields, fire the `input` events typing would fire, read what the page shows
        shown = page.evaluate("""cfg => { for (const [id, v] of Object.entries(cfg)) {
            const f = document.getElementById(id); f.value = String(v);
            f.dispatchEvent(new Event('input', {bubbles: true})); }
            const text = (id) => document.getElementById(id).textContent.replaceAll(',', '');
            return [text('pg-outsize'), text('pg-params'), text('pg-macs'),
                    document.getElementById('pg-message').hidden];
            }""", cfg)
        assert shown[0] == str(expected), cfg
        conv = torch.nn.Conv2d(cfg["pg-in"], cfg["pg-out"], k, stride=s, padding=p, dilation=d, groups=groups)
        out = conv(torch.zeros(1, cfg["pg-in"], n, n))
        assert out.shape[-1] == expected
        assert shown[1] == str(sum(t.numel() for t in conv.parameters()))
        assert shown[2] == str(out.shape[-2] * out.shape[-1] * conv.weight.numel())  # a MAC per weight per output
        assert shown[3] is True  # no message
        checked += 1
    # invalid settings: a message in the page, no figures
    page.fill("[data-testid=pg-in]", "5")
    page.fill("[data-testid=pg-out]", "4")
    page.fill("[data-testid=pg-g]", "2")
    assert "divisible by groups" in page.text_content("[data-testid=pg-message]")
    assert page.text_content("[data-testid=pg-outsize]") == "–"
    page.fill("[data-testid=pg-g]", "1")
    page.fill("[data-testid=pg-n]", "3")
    page.fill("[data-testid=pg-p]", "0")
    page.fill("[data-testid=pg-d]", "1")
    page.fill("[data-testid=pg-k]", "5")
    assert page.locator("[data-testid=pg-message]").is_visible()
    assert "does not fit" in page.text_content("[data-testid=pg-message]")


# -- the pages of a trained run ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_upload_shows_the_probabilities_of_predict_and_every_layer(page, runs_server, digits_run, digit_png):
    from convolab import load_run
    from convolab.analysis import summarize

    analysis = _upload(page, runs_server.url, digit_png)
    rows = page.locator("[data-testid=prob-row]")
    assert rows.count() == 10  # all classes
    shown = [float(t.rstrip("%")) for t in page.locator("[data-testid=prob-value]").all_text_contents()]
    assert abs(sum(shown) - 100) <= 0.005 * len(shown) + 1e-9  # sums to 1 to display precision (2 decimals of %)
    page_probs = {rows.nth(i).get_attribute("data-class"): float(rows.nth(i).get_attribute("data-probability"))
                  for i in range(rows.count())}
    ref = _cli_json(["predict", str(digits_run.run_dir), str(digit_png), "--top-k", "10", "--json"])[0]["top_k"]
    assert {t["class"] for t in ref} == set(page_probs)
    for t in ref:
        assert page_probs[t["class"]] == pytest.approx(t["probability"], abs=1e-5)
        shown_pct = float(page.text_content(f"[data-testid=prob-row][data-class='{t['class']}'] "
                                            "[data-testid=prob-value]").rstrip("%"))
        assert shown_pct == pytest.approx(100 * t["probability"], abs=0.006)
    # one feature-map block per layer: as many as /api/analyze sends and `summarize` traces
    trace_rows = [r for r in summarize(load_run(digits_run.run_dir)).trace.rows
                  if r.name != "(parameters not used in forward)"]
    blocks = page.locator("[data-testid=layer]")
    assert blocks.count() == len(analysis["layers"]) == len(trace_rows)
    assert [blocks.nth(i).get_attribute("data-name") for i in range(blocks.count())] == [r.name for r in trace_rows]
    for i, layer in enumerate(analysis["layers"]):
        if layer["maps"]:
            assert blocks.nth(i).locator("[data-testid=fmap]").count() == layer["maps"]["channels"] > 0
        else:
            assert blocks.nth(i).locator("[data-testid=vector]").count() == 1


@pytest.mark.slow
def test_clicking_a_unit_shows_the_receptive_field_of_summary(page, runs_server, digits_run, digit_png):
    analysis = _upload(page, runs_server.url, digit_png)
    summary = {row["name"]: row for row in _cli_json(["summary", str(digits_run.run_dir), "--json"])["layers"]}
    map_layers = [layer for layer in analysis["layers"] if layer["maps"]]
    assert len(map_layers) >= 4
    for layer in map_layers:
        block = page.locator(f"[data-testid=layer][data-name='{layer['name']}']")
        block.locator("[data-testid=fmap]").nth(1).click()
        canvas = page.locator("[data-testid=enlarged-canvas]")
        box = canvas.bounding_box()
        canvas.click(position={"x": box["width"] * 0.6, "y": box["height"] * 0.4})
        page.wait_for_function("name => window.__convolab.lastUnit && window.__convolab.lastUnit.layer === name",
                               arg=layer["name"])
        rf = summary[layer["name"]]["receptive_field"]
        rf = list(rf) if isinstance(rf, list) else [rf, rf]
        assert page.text_content("[data-testid=unit-rf]") == "×".join(str(v) for v in rf), layer["name"]
        unit = page.evaluate("window.__convolab.lastUnit")
        h, w = layer["maps"]["height"], layer["maps"]["width"]
        assert (unit["y"], unit["x"]) == (min(h - 1, int(0.4 * h)), min(w - 1, int(0.6 * w)))
        assert page.locator("[data-testid=unit-patch]").get_attribute("src").startswith("data:image/png;base64,")
    assert _message(page) is None


@pytest.mark.slow
def test_gradcam_map_equals_convolab_explain(page, runs_server, digits_run, digit_png, tmp_path):
    _upload(page, runs_server.url, digit_png)
    page.click("[data-testid=tab-attrib]")
    page.select_option("[data-testid=at-method]", "gradcam")
    page.click("[data-testid=at-go]")
    page.wait_for_selector("[data-testid=at-canvas]")
    held = page.evaluate("window.__convolab.lastAttribution")
    records = _cli_json(["explain", str(digits_run.run_dir), str(digit_png), "--method", "gradcam",
                         "--out", str(tmp_path / "expl"), "--quiet", "--json"])
    expected = np.load(records[0]["methods"]["gradcam"]["raw"])
    got = np.asarray(held["data"], dtype=np.float32).reshape(held["height"], held["width"])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert held["target"] == records[0]["target_index"]
    # the kernels of a convolution, drawn as a grid of out x in
    page.select_option("[data-testid=k-layer]", "features.conv2")
    page.click("[data-testid=k-go]")
    page.wait_for_selector("[data-testid=kernel]")
    assert page.locator("[data-testid=kernel]").count() == 32 * 16  # 32 of 32 outputs x 16 of 16 inputs


@pytest.mark.slow
def test_elastic_view_of_a_convolution_adds_up(page, runs_server, digit_png):
    _upload(page, runs_server.url, digit_png)
    page.click("[data-testid=tab-elastic]")
    page.select_option("[data-testid=el-layer]", "features.conv2")
    page.fill("[data-testid=el-channel]", "3")
    page.fill("[data-testid=el-y]", "1")
    page.fill("[data-testid=el-x]", "2")
    page.click("[data-testid=el-go]")
    page.wait_for_selector("[data-testid=el-total]")
    r = page.evaluate("window.__convolab.lastElastic")
    assert r["kind"] == "conv"
    assert page.locator("[data-testid=el-in-channel]").count() == min(12, len(r["in_channels"]))
    products = np.array([c["products"] for c in r["in_channels"]])
    np.testing.assert_allclose(products, np.array([c["patch"] for c in r["in_channels"]])
                               * np.array([c["kernel"] for c in r["in_channels"]]), rtol=1e-5, atol=1e-6)
    assert r["output"] == pytest.approx(products.sum() + r["bias"], abs=1e-4)
    assert float(page.text_content("[data-testid=el-output]")) == pytest.approx(r["actual"], abs=1e-3)


@pytest.mark.slow
def test_a_running_run_curve_grows_without_reload(page, runs_server):
    live = runs_server.root / "live"
    for name in ("metrics.jsonl", "steps.jsonl"):
        os.utime(live / name)  # logs written just now: the run is running
    _open(page, runs_server.url + "#runs")
    page.click("[data-testid=run-row][data-run=live]")
    chart = page.locator("[data-testid=run-panel][data-run=live] [data-testid=chart-loss]")
    page.wait_for_function("() => document.querySelector('[data-testid=run-live]').textContent.includes('live')")
    assert chart.get_attribute("data-epochs") == "2"
    points = int(chart.get_attribute("data-points"))
    page.evaluate("window.__notReloaded = true")
    with (live / "metrics.jsonl").open("a") as f:  # the trainer appends two epochs
        f.write("\n".join(runs_server.full_epochs[2:4]) + "\n")
    page.wait_for_function("() => document.querySelector("
                           "'[data-testid=run-panel][data-run=live] [data-testid=chart-loss]').dataset.epochs === '4'")
    assert int(chart.get_attribute("data-points")) > points
    assert page.evaluate("window.__notReloaded") is True
    # two runs ticked: side by side, each with its own curves
    for run in ("digits", "live"):
        page.check(f"[data-testid=run-row][data-run={run}] [data-testid=run-pick]")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=run-panel]').length === 2")
    panels = page.locator("[data-testid=run-panel]")
    assert {panels.nth(i).get_attribute("data-run") for i in range(2)} == {"digits", "live"}
    digits = page.locator("[data-testid=run-panel][data-run=digits] [data-testid=chart-loss]")
    page.wait_for_function("() => document.querySelector("
                           "'[data-testid=run-panel][data-run=digits] [data-testid=chart-loss]').dataset.epochs")
    assert digits.get_attribute("data-epochs") == str(len(runs_server.full_epochs))


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("resnet18", "3x64x64"), ("googlenet", "3x64x64"), ("unet", "1x64x64")])
def test_graph_has_a_node_per_traced_layer(page, bare_server, name, size):
    layers = _cli_json(["summary", name, "--input", size.replace("x", ","), "--num-classes", "10", "--json"])["layers"]
    rows = [r for r in layers if r["name"] != "(parameters not used in forward)"]
    _open(page, bare_server.url + f"?ref=zoo:{name}&input={size}&classes=10#graph")
    page.wait_for_selector("[data-testid=graph-node]", state="attached")
    nodes = page.locator("[data-testid=graph-node]")
    assert nodes.count() == len(rows) + 1  # + the input
    names = set(page.eval_on_selector_all("[data-testid=graph-node]", "els => els.map(e => e.dataset.name)"))
    assert {r["name"] for r in rows} <= names
    assert page.locator("[data-testid=graph-edge]").count() >= len(rows)  # connected: every layer has an input
    nodes.nth(1).click()  # near the top, in view after "fit"
    assert page.text_content("[data-testid=graph-node-name]") == nodes.nth(1).get_attribute("data-name")
    with page.expect_download() as download:
        page.click("[data-testid=graph-export]")
    svg = Path(download.value.path()).read_text()
    assert svg.count('data-testid="graph-node"') == len(rows) + 1


@pytest.mark.slow
def test_a_bad_upload_shows_a_message(page, runs_server, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image\n")
    _open(page, runs_server.url + "?ref=run:digits#predict")
    page.set_input_files("[data-testid=file-input]", str(bad))
    page.wait_for_selector("[data-testid=message]")
    text = _message(page)
    assert text and "Traceback" not in text and len(text.splitlines()) == 1
    assert page.evaluate("window.__convolab.analysis") is None
    assert page.locator("[data-testid=view-predict]").is_visible()
    # the page still works: a test image of the run's dataset goes through, and the message goes away
    page.locator("[data-testid=test-image]").nth(2).click()
    page.wait_for_selector("[data-testid=prob-row]")
    assert page.evaluate("window.__convolab.analysis.label") == int(
        page.get_attribute("[data-testid=test-image] >> nth=2", "data-label"))
    assert _message(page) is None
    # a drawing (white on black) is sent as a PNG and goes through the same way
    box = page.locator("[data-testid=draw-canvas]").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 30)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] - 30, steps=10)
    page.mouse.up()
    page.evaluate("window.__before = window.__convolab.analysis")
    page.click("[data-testid=draw-send]")
    page.wait_for_function("() => window.__convolab.analysis !== window.__before")
    drawn = page.evaluate("window.__convolab.analysis")
    assert drawn["input"]["shape"] == [1, 8, 8] and drawn["label"] is None
    view = np.asarray(Image.open(io.BytesIO(base64.b64decode(drawn["input"]["png"]))))
    assert view[:, 3:5].mean() > view[:, :2].mean() + 50  # the vertical stroke, bright in the middle columns
