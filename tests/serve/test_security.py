"""The explorer under bad and heavy input: safe image decoding and the compute gate in-process, then a REAL server
(``python -m convolab serve`` in a subprocess) against a 100 MB upload, decompression bombs, broken images, path
traversal and 50 concurrent requests."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convolab.serve.limits import MAX_PIXELS, Busy, ComputeGate, ImageError, decode_image

LINE = re.compile(r"^convolab explorer: http://(?P<host>[\d.]+):(?P<port>\d+)  \((?P<n>\d+) runs?; Ctrl-C to stop\)$")


# -- crafted files ---------------------------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def blank_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` black pixels: a few hundred kB however large (the
    decompression bomb's shape; Pillow would need the whole image in memory to write one)."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    rows_per_block = max(1, (1 << 22) // len(row))
    idat, left = [], height
    while left:
        n = min(rows_per_block, left)
        idat.append(comp.compress(row * n))
        left -= n
    idat.append(comp.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(idat)) + _chunk(b"IEND", b"")


def noise_png(side: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def bombs():
    huge = blank_png(30000, 30000)  # 900 M pixels: Pillow itself refuses it
    with pytest.raises(Image.DecompressionBombError):  # it is a real PNG of that size, as Pillow reads it
        Image.open(io.BytesIO(huge))
    large = blank_png(7000, 7000)  # 49 M pixels: under Pillow's limit (89 M), over ours (40 M)
    assert Image.open(io.BytesIO(large)).size == (7000, 7000) and 7000 * 7000 > MAX_PIXELS
    assert len(huge) < 1_000_000 and len(large) < 200_000
    return huge, large


# -- in-process: decoding and the gate ---------------------------------------------------------------------------------
def test_decode_image_statuses(bombs):
    huge, large = bombs
    data = noise_png()
    cases = [(huge, 413, "decompression bomb"), (large, 413, "7000x7000"), (b"GIF89a nonsense", 415, "not an image"),
             (b"plain text", 415, "not an image"), (data[: len(data) // 2], 400, "truncated"),
             (data[:-20], 400, "truncated"), (b"", 400, "empty")]
    for body, status, needle in cases:
        with pytest.raises(ImageError) as e:
            decode_image(body)
        assert e.value.status == status and needle in str(e.value) and "\n" not in str(e.value), (status, e.value)
    img = decode_image(data)
    np.testing.assert_array_equal(np.array(img), np.array(Image.open(io.BytesIO(data))))


def test_the_gate_bounds_work_and_waiting():
    async def scenario():
        gate = ComputeGate(1, max_waiting=1, max_wait=5.0)
        release = threading.Event()
        first = asyncio.create_task(gate.run(release.wait, 10))
        await asyncio.sleep(0.2)
        second = asyncio.create_task(gate.run(lambda: "second"))
        await asyncio.sleep(0.2)
        assert gate.busy == 1 and gate.waiting == 1
        with pytest.raises(Busy, match="busy"):  # slot taken, queue full: refused at once
            await gate.run(lambda: "third")
        release.set()
        assert await first is True and await second == "second"
        assert await gate.run(torch.is_inference_mode_enabled) is True
        assert await gate.run(torch.is_inference_mode_enabled, grad=True) is False
        slow = ComputeGate(1, max_waiting=5, max_wait=0.2)
        hold = asyncio.create_task(slow.run(time.sleep, 1.0))
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        with pytest.raises(Busy, match="no compute slot came free"):
            await slow.run(lambda: None)
        assert 0.15 < time.monotonic() - t0 < 0.9
        await hold

    asyncio.run(scenario())


# -- a real server -----------------------------------------------------------------------------------------------------
def _start(args: list[str], timeout: float = 120.0):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "convolab", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline().rstrip("\n")
            return proc, line
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"the server did not start: {proc.stderr.read()}")


def _stop(proc) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return code, proc.stderr.read()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
             timeout: float = 60.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def _multipart(fields: dict, file: bytes | None) -> tuple[bytes, dict]:
    boundary = "convolabtestboundary"
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    if file is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
                     "Content-Type: image/png\r\n\r\n".encode() + file + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _huge_upload(port: int, total: int) -> tuple[float, bytes, int]:
    """POST ``total`` bytes with an honest Content-Length, 64 kB at a time, until the server answers: (seconds to
    the answer, the answer, bytes sent by then)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    head = (f"POST /api/analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {total}\r\n\r\n").encode()
    block = b"\0" * 65536
    t0 = time.perf_counter()
    s.sendall(head)
    sent = 0
    try:
        while sent < total:
            readable, _, _ = select.select([s], [], [], 0.02)  # an answer already? (it comes after the headers)
            if readable:
                break
            sent += s.send(block[: min(len(block), total - sent)])
    except (BrokenPipeError, ConnectionResetError):  # the server closed: its answer may be waiting all the same
        pass
    answer = b""
    try:
        while not answer.endswith(b"}"):  # the head, then the JSON body (maybe in a second packet)
            more = s.recv(65536)
            if not more:
                break
            answer += more
            if len(answer) == len(more):
                elapsed = time.perf_counter() - t0  # the answer's first byte
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        s.close()
    if not answer:
        elapsed = time.perf_counter() - t0
    return elapsed, answer, sent


@pytest.fixture(scope="module")
def run_folder(digits_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("served-security")
    shutil.copytree(digits_run.run_dir, root / "demo")
    return root


def test_smoke_real_server_refuses_100mb_fast_and_binds_localhost(run_folder):
    proc, line = _start([str(run_folder), "--port", "0"])
    try:
        m = LINE.match(line)
        assert m, line
        assert m["host"] == "127.0.0.1" and m["n"] == "1"  # the default bind
        port = int(m["port"])
        status, _, body = _request(port, "GET", "/api/health")
        assert status == 200 and json.loads(body)["ok"] is True
        before = _rss_kb(proc.pid)
        elapsed, answer, sent = _huge_upload(port, 100 * 2**20)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"upload limit" in answer
        assert elapsed < 1.0, elapsed
        assert sent < 100 * 2**20  # answered before the body was sent, let alone read
        time.sleep(0.3)
        assert _rss_kb(proc.pid) - before < 20 * 1024
        status, _, _ = _request(port, "GET", "/api/health")
        assert status == 200
    finally:
        code, err = _stop(proc)
    assert code == 0 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def server(run_folder):
    proc, line = _start([str(run_folder), "--port", "0", "--workers", "2"])
    m = LINE.match(line)
    assert m, line
    yield proc, int(m["port"])
    code, err = _stop(proc)
    assert code == 0 and "Traceback" not in err, err


@pytest.mark.slow
def test_bad_images_are_4xx_with_one_line(server, bombs):
    _, port = server
    huge, large = bombs
    data = noise_png()
    for body, status, needle in [(huge, 413, "decompression bomb"), (large, 413, "decompression bomb"),
                                 (b"%PDF-1.4 not an image", 415, "not an image"),
                                 (data[: len(data) // 2], 400, "truncated")]:
        payload, headers = _multipart({"ref": "zoo:tutorial_cnn"}, body)
        got, _, answer = _request(port, "POST", "/api/analyze", payload, headers)
        detail = json.loads(answer)["detail"]
        assert got == status and needle in detail and "\n" not in detail, (got, detail)
    payload, headers = _multipart({"ref": "run:demo"}, data)
    got, _, answer = _request(port, "POST", "/api/analyze", payload, headers)
    assert got == 200 and len(json.loads(answer)["probabilities"]) == 10


@pytest.mark.slow
def test_no_url_reaches_a_file_outside(server):
    _, port = server
    secret = Path("/etc/passwd").read_bytes()[:20]
    for path in ["/static/../../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2f..%2fetc/passwd",
                 "/static//etc/passwd", "/api/runs/..%2f..%2fetc/metrics", "/api/runs/../../etc/metrics",
                 "/api/runs/%2fetc/metrics", "/api/model?ref=run:../../x", "/api/model?ref=run:/etc",
                 "/api/runs/demo%2f..%2f..%2f..%2fetc/metrics", "/../../etc/passwd"]:
        status, _, body = _request(port, "GET", path)
        assert 400 <= status < 500, (path, status)
        assert secret not in body and b"root:" not in body, path
    status, _, body = _request(port, "GET", "/static/index.html")
    assert status == 200 and b"<html" in body.lower()


@pytest.mark.slow
def test_chunked_upload_over_the_cap_is_413(server):
    _, port = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        def body():
            for _ in range(40):  # 20 MB > 16 MB, no Content-Length
                yield b"\0" * (512 * 1024)

        try:
            conn.request("POST", "/api/attribution", body=body(), headers={"Content-Type": "application/json"},
                         encode_chunked=True)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = conn.getresponse()
        assert r.status == 413 and b"upload limit" in r.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_50_concurrent_requests_are_answered_or_told_to_retry(server):
    proc, port = server
    payload, headers = _multipart({"ref": "zoo:resnet18", "input": "3x64x64"}, noise_png(64))

    def one(_):
        return _request(port, "POST", "/api/analyze", payload, headers, timeout=120)

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses
    for status, headers_, body in results:
        if status == 503:
            assert headers_.get("retry-after") == "1" and "busy" in json.loads(body)["detail"]
    assert proc.poll() is None
    status, _, body = _request(port, "GET", "/api/health")
    assert status == 200 and json.loads(body)["ok"] is True
