"""A completion postponed while the database is away survives the death of its process
(real PostgreSQL, real processes): the next ``mcp_serve`` start writes the true outcome
instead of relabelling the row ``interrupted``."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from django.core.management import call_command
from django.db import connection
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from audit.models import AuditEvent
from tests.dbfaults import refusing_connections
from tests.polling import eventually
from tests.server_process import REPO, server_env
from tests.sshd import SshServer

pytestmark = [pytest.mark.django_db(transaction=True)]


# Opens a row, waits, then completes it while the test keeps the database away, and waits to be killed.
CHILD = """
import sys, uuid
from audit import writer
from sshcontrol import durable
eid = durable.begin(request_id=uuid.uuid4(), tool="ssh_execute", actor="spool-test", transport="stdio",
                    command="echo spooled")
print(eid, flush=True)
sys.stdin.readline()
outcome = writer.Completion("ok", exit_status=0, stdout="spooled\\n", details={"why": "test"})
done = durable.complete(eid, lambda: writer.finish(eid, outcome), outcome=outcome)
print("written" if done else "postponed", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL fault test (DATABASE_URL=postgres://...)")


def environment(tmp_path: Path) -> dict[str, str]:
    return server_env(tmp_path, SSHCONTROL_DB_RETRY_SECONDS="1", SSHCONTROL_LOG_LEVEL="WARNING")


def start_and_stop(env: dict[str, str]) -> None:
    """Start ``mcp_serve`` once, stdin an empty pipe: it starts (writing what was spooled), then
    stops at once; it must exit 0."""
    started = subprocess.run(
        [sys.executable, "-m", "sshcontrol", "mcp_serve"],
        env=env,
        cwd="/",
        input="",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode == 0, started.stderr


def test_a_killed_process_s_postponed_completion_is_written_by_the_next_start(
    postgres: None, tmp_path: Path
) -> None:
    env = environment(tmp_path)
    child = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", CHILD],
        env=env,
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        event_id = int(child.stdout.readline())
        with refusing_connections():
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "postponed"
            spooled = tmp_path / "data" / "pending-completions" / f"{event_id}.json"
            assert spooled.exists()
            assert stat.S_IMODE(spooled.stat().st_mode) == 0o600
            assert stat.S_IMODE(spooled.parent.stat().st_mode) == 0o700
            child.kill()  # dies with the row still running
            child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        child.stdin.close()
        child.stdout.close()
    assert AuditEvent.objects.get(pk=event_id).status == "running"
    start_and_stop(env)  # the next start
    row = AuditEvent.objects.get(pk=event_id)
    assert row.status == "ok" and row.exit_status == 0 and row.stdout == "spooled\n", row.error
    assert row.details["why"] == "test"
    assert not spooled.exists()
    call_command("audit_verify")


def server_pid(data_dir: Path) -> int:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ, cmdline = (proc / "environ").read_bytes(), (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"SSHCONTROL_DATA_DIR={data_dir}".encode() in environ and b"mcp_serve" in cmdline:
            return int(proc.name)
    raise AssertionError("mcp_serve process not found")


def test_a_call_completed_while_the_database_is_down_keeps_its_outcome_when_its_server_is_killed(
    postgres: None, tmp_path: Path, make_host: Any, sshd: SshServer
) -> None:
    make_host("h")
    env = environment(tmp_path)
    data_dir = tmp_path / "data"
    command = f"sleep 1; echo done-{sshd.user}"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "sshcontrol", "mcp_serve"], env=env, cwd="/"
    )
    outage = refusing_connections()

    async def body() -> CallToolResult:
        async with Client(params) as client:
            first = await client.call_tool("ssh_execute", {"host": "h", "command": "true"})
            assert isinstance(first, CallToolResult) and not first.is_error, first.content
            pid = server_pid(data_dir)
            results: list[CallToolResult] = []

            async def call() -> None:
                result = await client.call_tool("ssh_execute", {"host": "h", "command": command})
                assert isinstance(result, CallToolResult)
                results.append(result)

            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await eventually(lambda: sshd.user_processes("sleep 1"), 15, "the command is running")
                # The database goes away while the command runs: its completion cannot be written.
                await anyio.to_thread.run_sync(outage.__enter__)
                await eventually(lambda: results, 30, "the result, while the database is away")
                spool = data_dir / "pending-completions"
                await eventually(lambda: list(spool.glob("*.json")), 15, "the completion spooled")
                os.kill(pid, signal.SIGKILL)
                group.cancel_scope.cancel()
            return results[0]

    try:
        result = anyio.run(body)
    finally:
        outage.__exit__(None, None, None)
    assert not result.is_error, result.content
    start_and_stop(env)
    row = AuditEvent.objects.get(command=command)
    assert row.status == "ok" and row.stdout == f"done-{sshd.user}\n", (row.status, row.error)
    call_command("audit_verify")
