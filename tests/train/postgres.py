"""A throwaway PostgreSQL server for tests: a fresh cluster in a temporary directory, reached
only through a unix socket there (no TCP port to collide with), stopped and deleted at the end.

The server binaries come from the Debian ``postgresql`` package (``make test`` installs it as
root), which keeps them in ``/usr/lib/postgresql/<version>/bin``, off ``PATH``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``postgres`` (the newest version), or None."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


def _skip(reason: str) -> NoReturn:
    # A skip reason alone is hidden by `pytest -q`; the warning lands in the summary.
    warnings.warn(f"PostgreSQL tests skipped: {reason}", stacklevel=2)
    pytest.skip(reason)


def _account() -> dict:
    """Who runs the server: this user, or the package's ``postgres`` user under root (the server
    refuses to run as root)."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        _skip(
            "running as root and there is no 'postgres' user to run the server as "
            "(apt-get install postgresql creates it)"
        )
    return {"user": entry.pw_uid, "group": entry.pw_gid}


@contextlib.contextmanager
def server(database: str = "attn") -> Iterator[str]:
    """Start a server with an empty ``database`` and yield its SQLAlchemy URL; skip the test
    (loudly) when the server binaries or psycopg2 are missing."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install -e '.[test]')")
    import psycopg2

    binaries = server_binaries()
    if binaries is None:
        _skip(
            "initdb not found on PATH or in /usr/lib/postgresql/*/bin: install the Debian "
            "package postgresql (make test does so when run as root)"
        )
    account = _account()
    # Not pytest's tmp_path: its parents are private to root, out of reach of a 'postgres' user.
    root = Path(tempfile.mkdtemp(prefix="attn-pg-"))
    data = root / "data"
    if account:
        os.chown(root, account["user"], account["group"])
    log = root / "server.log"
    process = None
    try:
        subprocess.run(
            [binaries / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"],
            check=True,
            capture_output=True,
            **account,
        )
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [binaries / "postgres", "-D", data, "-k", root, "-c", "listen_addresses=",
                 "-c", "fsync=off", "-c", "max_connections=50"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                **account,
            )  # fmt: skip
        connect = {"host": str(root), "user": "postgres", "dbname": "postgres"}
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = psycopg2.connect(**connect)
                break
            except psycopg2.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {database}")
        connection.close()
        yield f"postgresql+psycopg2://postgres@/{database}?host={root}"
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)  # fast shutdown: disconnect clients, stop
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)
