"""A throw-away PostgreSQL server for tests: ``with postgres_server() as url: ...``.

Debian's server programs (``scripts/get-postgres.sh`` finds or installs them) make a cluster in a fresh temporary
folder (initdb, trust authentication, fsync off: nothing here needs to survive a crash), start it on a free port of
127.0.0.1 with its socket in that folder (``pg_ctl start -w``), create one database, yield its URL
(``postgresql://convolab@127.0.0.1:PORT/sweep``), and always stop it (``pg_ctl stop -m fast``) and remove the folder.

initdb and postgres refuse to run as root: under root the programs run as the ``postgres`` user Debian's package
creates (else ``nobody``) through ``runuser``, and the folder is theirs. The folder is made with ``tempfile``, not in
pytest's ``tmp_path``, whose parents are root's and closed to other users.

A machine without PostgreSQL fails the test with the hint to run ``scripts/get-postgres.sh``; it never skips.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["postgres_bin", "postgres_server"]

HINT = "run `bash scripts/get-postgres.sh` (as root: it installs Debian's postgresql package)"


def postgres_bin() -> Path:
    """The folder of initdb and pg_ctl (PATH first, then /usr/lib/postgresql/*/bin, newest version first)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: [int(p) if p.isdigit() else 0 for p in Path(d).parent.name.split(".")], reverse=True)
    for d in dirs:
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    raise RuntimeError(f"PostgreSQL's server programs (initdb, pg_ctl) are not installed; {HINT}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> str | None:
    """None when not root (the programs run as we are); else an unprivileged account to run them as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")


def _run(cmd: list[str], user: str | None, timeout: float = 60) -> None:
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd] if shutil.which("runuser") else \
            ["su", user, "-s", "/bin/sh", "-c", " ".join(map(_quote, cmd))]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


@contextlib.contextmanager
def postgres_server(database: str = "sweep") -> Iterator[str]:
    """Start a PostgreSQL server in a temporary folder; yield the URL of ``database`` on it; stop it always."""
    bin_dir = postgres_bin()
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="convolab-pg-"))
    data, log = root / "data", root / "server.log"
    started = False
    try:
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        _run([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "convolab", "-E", "UTF8", "--no-sync"],
             user)
        for attempt in range(3):  # a port found free can be taken before the server binds it: try another
            port = _free_port()
            options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
            try:
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options,
                      "start"], user, timeout=90)
                started = True
                break
            except RuntimeError as e:
                if attempt == 2:
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise RuntimeError(f"PostgreSQL did not start: {tail}") from e
        _run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "convolab", database], user)
        yield f"postgresql://convolab@127.0.0.1:{port}/{database}"
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], user)
        shutil.rmtree(root, ignore_errors=True)
