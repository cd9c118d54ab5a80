"""ssh_execute_many in distributed mode: mcp_serve (stdio) -> broker -> two real Celery workers -> sshd."""

from __future__ import annotations

import collections
from typing import Any

from mcp import Client

from audit.models import AuditEvent
from sshcontrol.models import SshSession
from tests.distributed.conftest import WorkerPool
from tests.distributed.test_workers import ok, run
from tests.sshd import SshServer


def test_a_batch_spreads_its_sessions_over_the_workers_and_reuses_them(
    workers: WorkerPool, make_host, sshd: SshServer
) -> None:
    names = [make_host(f"d{i}").name for i in range(6)]

    async def body(client: Client) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        cold = await ok(client, "ssh_execute_many", hosts=names, command="echo fleet")
        warm = await ok(client, "ssh_execute_many", hosts=names, command="echo fleet")
        rolling = await ok(
            client,
            "ssh_execute_many",
            hosts=names,
            command="exit 2",
            batch_size=2,
            stop_after_failures=2,
        )
        return cold, warm, rolling

    cold, warm, rolling = run(body, workers.broker_url)
    for result in (cold, warm):
        assert result["summary"]["ok"] == 6
        [group] = result["groups"]
        assert group["stdout"] == "fleet\n" and group["count"] == 6
    sessions = SshSession.objects.filter(state=SshSession.State.CONNECTED)
    assert sessions.count() == 6, "the warm batch reused the sessions the cold one opened"
    holders = collections.Counter(sessions.values_list("worker", flat=True))
    assert set(holders) == set(workers.names) and set(holders.values()) == {3}
    batch = AuditEvent.objects.filter(batch_id=warm["batch_id"])
    assert batch.count() == 6 and not batch.filter(reconnected=True).exists()
    assert [r["status"] for r in rolling["results"]] == ["failed"] * 2 + ["skipped"] * 4
    assert rolling["stopped_early"] is True
