"""An embedded ``ssh_upload_file`` whose connection drops mid-transfer: nothing left on the host.

A 32 MiB file from the transfer directory is cut after 8 MiB have been sent: the held
connection's socket is shut down in both directions, as a network that goes away. The
remote directory must be as it was, with neither the file nor the upload's temporary file
(``.<name>.sshc-*.tmp``, removed after a reconnect), the client told what failed, and the
call's row ``error``. The distributed worker runs the same task code (``tasks.upload``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from audit.models import AuditEvent
from hosts.models import Host
from sshcontrol.localfiles import local_root
from sshlib import transfer
from tests.mcp.conftest import McpHarness
from tests.mcp.test_copy_broken import drop, held_client
from tests.sshd import SshServer

MIB = 1 << 20
SIZE = 32 * MIB
CUT_AFTER = 8 * MIB


@pytest.fixture
def remote_dir(mcp: McpHarness, make_host: Callable[..., Host], sshd: SshServer) -> Iterator[str]:
    """Host h (its session open), an empty directory on it, and a 32 MiB file to send."""
    make_host("h")
    path = f"/tmp/sshc-upbroken-{sshd.user}"
    mcp.ok("ssh_execute", host="h", command=f"rm -rf {path} && mkdir -p {path}")
    (local_root() / "big.bin").write_bytes(os.urandom(SIZE))
    yield path
    mcp.call("ssh_execute", host="h", command=f"rm -rf {path}")


def cut_mid_upload(monkeypatch: pytest.MonkeyPatch, host: str) -> list[int]:
    """Drop ``host``'s connection once 8 MiB have been handed to SFTP; returns [bytes handed]."""
    chunks = transfer._local_chunks
    connection = held_client(host)
    handed = [0]

    def cutting(source: BinaryIO | bytes) -> Iterator[bytes]:
        for chunk in chunks(source):
            if handed[0] >= CUT_AFTER > handed[0] - len(chunk):  # once, just past the mark
                drop(connection)
            handed[0] += len(chunk)
            yield chunk

    monkeypatch.setattr(transfer, "_local_chunks", cutting)
    return handed


def test_an_upload_whose_connection_drops_leaves_nothing_on_the_host(
    mcp: McpHarness, remote_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = f"{remote_dir}/big.bin"
    handed = cut_mid_upload(monkeypatch, "h")
    message = mcp.error("ssh_upload_file", host="h", remote_path=target, local_path="big.bin")
    assert CUT_AFTER <= handed[0] < SIZE, "the upload was not cut mid-transfer"
    assert "lost" in message or "closed" in message or "Socket" in message, message
    # Loopback: the host's /tmp is this machine's.
    assert sorted(p.name for p in Path(remote_dir).iterdir()) == [], (
        "the broken upload left its file or its temporary file on the host"
    )
    row = AuditEvent.objects.get(tool="ssh_upload_file", remote_path=target)
    assert row.status == AuditEvent.Status.ERROR, (row.status, row.error)
    assert row.error and row.file_sha256 == "", row.error
    # The session is usable again (it reconnected to remove the temporary file, or does now).
    monkeypatch.undo()
    mcp.ok("ssh_upload_file", host="h", remote_path=target, content="after\n")
    assert Path(target).read_text() == "after\n"
