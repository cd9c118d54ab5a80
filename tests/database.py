"""The test database as a URL, for the processes a test starts (mcp_serve, workers); closing
the connections of the threads a test starts."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from django.db import connection, connections

P = ParamSpec("P")
T = TypeVar("T")


def database_url() -> str:
    """The URL of the test database pytest-django created (SQLite file or PostgreSQL)."""
    conf = connection.settings_dict
    if conf["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{conf['NAME']}"
    user = conf.get("USER") or "postgres"
    password = f":{conf['PASSWORD']}" if conf.get("PASSWORD") else ""
    where = f"{conf.get('HOST') or '127.0.0.1'}:{conf.get('PORT') or 5432}"
    return f"postgres://{user}{password}@{where}/{conf['NAME']}"


def raw_sqlite_bytes(name: str) -> bytes:
    """The raw bytes of a SQLite database file and its side files, read by another process.

    Opening and closing the database file in this process would drop every POSIX lock SQLite
    holds on it here (fcntl locks belong to the process, not the descriptor). An ``mcp_serve``
    sharing the file would then believe it is the last connection, delete the WAL and SHM
    files on exit, and leave this process's connections with "disk I/O error".
    """
    files = [str(p) for p in sorted(Path(name).parent.glob(Path(name).name + "*"))]
    return subprocess.run(["cat", *files], capture_output=True, check=True).stdout


def closing_connections(fn: Callable[P, T]) -> Callable[P, T]:
    """``fn``, then the database connections of the thread it ran in closed: for work a test
    runs in a thread of its own (``threading.Thread``, ``anyio.to_thread.run_sync``).

    Django opens a connection per thread and nothing closes it when the thread ends: it stays
    open until the garbage collector happens to free it, and PostgreSQL refuses to drop the
    test database while it is (pytest-django's "database ... is being accessed by other users"
    at the very end of a run, now and then).
    """

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return run
