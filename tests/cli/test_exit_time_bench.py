"""benchmarks/exit_time.py: the same command through main and through command, both timed to their exit."""

import pytest
from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def exit_time():
    return load_benchmark("exit_time")


def test_both_sides_run_the_command_and_are_timed(exit_time, capsys):
    result = exit_time.main(["--repeats", "1", "--", "models", "lenet*"])
    out = capsys.readouterr().out
    assert set(result["runs"]) == {"without freeze (main)", "convolab (command)"}
    for (wall, tail), in result["runs"].values():
        assert 0 < tail < wall  # the last line came before the exit, inside the whole process's time
    assert "command: convolab models lenet*; 1 run(s) a side" in out
    assert "last line to exit:" in out and "whole process:" in out


def test_a_failing_command_is_reported_with_its_output(exit_time):
    with pytest.raises(SystemExit, match=r"(?s)command failed \(2\).*unknown model"):
        exit_time.main(["--repeats", "1", "--", "train", "--model", "resnet", "--data", "digits"])
