"""``python -m convolab`` is the ``convolab`` command."""

from convolab.cli import command

if __name__ == "__main__":
    raise SystemExit(command())
