"""Shared fixtures: an isolated environment for every test, and one small trained run to share.

No test may read or write the real user cache (``~/.cache/convolab``) or follow ``$CONVOLAB_DATA``:
both would make results depend on the machine. A session-wide setting covers fixtures of every
scope (a module-scoped fixture is built before any function-scoped one runs); a per-test setting
then gives each test an empty cache of its own.
"""

from __future__ import annotations

import logging
import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # (before torch loads) `make test` runs one worker per core: one thread
    os.environ["OMP_NUM_THREADS"] = "1"  # each, for the tests and the processes they start -- threads of two
    os.environ["MKL_NUM_THREADS"] = "1"  # processes spinning on the same two cores made training 10x slower here
    import signal

    # xdist's workers ignore SIGINT, and a process started with SIGINT ignored keeps ignoring it (Python installs
    # no KeyboardInterrupt handler then): the tests that press Ctrl-C on a real process need the usual handler
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest

import convolab
from convolab.train import TrainConfig, TrainResult

_ISOLATED_VARS = ("CONVOLAB_DATA", "CONVOLAB_DEBUG")


def pytest_collection_modifyitems(config, items):
    """The tests marked ``longest`` first: started last, one of them ran alone for minutes at the end of the slow
    suite while the other worker sat idle (the README walkthrough, about 9 minutes). With ``--dist worksteal``
    (the Makefile's) the other worker takes the rest and steals from the first one's queue."""
    items.sort(key=lambda item: item.get_closest_marker("longest") is None)  # (a stable sort: otherwise as collected)


@pytest.fixture(scope="session", autouse=True)
def _isolated_session_env(tmp_path_factory):
    """XDG_CACHE_HOME -> a session tmp folder; no $CONVOLAB_DATA; no $CONVOLAB_DEBUG (errors become tracebacks)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache-session")))
        for var in _ISOLATED_VARS:
            mp.delenv(var, raising=False)
        yield


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """Each test gets an empty user cache of its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    for var in _ISOLATED_VARS:
        monkeypatch.delenv(var, raising=False)


def _reset_convolab_logger() -> None:
    logger = logging.getLogger("convolab")
    for handler in [h for h in logger.handlers if getattr(h, "_convolab_console", False)]:
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture(autouse=True)
def _fresh_console_logger():
    """``ensure_console`` binds a handler to the ``sys.stderr`` of the moment, once per process.

    Under pytest that stream is a per-test capture that is closed afterwards; drop the handler
    around each test so every CLI call binds to the current stream (and caplog sees records).
    """
    _reset_convolab_logger()
    yield
    _reset_convolab_logger()


def _digits_config(out, **overrides) -> TrainConfig:
    """The small recipe the shared runs use: tutorial_cnn on scikit-learn's digits, the tutorials' Adam 1e-3
    (constant, no label smoothing), batch 64, 5 epochs."""
    cfg = dict(model="tutorial_cnn", data="digits", out=str(out), epochs=5, batch_size=64, lr=1e-3,
               optimizer="adam", schedule="constant", label_smoothing=0.0, seed=0, device="cpu", progress=False)
    cfg.update(overrides)
    return TrainConfig(**cfg)


@pytest.fixture(scope="session")
def digits_config():
    """``digits_config(out, **overrides)`` -> the shared runs' ``TrainConfig``, for tests that train their own."""
    return _digits_config


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> TrainResult:
    """One trained run (tutorial_cnn, digits, 5 epochs, plots on), shared read-only by the tests."""
    return convolab.train(_digits_config(tmp_path_factory.mktemp("digits-run") / "run"))
