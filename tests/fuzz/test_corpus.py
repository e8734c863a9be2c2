"""Replay the checked-in crash corpus: every input the fuzzers once crashed a reader with must now give a
user error (ValueError and its family) or a valid result — never another exception, never a hang.

The corpus is ``tests/fuzz/corpus/TARGET/*``; ``targets.py`` says how each target reads its inputs.
"""

from __future__ import annotations

import pytest
from tests.fuzz.targets import CORPUS, TARGETS, check, corpus_files

FILES = corpus_files()


def test_the_corpus_covers_every_target():
    assert {p.parent.name for p in FILES} == set(TARGETS), "each target has at least one regression input"
    stray = [p for p in CORPUS.glob("*/*") if p.parent.name not in TARGETS]
    assert not stray, f"corpus files of no target: {stray}"


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_corpus_input_gives_a_user_error_or_a_result(path, request):
    ctx = request.getfixturevalue("run_ctx" if TARGETS[path.parent.name][2] else "ctx")
    crash = check(path.parent.name, path.read_bytes(), ctx)
    assert crash is None, crash.line()
