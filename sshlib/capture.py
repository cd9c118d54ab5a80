"""Capturing a command's output: bounded (head and tail kept), counted in full.

stdout also carries the process-group line the wire command prints first (see
``sshlib.execute.remote_command``); ``StdoutCapture`` takes it out before counting.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Literal, Protocol

Stream = Literal["stdout", "stderr"]


class OutputSink(Protocol):
    """Told every byte of a command's output as it arrives, before any cap (a store that keeps it)."""

    def write(self, stream: Stream, data: bytes) -> None: ...


# The first line the remote shell prints: its PID, which is also its process group.
PGID_MARKER = b"__sshcontrol_pgid="
_PGID_LINE = re.compile(rb"__sshcontrol_pgid=(\d+)\n")
_PGID_SEARCH_LIMIT = 1 << 16


class Capture:
    """Keeps the first and last halves of at most ``limit`` bytes of a stream, counts all of it."""

    def __init__(self, limit: int, sink: OutputSink | None = None, stream: Stream = "stderr") -> None:
        self.sink = sink
        self.stream: Stream = stream
        self.head_limit = max(0, limit) // 2
        self.tail_limit = max(0, limit) - self.head_limit
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_len = 0
        self.total = 0
        # Counted over everything, kept or not, so a reader told of a cut knows how many lines exist.
        self.newlines = 0
        self.ends_with_newline = True

    @property
    def lines(self) -> int:
        """Lines seen, a last line without its newline included (``wc -l`` counts only newlines)."""
        return self.newlines + (0 if self.ends_with_newline or not self.total else 1)

    def add(self, data: bytes) -> None:
        if not data:
            return
        if self.sink is not None:
            self.sink.write(self.stream, data)
        self.total += len(data)
        self.newlines += data.count(b"\n")
        self.ends_with_newline = data.endswith(b"\n")
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if not data or self.tail_limit <= 0:
            return
        self.tail.append(data)
        self.tail_len += len(data)
        # Drop whole chunks that are no longer needed; the last partial one is cut in text().
        while self.tail and self.tail_len - len(self.tail[0]) >= self.tail_limit:
            self.tail_len -= len(self.tail.popleft())

    @property
    def truncated(self) -> bool:
        return self.total > self.head_limit + self.tail_limit

    def text(self) -> str:
        tail = b"".join(self.tail)
        if len(tail) > self.tail_limit:
            tail = tail[len(tail) - self.tail_limit :]
        head = self.head.decode("utf-8", errors="replace")
        if not self.truncated:
            return head + tail.decode("utf-8", errors="replace") if tail else head
        dropped = self.total - len(self.head) - len(tail)
        # sshcontrol/mcp/budget.py finds this line to cut around it: change both together.
        return f"{head}\n[... {dropped} bytes truncated ...]\n{tail.decode('utf-8', errors='replace')}"


class StdoutCapture:
    """stdout with the leading process-group line taken out before it is counted."""

    def __init__(self, limit: int, sink: OutputSink | None = None) -> None:
        self.capture = Capture(limit, sink, "stdout")
        self.pending: bytearray | None = bytearray()
        self.pgid: int | None = None

    def add(self, data: bytes) -> None:
        if self.pending is None:
            self.capture.add(data)
            return
        self.pending += data
        match = _PGID_LINE.search(self.pending)
        if match is not None:
            self.pgid = int(match.group(1))
            # Anything before the marker was printed by the user's shell start-up files.
            rest = bytes(self.pending[: match.start()] + self.pending[match.end() :])
        elif len(self.pending) > _PGID_SEARCH_LIMIT:
            rest = bytes(self.pending)  # not a shell that runs our prefix: give up, keep everything
        else:
            return
        self.pending = None
        if rest:
            self.capture.add(rest)

    def finish(self) -> None:
        if self.pending:
            data, self.pending = bytes(self.pending), None
            self.capture.add(data)
        self.pending = None
