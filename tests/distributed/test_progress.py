"""Progress of a long command, relayed from the worker that runs it to the MCP client."""

from __future__ import annotations

from typing import Any

from mcp import Client

from sshcontrol.models import SshSession
from tests.distributed.conftest import WorkerPool
from tests.distributed.test_workers import run
from tests.sshd import SshServer


def test_it_relays_progress_of_a_long_command_from_the_worker(
    workers: WorkerPool, make_host, sshd: SshServer
) -> None:
    make_host("h")
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    command = "for i in 1 2 3 4; do head -c 10000 /dev/zero; sleep 0.4; done"

    async def body(client: Client) -> Any:
        return await client.call_tool(
            "ssh_execute", {"host": "h", "command": command}, progress_callback=on_progress
        )

    result = run(body, workers.broker_url)
    assert not result.is_error, result.content
    assert result.structured_content["stdout_bytes"] == 40000
    # The command ran on a worker, not in mcp_serve: progress crossed the broker.
    holder = SshSession.objects.get(session_id=result.structured_content["session_id"]).worker
    assert holder in workers.names
    assert updates, "a command streaming output for 1.6 s on a worker reports progress"
    assert all("bytes of stdout" in (message or "") for _, _, message in updates)
    assert [p for p, _, _ in updates] == sorted(p for p, _, _ in updates)
    assert updates[-1][0] <= 40000
