"""Jobs and a real ``mcp_serve`` (stdio subprocess) that is killed and started again.

The survival test runs the issue's 3-minute job: mostly waiting (a line a second), so it costs
the suite time but little CPU.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from mcp import Client

from tests.mcp.test_stdio import _server_pid, exported_rows, ok, server_params
from tests.polling import eventually, until
from tests.sshd import SshServer

pytestmark = [pytest.mark.anyio, pytest.mark.long_wait]

TICKS = 180


async def follow(client: Client, job_id: str, timeout: float) -> tuple[str, dict[str, Any]]:
    """Read the job's stdout with the offsets given until it ended and the stream is complete."""
    parts: list[str] = []
    offset = 0
    last: dict[str, Any] = {}

    async def step() -> bool:
        nonlocal offset, last
        last = await ok(client, "ssh_job_status", job_id=job_id, since_offset=offset, max_bytes=64)
        assert last["stdout"]["offset"] == offset
        parts.append(last["stdout"]["text"])
        offset = last["stdout"]["next_offset"]
        return last["state"] != "running" and last["stdout"]["complete"]

    await until(step, timeout, f"job {job_id} ended and its output was read to the end")
    return "".join(parts), last


async def test_a_started_job_survives_a_killed_mcp_serve(registered: dict[str, str], sshd: SshServer) -> None:
    command = f"for i in $(seq 1 {TICKS}); do echo tick $i; sleep 1; done"
    async with Client(server_params(registered)) as client:
        started = await ok(client, "ssh_start_job", host="box", command=command, timeout=TICKS + 120)
        job_id = started["job_id"]
        first = await ok(client, "ssh_job_status", job_id=job_id)
        assert first["state"] == "running"
        os.kill(_server_pid(registered["SSHCONTROL_DATA_DIR"]), signal.SIGKILL)
    async with Client(server_params(registered)) as client:
        stdout, last = await follow(client, job_id, timeout=TICKS + 60)
    assert stdout == "".join(f"tick {i}\n" for i in range(1, TICKS + 1))
    assert last["state"] == "exited" and last["exit_status"] == 0
    rows = [r for r in exported_rows(registered) if r["tool"] == "ssh_start_job"]
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["id"] == started["audit_id"]


async def test_a_killed_holder_leaves_its_job_lost_and_its_command_killed(
    registered: dict[str, str], sshd: SshServer
) -> None:
    command = "echo begun; sleep 614"
    async with Client(server_params(registered)) as client:
        result = await ok(
            client, "ssh_execute", host="box", command=command, foreground_seconds=1, timeout=600
        )
        assert result["still_running"] and result["stdout"] == "begun\n"
        job_id = result["job_id"]
        os.kill(_server_pid(registered["SSHCONTROL_DATA_DIR"]), signal.SIGKILL)
    assert sshd.user_processes("sleep 614"), "the command ended with its server: nothing to test"
    async with Client(server_params(registered)) as client:

        async def lost() -> bool:
            status = await ok(client, "ssh_job_status", job_id=job_id)
            return status["state"] == "lost"

        await until(lost, 30, "the job was marked lost")
        await eventually(lambda: not sshd.user_processes("sleep 614"), 30, "the orphaned command was killed")
        status = await ok(client, "ssh_job_status", job_id=job_id)
    assert "stopped" in status["error"]
    rows = [r for r in exported_rows(registered) if r["command"] == command]
    assert len(rows) == 1 and rows[0]["status"] == "interrupted"
