"""Write before act, for every tool that touches a host: no audit row, no action on the host.

``tests/mcp/test_db_faults.py`` holds ``ssh_execute`` to it; here ``ssh_upload_file``,
``ssh_copy``, ``ssh_start_job``, ``ssh_execute_many``, ``ssh_upload_many``,
``ssh_download_many``, ``ssh_copy_many`` and ``ssh_connect`` meet a database that
cannot take the call's audit row (PostgreSQL refusing connections, or SQLite held locked by
another connection past the retry bound). Each call fails with an error that says why, and the
host shows that nothing happened: no file (nor temporary file), no process, no command's trace,
no login in sshd's log. The refusal is recorded once the database is back.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from mcp.types import CallToolResult

from audit.models import AuditEvent
from sshcontrol.localfiles import local_root
from tests.dbfaults import ran, refusing_connections, sqlite_locked, traced
from tests.mcp.conftest import McpHarness
from tests.polling import wait_until
from tests.sshd import SshServer

Outage = Callable[[], AbstractContextManager[object]]


@pytest.fixture
def outage(settings: Any) -> Outage:
    """The database as it is down for this backend, with the retry bound short."""
    if connection.vendor == "postgresql":
        settings.DB_RETRY_SECONDS = 1.0
        return refusing_connections
    settings.DB_RETRY_SECONDS = 0.5
    return sqlite_locked


@pytest.fixture
def tag(sshd: SshServer) -> Iterator[str]:
    """This test's name part: trace files /tmp/sshc-trace-<tag>-<n>, a directory /tmp/sshc-dbf-<tag>."""
    tag = secrets.token_hex(4)
    yield tag
    for path in Path("/tmp").glob(f"sshc-trace-{tag}-*"):
        path.unlink()
    for path in Path("/tmp").glob(f"sshc-dbf-{tag}*"):
        for inner in path.iterdir():
            inner.unlink()
        path.rmdir()


@pytest.fixture
def host(mcp: McpHarness, make_host: Any, tag: str) -> str:
    """Host h (its session open: the outage meets the call, not the first connection), an empty directory."""
    make_host("h")
    mcp.ok("ssh_execute", host="h", command=f"mkdir /tmp/sshc-dbf-{tag}")
    return f"/tmp/sshc-dbf-{tag}"


def entries(directory: str) -> list[str]:
    return sorted(path.name for path in Path(directory).iterdir())


def assert_refused_for_the_database(message: str) -> None:
    assert "database is unavailable" in message and "nothing was" in message, message
    assert "Traceback" not in message


def refused_row(tool: str, **fields: str) -> AuditEvent | None:
    """The call's row, recorded once the database is back: an error saying nothing ran (or started)."""
    row = AuditEvent.objects.filter(tool=tool, **fields).exclude(status="running").first()
    said = row is not None and ("nothing was" in row.error or row.error.startswith("not started: "))
    return row if row is not None and row.status == "error" and said else None


def test_an_upload_writes_nothing_while_its_row_cannot_be_written(
    mcp: McpHarness, host: str, outage: Outage
) -> None:
    target = f"{host}/uploaded.txt"
    with outage():
        message = mcp.error("ssh_upload_file", host="h", remote_path=target, content="should not land\n")
    assert_refused_for_the_database(message)
    assert entries(host) == [], "an upload wrote on the host although its audit row could not be written"
    wait_until(lambda: refused_row("ssh_upload_file", remote_path=target), 30, "the refusal's row, once back")
    assert entries(host) == []


def test_a_copy_writes_nothing_while_its_rows_cannot_be_written(
    mcp: McpHarness, host: str, outage: Outage
) -> None:
    source, target = f"{host}/source.txt", f"{host}/copied.txt"
    mcp.ok("ssh_upload_file", host="h", remote_path=source, content="source\n")
    with outage():
        message = mcp.error("ssh_copy", from_host="h", from_path=source, to_host="h", to_path=target)
    assert_refused_for_the_database(message)
    assert entries(host) == ["source.txt"], (
        "a copy wrote on the host although its audit rows could not be written"
    )
    wait_until(lambda: refused_row("ssh_copy", remote_path=source), 30, "the source's refusal row, once back")
    assert entries(host) == ["source.txt"]
    assert not AuditEvent.objects.filter(tool="ssh_copy", status="ok").exists()


def test_a_job_is_not_started_while_its_row_cannot_be_written(
    mcp: McpHarness, host: str, tag: str, outage: Outage, sshd: SshServer
) -> None:
    command = traced(tag, 0)
    with outage():
        message = mcp.error("ssh_start_job", host="h", command=command)
    assert_refused_for_the_database(message)
    # The job would have run at once (it only touches its trace): by the time the refusal is
    # recorded, a job started anyway would have left it.
    wait_until(lambda: refused_row("ssh_start_job", command=command), 30, "the refusal's row, once back")
    assert not ran(tag, 0), "a job ran although its audit row could not be written"
    assert sshd.user_processes(f"sshc-trace-{tag}-0") == []


def test_a_batch_runs_nothing_while_its_rows_cannot_be_written(
    mcp: McpHarness, host: str, tag: str, outage: Outage
) -> None:
    command = traced(tag, 1)
    with outage():
        result = mcp.call("ssh_execute_many", hosts=["h"], command=command)
    assert_batch_refused(result)
    wait_until(lambda: refused_row("ssh_execute_many", command=command), 30, "the refusal's row, once back")
    assert not ran(tag, 1), "a batch ran a command although its audit rows could not be written"


def assert_names_the_hosts(row: AuditEvent | None) -> None:
    """A host's own row (its rows opened per chunk), or the call's row naming the hosts asked for."""
    assert row is not None
    assert row.host_id is not None or row.details.get("hosts_requested") == ["h"], row.details


def assert_batch_refused(result: CallToolResult) -> None:
    """The whole call refused, or (its rows opened per chunk) every host "not started", saying why."""
    if result.is_error:
        assert_refused_for_the_database(result.content[0].text)  # type: ignore[union-attr]
        return
    content = result.structured_content
    assert content is not None
    [outcome] = content["results"]
    assert outcome["status"] == "error" and outcome["error"].startswith("not started: "), outcome
    assert "database is unavailable" in outcome["error"], outcome


def test_an_upload_to_many_writes_nothing_while_its_rows_cannot_be_written(
    mcp: McpHarness, host: str, outage: Outage
) -> None:
    target = f"{host}/uploaded.txt"
    with outage():
        result = mcp.call("ssh_upload_many", hosts=["h"], remote_path=target, content="should not land\n")
    assert_batch_refused(result)
    assert entries(host) == [], "an upload wrote on the host although its audit rows could not be written"
    row = wait_until(
        lambda: refused_row("ssh_upload_many", remote_path=target), 30, "the refusal's row, once back"
    )
    assert_names_the_hosts(row)
    assert entries(host) == []


def test_a_download_from_many_fetches_nothing_while_its_rows_cannot_be_written(
    mcp: McpHarness, host: str, tag: str, outage: Outage
) -> None:
    source = f"{host}/source.txt"
    mcp.ok("ssh_upload_file", host="h", remote_path=source, content="source\n")
    local_dir = f"dbf-{tag}"
    with outage():
        result = mcp.call("ssh_download_many", hosts=["h"], remote_path=source, local_dir=local_dir)
    assert_batch_refused(result)
    fetched = [p for p in (local_root() / local_dir).rglob("*") if p.is_file()]
    assert fetched == [], "a download fetched a file although its audit rows could not be written"
    row = wait_until(
        lambda: refused_row("ssh_download_many", remote_path=source), 30, "the refusal's row, once back"
    )
    assert_names_the_hosts(row)
    assert entries(host) == ["source.txt"]


def test_a_copy_to_many_writes_nothing_while_its_rows_cannot_be_written(
    mcp: McpHarness, host: str, outage: Outage
) -> None:
    source, target = f"{host}/source.txt", f"{host}/copied.txt"
    mcp.ok("ssh_upload_file", host="h", remote_path=source, content="source\n")
    with outage():
        result = mcp.call("ssh_copy_many", from_host="h", from_path=source, to_hosts=["h"], to_path=target)
    assert_batch_refused(result)
    assert entries(host) == ["source.txt"], (
        "a copy wrote on the host although its audit rows could not be written"
    )
    row = wait_until(lambda: refused_row("ssh_copy_many"), 30, "the refusal's row, once back")
    # The one row says what the call would have written, and where.
    assert row is not None
    assert row.details["copy_to_path"] == target and row.details["hosts_requested"] == ["h"], row.details
    assert entries(host) == ["source.txt"]
    assert not AuditEvent.objects.filter(tool="ssh_copy_many", status="ok").exists()


def logins(sshd: SshServer) -> int:
    """Connections sshd has seen (each one logged by LogLevel VERBOSE)."""
    return (sshd.root / "sshd.log").read_text().count("Connection from")


def test_a_connection_is_not_opened_while_its_row_cannot_be_written(
    mcp: McpHarness, host: str, outage: Outage, sshd: SshServer
) -> None:
    before = logins(sshd)
    with outage():
        message = mcp.error("ssh_connect", host="h")
    assert_refused_for_the_database(message)
    wait_until(lambda: refused_row("ssh_connect"), 30, "the refusal's row, once back")
    assert logins(sshd) == before, "sshd saw a connection although its audit row could not be written"
