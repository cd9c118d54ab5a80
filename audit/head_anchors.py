"""The chain's head written outside the database, and the check that the chain still holds it.

The hash chain shows that no row between its start and its head was changed, deleted or
inserted. It cannot show that the newest rows were deleted and the head moved back, or that
someone who can write the database rewrote the chain from some row on: both leave a chain
that holds together. A *head anchor* (sequence number, hash, time) written where the
database's writer cannot rewrite it closes that gap: every anchored head must still be in
the chain, at the same sequence number with the same hash.

Anchors go to an append-only file (JSON lines, opened with ``O_APPEND``, owner-only,
fsync'd; ``chattr +a`` makes the kernel refuse any other write to it) and/or to syslog
(which a log host can keep). Only a head the chain verifies up to is anchored.

Not to be confused with ``AuditAnchor``, the database's record of a prune.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from audit import chain
from audit.models import AuditEvent

# Bump if the line format changes; lines of other versions are refused, not guessed at.
LINE_VERSION = 1

DEFAULT_SYSLOG_ADDRESS = "/dev/log"
# LOG_AUTH (4) * 8 + LOG_INFO (6): security messages, which syslog setups usually keep longest.
_SYSLOG_PRIORITY = 4 * 8 + 6
_SYSLOG_TAG = "sshcontrol-audit"

_BATCH = 500


class AnchorError(Exception):
    """An anchor could not be written or read; the message says where and why."""


@dataclass(frozen=True)
class HeadAnchor:
    """The chain's head at one moment: its last row's sequence number and hash."""

    seq: int
    hash: str
    time: datetime

    def line(self) -> str:
        record = {"v": LINE_VERSION, "seq": self.seq, "hash": self.hash, "time": self.time.isoformat()}
        return json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"

    def __str__(self) -> str:
        return f"chain_seq {self.seq} hash {self.hash} at {self.time.isoformat()}"


def head_of(verification: chain.Verification) -> HeadAnchor | None:
    """The head a good verification reached, or None if the chain is broken or has no row yet."""
    if not verification.ok or verification.last_seq < 1:
        return None
    return HeadAnchor(verification.last_seq, verification.last_hash, datetime.now(UTC).replace(microsecond=0))


def append_to_file(path: Path, anchor: HeadAnchor) -> None:
    """Append one line, creating the file owner-only; refuse a file others may write or replace.

    One ``write`` of a short line with ``O_APPEND`` lands whole at the end of the file, even
    with several writers; ``fsync`` makes it survive a crash of the machine.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
    created = False
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        created = True
    except FileExistsError:
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise AnchorError(f"cannot open the anchor file {path}: {exc.strerror}") from None
    except OSError as exc:
        raise AnchorError(f"cannot create the anchor file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise AnchorError(f"the anchor file {path} is not a regular file")
        if created:
            os.fchmod(fd, 0o600)  # whatever the umask
        elif info.st_mode & 0o022:
            raise AnchorError(
                f"the anchor file {path} is writable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                f"run: chmod 600 {path}"
            )
        data = anchor.line().encode("ascii")
        if os.write(fd, data) != len(data):
            raise AnchorError(f"short write to the anchor file {path}")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a new file's directory entry durable too."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def send_to_syslog(anchor: HeadAnchor, address: str = DEFAULT_SYSLOG_ADDRESS) -> None:
    """Send the anchor to the local syslog socket (RFC 3164 framing, facility auth).

    Written directly rather than through ``logging.handlers.SysLogHandler``, which reports
    a failed send on stderr and carries on: a lost anchor must be an error.
    """
    message = f"<{_SYSLOG_PRIORITY}>{_SYSLOG_TAG}[{os.getpid()}]: audit chain head {anchor.line().strip()}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode("ascii"), address)
    except OSError as exc:
        raise AnchorError(f"cannot send the anchor to syslog at {address}: {exc.strerror or exc}") from None


def parse_line(text: str) -> HeadAnchor:
    """One anchor from one line of the file (or the JSON part of a syslog message)."""
    try:
        record = json.loads(text)
        if not isinstance(record, dict) or record.get("v") != LINE_VERSION:
            raise ValueError(f"not a version-{LINE_VERSION} anchor")
        seq, digest, time = record["seq"], record["hash"], datetime.fromisoformat(record["time"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AnchorError(str(exc)) from None
    if not isinstance(seq, int) or seq < 0 or not isinstance(digest, str) or len(digest) != 64:
        raise AnchorError("seq must be a non-negative integer and hash 64 hex digits")
    return HeadAnchor(seq, digest, time)


def read_file(path: Path) -> Iterator[tuple[int, HeadAnchor]]:
    """(line number, anchor) for every line of the file; a malformed line is an error naming it."""
    try:
        handle = path.open(encoding="ascii", errors="replace")
    except OSError as exc:
        raise AnchorError(f"cannot read the anchor file {path}: {exc.strerror}") from None
    with handle:
        for number, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                yield number, parse_line(text)
            except AnchorError as exc:
                raise AnchorError(f"{path} line {number}: {exc}") from None


@dataclass
class AnchorCheck:
    """Which anchored heads the chain still holds."""

    checked: int = 0
    # Anchored before the newest prune: their rows were deleted on purpose and cannot be checked.
    before_start: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(anchors: Iterable[tuple[int, HeadAnchor]]) -> AnchorCheck:
    """Check that every anchored head is in the chain now: same sequence number, same hash."""
    start = chain.chain_start()
    result = AnchorCheck()
    batch: list[tuple[int, HeadAnchor]] = []

    def flush() -> None:
        stored = dict(
            AuditEvent.objects.filter(chain_seq__in={anchor.seq for _, anchor in batch}).values_list(
                "chain_seq", chain.HASH_FIELD
            )
        )
        for number, anchor in batch:
            found = stored.get(anchor.seq)
            if found is None:
                result.problems.append(
                    f"line {number}: the head anchored at {anchor.time.isoformat()} (chain_seq {anchor.seq}) "
                    "is no longer in the chain: that row was deleted (with the rows after it, if the tail "
                    "was cut)"
                )
            elif found != anchor.hash:
                result.problems.append(
                    f"line {number}: chain_seq {anchor.seq} has hash {found[:16]}…, anchored as "
                    f"{anchor.hash[:16]}… at {anchor.time.isoformat()}: the chain was rewritten "
                    "at or before it"
                )
            else:
                result.checked += 1
        batch.clear()

    prune_anchored = False
    for number, anchor in anchors:
        if anchor.seq < start.seq - 1:
            result.before_start += 1
        elif anchor.seq == start.seq - 1:
            # The last row a prune deleted: its hash is kept as the start's prev_hash.
            if anchor.hash == start.prev_hash:
                result.checked += 1
                prune_anchored = True
            else:
                result.problems.append(
                    f"line {number}: chain_seq {anchor.seq} (the last pruned row) was anchored as "
                    f"{anchor.hash[:16]}…, the prune recorded {start.prev_hash[:16]}…"
                )
        else:
            batch.append((number, anchor))
            if len(batch) >= _BATCH:
                flush()
    if batch:
        flush()
    if start.anchor_id is not None and result.before_start and not prune_anchored:
        # Anchored heads were deleted by a prune no anchor records: a database writer can add a
        # prune record to delete any prefix of the chain. audit_prune anchors the last row it
        # deletes (SSHCONTROL_AUDIT_ANCHOR_FILE), so a real prune leaves that line.
        result.problems.append(
            f"the chain starts at chain_seq {start.seq} after a prune the anchors do not record (no "
            f"anchored head at chain_seq {start.seq - 1}, the last row it deleted): {result.before_start} "
            "anchored head(s) were deleted with it, perhaps by a forged prune record"
        )
    return result
