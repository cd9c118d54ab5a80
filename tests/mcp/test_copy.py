"""ssh_copy end to end on the embedded default: two hosts (two real sshd instances on loopback).

The bytes go from one SSH session to the other inside the server process: the transfer
directory stays empty, both ends hash the same, both rows are audited, both grants checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from audit.models import AuditEvent
from hosts.models import Grant, Host, McpClient
from sshcontrol.localfiles import local_root
from tests.mcp.conftest import McpHarness
from tests.server_hosts import register
from tests.sshd import SshServer

Status = AuditEvent.Status
MIB = 1 << 20
Dirs = dict[str, str]  # host name -> an empty directory on it


@pytest.fixture
def hosts(mcp: McpHarness, make_host: Callable[..., Host], sshd: SshServer, other_sshd: SshServer) -> Dirs:
    """Host 'a' on the suite's sshd, host 'b' on the other one, an empty directory on each."""
    make_host("a")
    register(other_sshd, "b")
    dirs = {"a": f"/tmp/sshc-copy-{sshd.user}", "b": f"/tmp/sshc-copy-{other_sshd.user}"}
    for host, path in dirs.items():
        mcp.ok("ssh_execute", host=host, command=f"rm -rf {path} && mkdir -p {path}")
    return dirs


def server_files() -> set[tuple[str, int, int]]:
    """Every file below the server's transfer directory (earlier tests may have left some)."""
    root = local_root()
    if not root.exists():
        return set()
    return {(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in root.rglob("*") if f.is_file()}


def sha256_on(mcp: McpHarness, host: str, path: str) -> str:
    return str(mcp.ok("ssh_execute", host=host, command=f"sha256sum {path}")["stdout"].split()[0])


def listing(mcp: McpHarness, host: str, path: str) -> list[str]:
    return sorted(mcp.ok("ssh_execute", host=host, command=f"ls -A {path}")["stdout"].split())


@pytest.mark.parametrize("size", [0, 1, MIB + 1, 5 * MIB + 3])
def test_it_copies_between_hosts_streamed_hashed_and_audited_on_both_ends(
    mcp: McpHarness, hosts: Dirs, size: int
) -> None:
    source, target = f"{hosts['a']}/src.bin", f"{hosts['b']}/dst.bin"
    mcp.ok("ssh_execute", host="a", command=f"head -c {size} /dev/urandom > {source}")
    before = server_files()
    done = mcp.ok("ssh_copy", from_host="a", from_path=source, to_host="b", to_path=target)

    digest = sha256_on(mcp, "a", source)
    assert done["bytes"] == size and done["sha256"] == digest == sha256_on(mcp, "b", target)
    assert listing(mcp, "b", hosts["b"]) == ["dst.bin"]  # no temporary file left
    assert server_files() == before  # nothing passed through the server's disk

    rows = {row.details["copy_end"]: row for row in AuditEvent.objects.filter(tool="ssh_copy")}
    assert set(rows) == {"source", "destination"}
    src_row, dst_row = rows["source"], rows["destination"]
    assert (src_row.pk, dst_row.pk) == (done["from_audit_id"], done["to_audit_id"])
    assert (src_row.host_name, dst_row.host_name) == ("a", "b")
    assert (src_row.remote_path, dst_row.remote_path) == (source, target)
    for row in (src_row, dst_row):
        assert row.status == Status.OK and row.file_size == size and row.file_sha256 == digest
    assert src_row.details["copy_audit_id"] == dst_row.pk and dst_row.details["copy_audit_id"] == src_row.pk
    assert src_row.details["copy_to_host"] == "b" and dst_row.details["copy_from_path"] == source


def test_it_copies_between_sessions_and_within_one_host(mcp: McpHarness, hosts: Dirs) -> None:
    a = mcp.ok("ssh_connect", host="a")["session_id"]
    b = mcp.ok("ssh_connect", host="b")["session_id"]
    source = f"{hosts['a']}/src.txt"
    mcp.ok("ssh_upload_file", session_id=a, remote_path=source, content="hello\n")
    there = mcp.ok(
        "ssh_copy", from_session_id=a, from_path=source, to_session_id=b, to_path=f"{hosts['b']}/x"
    )
    assert (there["from_session_id"], there["to_session_id"]) == (a, b)
    here = mcp.ok("ssh_copy", from_session_id=a, from_path=source, to_session_id=a, to_path=f"{hosts['a']}/y")
    assert here["sha256"] == there["sha256"] == hashlib.sha256(b"hello\n").hexdigest()
    assert listing(mcp, "a", hosts["a"]) == ["src.txt", "y"]


def test_it_keeps_an_existing_destination_unless_asked(mcp: McpHarness, hosts: Dirs) -> None:
    source, target = f"{hosts['a']}/new.txt", f"{hosts['b']}/old.txt"
    mcp.ok("ssh_upload_file", host="a", remote_path=source, content="new\n")
    mcp.ok("ssh_upload_file", host="b", remote_path=target, content="old\n", file_mode="0750")
    message = mcp.error("ssh_copy", from_host="a", from_path=source, to_host="b", to_path=target)
    assert "exists; pass overwrite=true" in message
    assert mcp.ok("ssh_execute", host="b", command=f"cat {target}")["stdout"] == "old\n"
    statuses = set(AuditEvent.objects.filter(tool="ssh_copy").values_list("status", flat=True))
    assert statuses == {Status.ERROR}  # both ends recorded the failure

    mcp.ok("ssh_copy", from_host="a", from_path=source, to_host="b", to_path=target, overwrite=True)
    assert mcp.ok("ssh_execute", host="b", command=f"cat {target}; stat -c %a {target}")["stdout"] == (
        "new\n750\n"  # the replaced file's mode is kept, as ssh_upload_file keeps it
    )
    assert listing(mcp, "b", hosts["b"]) == ["old.txt"]


def test_a_missing_source_fails_cleanly_and_writes_nothing(mcp: McpHarness, hosts: Dirs) -> None:
    message = mcp.error(
        "ssh_copy", from_host="a", from_path=f"{hosts['a']}/nope", to_host="b", to_path=f"{hosts['b']}/x"
    )
    assert f"{hosts['a']}/nope" in message and "No such file" in message
    assert listing(mcp, "b", hosts["b"]) == []


def test_it_needs_exactly_one_of_session_and_host_per_end(mcp: McpHarness, hosts: Dirs) -> None:
    assert "exactly one of from_session_id or from_host" in mcp.error(
        "ssh_copy", from_path="/x", to_host="b", to_path="/y"
    )
    assert "exactly one of to_session_id or to_host" in mcp.error(
        "ssh_copy", from_host="a", from_path="/x", to_host="b", to_session_id="s", to_path="/y"
    )


def agent_writing_on_a(as_client: Callable[..., McpHarness], **grant_on_b: bool) -> tuple[McpHarness, Grant]:
    """Client "agent": reads and writes files on a, and holds a second grant (``grant_on_b``) on b."""
    agent = as_client("agent", hosts=[Host.objects.get(name="a")], can_write_files=True)
    on_b = Grant.objects.create(client=McpClient.objects.get(name="agent"), **grant_on_b)
    on_b.hosts.set([Host.objects.get(name="b")])
    return agent, on_b


def test_a_read_only_grant_refuses_copies_and_uploads_though_another_grant_writes(
    as_client: Callable[..., McpHarness], mcp: McpHarness, hosts: Dirs
) -> None:
    # The client writes files (on a), so the write tools are offered; on b its grant is
    # read-only with the write flag set: only read_only stands between it and b's files.
    source = f"{hosts['a']}/src.txt"
    mcp.ok("ssh_upload_file", host="a", remote_path=source, content="s\n")
    agent, _ = agent_writing_on_a(as_client, can_write_files=True, read_only=True)
    agent.ok("ssh_upload_file", host="a", remote_path=f"{hosts['a']}/mine", content="ok\n")  # offered
    refusals = [
        agent.error("ssh_copy", from_host="a", from_path=source, to_host="b", to_path=f"{hosts['b']}/c"),
        agent.error("ssh_upload_file", host="b", remote_path=f"{hosts['b']}/u", content="x"),
    ]
    assert all("may not write files on host 'b'" in message for message in refusals), refusals
    assert listing(mcp, "b", hosts["b"]) == []
    assert agent.ok("ssh_download_file", host="b", remote_path="/etc/hostname")  # reads stay allowed
    denied = AuditEvent.objects.filter(client="agent", status=Status.DENIED)
    assert {row.tool for row in denied} == {"ssh_copy", "ssh_upload_file"}


def test_it_checks_read_on_the_source_and_write_on_the_destination(
    as_client: Callable[..., McpHarness], mcp: McpHarness, hosts: Dirs
) -> None:
    source = f"{hosts['a']}/secret.txt"
    mcp.ok("ssh_upload_file", host="a", remote_path=source, content="s\n")
    # Reads and writes on a; on b it may only read: the copy to b is refused, both ends audited.
    agent, extra = agent_writing_on_a(as_client, can_write_files=False)
    message = agent.error("ssh_copy", from_host="a", from_path=source, to_host="b", to_path=f"{hosts['b']}/s")
    assert "may not write files on host 'b'" in message
    rows = AuditEvent.objects.filter(tool="ssh_copy", client="agent")
    assert sorted(rows.values_list("status", flat=True)) == [Status.DENIED, Status.DENIED]
    assert listing(mcp, "b", hosts["b"]) == []
    # The other way round: b may not be read by a client whose grant there has no file reads.
    extra.can_read_files = False
    extra.save()
    message = agent.error("ssh_copy", from_host="b", from_path="/etc/hostname", to_host="a", to_path=source)
    assert "may not read files on host 'b'" in message
