"""The fast SFTP path (sshlib/transfer.py, sshlib/ciphers.py) keeps integrity and bounds, against a real sshd.

Sizes around the write request (one SSH packet: 32640 bytes here), paramiko's read block
(32768) and the local chunk (1 MiB); a connection that drops mid-transfer; the cipher
negotiated; memory of a process moving a file far larger than any buffer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sshlib import ciphers
from sshlib.connect import Connection, open_connection
from sshlib.errors import ConnectionLost, RemoteFileError, SshError
from sshlib.transfer import download, upload
from tests.polling import wait_until
from tests.ssh.conftest import password_spec, sh
from tests.sshd import SshServer

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20
SIZES = [0, 1, 32639, 32640, 32641, 32767, 32768, 32769, MIB - 1, MIB, MIB + 1, 3 * MIB + 17]


class FileSink:
    """A download destination as sshcontrol's: a temporary file renamed into place on success."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.shown = str(path)

    def writer(self) -> Any:
        import contextlib

        @contextlib.contextmanager
        def opened() -> Iterator[io.BufferedWriter]:
            temp = self.path.with_name(f".{self.path.name}.tmp")
            try:
                with temp.open("wb") as out:
                    yield out
                temp.rename(self.path)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise

        return opened()


@pytest.mark.parametrize("size", SIZES)
def test_it_keeps_every_byte_both_ways(
    connection: Connection, remote_dir: str, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()
    local = tmp_path / "source.bin"
    local.write_bytes(data)
    with local.open("rb") as source:
        sent = upload(connection.client, f"{remote_dir}/file.bin", source)
    assert (sent.size, sent.sha256) == (size, digest)
    assert sh(connection, f"sha256sum {remote_dir}/file.bin").split()[0] == digest
    assert sh(connection, f"ls -A {remote_dir}") == "file.bin\n"  # no temporary file left

    received = download(connection.client, f"{remote_dir}/file.bin", FileSink(tmp_path / "back.bin"))
    assert (received.size, received.sha256) == (size, digest)
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.bin", "source.bin"]

    inline = download(connection.client, f"{remote_dir}/file.bin", None, max_inline_bytes=4 * MIB)
    assert inline.content == data and inline.sha256 == digest


def test_it_negotiates_aes_gcm_with_openssh(connection: Connection) -> None:
    transport = connection.client.get_transport()
    assert transport is not None
    assert transport.local_cipher == "aes128-gcm@openssh.com"
    assert transport.remote_cipher == "aes128-gcm@openssh.com"  # type: ignore[attr-defined]  # not in the stubs


def test_the_cipher_order_only_moves_the_fast_ciphers_first() -> None:
    offered = ("aes128-ctr", "aes256-ctr", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
    assert ciphers.preferred(offered) == (
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-ctr",
        "aes256-ctr",
    )
    assert ciphers.preferred(("aes128-ctr",)) == ("aes128-ctr",)


def _drop(connection: Connection) -> None:
    """The network goes away under the connection (both directions, at once)."""
    transport = connection.client.get_transport()
    assert transport is not None
    transport.sock.shutdown(socket.SHUT_RDWR)


class DroppingSource(io.RawIOBase):
    """A local file that cuts the connection once ``after`` bytes were read from it."""

    def __init__(self, connection: Connection, size: int, after: int) -> None:
        self.connection: Connection | None = connection
        self.left, self.after, self.sent = size, after, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.sent >= self.after and self.connection is not None:
            _drop(self.connection)
            self.connection = None  # once: the source itself never fails
        n = min(len(buffer), self.left)
        buffer[:n] = os.urandom(n)
        self.left -= n
        self.sent += n
        return n


def test_an_upload_cut_mid_transfer_never_appears_at_the_destination(
    sshd: SshServer, connection: Connection, remote_dir: str
) -> None:
    doomed = open_connection(password_spec(sshd))
    try:
        source = io.BufferedReader(DroppingSource(doomed, 64 * MIB, after=8 * MIB), MIB)
        with pytest.raises(SshError) as raised:
            upload(doomed.client, f"{remote_dir}/big.bin", source)
        assert isinstance(raised.value, ConnectionLost | RemoteFileError)
    finally:
        doomed.close()
    # The destination name never held a partial file (the data went to a hidden temporary name,
    # which a dead connection cannot remove: it stays, never under the name asked for).
    listing = sh(connection, f"ls -A {remote_dir}").split()
    assert "big.bin" not in listing
    assert all(name.startswith(".big.bin.sshc-") and name.endswith(".tmp") for name in listing)


class DroppingSink(FileSink):
    def __init__(self, path: Path, connection: Connection, after: int) -> None:
        super().__init__(path)
        self.connection, self.after = connection, after

    def writer(self) -> Any:
        inner = super().writer()
        sink = self

        class Cutting:
            def __enter__(self) -> Any:
                self.out = inner.__enter__()
                self.written = 0
                return self

            def write(self, data: bytes) -> int:
                if self.written < sink.after <= self.written + len(data):
                    _drop(sink.connection)  # once: the local file itself never fails
                self.written += len(data)
                return int(self.out.write(data))

            def __exit__(self, *exc: Any) -> Any:
                return inner.__exit__(*exc)

        return Cutting()


def test_a_download_cut_mid_transfer_leaves_no_file(
    sshd: SshServer, connection: Connection, remote_dir: str, tmp_path: Path
) -> None:
    sh(connection, f"head -c {64 * MIB} /dev/urandom > {remote_dir}/big.bin")
    doomed = open_connection(password_spec(sshd))
    try:
        with pytest.raises(SshError):
            download(
                doomed.client, f"{remote_dir}/big.bin", DroppingSink(tmp_path / "big.bin", doomed, 8 * MIB)
            )
    finally:
        doomed.close()
    assert list(tmp_path.iterdir()) == []


class ThreadWatchingSink(FileSink):
    """Notes the threads alive while the download writes (paramiko's prefetch ran one beside it)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.seen: set[str] = set()

    def writer(self) -> Any:
        inner = super().writer()
        sink = self

        class Watching:
            def __enter__(self) -> Any:
                self.out = inner.__enter__()
                return self

            def write(self, data: bytes) -> int:
                sink.seen.update(t.name for t in threading.enumerate())
                return int(self.out.write(data))

            def __exit__(self, *exc: Any) -> Any:
                return inner.__exit__(*exc)

        return Watching()


def test_a_download_reads_in_the_calling_thread_with_large_requests(
    connection: Connection, remote_dir: str, tmp_path: Path
) -> None:
    # paramiko's prefetch thread raced its reader into one synchronous request per block while
    # it kept asking for the rest, whose answers piled up unread: up to the whole file in memory.
    sh(connection, f"head -c {8 * MIB + 5} /dev/urandom > {remote_dir}/f.bin")
    before = {t.name for t in threading.enumerate()}
    sink = ThreadWatchingSink(tmp_path / "f.bin")
    done = download(connection.client, f"{remote_dir}/f.bin", sink)
    assert done.size == 8 * MIB + 5
    assert done.sha256 == sh(connection, f"sha256sum {remote_dir}/f.bin").split()[0]
    assert sink.seen <= before  # no thread started for the download


MEMORY_PROBE = """
import json, os, sys
from pathlib import Path
from sshlib.connect import ConnectSpec, open_connection
from sshlib.transfer import download, upload

def kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

args = json.loads(sys.argv[1])
spec = ConnectSpec(**{k: tuple(map(tuple, v)) if k == "trusted_keys" else v for k, v in args["spec"].items()})
conn = open_connection(spec)

class Sink:
    shown = args["down"]
    def writer(self):
        return open(self.shown, "wb")

report = {}
for direction in ("up", "down"):
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current RSS
    before = kib("VmRSS")
    if direction == "up":
        with open(args["source"], "rb") as source:
            done = upload(conn.client, args["remote"], source)
    else:
        done = download(conn.client, args["remote"], Sink())
    report[direction] = {"before": before, "peak": kib("VmHWM"), "size": done.size}
conn.close()
print(json.dumps(report))
"""


def test_memory_stays_flat_for_a_file_far_larger_than_any_buffer(
    sshd: SshServer, remote_dir: str, tmp_path: Path
) -> None:
    size = 256 * MIB
    source = tmp_path / "big.bin"
    with source.open("wb") as out:
        out.truncate(size)  # sparse: reads as zeros, costs neither disk nor time to make
    spec = password_spec(sshd)
    arguments = {
        "spec": {k: getattr(spec, k) for k in ("address", "port", "username", "password", "trusted_keys")},
        "source": str(source),
        "remote": f"{remote_dir}/big.bin",
        "down": str(tmp_path / "back.bin"),
    }
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, json.dumps(arguments)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    report = json.loads(done.stdout)
    for direction in ("up", "down"):
        grown_mib = (report[direction]["peak"] - report[direction]["before"]) / 1024
        assert report[direction]["size"] == size
        # ~9 MiB for a process's first transfer (the window, packet copies, the allocator's
        # arenas; docs/benchmarks.md), flat after; the file is 256 MiB, so holding it would show.
        assert grown_mib < 24, (direction, report)


def test_the_receive_buffer_hands_out_bytes_in_order_across_packets() -> None:
    # The channel's buffer as paramiko's pipe uses it: peek up to n, then drop them.
    from sshlib.transfer import _Packets

    packets = [os.urandom(n) for n in (5, 1, 300, 7, 2048)]
    buffer = _Packets()
    for packet in packets:
        buffer.append(packet)
    buffer.append(b"")
    whole = b"".join(packets)
    assert len(buffer) == len(whole)
    taken = bytearray()
    for n in (3, 2, 4, 299, 1, 10):
        got = buffer.peek(n)
        assert got == whole[len(taken) : len(taken) + n]
        del buffer[:n]
        taken += got
    assert buffer.peek(len(whole) - len(taken) - 3) == whole[len(taken) : -3]
    rest = buffer.peek()
    del buffer[:]
    assert bytes(taken) + rest == whole and len(buffer) == 0 and buffer.peek() == b""
    buffer.append(packets[0])
    assert buffer.peek(100) is packets[0]  # a whole packet is handed out as it came, not copied


def test_a_channel_read_waits_for_the_whole_message_not_its_first_packet() -> None:
    # OpenSSH sends a 255 KiB answer as 32 KiB packets: the SFTP thread gets it in one piece,
    # woken once, not once per packet with paramiko's `out +=` gathering the pieces.
    from sshlib.transfer import _ReceiveBuffer

    pipe = _ReceiveBuffer()
    message = os.urandom(8 * 32768)
    woken = []
    real_notify = pipe._cv.notify_all

    def notify_all() -> None:
        woken.append(len(pipe._buffer))  # under the pipe's lock (len(pipe) would take it again)
        real_notify()

    pipe._cv.notify_all = notify_all  # type: ignore[method-assign]  # a spy on the wake-ups
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(pipe.read(len(message))))
    reader.start()
    wait_until(lambda: pipe._wanted == len(message), message="the reader waits")
    for start in range(0, len(message), 32768):
        pipe.feed(message[start : start + 32768])
    reader.join(10)
    assert got == [message]
    assert woken == [len(message)]  # the reader was woken once, when all of it was there


def test_a_channel_read_with_a_timeout_returns_what_came_or_times_out() -> None:
    from paramiko.buffered_pipe import PipeTimeout

    from sshlib.transfer import _ReceiveBuffer

    pipe = _ReceiveBuffer()
    with pytest.raises(PipeTimeout):
        pipe.read(100, timeout=0.01)
    pipe.feed(b"abc")
    assert pipe.read(100, timeout=0.01) == b"abc"  # part of what was asked, once the time is up
    pipe.feed(b"de")
    pipe.close()
    assert pipe.read(100) == b"de" and pipe.read(100) == b""  # a closed pipe: what is left, then EOF


def test_the_window_is_given_back_per_half_window_not_per_answer(
    connection: Connection, remote_dir: str, tmp_path: Path
) -> None:
    # Each WINDOW_ADJUST is a packet both ends encrypt and handle: paramiko sent one per 205 KiB
    # read (a tenth of the window), one per SFTP answer besides its request.
    from paramiko.common import cMSG_CHANNEL_WINDOW_ADJUST

    from sshlib.transfer import _WINDOW

    size = 16 * MIB
    sh(connection, f"head -c {size} /dev/urandom > {remote_dir}/f.bin")
    # paramiko's sending method, not in its type stubs: the transport is used as Any.
    transport: Any = connection.client.get_transport()
    adjusts = []
    real_send = transport._send_user_message

    def send(data: Any) -> None:
        if data.asbytes()[:1] == cMSG_CHANNEL_WINDOW_ADJUST:
            adjusts.append(data)
        real_send(data)

    transport._send_user_message = send  # a spy on what is sent
    try:
        done = download(connection.client, f"{remote_dir}/f.bin", FileSink(tmp_path / "f.bin"))
    finally:
        del transport._send_user_message
    assert done.size == size
    assert 0 < len(adjusts) <= size // (_WINDOW // 2) + 1
