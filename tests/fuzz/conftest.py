"""Fixtures of the fuzz tests: a scratch folder per test and one base run per session."""

from __future__ import annotations

import pytest
from tests.fuzz.targets import Context, make_base_run


@pytest.fixture(scope="session")
def base_run(tmp_path_factory):
    """A finished run (tutorial_cnn on digits, 1 epoch) that the run-directory and checkpoint targets copy and edit."""
    return make_base_run(tmp_path_factory.mktemp("fuzz-base") / "run")


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    """A context without a base run; the current folder is a scratch one (a target reading "." finds nothing)."""
    monkeypatch.chdir(tmp_path)
    return Context(tmp_path / "scratch")


@pytest.fixture
def run_ctx(ctx, base_run):
    ctx.base_run = base_run
    return ctx
