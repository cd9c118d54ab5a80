"""An embedded ``ssh_copy`` broken mid-stream: no file at the destination, both ends audited ``error``.

Two hosts on two real sshd instances; the copy (32 MiB) is cut after 8 MiB have moved: the
source's connection dropped, the destination's connection dropped, or the destination's
disk full (a 2 MiB tmpfs). The destination directory must be as it was, with neither the file
nor the copy's temporary file, and the client must be told what failed.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from audit.models import AuditEvent
from hosts.models import Host
from sshlib import remote_copy
from sshlib.sessions import registry
from tests.mcp.conftest import McpHarness
from tests.server_hosts import register
from tests.sshd import SshServer

Status = AuditEvent.Status
MIB = 1 << 20
SIZE = 32 * MIB
CUT_AFTER = 8 * MIB


@pytest.fixture
def dirs(
    mcp: McpHarness, make_host: Callable[..., Host], sshd: SshServer, other_sshd: SshServer
) -> Iterator[dict[str, str]]:
    """Host a (the source, with a 32 MiB file) and host b, an empty directory on each."""
    make_host("a")
    register(other_sshd, "b")
    made = {"a": f"/tmp/sshc-broken-{sshd.user}", "b": f"/tmp/sshc-broken-{other_sshd.user}"}
    for host, path in made.items():
        mcp.ok("ssh_execute", host=host, command=f"rm -rf {path} && mkdir -p {path}")
    mcp.ok("ssh_execute", host="a", command=f"head -c {SIZE} /dev/urandom > {made['a']}/src.bin")
    yield made
    for host, path in made.items():
        mcp.call("ssh_execute", host=host, command=f"rm -rf {path}")


def drop(client: paramiko.SSHClient | paramiko.Transport) -> None:
    """The network goes away under a connection (both directions at once)."""
    transport = client.get_transport() if isinstance(client, paramiko.SSHClient) else client
    assert transport is not None
    transport.sock.shutdown(socket.SHUT_RDWR)


def held_client(host: str) -> paramiko.SSHClient:
    [session] = [s for s in registry.all() if s.host_name == host]
    return session.connection.client


def cut_mid_copy(
    monkeypatch: pytest.MonkeyPatch, cut: Callable[[remote_copy._SourceBlocks], None]
) -> list[int]:
    """Call ``cut`` once, when 8 MiB of the source have been read; returns [bytes read] to check it ran."""
    read = remote_copy._SourceBlocks.read
    taken = [0]

    def cutting(self: remote_copy._SourceBlocks, size: int = -1) -> bytes:
        if taken[0] >= CUT_AFTER > taken[0] - MIB:  # once, just past the mark
            cut(self)
            taken[0] += MIB
        block = read(self, size)
        taken[0] += len(block)
        return block

    monkeypatch.setattr(remote_copy._SourceBlocks, "read", cutting)
    return taken


def copy_refused(mcp: McpHarness, dirs: dict[str, str]) -> str:
    """Copy a's 32 MiB file into b's directory; the copy must fail: its one-line message."""
    return mcp.error(
        "ssh_copy",
        from_host="a",
        from_path=f"{dirs['a']}/src.bin",
        to_host="b",
        to_path=f"{dirs['b']}/dst.bin",
    )


def destination_listing(path: str) -> list[str]:
    return sorted(p.name for p in Path(path).iterdir())  # loopback: the hosts' /tmp is this machine's


def assert_failed_cleanly(message: str, dirs: dict[str, str]) -> None:
    assert "Traceback" not in message
    assert destination_listing(dirs["b"]) == [], "the broken copy left a file at the destination"
    rows = {row.details["copy_end"]: row for row in AuditEvent.objects.filter(tool="ssh_copy")}
    assert set(rows) == {"source", "destination"}
    for end, row in rows.items():
        assert row.status == Status.ERROR, (end, row.status, row.error)
        assert row.error and row.file_sha256 == "", (end, row.error)
    assert (Path(dirs["a"]) / "src.bin").stat().st_size == SIZE  # the source is untouched


def test_a_source_connection_lost_mid_copy_leaves_nothing_at_the_destination(
    mcp: McpHarness, dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = cut_mid_copy(monkeypatch, lambda blocks: drop(blocks.channel.get_transport()))
    message = copy_refused(mcp, dirs)
    assert CUT_AFTER <= taken[0] < SIZE, "the copy was not cut mid-stream"
    assert "source" in message and "lost" in message, message
    assert_failed_cleanly(message, dirs)


def test_a_destination_connection_lost_mid_copy_leaves_nothing_at_the_destination(
    mcp: McpHarness, dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    destination = held_client("b")
    taken = cut_mid_copy(monkeypatch, lambda _blocks: drop(destination))
    message = copy_refused(mcp, dirs)
    assert CUT_AFTER <= taken[0] < SIZE, "the copy was not cut mid-stream"
    assert_failed_cleanly(message, dirs)


@pytest.fixture
def full_disk(dirs: dict[str, str]) -> Iterator[str]:
    """A 2 MiB tmpfs mounted on host b's directory: the copy's writes fail with ENOSPC mid-stream."""
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=1777", "tmpfs", dirs["b"]],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield dirs["b"]
    subprocess.run(["umount", dirs["b"]], check=True)


def test_a_destination_disk_full_mid_copy_leaves_nothing_at_the_destination(
    mcp: McpHarness, dirs: dict[str, str], full_disk: str, monkeypatch: Any
) -> None:
    message = copy_refused(mcp, dirs)  # into the full disk: it is mounted on b's directory
    assert "No space left" in message or "Failure" in message, message
    assert_failed_cleanly(message, dirs)
