"""Progress notifications for long commands, and idle sessions closed where they are held."""

from __future__ import annotations

import time

from django.test import override_settings

from sshcontrol.idle import close_idle_sessions
from sshcontrol.models import SshSession
from sshlib.sessions import registry
from tests.mcp.conftest import McpHarness


def test_it_reports_progress_of_a_long_command(mcp: McpHarness, make_host) -> None:
    make_host("h")
    updates: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total, message))

    command = "for i in 1 2 3 4; do head -c 10000 /dev/zero; sleep 0.4; done"
    result = mcp.run(
        mcp.client.call_tool("ssh_execute", {"host": "h", "command": command}, progress_callback=on_progress)
    )
    assert not result.is_error and result.structured_content["stdout_bytes"] == 40000  # type: ignore[index]
    assert updates, "a command streaming output for 1.6 s reports progress"
    assert all("bytes of stdout" in (message or "") for _, _, message in updates)
    assert [p for p, _, _ in updates] == sorted(p for p, _, _ in updates)


def test_it_closes_sessions_left_idle(mcp: McpHarness, make_host) -> None:
    make_host("h")
    busy = mcp.ok("ssh_connect", host="h")["session_id"]
    idle = mcp.ok("ssh_connect", host="h")["session_id"]
    registry.get(idle).last_used_at = time.time() - 120  # type: ignore[union-attr]
    with override_settings(SESSION_IDLE_TIMEOUT=60):
        assert close_idle_sessions() == [idle]
    assert registry.get(idle) is None and registry.get(busy) is not None
    row = SshSession.objects.get(session_id=idle)
    assert row.state == "closed" and row.close_reason.startswith("idle")
    assert "closed" in mcp.error("ssh_execute", session_id=idle, command="true")
    assert mcp.ok("ssh_execute", session_id=busy, command="echo alive")["stdout"] == "alive\n"
