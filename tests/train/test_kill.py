"""kill -9 at random moments: training, resuming, checkpoint and weight writes, and report writes.

Each trial starts a real ``convolab train`` process, SIGKILLs it at a seeded random moment — after a
random optimizer step, at a random time, or inside one of its atomic writes (the temporary file
written in full or in part, not yet renamed) — then runs ``convolab train --resume RUN`` (some trials
kill the resume too and resume again) and compares the run with an uninterrupted one of the same
command: final weights bit for bit, every metrics.jsonl and steps.jsonl row, and no temporary file
(``.NAME.*.tmp``) left anywhere in the run folder. Report trials kill ``convolab report`` and find the
old report.html or a whole new one, never part of one.

The processes are forked from one "zygote" that imported convolab, torch and scikit-learn once (no
torch operation runs in it before the fork), so a trial costs its training, not the imports; each
process uses one thread and two trials run at once.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from convolab.atomic import read_jsonl

RECIPE = ["--model", "tutorial_cnn", "--data", "digits", "--epochs", "2", "--batch-size", "128", "--device", "cpu",
          "--quiet", "--no-plots", "--checkpoint-every", "3", "--augment", "light", "--seed", "3"]
SEED = 15
TIMEOUT = 120  # seconds one process may take

ZYGOTE = r"""
import fnmatch, json, os, sys, time, traceback
import torch
torch.set_num_threads(1)
import sklearn.datasets, torch._dynamo  # noqa: F401  (imported by a run's first steps: do it once, here)
import convolab.cli, convolab.report.html, convolab.train.loop  # noqa: F401
from convolab.cli import main


def pause(marker):
    open(marker, "w").close()
    time.sleep(600)  # the test SIGKILLs this process now


def install(hook):
    if hook["kind"] == "step":  # after the n-th optimizer step of this process
        from torch.optim.optimizer import register_optimizer_step_post_hook
        count = [0]

        def after_step(optimizer, args, kwargs):
            count[0] += 1
            if count[0] == hook["n"]:
                pause(hook["marker"])

        register_optimizer_step_post_hook(after_step)
    elif hook["kind"] == "write":  # inside the n-th atomic write of a matching file, before its rename
        replace, count = os.replace, [0]

        def paused_replace(src, dst, *args, **kwargs):
            if fnmatch.fnmatch(os.path.basename(dst), hook["match"]):
                count[0] += 1
                if count[0] == hook["n"]:
                    if hook["partial"]:  # killed while the temporary file was being written
                        os.truncate(src, os.path.getsize(src) // 2)
                    pause(hook["marker"])
            return replace(src, dst, *args, **kwargs)

        os.replace = paused_replace


print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "start":
        pid = os.fork()
        if pid == 0:
            fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = 1
            try:
                if req.get("hook"):
                    install(req["hook"])
                code = main(req["argv"])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:
                traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 0)
        print(json.dumps({"pid": pid}), flush=True)
    elif req["op"] == "poll":
        pid, status = os.waitpid(req["pid"], os.WNOHANG)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status) if pid else None}), flush=True)
"""


class Zygote:
    """A process that imported convolab once and forks one child per command."""

    def __init__(self, cwd: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=cwd)
        assert self.proc.stdout.readline().strip() == "ready"
        self.lock = threading.Lock()

    def _ask(self, **req) -> dict:
        with self.lock:
            self.proc.stdin.write(json.dumps(req, default=str) + "\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

    def start(self, argv: list, log: Path, hook: dict | None = None) -> int:
        return self._ask(op="start", argv=[str(a) for a in argv], log=log, hook=hook)["pid"]

    def poll(self, pid: int) -> int | None:
        return self._ask(op="poll", pid=pid)["code"]

    def wait(self, pid: int, timeout: float = TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.poll(pid)) is None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"process {pid} took more than {timeout} s")
            time.sleep(0.05)
        return code

    def run(self, argv: list, log: Path) -> int:
        code = self.wait(self.start(argv, log))
        assert code == 0, f"convolab {' '.join(map(str, argv))} exited {code}:\n{log.read_text()[-3000:]}"
        return code

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def kill_at_marker(z: Zygote, pid: int, marker: Path, log: Path) -> bool:
    """SIGKILL ``pid`` once it has made ``marker``; False when it ended first (its hook was never reached)."""
    deadline = time.monotonic() + TIMEOUT
    while not marker.exists():
        code = z.poll(pid)
        if code is not None:
            assert code == 0, f"exited {code} before the kill:\n{log.read_text()[-3000:]}"
            return False
        assert time.monotonic() < deadline, "the hook was never reached"
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    assert z.wait(pid) == -signal.SIGKILL
    return True


def kill_after(z: Zygote, pid: int, ready, delay: float, log: Path) -> bool:
    """SIGKILL ``pid`` ``delay`` seconds after ``ready()`` holds; False when it ended first."""
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        code = z.poll(pid)
        if code is not None:
            assert code == 0, f"exited {code} before the kill:\n{log.read_text()[-3000:]}"
            return False
        assert time.monotonic() < deadline, "never ready"
        time.sleep(0.02)
    end = time.monotonic() + delay
    while time.monotonic() < end:
        if z.poll(pid) is not None:
            return False
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    code = z.wait(pid)
    assert code in (-signal.SIGKILL, 0), f"exited {code}:\n{log.read_text()[-3000:]}"
    return code == -signal.SIGKILL


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(path)]


def assert_same_run(run: Path, reference: Path, what: str) -> None:
    a, b = load_file(str(reference / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs from the uninterrupted run"
    assert _rows(run / "metrics.jsonl") == _rows(reference / "metrics.jsonl"), f"{what}: metrics.jsonl differs"
    assert read_jsonl(run / "steps.jsonl") == read_jsonl(reference / "steps.jsonl"), f"{what}: steps.jsonl differs"
    left = sorted(str(p.relative_to(run)) for p in run.rglob(".*.tmp"))
    assert not left, f"{what}: temporary files left after the resume: {left}"


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path):
    rng = random.Random(SEED)
    z = Zygote(tmp_path)
    try:
        reference = tmp_path / "reference"
        pid = z.start(["train", *RECIPE, "--out", reference], tmp_path / "reference.log")
        while not any((reference / "checkpoints").glob("step-*.pt")):  # the window a timed kill is drawn in
            assert z.poll(pid) is None, (tmp_path / "reference.log").read_text()
            time.sleep(0.02)
        t0 = time.monotonic()
        assert z.wait(pid) == 0, (tmp_path / "reference.log").read_text()
        seconds = time.monotonic() - t0  # from the first checkpoint to the end
        total = max(r["step"] for r in read_jsonl(reference / "steps.jsonl"))
        assert total >= 12

        # (kind, hook or delay) for each trial; drawn here, in order, so the seed fixes every trial
        trials: list[tuple[str, dict]] = []
        # (a kill before the first checkpoint, step 3, leaves nothing to resume: `--resume` says so, tested elsewhere)
        trials += [("step", {"n": rng.randint(4, total - 1)}) for _ in range(9)]
        trials += [("time", {"delay": rng.uniform(0, 0.8 * seconds)}) for _ in range(5)]
        trials += [("write", {"match": "step-*.pt", "n": rng.randint(2, total // 3), "partial": rng.random() < 0.5})
                   for _ in range(4)]
        trials += [("write", {"match": "best.pt", "n": 1, "partial": True}),
                   ("write", {"match": "model.safetensors", "n": 1, "partial": rng.random() < 0.5}),
                   ("write", {"match": "summary.json", "n": 1, "partial": True})]
        trials += [("resume", {"n": rng.randint(4, total // 2), "again": rng.randint(1, total // 2)}) for _ in range(3)]

        def train_trial(i: int, kind: str, how: dict) -> str:
            run, marker, log = tmp_path / f"t{i:02d}-{kind}", tmp_path / f"t{i:02d}.marker", tmp_path / f"t{i:02d}.log"
            argv = ["train", *RECIPE, "--out", run]
            if kind == "time":
                pid = z.start(argv, log)
                killed = kill_after(z, pid, lambda: any((run / "checkpoints").glob("step-*.pt")), how["delay"], log)
            else:
                hook = {"kind": "step" if kind in ("step", "resume") else "write", "marker": marker,
                        **{k: v for k, v in how.items() if k != "again"}}
                killed = kill_at_marker(z, z.start(argv, log, hook), marker, log)
                if kind == "write":  # the kill left what a real one leaves: the temporary file, not renamed
                    assert killed and any(run.rglob(".*.tmp")), f"trial {i}: no temporary file at the kill"
            if kind == "resume" and killed:  # kill the resume too, then resume once more
                marker2 = tmp_path / f"t{i:02d}.again"
                killed = kill_at_marker(z, z.start(["train", "--resume", run, "--quiet"], log, {
                    "kind": "step", "n": how["again"], "marker": marker2}), marker2, log)
            z.run(["train", "--resume", run, "--quiet"], tmp_path / f"t{i:02d}.resume.log")
            assert_same_run(run, reference, f"trial {i} ({kind} {how})")
            return f"{i} {kind} {'killed' if killed else 'ended first'}"

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(lambda a: train_trial(*a), [(i, k, h) for i, (k, h) in enumerate(trials)]))
        print("\n".join(outcomes))
        assert sum("killed" in o for o in outcomes) >= 20, outcomes

        # convolab report: killed inside its write and at random times, with an old report.html there or none
        run = tmp_path / "report-run"
        shutil.copytree(reference, run)
        report, argv = run / "report.html", ["report", run, "--samples", "4"]
        t0 = time.monotonic()
        z.run(argv, tmp_path / "r0.log")
        report_seconds = time.monotonic() - t0
        old = report.read_bytes()
        assert old.rstrip().endswith(b"</html>")
        marker, log = tmp_path / "r1.marker", tmp_path / "r1.log"
        hook = {"kind": "write", "match": "report.html", "n": 1, "partial": True, "marker": marker}
        assert kill_at_marker(z, z.start(argv, log, hook), marker, log)
        assert report.read_bytes() == old, "the old report.html is kept until the new one is whole"
        for i in range(2, 4):
            log = tmp_path / f"r{i}.log"
            kill_after(z, z.start(argv, log), lambda: True, rng.uniform(0.2, 1.0) * report_seconds, log)
            now = report.read_bytes()
            assert now == old or now.rstrip().endswith(b"</html>"), "a partial report"
        fresh = tmp_path / "report-fresh"
        shutil.copytree(reference, fresh)
        log = tmp_path / "r4.log"
        kill_after(z, z.start(["report", fresh, "--samples", "4"], log), lambda: True,
                   rng.uniform(0.2, 0.9) * report_seconds, log)
        now = fresh / "report.html"
        assert not now.exists() or now.read_bytes().rstrip().endswith(b"</html>"), "a partial report"
    finally:
        z.close()
