"""Latency of the explorer's main request -- an image in, class probabilities and every layer's feature maps out
(``POST /api/analyze``) -- on a real server, beside the bare forward pass of the same model.

A ``convolab serve --port 0`` subprocess is started (zoo models only, fresh weights); for each model ``--n``
requests upload the same PNG at the model's input size, after two warm-up requests (the first builds the model).
The latency is measured at the client (upload, decoding, preprocessing, one traced forward, encoding up to 64
channels per layer as PNG-free uint8, JSON, the answer read). The baseline is the model's bare forward in this
process (``torch.inference_mode``, same thread settings as the server: torch's defaults), one after each request
so that both meet the same load from other processes; medians, p90 and minima of ``--n``.
The issue's targets: tutorial_cnn (1x28x28) < 300 ms, resnet18 at 3x224x224 < 2 s.

Usage: python benchmarks/serve_latency.py [--n 20]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

MODELS = [("tutorial_cnn", (1, 28, 28), 0.300), ("resnet18", (3, 224, 224), 2.0)]


def start_server() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "convolab", "serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            line = proc.stdout.readline()
            m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            if not m:
                raise SystemExit(f"unexpected first line from the server: {line!r}")
            return proc, int(m[1])
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"the server did not start: {proc.stderr.read()}")


def png(shape: tuple[int, int, int]) -> bytes:
    c, h, w = shape
    a = np.random.default_rng(0).integers(0, 256, (h, w, c), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a[..., 0] if c == 1 else a).save(buf, format="PNG")
    return buf.getvalue()


def analyze(port: int, ref: str, shape: tuple[int, int, int], image: bytes) -> tuple[float, dict]:
    boundary = "benchmarkboundary"
    fields = {"ref": ref, "input": "x".join(map(str, shape))}
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
             f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t0 = time.perf_counter()
    conn.request("POST", "/api/analyze", body=body,
                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    r = conn.getresponse()
    data = r.read()
    elapsed = time.perf_counter() - t0
    conn.close()
    if r.status != 200:
        raise SystemExit(f"{ref}: HTTP {r.status}: {data[:300]!r}")
    return elapsed, json.loads(data)


def bare_model(name: str, shape: tuple[int, int, int]) -> tuple[torch.nn.Module, torch.Tensor]:
    """The same model as the server's (seed 0, 10 classes) and an input, warmed up."""
    from convolab.models import create_model

    c, h, w = shape
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=c, input_size=(h, w)).eval()
    x = torch.randn(1, *shape)
    for _ in range(2):
        forward_time(model, x)
    return model, x


def forward_time(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(x)
        return time.perf_counter() - t0


def p90(values: list[float]) -> float:
    return float(np.percentile(values, 90))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="timed requests (and forwards) per model")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    proc, port = start_server()
    rows = []
    try:
        for name, shape, target in MODELS:
            ref, image = f"zoo:{name}", png(shape)
            for _ in range(2):  # the first builds the model
                analyze(port, ref, shape, image)
            model, x = bare_model(name, shape)
            times, bare, last = [], [], {}
            for _ in range(args.n):  # interleaved, so that both meet the same load from other processes
                t, last = analyze(port, ref, shape, image)
                times.append(t)
                bare.append(forward_time(model, x))
            n_layers = len(last["layers"])
            server_ms = {k: v for k, v in last["timing_ms"].items()}
            rows.append((name, shape, target, times, bare, n_layers, server_ms))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    print(f"\nPOST /api/analyze (probabilities + every layer's maps), {args.n} requests each, client-side:")
    print(f"{'model':<14}{'input':<11}{'layers':>7}{'median':>10}{'p90':>10}{'min':>10}{'forward':>10}"
          f"{'fwd min':>10}{'ratio':>8}{'target':>9}  verdict")
    for name, shape, target, times, bare, n_layers, _ in rows:
        med, bmed = statistics.median(times), statistics.median(bare)
        verdict = "meets" if med < target else "MISSES"
        print(f"{name:<14}{'x'.join(map(str, shape)):<11}{n_layers:>7}{1000 * med:>8.1f}ms{1000 * p90(times):>8.1f}ms"
              f"{1000 * min(times):>8.1f}ms{1000 * bmed:>8.1f}ms{1000 * min(bare):>8.1f}ms{med / bmed:>7.1f}x"
              f"{1000 * target:>7.0f}ms  {verdict}")
    print("\nserver-side split of the last request (ms):")
    for name, *_, server_ms in rows:
        print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in server_ms.items()))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
