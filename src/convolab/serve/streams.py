"""A run's logs for the explorer: the rows so far (thinned) and a live Server-Sent-Events stream of new ones.

The trainer appends one JSON line per epoch to ``metrics.jsonl`` and one per step to ``steps.jsonl``
(:mod:`convolab.runs.layout`). The stream polls both files, sends each complete new line as an ``epoch`` or
``step`` event, a heartbeat comment every few seconds, and ``done`` once ``summary.json`` exists.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from convolab.atomic import read_jsonl
from convolab.runs.layout import METRICS, STEPS, SUMMARY

__all__ = ["read_metrics", "thin", "JsonlTail", "metric_events", "MAX_STEPS"]

MAX_STEPS = 2000  # step rows sent by GET /api/runs/{id}/metrics


def thin(rows: list, limit: int = MAX_STEPS) -> list:
    """At most ``limit`` rows, evenly spaced, first and last kept."""
    if len(rows) <= limit:
        return rows
    if limit < 2:
        return rows[-limit:] if limit else []
    last = len(rows) - 1
    picks = sorted({round(i * last / (limit - 1)) for i in range(limit)})
    return [rows[i] for i in picks]


def read_metrics(run_dir: Path) -> dict:
    """``{"epochs": metrics.jsonl rows, "steps": steps.jsonl rows thinned to MAX_STEPS}``."""
    epochs = read_jsonl(run_dir / METRICS) if (run_dir / METRICS).is_file() else []
    steps = read_jsonl(run_dir / STEPS) if (run_dir / STEPS).is_file() else []
    return {"epochs": epochs, "steps": thin(steps)}


class JsonlTail:
    """The complete lines appended to a JSON-lines file since the last call (a torn last line waits for its end).

    ``skip`` rows at the start are counted but not returned (a client that has them already). A file that shrinks
    (replaced by a new run) is read again from its start.
    """

    def __init__(self, path: Path, skip: int = 0):
        self.path = path
        self.skip = skip
        self.offset = 0
        self.rows = 0  # complete lines seen

    def read(self) -> list[dict]:
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self.offset:  # truncated or replaced
            self.offset, self.rows = 0, 0
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(size - self.offset)
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        out = []
        for line in chunk[:end].split(b"\n"):
            if not line.strip():
                continue
            self.rows += 1
            if self.rows <= self.skip:
                continue
            try:
                row = json.loads(line)
            except ValueError:  # a line torn by a crash in the middle of the file: skipped, as read_jsonl does
                continue
            out.append(row)
        return out


def _event(kind: str, row: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(row, separators=(',', ':'))}\n\n"


async def metric_events(run_dir: Path, *, from_epoch: int = 0, from_step: int = 0, poll: float = 0.5,
                        heartbeat: float = 10.0, stop: Callable[[], Awaitable[bool]] | None = None
                        ) -> AsyncIterator[str]:
    """Server-Sent-Events text for a run: ``epoch`` and ``step`` rows as they are appended (after the first
    ``from_epoch``/``from_step`` rows), a ``: heartbeat`` comment every ``heartbeat`` s, ``done`` when the run has
    its summary.json. ``stop()`` (the client went away) ends it early."""
    epochs = JsonlTail(run_dir / METRICS, max(0, from_epoch))
    steps = JsonlTail(run_dir / STEPS, max(0, from_step))
    last_sent = time.monotonic()
    yield ": stream of " + run_dir.name.replace("\n", " ") + "\n\n"
    while True:
        finished = (run_dir / SUMMARY).is_file()  # checked before reading: rows written before it are sent first
        sent = False
        for row in steps.read():
            yield _event("step", row)
            sent = True
        for row in epochs.read():
            yield _event("epoch", row)
            sent = True
        if finished:
            yield _event("done", {"epochs": epochs.rows, "steps": steps.rows})
            return
        now = time.monotonic()
        if sent:
            last_sent = now
        elif now - last_sent >= heartbeat:
            yield ": heartbeat\n\n"
            last_sent = now
        if stop is not None and await stop():
            return
        await asyncio.sleep(poll)
