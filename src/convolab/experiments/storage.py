"""The study store of sweeps and searches: an Optuna ``RDBStorage`` on a database URL, opened with one-line errors.

SQLite (``sqlite:///OUT/study.db``) is the default and needs nothing; PostgreSQL (``postgresql://USER:PASSWORD@HOST:
PORT/DB``, psycopg2) or any database SQLAlchemy and Optuna support lets workers on many machines share one study.
Every storage opened here has Optuna's heartbeat on: a running trial's process records a heartbeat every
``heartbeat`` seconds, and the next worker to start a trial marks FAIL any running trial whose last heartbeat is
older than ``grace`` seconds (a killed process, a machine that went away), so it never counts as a result.
"""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from pathlib import Path

__all__ = ["open_storage", "default_url", "shown_url", "CONNECT_TIMEOUT"]

CONNECT_TIMEOUT = 5  # seconds: an unreachable server is one line after this long, not a hang
_ATTEMPTS = 5
_RACES = ("already exists", "database is locked", "duplicate key")  # errors of workers creating the tables at once


def default_url(out: str | os.PathLike) -> str:
    """The default store: ``sqlite:///OUT/study.db`` (an absolute path, so workers started elsewhere find it)."""
    return f"sqlite:///{Path(out).resolve() / 'study.db'}"


def shown_url(url: str) -> str:
    """``url`` with its password hidden (``postgresql://user:***@host/db``), for messages and sweep.json."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: the caller's error says so; show it as given
        return url


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _reason(e: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's wrapper and background link."""
    inner = getattr(e, "orig", None) or e
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    return lines[0] if lines else type(inner).__name__


def open_storage(url: str, *, heartbeat: int = 30, grace: int | None = None):
    """An Optuna ``RDBStorage`` on ``url`` with the heartbeat on (``grace`` defaults to twice ``heartbeat``).

    Raises:
        ValueError: a URL that is not a database URL, a database driver that is not installed, or a server that
            cannot be reached or refuses the login (one line, the URL's password hidden).
    """
    import optuna
    import sqlalchemy.exc

    if heartbeat < 1:
        raise ValueError(f"the heartbeat interval must be >= 1 second; got {heartbeat}")
    grace = 2 * heartbeat if grace is None else grace
    if grace <= heartbeat:
        raise ValueError(f"the grace period ({grace} s) must be longer than the heartbeat interval ({heartbeat} s)")
    shown = shown_url(url)
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ValueError(f"--storage {shown!r} is not a database URL; give e.g. sqlite:///runs/study.db or "
                         "postgresql://USER:PASSWORD@HOST:PORT/DB") from None
    dialect = parsed.get_backend_name()
    if parsed.drivername == "postgresql" and not _importable("psycopg") and _importable("psycopg2"):
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; convolab installs psycopg2
        url = parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    engine_kwargs: dict = {}
    if dialect == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    elif dialect == "mysql":
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    elif dialect == "sqlite":
        path = parsed.database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}  # several local workers wait for each other's writes
    for attempt in range(_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna's words since 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                                                  grace_period=grace)
        except (ImportError, sqlalchemy.exc.NoSuchModuleError) as e:
            raise ValueError(f"--storage {shown}: the database driver is not installed ({_reason(e)}); for "
                             "PostgreSQL install psycopg2-binary") from None
        except (sqlalchemy.exc.SQLAlchemyError, OSError) as e:
            # Workers that start together on a new database all create its tables: the losers of that race see
            # "already exists" (or a lock) and find the tables made when they try again
            if attempt + 1 < _ATTEMPTS and any(s in _reason(e).lower() for s in _RACES):
                time.sleep(0.5 * (attempt + 1))
                continue
            raise ValueError(f"cannot reach the study storage {shown} ({_reason(e)}); check that the database "
                             "server runs and accepts this user, or leave --storage out for SQLite in the output "
                             "folder") from None
    raise AssertionError("unreachable")
