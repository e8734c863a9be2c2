"""``python -m convolab`` is the ``convolab`` command."""

from convolab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
