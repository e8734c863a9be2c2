"""Screenshots of the explorer (``convolab serve``) for the README, taken in headless Chromium.

Usage: python scripts/explorer_screenshots.py [RUN_FOLDER] [--out docs] [--overwrite]

Serves RUN_FOLDER (a run, or a folder of runs; default: a tutorial_cnn trained here on scikit-learn's digits for
5 epochs, about a minute on a CPU) on a free port of 127.0.0.1, drives Debian's /usr/bin/chromium with Playwright and
writes, at 1280x800:
  explorer-runs.png      the runs table and a run's curves
  explorer-overview.png  an image's probabilities and every layer's feature maps, a unit's receptive field
  explorer-elastic.png   a convolution's window, products and sums for one unit
  explorer-graph.png     googlenet's graph (zoo, fresh weights): Inception branches, a node picked
Files over 200 KB are stored with a 256-colour palette.
"""

from __future__ import annotations

import argparse
import io
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

SHOTS = ("explorer-runs.png", "explorer-overview.png", "explorer-elastic.png", "explorer-graph.png")
MAX_BYTES = 200 * 1024
VIEWPORT = {"width": 1280, "height": 800}
GRAPH_PAN = 420  # px the graph is dragged up to show GoogLeNet's first Inception blocks


def train_digits(folder: Path) -> Path:
    """A small run to show: tutorial_cnn on scikit-learn's digits, 5 epochs."""
    import convolab
    from convolab.train import TrainConfig

    out = folder / "digits-tutorial_cnn"
    convolab.train(TrainConfig(model="tutorial_cnn", data="digits", out=str(out), epochs=5, batch_size=64, lr=1e-3,
                               optimizer="adam", schedule="constant", label_smoothing=0.0, seed=0, device="cpu",
                               progress=False))
    return folder


def serve(folders: list[Path]):
    """uvicorn on a free port in a background thread; returns (url, server)."""
    import uvicorn

    from convolab.serve.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(folders), host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the explorer's server did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/", server, thread


def save_png(png: bytes, dest: Path) -> int:
    """Write a screenshot atomically, as a palette PNG when the full-colour one is over MAX_BYTES."""
    from PIL import Image

    from convolab.atomic import write_bytes

    if len(png) > MAX_BYTES:
        image = Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
        buf = io.BytesIO()
        image.save(buf, format="PNG", optimize=True)
        png = buf.getvalue()
    write_bytes(dest, png)
    return len(png)


def take(url: str, out: Path) -> dict[str, int]:
    from playwright.sync_api import sync_playwright

    sizes = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))

        def shot(name: str) -> None:
            page.wait_for_timeout(300)  # let canvases and animations settle
            sizes[name] = save_png(page.screenshot(), out / name)

        page.goto(url + "#runs")
        page.wait_for_selector("body[data-ready='1']", state="attached")
        rows = page.locator("[data-testid=run-row]")
        if rows.count() >= 2:  # two runs side by side
            rows.nth(0).locator("[data-testid=run-pick]").check()
            rows.nth(1).locator("[data-testid=run-pick]").check()
        else:
            rows.first.click()
        page.wait_for_selector("[data-testid=chart-loss][data-points]", state="attached")
        shot("explorer-runs.png")

        ref = page.get_attribute("[data-testid=model-info]", "data-ref")
        page.goto(url + f"?ref={ref}#predict")
        page.wait_for_selector("body[data-ready='1']", state="attached")
        test_images = page.locator("[data-testid=test-image]")
        page.wait_for_selector("[data-testid=test-image], [data-testid=test-images-none]", state="attached")
        if test_images.count():
            test_images.nth(0).click()  # the first one loads the test split: the second shows warm timings
            page.wait_for_selector("[data-testid=layer]", state="attached")
            page.evaluate("window.__first = window.__convolab.analysis")
            test_images.nth(min(3, test_images.count() - 1)).click()
            page.wait_for_function("() => window.__convolab.analysis !== window.__first")
        else:  # no test split to show: draw a stroke and send it
            canvas = page.locator("[data-testid=draw-canvas]").bounding_box()
            page.mouse.move(canvas["x"] + 110, canvas["y"] + 40)
            page.mouse.down()
            page.mouse.move(canvas["x"] + 110, canvas["y"] + 190, steps=12)
            page.mouse.up()
            page.click("[data-testid=draw-send]")
        page.wait_for_selector("[data-testid=layer]", state="attached")
        blocks = page.locator("[data-testid=layer]")
        pick = next((i for i in range(blocks.count()) if blocks.nth(i).get_attribute("data-type") == "Conv2d"
                     and i > 0), 0)
        blocks.nth(pick).locator("[data-testid=fmap]").nth(2).click()
        enlarged = page.locator("[data-testid=enlarged-canvas]")
        box = enlarged.bounding_box()
        enlarged.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.4})
        page.wait_for_selector("[data-testid=unit-rf]")
        page.evaluate("document.getElementById('predict-result').scrollIntoView()")  # probabilities and maps
        shot("explorer-overview.png")

        page.click("[data-testid=unit-explain]")
        page.wait_for_selector("[data-testid=el-total]")
        shot("explorer-elastic.png")

        page.goto(url + "?ref=zoo:googlenet&input=3x64x64&classes=10#graph")
        page.wait_for_selector("[data-testid=graph-node]", state="attached")
        graph = page.locator("[data-testid=graph]").bounding_box()
        page.mouse.move(graph["x"] + 300, graph["y"] + 600)  # drag the view up to the first Inception blocks
        page.mouse.down()
        page.mouse.move(graph["x"] + 300, graph["y"] + 600 - GRAPH_PAN, steps=8)
        page.mouse.up()
        page.locator("[data-testid=graph-node][data-name='inception3a.branch2.0.conv']").click()
        shot("explorer-graph.png")
        browser.close()
        if errors:
            raise RuntimeError(f"script errors in the page: {errors}")
    return sizes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="?", help="a run or a folder of runs (default: train a small digits run)")
    ap.add_argument("--out", default="docs", help="folder for the PNGs")
    ap.add_argument("--overwrite", action="store_true", help="replace screenshots already in --out")
    args = ap.parse_args()
    out = Path(args.out)
    existing = [name for name in SHOTS if (out / name).exists()]
    if existing and not args.overwrite:
        print(f"explorer_screenshots: {out / existing[0]} exists; pass --overwrite to replace the screenshots",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="explorer-shots-") as tmp:
        if args.runs:
            folder = Path(args.runs)
        else:
            print("training tutorial_cnn on digits (5 epochs) to have a run to show ...", flush=True)
            folder = train_digits(Path(tmp))
        url, server, thread = serve([folder])
        try:
            sizes = take(url, out)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    for name, size in sizes.items():
        print(f"{out / name}  {size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
