"""Database faults for tests: PostgreSQL backends killed under load, a database refusing
connections, SQLite held locked by another connection.

Faults come from a connection of their own (psycopg or sqlite3 directly), never through
Django, so the code under test sees them exactly as it would see a restart or another process.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from django.core.exceptions import SynchronousOnlyOperation
from django.core.management import call_command
from django.db import connection

from audit import chain
from audit.models import AuditEvent

TERMINATE = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = %s AND pid <> pg_backend_pid()"
)


def _conninfo(dbname: str) -> str:
    conf = connection.settings_dict
    parts = {
        "host": conf.get("HOST") or "127.0.0.1",
        "port": str(conf.get("PORT") or 5432),
        "user": conf.get("USER") or "postgres",
        "dbname": dbname,
    }
    if conf.get("PASSWORD"):
        parts["password"] = conf["PASSWORD"]
    return " ".join(f"{key}={value}" for key, value in parts.items())


def database_name() -> str:
    return str(connection.settings_dict["NAME"])


def terminate_backends() -> int:
    """Kill every backend of the test database (the project's connections), from the outside."""
    with psycopg.connect(_conninfo("postgres"), autocommit=True) as admin:
        row = admin.execute(TERMINATE, [database_name()]).fetchone()
    return int(row[0]) if row else 0


class BackendKiller:
    """Terminates the test database's backends every ``interval`` seconds until stopped."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.rounds = 0
        self.killed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backend-killer", daemon=True)

    def _run(self) -> None:
        with psycopg.connect(_conninfo("postgres"), autocommit=True) as admin:
            while not self._stop.wait(self.interval):
                row = admin.execute(TERMINATE, [database_name()]).fetchone()
                self.rounds += 1
                self.killed += int(row[0]) if row else 0

    def __enter__(self) -> BackendKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        # The test thread's own connection was among those killed (inside an event loop the
        # test closes it itself, after the loop: Django refuses to there).
        with contextlib.suppress(SynchronousOnlyOperation):
            connection.close()


@contextlib.contextmanager
def refusing_connections() -> Iterator[None]:
    """The test database refuses every new connection and loses its open ones (a database that is down)."""
    name = database_name()
    with psycopg.connect(_conninfo("postgres"), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(TERMINATE, [name])
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            connection.close()


@contextlib.contextmanager
def sqlite_locked() -> Iterator[threading.Event]:
    """Hold SQLite's write lock from another connection until the yielded event is set (or exit)."""
    release = threading.Event()
    locked = threading.Event()
    path = Path(str(connection.settings_dict["NAME"]))

    def hold() -> None:
        other = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            other.execute("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(120)
            other.execute("COMMIT")
        finally:
            other.close()

    holder = threading.Thread(target=hold, name="sqlite-locker", daemon=True)
    holder.start()
    if not locked.wait(30):
        raise RuntimeError("could not take the SQLite write lock")
    try:
        yield release
    finally:
        release.set()
        holder.join(10)


# -- what ran on the host, against what the audit log says --------------------------------------


def traced(tag: str, n: int, before: str = "") -> str:
    return f"{before}touch /tmp/sshc-trace-{tag}-{n} && echo done-{n}"


def ran(tag: str, n: int) -> bool:
    return Path(f"/tmp/sshc-trace-{tag}-{n}").exists()


def finished_row(command_part: str) -> AuditEvent | None:
    return AuditEvent.objects.filter(command__contains=command_part).exclude(status="running").first()


def assert_rows_match_the_host(tag: str, results: dict[int, Any]) -> None:
    """One finished row per call, each status what the host shows, and a chain that verifies."""
    rows = list(AuditEvent.objects.filter(command__contains=f"sshc-trace-{tag}-").values())
    per_command = Counter(row["command"] for row in rows)
    assert len(per_command) == len(results), f"calls without a row: {len(results) - len(per_command)}"
    assert set(per_command.values()) == {1}, f"calls with several rows: {per_command.most_common(3)}"
    for row in rows:
        n = int(row["command"].split(f"sshc-trace-{tag}-")[1].split()[0])
        assert row["status"] != "running", row
        if ran(tag, n):
            assert row["status"] == "ok" and row["exit_status"] == 0, row
            assert row["stdout"] == f"done-{n}\n", row
        else:
            assert row["status"] in ("error", "denied"), row
    assert chain.verify().ok
    call_command("audit_verify")
