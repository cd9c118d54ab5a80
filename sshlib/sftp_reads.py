"""Reading a whole remote file over SFTP with a fixed number of read requests in flight.

Used by downloads instead of paramiko's ``SFTPFile.prefetch``, which has a race: its helper
thread tops the requests up while the reader consumes the answers, and when the reader
empties them first (the helper sleeps 10 ms between checks, longer on a loaded machine) the
file is marked "prefetch done". The reader then falls back to one synchronous request per
block, while the helper keeps sending read requests whose answers are stored and never read:
measured here, a 1 GiB download peaked at 648 MiB after the fallback hit at 49 MiB (the
distributed test's "worker peaks near the file's size on some runs" was this). Here the
reading thread sends its own requests, one new one per answer taken, so the bytes held are
bounded by the requests in flight and nothing runs beside it.

Answers are taken oldest request first; a server may answer out of order (the protocol allows
it) or return fewer bytes than asked (servers cap a read): bytes are still handed out in file
order, the missing rest asked for again, and later requests shrink to what the server gave.
The file is read to its end, as the server reports it (a file that grew since ``stat`` is read
on, one request at a time past the size ``stat`` gave).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import paramiko
from paramiko.sftp import CMD_DATA, CMD_READ, CMD_STATUS, SFTPError, int64


@dataclass(frozen=True)
class _Request:
    number: int
    offset: int
    length: int


class _Answers:
    """Where paramiko's SFTP client files the answers to our requests (its ``_async_response`` hook)."""

    def __init__(self) -> None:
        self.by_number: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, kind: int, message: paramiko.Message, number: int) -> None:
        self.by_number[number] = (kind, message)


class PipelinedReader:
    """The blocks of an open remote file, in order, from ``start`` to its end (stop early at will)."""

    def __init__(
        self, handle: paramiko.SFTPFile, size: int, request_size: int, in_flight: int, start: int = 0
    ) -> None:
        # paramiko's request plumbing is not in its type stubs: used through Any.
        self._sftp: Any = handle.sftp
        self._handle = handle.handle
        self._size = size
        self._request_size = request_size
        self._in_flight = in_flight
        self._pending: deque[_Request] = deque()
        self._answers = _Answers()
        self._early: dict[int, bytes] = {}  # blocks that arrived before a gap in front of them
        self._next = start  # where the next new request starts
        self._done = start  # the offset of the next byte to hand out
        self._end: int | None = None  # the end of the file, once a read met it

    def blocks(self) -> Generator[bytes, None, None]:
        try:
            while True:
                self._top_up()
                if not self._pending:
                    return
                yield from self._take(self._pending.popleft())
        finally:
            self._drain()

    def _top_up(self) -> None:
        # Up to the size stat gave, many at once; past it (the file grew), one at a time.
        while (
            self._end is None
            and len(self._pending) < self._in_flight
            and (self._next < self._size or not self._pending)
        ):
            self._ask(self._next, self._request_size)
            self._next += self._request_size

    def _ask(self, offset: int, length: int) -> None:
        number = self._sftp._async_request(self._answers, CMD_READ, self._handle, int64(offset), length)
        self._pending.append(_Request(number, offset, length))

    def _answer(self, request: _Request) -> tuple[int, paramiko.Message]:
        while request.number not in self._answers.by_number:
            self._sftp._read_response()  # reads one answer, filed by _Answers
        return self._answers.by_number.pop(request.number)

    def _take(self, request: _Request) -> Iterator[bytes]:
        kind, message = self._answer(request)
        if kind == CMD_STATUS:
            try:
                self._sftp._convert_status(message)  # raises the server's error, EOFError at the end
            except EOFError:
                self._end = request.offset if self._end is None else min(self._end, request.offset)
                return
            raise SFTPError("the server answered a read with no data")
        if kind != CMD_DATA:
            raise SFTPError(f"unexpected answer to a read (type {kind})")
        data = message.get_binary()
        if not data:
            self._end = request.offset if self._end is None else min(self._end, request.offset)
            return
        if len(data) < request.length:
            # The server caps its reads: ask for the rest, and no more than it gives from now on.
            self._request_size = min(self._request_size, len(data))
            rest = request.offset + len(data)
            if self._end is None or rest < self._end:
                self._ask(rest, request.length - len(data))
        if request.offset != self._done:
            self._early[request.offset] = data
            return
        yield data
        self._done += len(data)
        while self._done in self._early and (self._end is None or self._done < self._end):
            block = self._early.pop(self._done)
            yield block
            self._done += len(block)

    def _drain(self) -> None:
        """Read the answers still due, so the session's next request does not meet them."""
        self._early.clear()
        # After a failure the connection may be gone: the failure is what the caller must see.
        with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
            while self._pending:
                self._answer(self._pending.popleft())
