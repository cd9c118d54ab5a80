"""ssh_copy and ssh_copy_many in distributed mode: the bytes go from the worker holding the source
session to the worker holding the destination's, through the broker, never through mcp_serve.

The pool's workers have their own transfer directory and mcp_serve the test process's: neither
may gain a file. Both brokers (Redis, RabbitMQ) run every test (``conftest.worker_pool``).
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from audit.models import AuditEvent
from sshcontrol.localfiles import local_root
from tests.database import closing_connections
from tests.distributed.conftest import WorkerPool
from tests.distributed.test_transfers_across import (
    error_text,
    params,
    partial_temp,
    random_file,
    sha256_of,
    worker_of,
)
from tests.distributed.test_workers import ok, run
from tests.mcp.test_copy_many import servers  # noqa: F401  (the module-scoped destination servers)
from tests.polling import eventually, wait_until
from tests.server_hosts import register
from tests.sshd import SshServer

Status = AuditEvent.Status
MIB = 1 << 20


@pytest.fixture
def remote_dir(sshd: SshServer) -> Iterator[Path]:
    """A directory on the test host (this machine) owned by the SSH user."""
    path = Path(f"/tmp/sshc-copy-across-{sshd.user}")
    subprocess.run(["rm", "-rf", str(path)], check=True)
    subprocess.run(["install", "-d", "-o", sshd.user, "-m", "0700", str(path)], check=True)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


def files_below(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


async def on_two_workers(client: Client) -> tuple[str, str]:
    """A session of host 'ca' and one of host 'cb' held by different workers."""
    source = (await ok(client, "ssh_connect", host="ca"))["session_id"]
    first = await asyncio.to_thread(closing_connections(worker_of), source)
    for _ in range(4):  # the router gives a new session to the worker holding fewest
        dest = (await ok(client, "ssh_connect", host="cb"))["session_id"]
        if await asyncio.to_thread(closing_connections(worker_of), dest) != first:
            return source, dest
    raise AssertionError("no session of cb landed on the other worker")


def test_a_copy_between_sessions_on_two_workers_goes_worker_to_worker(
    workers: WorkerPool, make_host, sshd: SshServer, remote_dir: Path
) -> None:
    make_host("ca")
    make_host("cb")
    size = 5 * MIB + 3  # more frames than the credit window holds: the sender waits for acknowledgements
    digest = random_file(remote_dir / "src.bin", size)
    (remote_dir / "empty").write_bytes(b"")
    subprocess.run(["chown", "-R", sshd.user, str(remote_dir)], check=True)
    before = files_below(local_root()) | files_below(workers.transfer_root)

    async def body(client: Client) -> dict[str, Any]:
        source, dest = await on_two_workers(client)
        copies = {
            "across": (source, dest, "src.bin", "across.bin"),
            "one worker": (source, source, "src.bin", "here.bin"),
        }
        copies["empty"] = (source, dest, "empty", "empty.copy")
        done: dict[str, Any] = {"source": source, "dest": dest}
        for label, (from_id, to_id, name, target) in copies.items():
            done[label] = await ok(
                client,
                "ssh_copy",
                from_session_id=from_id,
                from_path=f"{remote_dir}/{name}",
                to_session_id=to_id,
                to_path=f"{remote_dir}/{target}",
            )
        missing = await client.call_tool(
            "ssh_copy",
            {
                "from_session_id": source,
                "from_path": f"{remote_dir}/missing",
                "to_session_id": dest,
                "to_path": f"{remote_dir}/never",
            },
        )
        done["missing"] = error_text(missing)
        return done

    done = run(body, workers.broker_url)
    assert worker_of(done["source"]) != worker_of(done["dest"])
    for label in ("across", "one worker"):
        assert done[label]["sha256"] == digest and done[label]["bytes"] == size, label
    assert sha256_of(remote_dir / "across.bin") == sha256_of(remote_dir / "here.bin") == digest
    assert done["empty"]["sha256"] == hashlib.sha256(b"").hexdigest() and done["empty"]["bytes"] == 0
    assert f"{remote_dir}/missing" in done["missing"] and "No such file" in done["missing"]
    assert sorted(p.name for p in remote_dir.iterdir()) == [
        "across.bin",
        "empty",
        "empty.copy",
        "here.bin",
        "src.bin",
    ]
    assert files_below(local_root()) | files_below(workers.transfer_root) == before  # no disk of ours

    rows = AuditEvent.objects.filter(tool="ssh_copy")
    assert rows.filter(status=Status.OK).count() == 6  # three copies, two ends each
    across = rows.filter(pk__in=[done["across"]["from_audit_id"], done["across"]["to_audit_id"]])
    assert {(row.details["copy_end"], row.file_sha256) for row in across} == {
        ("source", digest),
        ("destination", digest),
    }
    assert set(rows.filter(remote_path__endswith="never").values_list("status", flat=True)) == {Status.ERROR}


def test_a_source_worker_killed_mid_copy_leaves_no_file_at_the_destination(
    workers: WorkerPool, make_host, sshd: SshServer, remote_dir: Path
) -> None:
    make_host("ca")
    make_host("cb")
    random_file(remote_dir / "big.bin", 200 * MIB)
    subprocess.run(["chown", "-R", sshd.user, str(remote_dir)], check=True)

    async def body() -> str:
        # A one-frame window slows the stream enough to be caught in the middle.
        async with Client(params(workers.broker_url, SSHCONTROL_TRANSFER_WINDOW_CHUNKS="1")) as client:
            source, dest = await on_two_workers(client)
            arguments = {
                "from_session_id": source,
                "from_path": f"{remote_dir}/big.bin",
                "to_session_id": dest,
                "to_path": f"{remote_dir}/dst",
            }
            running = asyncio.create_task(client.call_tool("ssh_copy", arguments))
            await eventually(partial(partial_temp, remote_dir, "dst", 8 * MIB), 60, "a partial file")
            workers.kill(await asyncio.to_thread(closing_connections(worker_of), source))
            return error_text(await running)

    try:
        message = asyncio.run(body())
    finally:
        workers.ensure()
    assert "stopped" in message, message
    # The destination's worker lives: it removed its temporary file when the stream broke.
    wait_until(lambda: sorted(p.name for p in remote_dir.iterdir()) == ["big.bin"], 40, "no partial file")
    statuses = set(AuditEvent.objects.filter(tool="ssh_copy").values_list("status", flat=True))
    assert statuses == {Status.INTERRUPTED}


def test_a_copy_to_three_hosts_on_the_workers(
    workers: WorkerPool,
    make_host,
    sshd: SshServer,
    remote_dir: Path,
    servers: list[SshServer],  # noqa: F811
) -> None:
    make_host("ca")
    names = ["d1", "d2", "d3"]
    for name, server in zip(names, servers, strict=True):
        register(server, name)
    digest = random_file(remote_dir / "src.bin", 3 * MIB + 1)
    subprocess.run(["chown", "-R", sshd.user, str(remote_dir)], check=True)

    async def body(client: Client) -> dict[str, Any]:
        for name in names:
            await ok(client, "ssh_execute", host=name, command="rm -f fleet-copy.bin")
        return await ok(
            client,
            "ssh_copy_many",
            from_host="ca",
            from_path=f"{remote_dir}/src.bin",
            to_hosts=names,
            to_path="fleet-copy.bin",
        )

    done = run(body, workers.broker_url)
    assert done["summary"]["ok"] == 3, done["results"]
    assert done["sha256"] == digest and {r["sha256"] for r in done["results"]} == {digest}
    for server in servers:
        home = Path(
            subprocess.run(
                ["getent", "passwd", server.user], capture_output=True, text=True, check=True
            ).stdout.split(":")[5]
        )
        assert sha256_of(home / "fleet-copy.bin") == digest
    rows = AuditEvent.objects.filter(batch_id=done["batch_id"])
    assert rows.count() == 4 and set(rows.values_list("file_sha256", flat=True)) == {digest}
