"""``convolab serve``: the address line, --open, and one-line errors (no folder, no runs, a port in use)."""

from __future__ import annotations

import re
import shutil
import socket

import pytest
from tests.cli.test_cli import assert_one_line_error, cli


@pytest.fixture
def no_serving(monkeypatch):
    """uvicorn's server returns at once (the tests check what happens before it serves); records its sockets."""
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: calls.append([s.getsockname() for s in
                                                                                       sockets]))
    return calls


def test_prints_the_address_on_localhost_and_opens_the_browser(digits_run, tmp_path, no_serving, monkeypatch,
                                                               capsys):
    import webbrowser

    shutil.copytree(digits_run.run_dir, tmp_path / "a")
    shutil.copytree(digits_run.run_dir, tmp_path / "deeper" / "b")
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url))
    code, out, err = cli(["serve", tmp_path, "--port", "0", "--open"], capsys)
    assert code == 0, err
    m = re.fullmatch(r"convolab explorer: (http://127\.0\.0\.1:(\d+))  \(2 runs; Ctrl-C to stop\)\n", out)
    assert m, out
    assert opened == [m[1]]
    assert no_serving == [[("127.0.0.1", int(m[2]))]]  # the socket handed to uvicorn is the one printed


def test_zoo_only_without_runs(no_serving, capsys):
    code, out, err = cli(["serve", "--port", "0"], capsys)
    assert code == 0, err
    assert "(0 runs; Ctrl-C to stop)" in out


def test_a_port_in_use_is_one_line(digits_run, no_serving, capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        code, out, err = cli(["serve", digits_run.run_dir, "--port", port], capsys)
        assert_one_line_error(code, err, f"port {port} on 127.0.0.1 is in use", "--port")
        assert out == "" and no_serving == []
    finally:
        taken.close()


def test_folders_that_are_no_runs_are_one_line(tmp_path, capsys):
    code, _, err = cli(["serve", tmp_path / "missing"], capsys)
    assert_one_line_error(code, err, "missing: no such folder")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    code, _, err = cli(["serve", tmp_path / "empty"], capsys)
    assert_one_line_error(code, err, "empty is not a run directory and holds none")
    (tmp_path / "file.txt").write_text("x")
    code, _, err = cli(["serve", tmp_path / "file.txt"], capsys)
    assert_one_line_error(code, err, "file.txt is not a run directory and holds none")


@pytest.mark.parametrize("argv, needle", [(["--workers", "0"], "--workers"), (["--max-upload-mb", "-1"],
                                                                               "--max-upload-mb"),
                                          (["--port", "70000"], "--port 70000")])
def test_bad_options_are_one_line(argv, needle, capsys):
    code, _, err = cli(["serve", *argv], capsys)
    assert_one_line_error(code, err, needle)


def test_help_has_examples_and_serve_is_the_last_verb(capsys):
    code, out, _ = cli(["serve", "--help"], capsys)
    assert code == 0 and "convolab serve runs/" in out and "127.0.0.1" in out
    from convolab.cli import VERBS, serve

    assert VERBS[-1] is serve


def test_a_public_host_is_named_in_a_note(no_serving, capsys):
    code, out, err = cli(["serve", "--host", "0.0.0.0", "--port", "0"], capsys)
    assert code == 0 and out.startswith("convolab explorer: http://0.0.0.0:")
    assert "other machines can reach the explorer" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(["serve", "--host", "localhost", "--port", "0"], capsys)
    assert code == 0 and err == ""
