"""The README's options table is the one generated from TrainConfig's metadata; writing it is atomic and keeps the
rest of the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from convolab.cli import build_parser
from convolab.cli.docs import END, START, main, options_table, replace_table, write_table
from convolab.train.flags import option_fields

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_holds_the_generated_table():
    text = README.read_text(encoding="utf-8")
    assert replace_table(text, options_table()) == text, \
        "README.md's options table is stale: run `python -m convolab.cli.docs --write README.md`"


def test_the_table_has_one_row_per_train_option():
    table = options_table()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    train = build_parser().verbs["train"]
    options = [a for a in train._actions if a.option_strings and "--help" not in a.option_strings]
    assert len(rows) == len(options) == len(option_fields()) + 2  # + --json and --resume, train's own
    row = next(r for r in rows if r.startswith("| `--max-memory SIZE`"))
    assert row.split(" | ")[1:4] == ["size", "", "✓"]  # takes a size, no default, lr-find has it too
    row = next(r for r in rows if r.startswith("| `--epochs EPOCHS`"))
    assert row.split(" | ")[1:4] == ["int >= 1", "", ""] and "about 2,500 optimizer steps" in row  # set by the data
    row = next(r for r in rows if r.startswith("| `--batch-size"))
    assert row.split(" | ")[2] == "`128`"
    assert "| `--hflip` / `--no-hflip` | switch |" in table
    assert "| `--schedule` | `constant` \\| `step` \\|" in table


def test_write_replaces_only_the_table(tmp_path):
    path = tmp_path / "README.md"
    head, tail = "# title\n\nintro ü\n\n", "\n\n## after\ntext\n"
    path.write_text(f"{head}{START}\nold table\n{END}{tail}", encoding="utf-8")
    assert write_table(path) is True
    assert path.read_text(encoding="utf-8") == f"{head}{START}\n{options_table()}{END}{tail}"
    assert write_table(path) is False  # already up to date: not rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # no temporary file left behind


@pytest.mark.parametrize("text", ["no markers", f"{END}\n{START}\n", f"{START}\n{START}\n{END}\n"])
def test_markers_must_be_there_once_and_in_order(text):
    with pytest.raises(ValueError, match=r"notes\.md: expected one <!-- options:start --> line"):
        replace_table(text, "table\n", "notes.md")


def test_main_prints_or_writes_and_refuses_in_one_line(tmp_path, capsys):
    assert main([]) == 0
    assert capsys.readouterr().out == options_table()
    missing = tmp_path / "nope.md"
    assert main(["--write", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err == f"python -m convolab.cli.docs: error: --write {missing}: no such file\n"
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    assert main(["--write", str(bare)]) == 2
    assert "bare.md: expected one <!-- options:start -->" in capsys.readouterr().err
    assert bare.read_text() == "no markers\n"
