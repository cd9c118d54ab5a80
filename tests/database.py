"""The test database as a URL, for the processes a test starts (mcp_serve, workers)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from django.db import connection


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
