"""Command output kept on disk where the session is held, readable by offset while it runs and after.

A model gets a budget of a command's output in the tool result; the rest stays here, under
an unguessable output id, for ``ssh_read_output`` and ``ssh_job_status`` to page through.
Who may read an id is decided above (the job or command row binds it to its client); this
module only keeps bytes.

Each stream is one owner-only file, ``<data dir>/outputs/<output id>/<stream>``: a header
(bytes seen, flags, the sizes of the kept regions), the first half of
``SSHCONTROL_KEEP_OUTPUT_BYTES`` as written, then the last half as a ring. Beyond the
limit the middle is counted, not kept; a reader asking for it is moved on to the first byte
still kept and told how many it skipped. The writer stores the data before the count, so a
reader in another process (the MCP server reading a job runner's output) never reads past
what was written. Before it touches the ring the writer announces the end of the write in
progress, so a reader that copied ring bytes checks that announcement afterwards: bytes that
may have been overwritten meanwhile are dropped and reported as skipped, never returned.

Small outputs never touch the disk: nothing is written until a stream passes
``spill_after`` bytes (the tool result holds all of a small output anyway).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from sshlib.capture import Stream

STREAMS: tuple[Stream, Stream] = ("stdout", "stderr")
# total bytes written, flags, head size, tail (ring) size, end of the write in progress
_HEADER = struct.Struct("<QQQQQ")
_COMPLETE = 1
# Ids are path components: only what new_output_id and the job ids produce is accepted.
# A tool result carries this much of a stream (the default output budget); past it, the
# output is worth paging and goes to disk.
SPILL_AFTER = 16 * 1024
_ID = re.compile(r"^[a-z]{2,8}_[A-Za-z0-9_-]{16,64}$")


class OutputNotFound(Exception):
    """Nothing is kept under this id in this process's store."""


def new_output_id() -> str:
    return "out_" + secrets.token_urlsafe(24)


def root() -> Path:
    return Path(settings.DATA_DIR) / "outputs"


def _directory(output_id: str) -> Path:
    if not _ID.match(output_id):
        raise OutputNotFound(f"no output {output_id!r}")
    return root() / output_id


class _StreamFile:
    """One stream's file, written by one thread."""

    def __init__(self, path: Path, keep_bytes: int) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.head = keep_bytes // 2
        self.tail = keep_bytes - self.head
        self.total = 0
        self._header(0, 0)

    def _header(self, flags: int, writing: int) -> None:
        os.pwrite(self.fd, _HEADER.pack(self.total, flags, self.head, self.tail, writing), 0)

    def append(self, data: bytes) -> None:
        self._header(0, self.total + len(data))  # announced before any ring byte is overwritten
        view = memoryview(data)
        position = self.total
        if position < self.head:
            n = min(len(view), self.head - position)
            os.pwrite(self.fd, view[:n], _HEADER.size + position)
            view, position = view[n:], position + n
        if view and self.tail:
            if len(view) > self.tail:  # only the last ring's worth can still be kept
                position += len(view) - self.tail
                view = view[len(view) - self.tail :]
            while view:
                slot = (position - self.head) % self.tail
                n = min(len(view), self.tail - slot)
                os.pwrite(self.fd, view[:n], _HEADER.size + self.head + slot)
                view, position = view[n:], position + n
        self.total += len(data)
        self._header(0, self.total)  # after the data: a reader never sees a count ahead of the bytes

    def close(self) -> None:
        self._header(_COMPLETE, self.total)
        os.close(self.fd)


class KeptOutput:
    """Keeps one command's output (an ``sshlib`` ``OutputSink``): in memory while small, then on disk."""

    def __init__(
        self, output_id: str, *, keep_bytes: int | None = None, spill_after: int = 16 * 1024
    ) -> None:
        self.output_id = output_id
        self.directory = _directory(output_id)
        self.keep_bytes = int(settings.KEEP_OUTPUT_BYTES if keep_bytes is None else keep_bytes)
        self.spill_after = spill_after
        self._buffers: dict[Stream, bytearray] = {stream: bytearray() for stream in STREAMS}
        self._files: dict[Stream, _StreamFile] = {}
        self._totals: dict[Stream, int] = dict.fromkeys(STREAMS, 0)
        self._lock = threading.Lock()
        self._closed = False
        if spill_after <= 0:
            self._spill()

    @property
    def spilled(self) -> bool:
        return bool(self._files)

    def totals(self) -> tuple[int, int]:
        return self._totals["stdout"], self._totals["stderr"]

    def spill(self) -> None:
        """Put what is held in memory on disk now (its command just became a job: others read it)."""
        with self._lock:
            if not self._files and not self._closed:
                self._spill()

    def _spill(self) -> None:
        self.directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.mkdir(mode=0o700)
        for stream in STREAMS:
            self._files[stream] = _StreamFile(self.directory / stream, self.keep_bytes)
            if self._buffers[stream]:
                self._files[stream].append(bytes(self._buffers[stream]))
        self._buffers.clear()

    def write(self, stream: Stream, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            if self._closed:
                return
            self._totals[stream] += len(data)
            if self._files:
                self._files[stream].append(data)
                return
            self._buffers[stream] += data
            if len(self._buffers[stream]) > self.spill_after:
                self._spill()

    def close(self) -> None:
        """The command ended: readers are told the output is complete."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for file in self._files.values():
                file.close()
            self._buffers.clear()


@dataclass(frozen=True)
class Page:
    data: bytes
    offset: int  # where data starts: past the asked offset when that part was not kept
    next_offset: int  # ask for this next
    total: int  # bytes of the stream seen so far
    complete: bool  # the writer finished and next_offset == total
    skipped: int  # bytes between the asked offset and ``offset`` that were not kept


def _read_header(fd: int) -> tuple[int, int, int, int, int]:
    raw = os.pread(fd, _HEADER.size, 0)
    if len(raw) < _HEADER.size:
        return 0, 0, 0, 0, 0  # created, header not written yet
    total, flags, head, tail, writing = _HEADER.unpack(raw)
    return total, flags, head, tail, writing


def _read_ring(fd: int, head: int, tail: int, start: int, end: int) -> bytes:
    parts = []
    position = start
    while position < end:
        slot = (position - head) % tail
        n = min(end - position, tail - slot)
        parts.append(os.pread(fd, n, _HEADER.size + head + slot))
        position += n
    return b"".join(parts)


def read(output_id: str, stream: Stream, offset: int, max_bytes: int) -> Page:
    """Up to ``max_bytes`` of ``stream`` from ``offset`` (past the end: an empty page)."""
    if stream not in STREAMS:
        raise ValueError(f"stream must be stdout or stderr, not {stream!r}")
    if offset < 0 or max_bytes < 0:
        raise ValueError("offset and max_bytes must not be negative")
    try:
        fd = os.open(_directory(output_id) / stream, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OutputNotFound(f"no output {output_id!r}") from None
    try:
        total, flags, head, tail, _writing = _read_header(fd)
        asked = min(offset, total)
        start = asked
        if start < head:
            data = os.pread(fd, min(total, head, start + max_bytes) - start, _HEADER.size + start)
        else:
            start = max(start, head, total - tail)
            data = _read_ring(fd, head, tail, start, min(total, start + max_bytes))
            # The writer may have gone round the ring over the first bytes while we copied them.
            writing = _read_header(fd)[4]
            first_kept = max(head, writing - tail)
            if start < first_kept:
                cut = min(len(data), first_kept - start)
                data, start = data[cut:], start + cut
    finally:
        os.close(fd)
    next_offset = start + len(data)
    return Page(
        data=data,
        offset=start,
        next_offset=next_offset,
        total=total,
        complete=bool(flags & _COMPLETE) and next_offset >= total,
        skipped=start - asked,
    )


def remove(output_id: str) -> None:
    shutil.rmtree(_directory(output_id), ignore_errors=True)


def prune(older_than_seconds: float, now: float | None = None) -> int:
    """Remove outputs last written before the cut-off (finished, or abandoned by a dead writer)."""
    cutoff = (time.time() if now is None else now) - older_than_seconds
    removed = 0
    try:
        entries = list(os.scandir(root()))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not _ID.match(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            newest = max(
                (os.stat(Path(entry.path) / stream).st_mtime for stream in STREAMS),
                default=entry.stat(follow_symlinks=False).st_mtime,
            )
        except FileNotFoundError:
            newest = entry.stat(follow_symlinks=False).st_mtime
        if newest < cutoff:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed
