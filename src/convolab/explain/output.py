"""The folder an explanation tool writes into, and the errors of writing there.

:func:`output_folder` creates ``--out`` (and any missing parents) for one call and, if the call
fails, removes again what that call made: the files it wrote, then the folders it created, each
only if nothing else is in it. A folder that was there before is left alone. :func:`writing`
turns an ``OSError`` of a write (a read-only folder, a full disk) into one line naming the file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["OutputFolder", "output_folder", "writing"]


@contextlib.contextmanager
def writing(dest: str | os.PathLike) -> Iterator[None]:
    """Run a write of ``dest``; an ``OSError`` becomes ``PermissionError("cannot write DEST (reason)")``.

    An error that is already one line of convolab's (no errno, e.g. from :mod:`convolab.atomic`) passes as it is.
    """
    try:
        yield
    except OSError as e:
        if e.errno is None and e.strerror is None:
            raise
        raise PermissionError(f"cannot write {dest} ({e.strerror or e})") from None


class OutputFolder:
    """A folder being written by one call: its path, the folders the call created and the files it wrote."""

    def __init__(self, path: Path, created: list[Path]):
        self.path = path
        self.created = created  # outermost first
        self.written: list[Path] = []

    def wrote(self, path: str | os.PathLike) -> None:
        """Record a file this call wrote (removed again if the call fails in a folder it created)."""
        self.written.append(Path(path))

    def remove_if_made(self) -> None:
        """Remove the files written into the created folders, then those folders that are left empty."""
        if not self.created:
            return
        for f in self.written:
            if any(f.parent == d for d in self.created):
                with contextlib.suppress(OSError):
                    f.unlink()
        for d in reversed(self.created):
            if not d.exists():  # a mkdir that failed half way
                continue
            try:
                d.rmdir()  # only an empty folder: anything another program put there stays
            except OSError:
                return


def _missing(path: Path) -> list[Path]:
    missing = []
    while not path.exists() and not path.is_symlink() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, option: str = "--out", *, keep_empty: bool = False
                  ) -> Iterator[OutputFolder]:
    """Create ``path`` for this call's files; on any exception, undo what the call made (see the module docstring).

    With ``keep_empty=False`` a folder this call created and left without files is removed on success too.

    Raises:
        NotADirectoryError: ``path`` or one of its parents is a file.
        PermissionError: the folder cannot be created (one line naming it).
    """
    path = Path(path).expanduser()
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(f"{option} {path}: {parent} is a file, not a folder; choose another {option}")
    created = _missing(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        OutputFolder(path, created).remove_if_made()
        raise PermissionError(f"{option} {path}: cannot create the folder ({e.strerror or e})") from None
    folder = OutputFolder(path, created)
    try:
        yield folder
    except BaseException:
        folder.remove_if_made()
        raise
    if not keep_empty and not folder.written:
        folder.remove_if_made()
