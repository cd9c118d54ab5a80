"""Background jobs in distributed mode: the job runs on the worker that holds the session.

Here rather than in tests/jobs so that they share this directory's worker pool (two more
Celery workers per broker would not fit the machine). The status and output of a job are
read through a task routed to its holder; a killed holder leaves its job ``lost``.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from mcp import Client

from audit.models import AuditEvent
from sshcontrol.models import Job, RemoteCommand
from tests.database import closing_connections
from tests.distributed.conftest import WorkerPool
from tests.distributed.test_workers import ok, run
from tests.polling import eventually, until, wait_until
from tests.sshd import SshServer


async def follow(client: Client, job_id: str, timeout: float = 60) -> tuple[str, str, dict[str, Any]]:
    out: list[str] = []
    err: list[str] = []
    offsets = {"since_offset": 0, "stderr_offset": 0}
    last: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal last
        last = await ok(client, "ssh_job_status", job_id=job_id, max_bytes=500, **offsets)
        for stream, key, parts in (("stdout", "since_offset", out), ("stderr", "stderr_offset", err)):
            assert last[stream]["offset"] == offsets[key]
            parts.append(last[stream]["text"])
            offsets[key] = last[stream]["next_offset"]
        return last["state"] != "running" and last["stdout"]["complete"] and last["stderr"]["complete"]

    await until(done, timeout, f"job {job_id} ended and its output was read to the end")
    return "".join(out), "".join(err), last


def test_a_job_runs_on_the_sessions_worker_and_is_read_through_it(
    workers: WorkerPool, make_host: Any, sshd: SshServer
) -> None:
    make_host("h")
    command = "for i in $(seq 1 200); do echo row $i; sleep 0.01; done; echo fin >&2"

    async def body(client: Client) -> tuple[dict[str, Any], str, str, dict[str, Any], dict[str, Any]]:
        started = await ok(client, "ssh_start_job", host="h", command=command)
        stdout, stderr, last = await follow(client, started["job_id"])
        became = await ok(
            client, "ssh_execute", host="h", command="echo a; sleep 3; echo b", foreground_seconds=1
        )
        return started, stdout, stderr, last, became

    started, stdout, stderr, last, became = run(body, workers.broker_url)
    assert stdout == "".join(f"row {i}\n" for i in range(1, 201)) and stderr == "fin\n"
    assert last["state"] == "exited" and last["exit_status"] == 0
    job = Job.objects.get(job_id=started["job_id"])
    assert job.holder in workers.names and job.session_id == started["session_id"]
    assert AuditEvent.objects.get(pk=started["audit_id"]).status == "ok"
    assert became["still_running"] and became["stdout"] == "a\n"
    wait_until(
        lambda: Job.objects.filter(job_id=became["job_id"], state="exited").exists(), 30, "the job ended"
    )
    rows = AuditEvent.objects.filter(command="echo a; sleep 3; echo b")
    assert rows.count() == 1 and rows.get().status == "ok" and rows.get().stdout == "a\nb\n"


def test_a_killed_worker_leaves_its_job_lost_and_its_command_killed(
    workers: WorkerPool, make_host: Any, sshd: SshServer
) -> None:
    make_host("h")

    async def body(client: Client) -> tuple[dict[str, Any], dict[str, Any]]:
        started = await ok(client, "ssh_start_job", host="h", command="echo begun; sleep 615", timeout=900)
        await eventually(lambda: sshd.user_processes("sleep 615"), 15, "the job runs")
        # The sweep kills what was recorded: the row is written as soon as the remote shell
        # reports its process group, a moment after the command starts (docs/security.md).
        await eventually(
            lambda: RemoteCommand.objects.filter(audit_event_id=started["audit_id"]).exists(),
            15,
            "its process group recorded",
        )
        holder = await asyncio.to_thread(
            closing_connections(lambda: Job.objects.get(job_id=started["job_id"]).holder)
        )
        workers.kill(holder, signal.SIGKILL)
        await eventually(
            lambda: Job.objects.filter(job_id=started["job_id"], state="lost").exists(), 60, "the job is lost"
        )
        return started, await ok(client, "ssh_job_status", job_id=started["job_id"])

    started, status = run(body, workers.broker_url)
    assert status["state"] == "lost" and "stopped" in status["error"]
    assert "cannot be read" in status["note"]
    wait_until(lambda: not sshd.user_processes("sleep 615"), 30, "the orphaned command was killed")
    assert AuditEvent.objects.get(pk=started["audit_id"]).status == "interrupted"


def test_a_cancelled_job_on_a_worker_is_killed(workers: WorkerPool, make_host: Any, sshd: SshServer) -> None:
    make_host("h")

    async def body(client: Client) -> dict[str, Any]:
        started = await ok(client, "ssh_start_job", host="h", command="sleep 616", timeout=900)
        await eventually(lambda: sshd.user_processes("sleep 616"), 15, "the job runs")
        return await ok(client, "ssh_cancel_job", job_id=started["job_id"])

    cancelled = run(body, workers.broker_url)
    assert cancelled["state"] == "cancelled"
    wait_until(lambda: not sshd.user_processes("sleep 616"), 15, "the job's command is gone")
