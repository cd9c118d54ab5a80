"""Host-to-host copies (sshlib/remote_copy.py) keep every byte, fail cleanly, hold little memory.

Both ends are the suite's real sshd, over two connections (as two hosts are) or one (a copy on
one host). The source is read with sshlib/sftp_reads.py's reader, not paramiko's prefetch,
whose thread could leave up to the whole file's answers stored and never read.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sshlib import remote_copy
from sshlib.connect import Connection, open_connection
from sshlib.errors import ConnectionLost, RemoteFileError, SshError
from tests.ssh.conftest import password_spec, sh
from tests.sshd import SshServer

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
# Around OpenSSH's read request (255 KiB), paramiko's (32 KiB) and the 4 MiB in flight.
SIZES = [0, 1, 261119, 261120, 261121, 4 * MIB - 1, 4 * MIB + 1, 9 * MIB + 17]


def sha256_of(connection: Connection, path: str) -> str:
    return sh(connection, f"sha256sum {path}").split()[0]


@pytest.fixture
def other(sshd: SshServer) -> Iterator[Connection]:
    """A second connection: the other host of a copy between two."""
    conn = open_connection(password_spec(sshd))
    yield conn
    conn.close()


@pytest.fixture
def remote_dir(connection: Connection) -> Iterator[str]:
    path = f"/dev/shm/sshc-copy-{uuid.uuid4().hex}"  # tmpfs: the large copies cost no disk
    sh(connection, f"mkdir -p {path}")
    yield path
    sh(connection, f"rm -rf {path}")


def _drop(connection: Connection) -> None:
    """The network goes away under the connection (both directions, at once)."""
    transport = connection.client.get_transport()
    assert transport is not None
    transport.sock.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("size", SIZES)
def test_it_copies_every_byte_between_two_connections(
    connection: Connection, other: Connection, remote_dir: str, size: int
) -> None:
    sh(connection, f"head -c {size} /dev/urandom > {remote_dir}/src.bin")
    done = remote_copy.copy(connection.client, f"{remote_dir}/src.bin", other.client, f"{remote_dir}/dst.bin")
    digest = sha256_of(connection, f"{remote_dir}/src.bin")
    assert (done.size, done.sha256) == (size, digest)
    assert sha256_of(other, f"{remote_dir}/dst.bin") == digest


def test_it_copies_on_one_connection_and_keeps_it_usable(connection: Connection, remote_dir: str) -> None:
    sh(connection, f"head -c {5 * MIB + 3} /dev/urandom > {remote_dir}/src.bin")
    for name in ("a.bin", "b.bin"):  # the second copy meets no answer left from the first
        done = remote_copy.copy(
            connection.client, f"{remote_dir}/src.bin", connection.client, f"{remote_dir}/{name}"
        )
        assert done.sha256 == sha256_of(connection, f"{remote_dir}/{name}")


def test_it_reads_the_source_in_the_calling_thread(
    connection: Connection, other: Connection, remote_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sh(connection, f"head -c {8 * MIB + 5} /dev/urandom > {remote_dir}/src.bin")
    before = {t.name for t in threading.enumerate()}
    seen: set[str] = set()
    read = remote_copy._SourceBlocks.read

    def watching(self: remote_copy._SourceBlocks, size: int = -1) -> bytes:
        seen.update(t.name for t in threading.enumerate())
        return read(self, size)

    monkeypatch.setattr(remote_copy._SourceBlocks, "read", watching)
    done = remote_copy.copy(connection.client, f"{remote_dir}/src.bin", other.client, f"{remote_dir}/dst.bin")
    assert done.size == 8 * MIB + 5
    assert seen and seen <= before  # no prefetch thread beside the reader


def test_a_destination_lost_mid_copy_leaves_its_name_alone_and_the_source_usable(
    sshd: SshServer, connection: Connection, remote_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sh(connection, f"head -c {32 * MIB} /dev/urandom > {remote_dir}/src.bin")
    doomed = open_connection(password_spec(sshd))
    read = remote_copy._SourceBlocks.read
    taken = 0

    def cutting(self: remote_copy._SourceBlocks, size: int = -1) -> bytes:
        nonlocal taken
        block = read(self, size)
        taken += len(block)
        if taken >= 8 * MIB:
            _drop(doomed)
        return block

    monkeypatch.setattr(remote_copy._SourceBlocks, "read", cutting)
    try:
        with pytest.raises(SshError):
            remote_copy.copy(
                connection.client, f"{remote_dir}/src.bin", doomed.client, f"{remote_dir}/dst.bin"
            )
    finally:
        doomed.close()
    monkeypatch.undo()
    # The destination name untouched (its temporary file stays: no connection is left to remove it).
    assert "dst.bin" not in sh(connection, f"ls -A {remote_dir}").split()
    # The reads in flight were taken before the source file was closed: its session works on.
    again = remote_copy.copy(
        connection.client, f"{remote_dir}/src.bin", connection.client, f"{remote_dir}/dst.bin"
    )
    assert again.sha256 == sha256_of(connection, f"{remote_dir}/src.bin")


def test_a_source_lost_mid_copy_is_named_and_leaves_no_file(
    sshd: SshServer, connection: Connection, remote_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sh(connection, f"head -c {32 * MIB} /dev/urandom > {remote_dir}/src.bin")
    doomed = open_connection(password_spec(sshd))
    read = remote_copy._SourceBlocks.read
    taken = 0

    def cutting(self: remote_copy._SourceBlocks, size: int = -1) -> bytes:
        nonlocal taken
        if taken >= 8 * MIB:
            _drop(doomed)
        block = read(self, size)
        taken += len(block)
        return block

    monkeypatch.setattr(remote_copy._SourceBlocks, "read", cutting)
    try:
        with pytest.raises(ConnectionLost, match="source"):
            remote_copy.copy(
                doomed.client, f"{remote_dir}/src.bin", connection.client, f"{remote_dir}/dst.bin"
            )
    finally:
        doomed.close()
    assert sh(connection, f"ls -A {remote_dir}").split() == ["src.bin"]


def test_a_missing_source_is_an_error_and_writes_nothing(
    connection: Connection, other: Connection, remote_dir: str
) -> None:
    with pytest.raises(RemoteFileError, match=r"nope\.bin"):
        remote_copy.copy(connection.client, f"{remote_dir}/nope.bin", other.client, f"{remote_dir}/dst.bin")
    assert sh(connection, f"ls -A {remote_dir}") == ""


MEMORY_PROBE = """
import json, sys
from pathlib import Path
from sshlib.connect import ConnectSpec, open_connection
from sshlib.remote_copy import copy

def kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

args = json.loads(sys.argv[1])
spec = ConnectSpec(**{k: tuple(map(tuple, v)) if k == "trusted_keys" else v for k, v in args["spec"].items()})
source, dest = open_connection(spec), open_connection(spec)
Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
before = kib("VmRSS")
done = copy(source.client, args["source"], dest.client, args["dest"])
report = {"before": before, "peak": kib("VmHWM"), "size": done.size}
source.close()
dest.close()
print(json.dumps(report))
"""


def test_memory_stays_flat_for_a_copy_far_larger_than_any_buffer(
    sshd: SshServer, connection: Connection, remote_dir: str
) -> None:
    size = 128 * MIB
    sh(connection, f"truncate -s {size} {remote_dir}/big.bin")  # reads as zeros, made at once
    spec = password_spec(sshd)
    arguments = {
        "spec": {k: getattr(spec, k) for k in ("address", "port", "username", "password", "trusted_keys")},
        "source": f"{remote_dir}/big.bin",
        "dest": f"{remote_dir}/copy.bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, json.dumps(arguments)],
        cwd=REPO,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    report = json.loads(done.stdout)
    grown_mib = (report["peak"] - report["before"]) / 1024
    assert report["size"] == size
    # Two channel windows (2 MiB each), 4 MiB of reads in flight, packet copies and the
    # allocator's arenas; the file is 128 MiB, so holding it would show.
    assert grown_mib < 24, report
