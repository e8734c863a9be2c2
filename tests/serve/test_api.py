"""The explorer's API in-process (FastAPI's TestClient): runs, metrics and the live stream, models, an image through
a run and through a fresh zoo model, attributions, and one-line errors -- each figure checked against the CLI or
torch, not against the server itself."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from tests.cli.test_cli import cli

from convolab.atomic import read_jsonl
from convolab.serve.sources import FASHION_CLASSES, ModelCache, discover_runs, run_status

with warnings.catch_warnings():  # starlette's note about httpx's successor: not ours to fix
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def served(digits_run, tmp_path_factory):
    """A folder holding a copy of the shared run (as ``runs/demo``) and a nested one (``sweep/trial-1``)."""
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(digits_run.run_dir, root / "demo")
    shutil.copytree(digits_run.run_dir, root / "sweep" / "trial-1")
    return root


@pytest.fixture(scope="module")
def client(served):
    from convolab.serve.app import create_app

    app = create_app([served])
    app.state.stream_poll = 0.05
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    """A digits test image saved at another size (16x16), so the upload is resized as `predict` resizes it."""
    from convolab.data import load_dataset

    data = load_dataset("digits")
    path = tmp_path_factory.mktemp("png") / "digit.png"
    Image.fromarray(data.test.images[3, 0].numpy()).resize((16, 16)).save(path)
    return path


def _analyze(client, ref, png=None, **fields):
    files = {"file": ("image.png", png.read_bytes(), "image/png")} if png is not None else None
    r = client.post("/api/analyze", data={"ref": ref, **fields}, files=files)
    assert r.status_code == 200, r.text
    return r.json()


def _map(payload) -> np.ndarray:
    m = payload["map"]
    return np.frombuffer(base64.b64decode(m["data"]), dtype="<f4").reshape(m["height"], m["width"])


# -- runs ------------------------------------------------------------------------------------------------------------
def test_runs_are_listed_with_their_config_and_summary(client, served, digits_run):
    runs = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert set(runs) == {"demo", "sweep/trial-1"}
    demo = runs["demo"]
    summary = json.loads((digits_run.run_dir / "summary.json").read_text())
    assert demo["ref"] == "run:demo" and demo["status"] == "finished"
    assert demo["model"] == "tutorial_cnn" and demo["dataset"] == "digits" and demo["task"] == "classification"
    assert demo["epochs_done"] == len(read_jsonl(digits_run.run_dir / "metrics.jsonl")) == demo["epochs"] == 5
    assert demo["summary"]["test_accuracy"] == summary["test_accuracy"]
    assert demo["input_size"] == [1, 8, 8] and demo["classes"] == [str(i) for i in range(10)]


def test_a_new_run_appears_without_a_restart(client, served, digits_run):
    shutil.copytree(digits_run.run_dir, served / "later")
    try:
        ids = {r["id"] for r in client.get("/api/runs").json()["runs"]}
        assert "later" in ids
    finally:
        shutil.rmtree(served / "later")
    assert "later" not in {r["id"] for r in client.get("/api/runs").json()["runs"]}


def test_metrics_are_the_files_rows(client, digits_run):
    m = client.get("/api/runs/sweep/trial-1/metrics").json()
    assert m["epochs"] == read_jsonl(digits_run.run_dir / "metrics.jsonl")
    assert m["steps"] == read_jsonl(digits_run.run_dir / "steps.jsonl")  # 105 rows: not thinned


def test_steps_are_thinned_to_2000_keeping_the_ends():
    from convolab.serve.streams import thin

    rows = list(range(5000))
    out = thin(rows)
    assert len(out) == 2000 and out[0] == 0 and out[-1] == 4999 and out == sorted(set(out))
    gaps = np.diff(out)
    assert gaps.min() >= 2 and gaps.max() <= 3  # evenly spaced
    assert thin(rows[:10]) == rows[:10]


def test_a_live_run_streams_rows_appended_after_the_request(client, served, digits_run):
    live = served / "live"
    shutil.copytree(digits_run.run_dir, live)
    (live / "summary.json").unlink()
    # copytree keeps the shared run's times, minutes old in a long session
    for name in ("metrics.jsonl", "steps.jsonl"):
        os.utime(live / name)
    assert run_status(live) == "running"  # its logs were just written
    new_row = {"epoch": 6, "train_loss": 0.125, "val_accuracy": 0.5}

    def train_on():
        time.sleep(0.4)  # the request is streaming by now
        with open(live / "metrics.jsonl", "a") as f:
            f.write(json.dumps(new_row) + "\n")
        time.sleep(0.4)
        shutil.copy(digits_run.run_dir / "summary.json", live / "summary.json")

    writer = threading.Thread(target=train_on)
    t0 = time.monotonic()
    writer.start()
    try:
        r = client.get("/api/runs/live/stream?from_epoch=5&from_step=100")
        writer.join()
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert time.monotonic() - t0 >= 0.8  # it stayed open until summary.json appeared
        events = [block for block in r.text.split("\n\n") if block.startswith("event:")]
        kinds = [e.split("\n")[0].removeprefix("event: ") for e in events]
        data = [json.loads(e.split("\n")[1].removeprefix("data: ")) for e in events]
        steps = read_jsonl(digits_run.run_dir / "steps.jsonl")
        assert kinds == ["step"] * (len(steps) - 100) + ["epoch", "done"]  # the first 5 epochs / 100 steps skipped
        assert data[:-2] == steps[100:]
        assert data[-2] == new_row
        assert data[-1] == {"epochs": 6, "steps": len(steps)}
    finally:
        shutil.rmtree(live)


def test_discovery_depth_hidden_folders_and_status(tmp_path, digits_run):
    deep = tmp_path / "a" / "b" / "c" / "d"
    shutil.copytree(digits_run.run_dir, deep)  # 4 levels: found
    shutil.copytree(digits_run.run_dir, tmp_path / "a" / "b" / "c" / "x" / "y")  # 5 levels: not
    shutil.copytree(digits_run.run_dir, tmp_path / ".hidden" / "run")
    assert set(discover_runs([tmp_path])) == {"a/b/c/d"}
    assert set(discover_runs([deep])) == {"d"}  # a run given itself is served under its name
    (deep / "summary.json").unlink()
    old = time.time() - 3600
    for name in ("metrics.jsonl", "steps.jsonl"):
        os.utime(deep / name, (old, old))
    assert run_status(deep) == "interrupted"
    os.utime(deep / "metrics.jsonl")
    assert run_status(deep) == "running"
    shutil.copytree(digits_run.run_dir, tmp_path / "only-hidden" / ".run")
    from convolab.serve.app import create_app

    with pytest.raises(ValueError, match="only-hidden is not a run directory and holds none"):
        create_app([tmp_path / "only-hidden"])


def test_model_cache_reloads_changed_weights_and_drops_the_oldest(served, tmp_path):
    shutil.copytree(served / "demo", tmp_path / "demo")
    runs = discover_runs([tmp_path])
    cache = ModelCache(size=2)
    first = cache.get("run:demo", runs)
    assert cache.get("run:demo", runs) is first and cache.loads == 1
    os.utime(tmp_path / "demo" / "model.safetensors", ns=(1, 1))  # new weights written
    assert cache.get("run:demo", runs) is not first and cache.loads == 2
    cache.get("zoo:tutorial_cnn", runs)
    cache.get("spec:conv(4,3),relu,flatten,fc", runs)  # a third model: run:demo is dropped
    cache.get("run:demo", runs)
    assert cache.loads == 5


# -- models ------------------------------------------------------------------------------------------------------------
def test_model_layers_are_the_summary_rows(client, digits_run, capsys):
    code, out, err = cli(["summary", digits_run.run_dir, "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)["layers"]
    info = client.get("/api/model", params={"ref": "run:demo"}).json()
    assert info["layers"] == [r["name"] for r in rows if r["name"]]
    assert info["params"] == json.loads(out)["totals"]["params"] and info["macs"] == json.loads(out)["totals"]["macs"]
    assert info["conv_layers"] == ["features.conv1", "features.conv2"]
    assert info["kind"] == "run" and info["input_size"] == [1, 8, 8]


def test_zoo_and_spec_models_take_an_input_size_and_classes(client):
    zoo = client.get("/api/model", params={"ref": "zoo:tutorial_cnn"}).json()
    assert zoo["input_size"] == [1, 28, 28] and zoo["classes"] == list(FASHION_CLASSES) and zoo["kind"] == "zoo"
    spec = client.get("/api/model", params={"ref": "spec:conv(4,3),relu,flatten,fc", "input": "3x16x16",
                                            "classes": "3"}).json()
    assert spec["input_size"] == [3, 16, 16] and spec["classes"] == ["class 0", "class 1", "class 2"]
    assert spec["params"] == 4 * 3 * 9 + 4 + 4 * 14 * 14 * 3 + 3  # conv + fc, counted by hand
    listing = client.get("/api/models").json()
    names = {m["name"] for m in listing["zoo"]}
    assert {"tutorial_cnn", "resnet18", "unet"} <= names and all(e.startswith("spec:") for e in listing["examples"])


@pytest.mark.parametrize("params, status, needle", [
    ({"ref": "zoo:nope"}, 404, "unknown model 'nope'"),
    ({"ref": "run:../../x"}, 404, "no served run"),
    ({"ref": "run:demo/../sweep/trial-1"}, 404, "no served run"),
    ({"ref": "file:/etc/passwd"}, 404, "expected run:<id>, zoo:<name> or spec:<spec>"),
    ({"ref": "zoo:tutorial_cnn", "input": "5x3"}, 422, "expected CxHxW"),
    ({"ref": "zoo:tutorial_cnn", "input": "1x28x99999"}, 422, "1..1024"),
    ({"ref": "zoo:tutorial_cnn", "classes": "many"}, 422, "whole number"),
])
def test_bad_references_are_one_line_errors(client, params, status, needle):
    r = client.get("/api/model", params=params)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert needle in detail and "\n" not in detail


# -- an image through the model --------------------------------------------------------------------------------------
def test_probabilities_are_those_of_run_predict_and_convolab_predict(client, digits_run, digit_png, capsys):
    from convolab import load_run

    out = _analyze(client, "run:demo", digit_png)
    probs = out["probabilities"]
    assert len(probs) == 10 and abs(sum(p["probability"] for p in probs) - 1) < 1e-5
    assert [p["probability"] for p in probs] == sorted((p["probability"] for p in probs), reverse=True)
    expected = load_run(digits_run.run_dir).predict(str(digit_png), top_k=10)[0]
    assert [p["index"] for p in probs] == [e["index"] for e in expected]
    np.testing.assert_allclose([p["probability"] for p in probs], [e["probability"] for e in expected], atol=1e-5)
    code, stdout, err = cli(["predict", digits_run.run_dir, digit_png, "--top-k", "3", "--json"], capsys)
    assert code == 0, err
    top = json.loads(stdout)[0]["top_k"]
    assert [t["class"] for t in top] == [p["class"] for p in probs[:3]]
    np.testing.assert_allclose([t["probability"] for t in top], [p["probability"] for p in probs[:3]], atol=1e-5)
    # the image as the model sees it: resized to 8x8 exactly as predict does
    seen = np.array(Image.open(io.BytesIO(base64.b64decode(out["input"]["png"]))))
    assert out["input"]["shape"] == [1, 8, 8]
    np.testing.assert_array_equal(seen, load_run(digits_run.run_dir).to_array(str(digit_png))[0])


def test_layers_and_receptive_fields_are_the_summary_rows(client, digits_run, digit_png, capsys):
    code, out, err = cli(["summary", digits_run.run_dir, "--json"], capsys)
    rows = [r for r in json.loads(out)["layers"] if r["name"]]
    layers = _analyze(client, "run:demo", digit_png)["layers"]
    assert [v["name"] for v in layers] == [r["name"] for r in rows]
    for view, row in zip(layers, rows):
        assert view["shape"] == row["output_shape"][1:]
        rf = row["receptive_field"]
        expected = None if rf is None else ([rf, rf] if isinstance(rf, (int, float)) else rf)
        assert view["receptive_field"] == expected, view["name"]


def test_a_test_image_through_a_fresh_zoo_model(client):
    from convolab.data import load_dataset
    from convolab.models import create_model

    images = client.get("/api/test-images", params={"ref": "zoo:tutorial_cnn", "n": 3}).json()["images"]
    test = load_dataset("fashion-mnist", download=False).test
    assert [i["label"] for i in images] == test.labels[:3].tolist()
    assert [i["class"] for i in images] == [FASHION_CLASSES[k] for k in test.labels[:3].tolist()]
    first = np.array(Image.open(io.BytesIO(base64.b64decode(images[0]["png"]))))
    np.testing.assert_array_equal(first, test.images[0, 0].numpy())
    out = _analyze(client, "zoo:tutorial_cnn", test_index="0")
    torch.manual_seed(0)  # the contract: fresh weights from seed 0, mean/std 0.5
    model = create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=(28, 28)).eval()
    with torch.no_grad():
        ref = model((test.images[:1].float() / 255 - 0.5) / 0.5).softmax(1)[0]
    got = torch.zeros(10)
    for p in out["probabilities"]:
        got[p["index"]] = p["probability"]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert out["label"] == int(test.labels[0])


def test_gradcam_map_is_convolab_explains_npy(client, digits_run, digit_png, tmp_path, capsys):
    image_id = _analyze(client, "run:demo", digit_png)["image_id"]
    code, _, err = cli(["explain", digits_run.run_dir, digit_png, "--method", "gradcam", "saliency", "--out",
                        tmp_path / "e", "--quiet"], capsys)
    assert code == 0, err
    for method in ("gradcam", "saliency"):
        r = client.post("/api/attribution", json={"ref": "run:demo", "image_id": image_id, "method": method})
        assert r.status_code == 200, r.text
        npy = np.load(tmp_path / "e" / f"digit_{method}.npy")
        expected = npy if npy.ndim == 2 else npy.sum(0)  # pixel methods: channels summed
        np.testing.assert_allclose(_map(r.json()), expected, rtol=1e-5, atol=1e-7)
        body = r.json()
        assert body["method"] == method and body["class"] == str(body["target"])
        for key in ("overlay_png", "map_png"):
            assert Image.open(io.BytesIO(base64.b64decode(body[key]))).size == (8, 8)


def test_attribution_for_another_target_and_the_errors(client, digit_png):
    image_id = _analyze(client, "run:demo", digit_png)["image_id"]
    r = client.post("/api/attribution", json={"ref": "run:demo", "image_id": image_id, "method": "gradcam",
                                              "target": 7})
    assert r.status_code == 200 and r.json()["target"] == 7 and r.json()["class"] == "7"
    cases = [({"method": "magic"}, 422, "unknown method 'magic'"), ({"target": 10}, 422, "10 classes"),
             ({"layer": "features.nope"}, 422, "features.nope"), ({"image_id": "0" * 32}, 404, "image expired")]
    for change, status, needle in cases:
        body = {"ref": "run:demo", "image_id": image_id, "method": "gradcam", **change}
        r = client.post("/api/attribution", json=body)
        assert r.status_code == status and needle in r.json()["detail"], r.text


def test_uploads_that_are_no_image_are_4xx_with_a_message(client, tmp_path):
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(noise)
    data = noise.read_bytes()
    cases = [(b"hello, not an image", 415, "not an image"), (data[:len(data) // 2], 400, "truncated"),
             (b"", 400, "empty")]
    for body, status, needle in cases:
        r = client.post("/api/analyze", data={"ref": "zoo:tutorial_cnn"}, files={"file": ("x.png", body)})
        assert r.status_code == status and needle in r.json()["detail"], r.text
    r = client.post("/api/analyze", data={"ref": "zoo:tutorial_cnn"})
    assert r.status_code == 422 and "'file'" in r.json()["detail"]


def test_an_unexpected_error_is_a_500_line_and_the_server_goes_on(client, digit_png, monkeypatch):
    import convolab.serve.app as app_module

    def broken(*args):
        raise ZeroDivisionError("the bug\nsecond line")

    monkeypatch.setattr(app_module, "_analyze", broken)
    r = client.post("/api/analyze", data={"ref": "run:demo"}, files={"file": ("d.png", digit_png.read_bytes())})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error: ZeroDivisionError: the bug"}
    monkeypatch.undo()
    assert client.get("/api/health").json()["ok"] is True
    _analyze(client, "run:demo", digit_png)


def test_upload_cap_with_and_without_content_length(served):
    from convolab.serve.app import create_app

    with TestClient(create_app([served], max_upload_mb=0.01)) as small:
        big = b"x" * 20_000
        r = small.post("/api/analyze", content=big, headers={"content-type": "application/octet-stream"})
        assert r.status_code == 413 and "upload limit" in r.json()["detail"]

        def chunks():  # no Content-Length: sent chunked, counted as it is read
            for _ in range(20):
                yield b"y" * 1000

        r = small.post("/api/attribution", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "upload limit" in r.json()["detail"]


def test_unit_field_and_elastic_arithmetic_of_a_conv(client, capsys):
    from convolab.models import create_model

    out = _analyze(client, "zoo:tutorial_cnn", test_index="1")
    image_id = out["image_id"]
    code, stdout, err = cli(["summary", "tutorial_cnn", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(stdout)["layers"]}
    conv2 = next(v for v in out["layers"] if v["name"] == "features.conv2")
    h, w = conv2["shape"][1:]
    r = client.post("/api/unit", json={"ref": "zoo:tutorial_cnn", "image_id": image_id, "layer": "features.conv2",
                                       "y": h // 2, "x": w // 2})
    assert r.status_code == 200, r.text
    unit = r.json()
    rf = rows["features.conv2"]["receptive_field"]
    assert unit["receptive_field"] == [rf, rf]
    y0, x0, y1, x1 = unit["box"]
    assert (y1 - y0, x1 - x0) == (rf, rf)  # a unit in the middle is not clipped by the border
    patch = np.array(Image.open(io.BytesIO(base64.b64decode(unit["patch_png"]))))
    seen = np.array(Image.open(io.BytesIO(base64.b64decode(out["input"]["png"]))))
    np.testing.assert_array_equal(patch, seen[y0:y1, x0:x1])
    # the elastic view's sum against torch's own convolution of the same input
    r = client.post("/api/elastic", json={"ref": "zoo:tutorial_cnn", "image_id": image_id, "layer": "features.conv1",
                                          "channel": 3, "y": 5, "x": 7})
    assert r.status_code == 200, r.text
    e = r.json()
    torch.manual_seed(0)
    model = create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=(28, 28)).eval()
    x = torch.from_numpy(seen).float()[None, None] / 255
    with torch.no_grad():
        expected = model.features.conv1((x - 0.5) / 0.5)[0, 3, 5, 7].item()
    assert e["kind"] == "conv" and abs(e["output"] - expected) < 1e-4 and abs(e["actual"] - expected) < 1e-4
    r = client.post("/api/elastic", json={"ref": "zoo:tutorial_cnn", "image_id": image_id, "layer": "classifier.fc1"})
    assert r.status_code == 422 and "Conv2d" in r.json()["detail"]


def test_kernels_are_the_conv_weights(client):
    from convolab.models import create_model

    r = client.get("/api/kernels", params={"ref": "zoo:tutorial_cnn", "layer": "features.conv2"})
    assert r.status_code == 200, r.text
    k = r.json()
    torch.manual_seed(0)
    weight = create_model("tutorial_cnn", num_classes=10, in_chans=1, input_size=(28, 28)).features.conv2.weight
    data = np.frombuffer(base64.b64decode(k["data"]), dtype="<f4").reshape(k["shape"])
    np.testing.assert_array_equal(data, weight.detach().numpy())
    r = client.get("/api/kernels", params={"ref": "zoo:tutorial_cnn", "layer": "features.pool1"})
    assert r.status_code == 422 and "Conv2d" in r.json()["detail"]


def test_graph_has_a_node_per_traced_row_and_the_input(client):
    from convolab.analysis import summarize
    from convolab.models import create_model

    r = client.get("/api/graph", params={"ref": "zoo:resnet18", "input": "3x32x32"})
    assert r.status_code == 200, r.text
    g = r.json()
    rows = summarize(create_model("resnet18", num_classes=10, in_chans=3, input_size=(32, 32)), (3, 32, 32))
    rows = [row for row in rows.trace.rows if row.name != "(parameters not used in forward)"]
    assert len(g["nodes"]) == len(rows) + 1
    assert [n["name"] for n in g["nodes"]][1:] == [row.name for row in rows]
    ids = {n["id"] for n in g["nodes"]}
    assert all(a in ids and b in ids for a, b in g["edges"])
    assert len(g["edges"]) > len(rows)  # the residual additions have two inputs each


def test_sanity_figure_of_model_randomisation(client, digit_png):
    image_id = _analyze(client, "run:demo", digit_png)["image_id"]
    r = client.post("/api/sanity", json={"ref": "run:demo", "image_id": image_id, "method": "gradcam"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert Image.open(io.BytesIO(base64.b64decode(body["png"]))).format == "PNG"
    assert -1 <= body["mean_correlation"] <= 1 and body["verdict"] in ("passes", "fails", "inconclusive")


def test_a_segmentation_model_has_maps_but_no_attributions(client):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)).save(buf, format="PNG")
    r = client.post("/api/analyze", data={"ref": "zoo:unet", "input": "1x32x32"},
                    files={"file": ("a.png", buf.getvalue())})
    assert r.status_code == 200, r.text
    out = r.json()
    assert abs(sum(p["probability"] for p in out["probabilities"]) - 1) < 1e-5 and out["layers"]
    r = client.post("/api/attribution", json={"ref": "zoo:unet", "input": "1x32x32", "image_id": out["image_id"],
                                              "method": "gradcam"})
    assert r.status_code == 422 and "segmentation model" in r.json()["detail"]


def test_test_images_of_a_run_are_its_dataset_test_split(client):
    from convolab.data import load_dataset

    images = client.get("/api/test-images", params={"ref": "run:demo", "n": 5}).json()["images"]
    test = load_dataset("digits").test
    assert [i["label"] for i in images] == test.labels[:5].tolist()
    for i, item in enumerate(images):
        np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(base64.b64decode(item["png"])))),
                                      test.images[i, 0].numpy())
    out = _analyze(client, "run:demo", test_index="4")
    assert out["label"] == int(test.labels[4])
    assert client.get("/api/test-images", params={"ref": "run:demo", "n": 0}).status_code == 422
    r = client.get("/api/test-images", params={"ref": "zoo:tutorial_cnn", "input": "3x32x32"})
    assert r.status_code == 404 and "1x28x28" in r.json()["detail"]
