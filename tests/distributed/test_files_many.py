"""ssh_upload_many and ssh_download_many in distributed mode: two real Celery workers whose
transfer directory is their own, so each host's bytes travel through the transfer stream."""

from __future__ import annotations

import collections
import hashlib
import os
import secrets
from typing import Any

from mcp import Client

from audit.models import AuditEvent
from sshcontrol.localfiles import local_root
from sshcontrol.models import SshSession
from tests.distributed.conftest import WorkerPool
from tests.distributed.test_workers import ok, run
from tests.sshd import SshServer


def test_one_file_to_many_hosts_and_back_into_per_host_files(
    workers: WorkerPool, make_host, sshd: SshServer
) -> None:
    names = [make_host(f"f{i}").name for i in range(4)]
    payload = os.urandom(300_000)
    digest = hashlib.sha256(payload).hexdigest()
    (local_root() / "fleet-up.bin").write_bytes(payload)
    remote = f"/tmp/sshc-dist-many-{sshd.user}.bin"
    local_dir = f"fleet-down-{secrets.token_hex(4)}"  # the test process's directory outlives one test

    async def body(client: Client) -> tuple[dict[str, Any], dict[str, Any]]:
        up = await ok(
            client,
            "ssh_upload_many",
            hosts=names,
            remote_path=remote,
            local_path="fleet-up.bin",
            overwrite=True,
        )
        down = await ok(client, "ssh_download_many", hosts=names, remote_path=remote, local_dir=local_dir)
        return up, down

    up, down = run(body, workers.broker_url)
    assert up["summary"]["ok"] == 4 and {r["sha256"] for r in up["results"]} == {digest}
    assert down["summary"]["ok"] == 4, [r["error"] for r in down["results"]]
    assert [g["count"] for g in down["groups"]] == [4]
    for name in names:
        assert (local_root() / local_dir / name / os.path.basename(remote)).read_bytes() == payload
    holders = collections.Counter(
        SshSession.objects.filter(state=SshSession.State.CONNECTED).values_list("worker", flat=True)
    )
    assert set(holders) == set(workers.names), "the hosts' sessions are spread over both workers"
    for result in (up, down):
        rows = AuditEvent.objects.filter(batch_id=result["batch_id"])
        assert rows.count() == 4 and set(rows.values_list("file_sha256", flat=True)) == {digest}
    assert not any(workers.transfer_root.rglob("fleet-*")), "nothing was written in the workers' directory"
