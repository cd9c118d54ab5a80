"""Worker faults in distributed mode: what the host, the client and the audit log see.

- kill -9 of the worker running a command: a surviving worker kills the remote process
  group the dead one left running, and audits it;
- SIGTERM: a command the stopping worker cancels is recorded and reported as cancelled by
  the worker's shutdown (not by the client), and its session re-opens at the next call;
- the broker and result store vanishing under a running call: recorded ``interrupted`` with
  "outcome unknown", not ``error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client as DjangoClient
from django.urls import reverse
from mcp import Client
from mcp.types import CallToolResult

from audit.models import AuditEvent
from sshcontrol.holders import live_workers
from sshcontrol.models import RemoteCommand, SshSession, WorkerHeartbeat
from tests.database import closing_connections
from tests.distributed.conftest import WorkerPool, reachable
from tests.distributed.test_workers import ok, run
from tests.polling import eventually, wait_until
from tests.sshd import SshServer, free_port


def text(result: CallToolResult) -> str:
    return str(result.content[0].text)  # type: ignore[union-attr]


def test_it_kills_the_command_a_killed_worker_left_running(
    workers: WorkerPool, make_host: Any, sshd: SshServer
) -> None:
    make_host("h")

    async def body(client: Client) -> tuple[CallToolResult, str]:
        session_id = (await ok(client, "ssh_connect", host="h"))["session_id"]
        holder = await asyncio.to_thread(
            closing_connections(lambda: SshSession.objects.get(session_id=session_id).worker)
        )
        call = asyncio.create_task(
            client.call_tool(
                "ssh_execute", {"session_id": session_id, "command": "sleep 301", "timeout": 600}
            )
        )
        await eventually(lambda: sshd.user_processes("sleep 301"), 15, "the command is running")
        await eventually(
            lambda: RemoteCommand.objects.filter(worker=holder).exists(), 10, "its pgid recorded"
        )
        workers.kill(holder, signal.SIGKILL)
        return await asyncio.wait_for(call, 60), holder

    result, dead = run(body, workers.broker_url)
    assert result.is_error and "stopped" in text(result)
    # No further call is needed: a surviving worker finds the orphan by the dead one's heartbeat.
    wait_until(lambda: not sshd.user_processes("sleep 301"), 30, "the orphaned remote command was killed")
    original = AuditEvent.objects.get(command="sleep 301")
    assert original.status == "interrupted"
    kill = wait_until(
        lambda: AuditEvent.objects.filter(tool="orphan_kill").exclude(status="running").first(), 10
    )
    assert kill is not None
    assert kill.status == "ok" and kill.signal in ("TERM", "KILL"), kill.error
    assert kill.details["audit_event"] == original.pk and kill.details["dead_worker"] == dead
    assert kill.actor.startswith("worker ") and dead not in kill.actor
    assert not RemoteCommand.objects.exists()


def test_it_reports_a_command_cancelled_by_a_stopping_worker_and_reopens_its_session(
    workers: WorkerPool, make_host: Any, sshd: SshServer
) -> None:
    make_host("h")

    async def body(client: Client) -> tuple[CallToolResult, dict[str, Any], str]:
        session_id = (await ok(client, "ssh_connect", host="h"))["session_id"]
        holder = await asyncio.to_thread(
            closing_connections(lambda: SshSession.objects.get(session_id=session_id).worker)
        )
        call = asyncio.create_task(
            client.call_tool(
                "ssh_execute", {"session_id": session_id, "command": "sleep 302", "timeout": 600}
            )
        )
        await eventually(lambda: sshd.user_processes("sleep 302"), 15, "the command is running")
        workers.kill(holder, signal.SIGTERM)
        cancelled = await asyncio.wait_for(call, 60)
        await asyncio.to_thread(workers.procs[holder].wait, 30)
        after = await ok(client, "ssh_execute", session_id=session_id, command="echo reopened")
        return cancelled, after, holder

    cancelled, after, stopped = run(body, workers.broker_url)
    assert cancelled.is_error
    assert "worker running it was stopped (SIGTERM)" in text(cancelled), text(cancelled)
    assert "client" not in text(cancelled)
    row = AuditEvent.objects.get(command="sleep 302")
    assert row.status == "interrupted" and "SIGTERM" in row.error and "client" not in row.error
    wait_until(lambda: not sshd.user_processes("sleep 302"), 10, "the cancelled command was killed")
    # The session was not closed under the client: the next call re-opened it elsewhere.
    assert after["stdout"] == "reopened\n"
    assert AuditEvent.objects.get(pk=after["audit_id"]).reconnected
    session = SshSession.objects.get(session_id=after["session_id"])
    assert session.state == "connected" and session.worker != stopped


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis of this test's own (the suite's shared one must not be stopped), as broker and store."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(lambda: reachable(url), 10, "the private redis answers")
    yield url, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def is_worker_process(pid: int, node: str) -> bool:
    """Whether ``pid`` is still the Celery worker named ``node`` (a stale row's pid may be reused)."""
    try:
        return node in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def test_it_records_a_call_whose_broker_vanished_as_outcome_unknown(
    transactional_db: None,
    private_redis: tuple[str, subprocess.Popen[bytes]],
    make_host: Any,
    sshd: SshServer,
    tmp_path: Path,
    admin_client: DjangoClient,
) -> None:
    url, redis_server = private_redis
    make_host("h")
    pool = WorkerPool(url, tmp_path)
    pool.names = pool.names[:1]
    pool.ensure()
    # The suite's shared workers (another broker) must not be chosen for this call: pause them
    # until their heartbeats go stale, and let them go on afterwards.
    others = [
        pid
        for node, pid in WorkerHeartbeat.objects.exclude(node__in=pool.names).values_list("node", "pid")
        if is_worker_process(pid, node)
    ]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: set(live_workers()) == set(pool.names), 15, "only the private worker is live")

    async def body(client: Client) -> CallToolResult:
        await ok(client, "ssh_execute", host="h", command="true")
        call = asyncio.create_task(client.call_tool("ssh_execute", {"host": "h", "command": "sleep 303"}))
        await eventually(lambda: sshd.user_processes("sleep 303"), 15, "the command is running")
        redis_server.kill()  # the broker and the result store vanish while the command runs
        return await asyncio.wait_for(call, 60)

    try:
        result = run(body, url)
    finally:
        for proc in pool.procs.values():  # their broker is gone: no clean stop to wait for
            proc.kill()
            proc.wait(10)
        subprocess.run(["pkill", "-KILL", "-u", sshd.user, "-f", "sleep 303"], check=False)
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert result.is_error and "outcome is unknown" in text(result), text(result)
    row = AuditEvent.objects.get(command="sleep 303")
    assert row.status == "interrupted", (row.status, row.error)
    assert "outcome is unknown" in row.error and "broker" in row.error
    # The admin's audit detail says so too.
    detail = admin_client.get(reverse("admin:audit_auditevent_change", args=[row.pk]))
    assert detail.status_code == 200 and "the outcome is unknown" in detail.content.decode()
