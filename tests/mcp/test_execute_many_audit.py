"""Write before act with a batch's rows written in bulk: each host's row is open before its command
runs and completed after it, whatever the host comes to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from audit.models import AuditEvent
from sshcontrol.models import RemoteCommand
from tests.mcp.conftest import McpHarness
from tests.mcp.held_batch import (
    UNREACHABLE,
    HeldCommand,
    completed,
    hosts_and_one_unreachable,
    process_groups_recorded,
)
from tests.polling import wait_until


def test_each_hosts_row_is_open_while_its_command_runs_and_completed_after(
    mcp: McpHarness, make_host: Callable[..., Any]
) -> None:
    running, names = hosts_and_one_unreachable(make_host, "wba", 6)
    # Each command says it started, then waits for the test to let it end.
    held = HeldCommand()
    command = held.text
    call = mcp.submit("ssh_execute_many", hosts=names, command=command)
    try:
        held.wait_started(len(running))
        rows = {r.host_name: r for r in AuditEvent.objects.filter(tool="ssh_execute_many", command=command)}
        assert set(rows) == set(names)
        assert len({r.batch_id for r in rows.values()}) == 1
        for host in running:
            assert rows[host.name].status == AuditEvent.Status.RUNNING
        # Each running command's process group is recorded against its host's row: that row's id
        # was known (committed) before the command was sent, and the shell reported the group
        # only once the command was running there.
        recorded = process_groups_recorded(len(running))
        assert recorded == {rows[h.name].pk: h.pk for h in running}
        # The host whose command could not start is completed while the others still run.
        closed = completed(rows[UNREACHABLE].pk, "the unreachable host's row completed")
        assert closed is not None
        assert closed.status == AuditEvent.Status.ERROR and closed.error
        assert closed.finished_at is not None
        still = AuditEvent.objects.filter(pk__in=[rows[h.name].pk for h in running], status="running")
        assert still.count() == len(running)
    finally:
        held.release()
    result = call.result(60)
    held.remove_files()
    assert not result.is_error
    assert result.structured_content is not None
    summary = result.structured_content["summary"]
    assert (summary["ok"], summary["error"], summary["total"]) == (6, 1, 7)
    done = AuditEvent.objects.filter(batch_id=result.structured_content["batch_id"])
    assert done.count() == 7
    assert not done.filter(status=AuditEvent.Status.RUNNING).exists()
    assert all(r.finished_at is not None and r.chain_hash for r in done)
    wait_until(lambda: not RemoteCommand.objects.exists(), 15, "the process group rows forgotten")
