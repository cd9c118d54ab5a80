"""Distributed mode end to end: mcp_serve (stdio) -> broker -> two real Celery workers -> real sshd."""

from __future__ import annotations

import asyncio
import collections
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from audit.models import AuditEvent
from sshcontrol.models import SshSession
from tests.database import closing_connections
from tests.distributed.conftest import REPO, WorkerPool, service_env
from tests.polling import eventually
from tests.sshd import SshServer, free_port


def run(body: Callable[[Client], Awaitable[Any]], broker_url: str, **env: str) -> Any:
    """Run ``body`` against a fresh mcp_serve subprocess that talks to the workers through the broker."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "sshcontrol", "mcp_serve"],
        env=service_env(broker_url, **env),
        cwd=str(REPO),
    )

    async def main() -> Any:
        async with Client(params) as client:
            return await body(client)

    return asyncio.run(main())


async def ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_it_spreads_sessions_over_the_workers_and_routes_every_call_to_the_holder(
    workers: WorkerPool, make_host, sshd: SshServer
) -> None:
    make_host("h")

    async def body(client: Client) -> list[str]:
        ids = [(await ok(client, "ssh_connect", host="h"))["session_id"] for _ in range(4)]
        for _ in range(3):
            for session_id in ids:
                result = await ok(client, "ssh_execute", session_id=session_id, command="echo routed")
                assert result["stdout"] == "routed\n"
        return ids

    ids = run(body, workers.broker_url)
    holders = collections.Counter(
        SshSession.objects.filter(session_id__in=ids).values_list("worker", flat=True)
    )
    assert sorted(holders) == sorted(workers.names) and set(holders.values()) == {2}
    rows = AuditEvent.objects.filter(tool="ssh_execute")
    assert rows.count() == 12 and set(rows.values_list("status", flat=True)) == {"ok"}
    assert not rows.filter(reconnected=True).exists(), "a call reached a worker that did not hold its session"


def test_it_survives_a_killed_worker(workers: WorkerPool, make_host, sshd: SshServer) -> None:
    make_host("h")

    async def body(client: Client) -> tuple[dict[str, Any], dict[str, Any], str]:
        opened = await ok(client, "ssh_connect", host="h")
        session_id = opened["session_id"]
        holder = await asyncio.to_thread(
            closing_connections(lambda: SshSession.objects.get(session_id=session_id).worker)
        )
        long_call = asyncio.create_task(
            client.call_tool("ssh_execute", {"session_id": session_id, "command": "sleep 45", "timeout": 120})
        )
        await eventually(lambda: sshd.user_processes("sleep 45"), 15, "the command is running")
        workers.kill(holder, signal.SIGKILL)
        interrupted = await asyncio.wait_for(long_call, 60)
        after = await ok(client, "ssh_execute", session_id=session_id, command="echo elsewhere")
        return interrupted.model_dump(), after, holder

    interrupted, after, dead = run(body, workers.broker_url)
    assert interrupted["is_error"] and "stopped" in str(interrupted["content"])
    assert AuditEvent.objects.get(command="sleep 45").status == "interrupted"
    assert after["stdout"] == "elsewhere\n"
    row = AuditEvent.objects.get(pk=after["audit_id"])
    assert row.reconnected and row.status == "ok"
    session = SshSession.objects.get(session_id=after["session_id"])
    assert session.worker != dead and session.state == "connected"
    sshd_left = sshd.user_processes("sleep 45")
    if sshd_left:  # the dead worker could not kill it; the suite reaps it
        import subprocess

        subprocess.run(["kill", "-KILL", *sshd_left], check=False)


def test_it_kills_the_remote_process_when_the_client_cancels(
    workers: WorkerPool, make_host, sshd: SshServer
) -> None:
    make_host("h")

    async def body(client: Client) -> None:
        await ok(client, "ssh_execute", host="h", command="true")
        call = asyncio.create_task(client.call_tool("ssh_execute", {"host": "h", "command": "sleep 321"}))
        await eventually(lambda: sshd.user_processes("sleep 321"), 15, "the command is running")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    run(body, workers.broker_url)
    assert wait_for(lambda: not sshd.user_processes("sleep 321"), 10)
    assert wait_for(lambda: AuditEvent.objects.filter(command="sleep 321", status="interrupted").exists(), 15)


def test_it_loses_nothing_under_fifty_concurrent_calls(
    workers: WorkerPool, make_host, sshd: SshServer
) -> None:
    make_host("h")

    async def body(client: Client) -> list[dict[str, Any]]:
        ids = [(await ok(client, "ssh_connect", host="h"))["session_id"] for _ in range(10)]
        calls = [
            ok(client, "ssh_execute", session_id=ids[i % 10], command=f"echo call-{i}") for i in range(50)
        ]
        return list(await asyncio.gather(*calls))

    results = run(body, workers.broker_url)
    assert sorted(r["stdout"] for r in results) == sorted(f"call-{i}\n" for i in range(50))
    rows = AuditEvent.objects.filter(tool="ssh_execute")
    assert rows.count() == 50
    assert set(rows.values_list("status", flat=True)) == {"ok"}
    assert not rows.filter(finished_at__isnull=True).exists()
    assert len({r["audit_id"] for r in results}) == 50


def test_it_marks_sessions_lost_when_a_worker_stops_cleanly(
    workers: WorkerPool, make_host, sshd: SshServer
) -> None:
    make_host("h")

    async def body(client: Client) -> list[str]:
        return [(await ok(client, "ssh_connect", host="h"))["session_id"] for _ in range(2)]

    ids = run(body, workers.broker_url)
    holders = dict(SshSession.objects.filter(session_id__in=ids).values_list("session_id", "worker"))
    stopping = holders[ids[0]]
    workers.kill(stopping, signal.SIGTERM)
    workers.procs[stopping].wait(30)
    # Lost, not closed: the next call re-opens them on a live worker (test_worker_faults.py).
    stopped = SshSession.objects.filter(worker=stopping, session_id__in=ids)
    assert stopped.exists() and set(stopped.values_list("state", flat=True)) == {"lost"}
    assert set(stopped.values_list("close_reason", flat=True)) == {"its worker stopped"}


def test_it_reports_a_dead_broker_within_seconds(workers: WorkerPool, make_host) -> None:
    make_host("h")
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"

    async def body(client: Client) -> tuple[float, CallToolResult]:
        started = time.monotonic()
        result = await client.call_tool("ssh_execute", {"host": "h", "command": "true"})
        return time.monotonic() - started, result

    elapsed, result = run(body, dead_broker)
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "broker" in text or "worker" in text
    assert elapsed < 20


def test_it_shares_sessions_between_mcp_serve_processes(
    workers: WorkerPool, make_host, sshd: SshServer
) -> None:
    make_host("h")

    async def open_one(client: Client) -> str:
        return str((await ok(client, "ssh_connect", host="h"))["session_id"])

    session_id = run(open_one, workers.broker_url)

    async def use_it(client: Client) -> dict[str, Any]:
        return await ok(client, "ssh_execute", session_id=session_id, command="echo shared")

    result = run(use_it, workers.broker_url)
    assert result["stdout"] == "shared\n"
    assert not AuditEvent.objects.get(pk=result["audit_id"]).reconnected
