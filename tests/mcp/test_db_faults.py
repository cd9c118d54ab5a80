"""Calls through database faults (embedded mode): nothing lost, nothing mislabelled.

Every command leaves a trace file on the host, so the test knows what really ran and can
hold each audit row against it. PostgreSQL tests kill the project's backends from outside
(as a restart or failover does) or make the database refuse connections; SQLite tests hold
its write lock from another connection.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from mcp.types import CallToolResult

from tests.dbfaults import (
    BackendKiller,
    assert_rows_match_the_host,
    finished_row,
    ran,
    refusing_connections,
    sqlite_locked,
    traced,
)
from tests.mcp.conftest import McpHarness
from tests.polling import wait_until
from tests.sshd import SshServer

CALLS = 24


@pytest.fixture
def postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL fault test (DATABASE_URL=postgres://...)")


@pytest.fixture
def sqlite() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite fault test")


@pytest.fixture
def traces(sshd: SshServer) -> Iterator[str]:
    """A tag for this test's trace files (/tmp/sshc-trace-<tag>-<n>), removed afterwards."""
    tag = secrets.token_hex(4)
    yield tag
    for path in Path("/tmp").glob(f"sshc-trace-{tag}-*"):
        path.unlink()


def text(result: CallToolResult) -> str:
    return str(result.content[0].text)  # type: ignore[union-attr]


def test_it_loses_no_call_while_postgres_backends_are_killed(
    postgres: None, mcp: McpHarness, make_host: Any, traces: str, caplog: pytest.LogCaptureFixture
) -> None:
    make_host("h")
    mcp.ok("ssh_execute", host="h", command="true")
    caplog.set_level(logging.INFO, logger="sshcontrol.dbretry")
    with BackendKiller(interval=0.25) as killer:
        pending: dict[int, Future[CallToolResult]] = {
            n: mcp.submit("ssh_execute", host="h", command=traced(traces, n, before="sleep 0.3; "))
            for n in range(CALLS)
        }
        results = {n: future.result(120) for n, future in pending.items()}
    assert killer.killed > 0, "the fault was never injected"
    for n, result in results.items():
        assert not result.is_error, text(result)
        assert result.structured_content is not None
        assert result.structured_content["stdout"] == f"done-{n}\n"
        assert ran(traces, n)
    assert_rows_match_the_host(traces, results)
    assert retried(caplog), "no call met a killed connection: the test proved nothing"


def test_it_refuses_to_run_while_postgres_is_down_and_records_it_later(
    postgres: None, mcp: McpHarness, make_host: Any, traces: str, settings: Any
) -> None:
    make_host("h")
    mcp.ok("ssh_execute", host="h", command="true")
    settings.DB_RETRY_SECONDS = 1.0
    with refusing_connections():
        message = mcp.error("ssh_execute", host="h", command=traced(traces, 0))
    assert "database is unavailable" in message and "nothing was run" in message
    assert not ran(traces, 0), "a command ran although its audit row could not be written"
    row = wait_until(
        lambda: finished_row(f"sshc-trace-{traces}-0"),
        20,
        "the refused call's row, once the database is back",
    )
    assert row is not None and row.status == "error" and "nothing was run" in row.error
    assert_rows_match_the_host(traces, {0: CallToolResult(content=[])})


def test_it_returns_a_result_while_postgres_is_down_and_records_it_once_back(
    postgres: None, mcp: McpHarness, make_host: Any, traces: str, settings: Any, sshd: SshServer
) -> None:
    make_host("h")
    mcp.ok("ssh_execute", host="h", command="true")
    settings.DB_RETRY_SECONDS = 1.0
    pending = mcp.submit("ssh_execute", host="h", command=traced(traces, 0, before="sleep 1; "))
    wait_until(lambda: sshd.user_processes(f"sshc-trace-{traces}-0"), 15, "the command is running")
    with refusing_connections():
        # The command finishes while the database is away: the client still gets its result.
        result = pending.result(60)
        assert not result.is_error, text(result)
        assert result.structured_content is not None
        assert result.structured_content["stdout"] == "done-0\n" and ran(traces, 0)
    row = wait_until(lambda: finished_row(f"sshc-trace-{traces}-0"), 30, "the row, once the database is back")
    assert row is not None and row.status == "ok" and row.stdout == "done-0\n"
    assert_rows_match_the_host(traces, {0: result})


def retried(caplog: pytest.LogCaptureFixture) -> bool:
    return any("retrying" in record.getMessage() for record in caplog.records)


def test_it_rides_out_sqlite_held_locked_by_another_process(
    sqlite: None, mcp: McpHarness, make_host: Any, traces: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sshcontrol.dbretry")
    make_host("h")
    mcp.ok("ssh_execute", host="h", command="true")
    with sqlite_locked():
        pending = {n: mcp.submit("ssh_execute", host="h", command=traced(traces, n)) for n in range(4)}
        # Held past SQLite's own busy timeout (10 s), until a write has failed with "database is locked".
        wait_until(lambda: retried(caplog), 30, "a write hit the lock and is being retried")
    results = {n: future.result(60) for n, future in pending.items()}
    for n, result in results.items():
        assert not result.is_error, text(result)
        assert ran(traces, n)
    assert_rows_match_the_host(traces, results)


def test_it_fails_closed_when_sqlite_stays_locked(
    sqlite: None, mcp: McpHarness, make_host: Any, traces: str, settings: Any
) -> None:
    make_host("h")
    mcp.ok("ssh_execute", host="h", command="true")
    settings.DB_RETRY_SECONDS = 0.5
    with sqlite_locked():
        message = mcp.error("ssh_execute", host="h", command=traced(traces, 0))
    assert "database is unavailable" in message and "nothing was run" in message, message
    assert not ran(traces, 0)
    row = wait_until(
        lambda: finished_row(f"sshc-trace-{traces}-0"),
        30,
        "the refused call's row, once the lock is released",
    )
    assert row is not None and row.status == "error" and "nothing was run" in row.error
