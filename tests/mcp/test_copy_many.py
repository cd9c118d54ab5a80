"""ssh_copy_many on the embedded default: one host's file to three others (four real sshd on loopback).

Each destination is its own sshd with its own user: the same relative ``to_path`` names a file
in each user's home directory, a different place on each, as on real hosts.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator

import pytest

from audit.models import AuditEvent
from hosts.models import Grant, Host, McpClient
from tests.mcp.conftest import McpHarness
from tests.mcp.test_copy import listing, server_files, sha256_on
from tests.server_hosts import register
from tests.sshd import SshServer

Status = AuditEvent.Status
MIB = 1 << 20
DESTINATIONS = ["b", "c", "d"]


@pytest.fixture(scope="module")
def servers() -> Iterator[list[SshServer]]:
    """Three more OpenSSH servers, each with its own user; the key files made once and shared."""
    made = [SshServer.create().start()]
    try:
        for _ in range(2):
            clone = SshServer.create()
            for part in ("hostkeys", "clientkeys"):
                shutil.copytree(made[0].root / part, clone.root / part)
            made.append(clone.start())
        yield made
    finally:
        for server in made:
            server.remove()


@pytest.fixture
def hosts(
    mcp: McpHarness, make_host: Callable[..., Host], sshd: SshServer, servers: list[SshServer]
) -> dict[str, str]:
    """Host 'a' (the source, with an empty directory) on the suite's sshd; b, c and d (tagged
    'dest') on the three others, their home directories emptied of what earlier tests copied."""
    make_host("a")
    for name, server in zip(DESTINATIONS, servers, strict=True):
        host = register(server, name)
        host.tags = ["dest"]
        host.save()
        mcp.ok("ssh_execute", host=name, command="rm -f copied.* never.* nope.* .copied.* .never.*")
    source_dir = f"/tmp/sshc-many-{sshd.user}"
    mcp.ok("ssh_execute", host="a", command=f"rm -rf {source_dir} && mkdir -p {source_dir}")
    return {"a": source_dir}


def test_it_copies_to_three_hosts_each_checked_against_the_source(
    mcp: McpHarness, hosts: dict[str, str]
) -> None:
    source = f"{hosts['a']}/src.bin"
    mcp.ok("ssh_execute", host="a", command=f"head -c {3 * MIB + 7} /dev/urandom > {source}")
    before = server_files()
    done = mcp.ok(
        "ssh_copy_many", from_host="a", from_path=source, to_hosts=DESTINATIONS, to_path="copied.bin"
    )

    digest = sha256_on(mcp, "a", source)
    assert done["summary"]["ok"] == 3 and done["summary"]["total"] == 3, done["results"]
    assert done["sha256"] == digest and done["bytes"] == 3 * MIB + 7 and not done["source_changed"]
    assert [r["host"] for r in done["results"]] == DESTINATIONS
    for name in DESTINATIONS:
        assert sha256_on(mcp, name, "copied.bin") == digest
        assert not [f for f in listing(mcp, name, ".") if "copied" in f and f != "copied.bin"]  # no temp file
    assert server_files() == before  # nothing passed through the server's disk

    rows = AuditEvent.objects.filter(batch_id=done["batch_id"])
    by_end = {(row.details["copy_end"], row.host_name): row for row in rows}
    assert set(by_end) == {("source", "a")} | {("destination", n) for n in DESTINATIONS}
    src = by_end[("source", "a")]
    assert src.pk == done["from_audit_id"] and src.tool == "ssh_copy_many" and src.remote_path == source
    for row in rows:
        assert row.status == Status.OK and row.file_sha256 == digest and row.file_size == 3 * MIB + 7
    for name in DESTINATIONS:
        assert by_end[("destination", name)].details["copy_audit_id"] == src.pk

    # By tag, into an existing file: kept unless overwrite.
    again = mcp.ok("ssh_copy_many", from_host="a", from_path=source, to_tag="dest", to_path="copied.bin")
    assert again["summary"]["error"] == 3
    assert all("exists; pass overwrite=true" in r["error"] for r in again["results"])
    forced = mcp.ok(
        "ssh_copy_many", from_host="a", from_path=source, to_tag="dest", to_path="copied.bin", overwrite=True
    )
    assert forced["summary"]["ok"] == 3 and {r["sha256"] for r in forced["results"]} == {digest}


# A grant without file writes, and a read-only grant whose write flag is set: neither writes.
NO_WRITES = [{"can_write_files": False}, {"can_write_files": True, "read_only": True}]


@pytest.mark.parametrize("no_writes", NO_WRITES, ids=["no-write-flag", "read-only"])
def test_a_destination_the_caller_may_not_write_is_refused_the_others_written(
    as_client: Callable[..., McpHarness], mcp: McpHarness, hosts: dict[str, str], no_writes: dict[str, bool]
) -> None:
    a, b, c, d = (Host.objects.get(name=n) for n in ("a", *DESTINATIONS))
    source = f"{hosts['a']}/src.txt"
    mcp.ok("ssh_upload_file", host="a", remote_path=source, content="fleet\n")
    agent = as_client("agent", hosts=[a, b, c], can_write_files=True)
    read_only = Grant.objects.create(client=McpClient.objects.get(name="agent"), **no_writes)
    read_only.hosts.set([d])

    done = agent.ok(
        "ssh_copy_many", from_host="a", from_path=source, to_hosts=DESTINATIONS, to_path="copied.txt"
    )
    status = {r["host"]: r["status"] for r in done["results"]}
    assert status == {"b": "ok", "c": "ok", "d": "refused"}
    refused = next(r for r in done["results"] if r["host"] == "d")
    assert "may not write files on host 'd'" in refused["error"]
    digest = hashlib.sha256(b"fleet\n").hexdigest()
    assert done["sha256"] == digest
    assert sha256_on(mcp, "b", "copied.txt") == sha256_on(mcp, "c", "copied.txt") == digest
    assert "copied.txt" not in listing(mcp, "d", ".")
    rows = AuditEvent.objects.filter(batch_id=done["batch_id"], client="agent")
    assert {(row.host_name, row.status) for row in rows} == {
        ("a", Status.OK),
        ("b", Status.OK),
        ("c", Status.OK),
        ("d", Status.DENIED),
    }


def test_a_source_the_caller_may_not_read_copies_nothing(
    as_client: Callable[..., McpHarness], mcp: McpHarness, hosts: dict[str, str]
) -> None:
    a, *dests = (Host.objects.get(name=n) for n in ("a", *DESTINATIONS))
    agent = as_client("agent", hosts=dests, can_write_files=True)
    no_reads = Grant.objects.create(client=McpClient.objects.get(name="agent"), can_read_files=False)
    no_reads.hosts.set([a])
    message = agent.error(
        "ssh_copy_many", from_host="a", from_path="/etc/hostname", to_hosts=DESTINATIONS, to_path="nope.txt"
    )
    assert "may not read files on host 'a'" in message
    rows = AuditEvent.objects.filter(client="agent", tool="ssh_copy_many")
    assert [(row.host_name, row.status) for row in rows] == [("a", Status.DENIED)]  # no destination row
    for name in DESTINATIONS:
        assert "nope.txt" not in listing(mcp, name, ".")


def test_a_missing_source_fails_every_destination_and_leaves_no_file(
    mcp: McpHarness, hosts: dict[str, str]
) -> None:
    missing = f"{hosts['a']}/missing.bin"
    done = mcp.ok("ssh_copy_many", from_host="a", from_path=missing, to_tag="dest", to_path="never.bin")
    assert done["summary"]["error"] == 3 and done["sha256"] == "" and done["bytes"] is None
    assert all(missing in r["error"] and "No such file" in r["error"] for r in done["results"])
    for name in DESTINATIONS:
        assert not [f for f in listing(mcp, name, ".") if "never" in f]  # nor a temporary file
    source = AuditEvent.objects.get(batch_id=done["batch_id"], details__copy_end="source")
    assert source.status == Status.ERROR and source.details["destinations_written"] == 0


def test_it_checks_its_arguments(mcp: McpHarness, hosts: dict[str, str]) -> None:
    assert "exactly one of to_hosts or to_tag" in mcp.error(
        "ssh_copy_many", from_host="a", from_path="/x", to_path="y"
    )
    assert "to_hosts is empty" in mcp.error(
        "ssh_copy_many", from_host="a", from_path="/x", to_hosts=[], to_path="y"
    )
    assert "exactly one of from_session_id or from_host" in mcp.error(
        "ssh_copy_many", from_path="/x", to_tag="dest", to_path="y"
    )
