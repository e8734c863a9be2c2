"""``convolab.tensor_files``: the format by content, and pickles refused with what they would call (nothing runs)."""

from __future__ import annotations

import pickle

import pytest
import torch
from tests.bad_files import write_raw_pickle, write_safetensors_bytes, write_torch_zip

from convolab.tensor_files import file_kind, pickle_calls, torch_load


def test_file_kind_by_content_not_by_name(tmp_path):
    assert file_kind(write_safetensors_bytes(tmp_path / "w.pth", {"a": torch.ones(2)})) == "safetensors"
    torch.save({"a": torch.ones(2)}, tmp_path / "w.safetensors")
    assert file_kind(tmp_path / "w.safetensors") == "torch-zip"
    (tmp_path / "p.bin").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    assert file_kind(tmp_path / "p.bin") == "pickle"
    (tmp_path / "t.pt").write_text("hello")
    assert file_kind(tmp_path / "t.pt") == "unknown"
    (tmp_path / "brace.pt").write_bytes(b"\xff" * 8 + b"{")  # a header length larger than the file
    assert file_kind(tmp_path / "brace.pt") == "unknown"
    (tmp_path / "empty.pt").write_bytes(b"")
    assert file_kind(tmp_path / "empty.pt") == "unknown"


@pytest.mark.parametrize("form", ["pickle-protocol-2", "pickle-protocol-4", "torch-zip"])
def test_a_pickle_that_would_run_code_says_so_and_what_it_calls(tmp_path, form):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    if form == "torch-zip":
        write_torch_zip(path, marker)
    else:
        write_raw_pickle(path, marker, protocol=int(form[-1]))
    assert pickle_calls(path) == ["posix.system"]
    with pytest.raises(ValueError) as e:
        torch_load(path, f"--init-from {path}")
    message = str(e.value)
    assert message.startswith(f"--init-from {path}: refused: loading this file would run code "
                              "(it would call posix.system)"), message
    assert "weights_only=False" not in message and "False" not in message and "\n" not in message
    assert not marker.exists(), "the payload ran"


class _Eval:
    def __reduce__(self):
        return (eval, ("1+1",))


def test_pickle_calls_lists_only_what_torch_would_refuse(tmp_path):
    torch.save({"w": torch.zeros(2), "n": 3}, tmp_path / "plain.pt")
    assert pickle_calls(tmp_path / "plain.pt") == []  # torch's own rebuilders, OrderedDict ...
    (tmp_path / "eval.pkl").write_bytes(pickle.dumps(_Eval(), protocol=2))
    assert pickle_calls(tmp_path / "eval.pkl") == ["builtins.eval"]
    (tmp_path / "junk").write_bytes(b"\x80\x02\xff\xff\xff")
    assert pickle_calls(tmp_path / "junk") == []


def test_damaged_and_foreign_files(tmp_path):
    torch.save({"w": torch.zeros(100)}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "torn.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"^X: corrupt or unreadable checkpoint \(a zip archive that is cut short"):
        torch_load(tmp_path / "torn.pt", "X", noun="checkpoint")
    (tmp_path / "notes.pt").write_text("hello world\n")
    with pytest.raises(ValueError, match=r"^X: not a torch file \(neither a torch zip archive nor a pickle; it "
                                         r"starts with b'hello world\\n'\)$"):
        torch_load(tmp_path / "notes.pt", "X")
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps({"a": [1, 2, 3]}, protocol=2)[:-3])
    with pytest.raises(ValueError, match=r"^X: corrupt or unreadable torch file \(a pickle"):
        torch_load(tmp_path / "cut.pkl", "X")
    assert torch.equal(torch_load(tmp_path / "ok.pt", "X")["w"], torch.zeros(100))


def test_every_torch_load_in_the_source_is_weights_only():
    """Grep the package: each torch.load call passes weights_only=True (the one in tensor_files does)."""
    from pathlib import Path

    import convolab

    root = Path(convolab.__file__).parent
    calls = []
    for f in root.rglob("*.py"):
        for line in f.read_text().splitlines():
            if "torch.load(" in line and not line.lstrip().startswith(("#", '"', "``")) and "``" not in line:
                calls.append((f.relative_to(root).as_posix(), "weights_only=True" in line))
    assert calls == [("tensor_files.py", True)], calls
