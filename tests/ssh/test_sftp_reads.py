"""The pipelined SFTP reader (sshlib/sftp_reads.py) with servers unlike OpenSSH.

OpenSSH answers every read in order and in full; the protocol allows neither promise, so a
fake SFTP client stands in for such a server here (the one seam faked: request plumbing).
The reader against the real sshd is covered by tests/ssh/test_transfer_fast_path.py.
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any

import paramiko
import pytest
from paramiko.sftp import CMD_DATA, CMD_STATUS, SFTP_EOF, SFTP_PERMISSION_DENIED

from sshlib.sftp_reads import PipelinedReader


class FakeServer:
    """Answers reads of ``data``: at most ``cap`` bytes each, shuffled within each batch of answers."""

    def __init__(self, data: bytes, cap: int, shuffle: bool, fail_at: int | None = None) -> None:
        self.data, self.cap, self.shuffle, self.fail_at = data, cap, shuffle, fail_at
        self.queue: list[tuple[Any, int, int, paramiko.Message]] = []
        self.number = 0
        self.largest_in_flight = 0
        self.rng = random.Random(7)

    # -- what PipelinedReader calls on paramiko's SFTPClient --

    def _async_request(self, fileobj: Any, kind: int, handle: bytes, offset: int, length: int) -> int:
        self.number += 1
        message = paramiko.Message()
        if self.fail_at is not None and offset >= self.fail_at:
            message.add_int(SFTP_PERMISSION_DENIED)
            message.add_string("denied")
            answer = CMD_STATUS
        elif offset >= len(self.data):
            message.add_int(SFTP_EOF)
            message.add_string("end of file")
            answer = CMD_STATUS
        else:
            message.add_string(self.data[offset : offset + min(length, self.cap)])
            answer = CMD_DATA
        message.rewind()
        self.queue.append((fileobj, self.number, answer, message))
        self.largest_in_flight = max(self.largest_in_flight, len(self.queue))
        return self.number

    def _read_response(self) -> None:
        index = self.rng.randrange(len(self.queue)) if self.shuffle else 0
        fileobj, number, answer, message = self.queue.pop(index)
        fileobj._async_response(answer, message, number)

    def _convert_status(self, message: paramiko.Message) -> None:
        code = message.get_int()
        if code == SFTP_EOF:
            raise EOFError("end of file")
        raise PermissionError(13, message.get_text())


class FakeHandle:
    def __init__(self, server: FakeServer) -> None:
        self.sftp = server
        self.handle = b"h"


def read_all(server: FakeServer, size: int, request: int = 4096, in_flight: int = 8) -> bytes:
    reader = PipelinedReader(FakeHandle(server), size, request, in_flight)  # type: ignore[arg-type]
    return b"".join(reader.blocks())


@pytest.mark.parametrize("cap", [4096, 1000, 1])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 50_000])
def test_it_returns_the_file_in_order_whatever_the_server_caps_or_reorders(
    size: int, cap: int, shuffle: bool
) -> None:
    data = os.urandom(size)
    server = FakeServer(data, cap, shuffle)
    assert hashlib.sha256(read_all(server, size)).digest() == hashlib.sha256(data).digest()
    assert server.queue == []  # every answer taken: the session is clean for its next request
    assert server.largest_in_flight <= 8 + 1  # the requests in flight, plus one refill


def test_it_reads_on_past_the_size_stat_gave_when_the_file_grew() -> None:
    data = os.urandom(30_000)
    assert read_all(FakeServer(data, 4096, shuffle=True), size=10_000) == data


def test_it_stops_at_the_end_when_the_file_shrank() -> None:
    data = os.urandom(10_000)
    assert read_all(FakeServer(data, 4096, shuffle=True), size=30_000) == data


def test_a_server_error_is_raised_and_the_answers_due_are_still_taken() -> None:
    server = FakeServer(os.urandom(50_000), 4096, shuffle=True, fail_at=20_000)
    with pytest.raises(PermissionError):
        read_all(server, 50_000)
    assert server.queue == []


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_range_starts_at_its_offset_and_stopping_early_takes_the_answers_due(shuffle: bool) -> None:
    data = os.urandom(50_000)
    server = FakeServer(data, 1000, shuffle)
    reader = PipelinedReader(FakeHandle(server), 30_000, 4096, 8, start=12_345)  # type: ignore[arg-type]
    got = bytearray()
    blocks = reader.blocks()
    for block in blocks:
        got += block
        if len(got) >= 10_000:
            break
    blocks.close()
    assert bytes(got[:10_000]) == data[12_345:22_345]
    assert server.queue == []
