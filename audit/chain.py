"""The audit log's hash chain: how a row is hashed, and how the chain is verified.

Rows are opened before a call acts and finished after it, in any order, so the chain
is built over *finished* rows in completion order. Finishing a row (``audit.writer``)
locks the single ``ChainHead`` row, gives the event the next ``chain_seq`` and the head's
hash as its ``prev_hash``, stores ``chain_hash = SHA-256(canonical form)`` and moves the
head, all in the transaction that finishes it.

The canonical form is JSON with sorted keys and no spaces, ASCII only, keyed by attribute
name: times in ISO 8601 UTC, UUIDs as strings, ``details`` as its JSON value. Null columns
are left out, so a nullable column added later does not change the hash of rows written
before it; setting or clearing any value still changes the hash.

Which columns are hashed depends on the row's ``chain_version`` (``FORMATS``):

- **2** (every row chained since migration 0004): the columns in ``V2_FIELDS``, every
  stored column but ``chain_hash`` and the ``host`` foreign key. The foreign key is a live
  relation (the database sets it NULL when the host is deleted); the host the call ran on
  is copied into the row (``host_ref``, ``host_name``, ``host_address``), so deleting or
  renaming hosts, clients, users or credentials never changes hashed content.
- **1** (rows chained before 0004): the formula they were hashed with, every column that
  existed then (``V1_FIELDS``), with the host id taken from ``host_ref``, which migration
  0004 copied from the foreign key (or, for a host already deleted, recovered: the one id
  that reproduces the stored hash). These rows are never re-hashed: a new hash over old
  rows would vouch for content nobody checked when it was written.

A row's version is itself hashed (version 2) and may never go down along the chain, and a
version-1 row must leave the columns its formula does not cover empty, so nobody can
move a row to a formula that ignores a column they changed.

What this proves: a row changed, deleted or re-ordered after it was written breaks the
chain at that row. It does not stop someone who can write the database from rewriting
the whole chain from some row on; comparing the head with a copy kept elsewhere (an
export, a log line) catches that.

``audit_prune`` deletes a prefix of the chain and records an ``AuditAnchor``: the sequence
number of the first row kept and the hash that row's ``prev_hash`` must be. Verification
starts at the newest anchor.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from audit.models import AuditAnchor, AuditEvent, ChainHead

# The prev_hash of the first row ever chained.
GENESIS = "0" * 64

HEAD_ID = 1

HASH_FIELD = "chain_hash"
VERSION_FIELD = "chain_version"

# Every stored column, by attribute name (host_id, not host).
STORED_FIELDS: tuple[str, ...] = tuple(field.attname for field in AuditEvent._meta.concrete_fields)

# Columns no format hashes: the hash itself, and the live link to the host.
UNHASHED_FIELDS = (HASH_FIELD, "host_id")

# Frozen: the columns of a row when migration 0004 ran (all but chain_hash). Never edit.
V1_FIELDS: tuple[str, ...] = (
    "id", "request_id", "started_at", "finished_at", "duration_ms", "status", "actor", "client",
    "transport", "process", "host_id", "host_name", "host_address", "session_id", "tool", "command",
    "working_directory", "exit_status", "signal", "stdout", "stderr", "stdout_bytes", "stderr_bytes",
    "stdout_truncated", "stderr_truncated", "remote_path", "local_path", "file_size", "file_sha256",
    "reconnected", "error", "details", "chain_seq", "prev_hash",
)  # fmt: skip

# Frozen like V1_FIELDS: a column added later is covered only by a new format, or, if it is
# nullable, by adding it here (NULL columns are left out, so old rows keep their hash).
V2_FIELDS: tuple[str, ...] = (
    "id", "request_id", "started_at", "finished_at", "duration_ms", "status", "actor", "client",
    "oauth_issuer", "oauth_subject",  # nullable (OAuth callers only), added with audit 0006
    "transport", "process", "host_ref", "host_name", "host_address", "session_id", "tool", "command",
    "working_directory", "exit_status", "signal", "stdout", "stderr", "stdout_bytes", "stderr_bytes",
    "stdout_truncated", "stderr_truncated", "stdin", "stdin_bytes", "stdin_sha256", "stdin_truncated",
    "remote_path", "local_path", "file_size", "file_sha256", "reconnected", "error", "details",
    "chain_seq", "prev_hash", "chain_version",
    "batch_id",  # nullable (ssh_execute_many rows only), added with audit 0006_event_batch_id
)  # fmt: skip

# The hash formats (chain_version values) this code verifies; new rows get the last one
# (the model's default).
FORMATS = (1, 2)

# What every hashed column of any format needs to be read for verification.
HASHED_FIELDS: tuple[str, ...] = tuple(name for name in STORED_FIELDS if name not in UNHASHED_FIELDS)

# Columns a version-1 row must leave at their default: its formula does not cover them.
_V1_EMPTY: dict[str, Any] = {
    field.attname: field.get_default()
    for field in AuditEvent._meta.concrete_fields
    if field.attname not in (*V1_FIELDS, *UNHASHED_FIELDS, "host_ref", VERSION_FIELD)
}

_CHUNK_SIZE = 500


def _plain(value: object) -> str:
    # Called by json only for what it cannot encode itself: no per-value cost for the rest.
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date | uuid.UUID):
        return value.isoformat() if isinstance(value, date) else str(value)
    raise TypeError(f"cannot hash a {type(value).__name__} audit value")


# Built once: json.dumps with options builds a new encoder on every call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_plain)


def canonical(content: Mapping[str, Any]) -> bytes:
    """The bytes hashed for some values: sorted JSON without the NULL ones (see the module doc)."""
    content = {name: value for name, value in content.items() if value is not None and name != HASH_FIELD}
    return _ENCODER.encode(content).encode("ascii")


class UnknownFormatError(ValueError):
    """A row names a hash format this code does not know."""


def hashed_content(row: Mapping[str, Any]) -> dict[str, Any]:
    """The values a row's hash covers, by its ``chain_version`` (see the module doc)."""
    version = row[VERSION_FIELD]
    if version == 2:
        return {name: row[name] for name in V2_FIELDS}
    if version == 1:
        content = {name: row[name] for name in V1_FIELDS}
        content["host_id"] = row["host_ref"]  # the id as it was hashed, kept after the host goes
        return content
    raise UnknownFormatError(f"unknown chain_version {version!r}")


def row_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a row's canonical form; ``row`` must carry every field in HASHED_FIELDS."""
    return hashlib.sha256(canonical(hashed_content(row))).hexdigest()


def _format_problem(row: Mapping[str, Any], previous_version: int) -> str:
    """Why a row's format or its unhashed columns cannot be right ("" when they can)."""
    version = row[VERSION_FIELD]
    if version not in FORMATS:
        return f"unknown chain_version {version!r}"
    if version < previous_version:
        return f"chain_version {version} after a row of version {previous_version}: formats never go back"
    if version == 1:
        for name, empty in _V1_EMPTY.items():
            if row[name] != empty:
                return f"{name} is set on a version-1 row, whose hash does not cover it"
    host_id = row["host_id"]
    if host_id is not None and host_id != row["host_ref"]:
        return f"host_id {host_id} is not the host the call ran on (host_ref {row['host_ref']})"
    return ""


@dataclass(frozen=True)
class Start:
    """Where the chain starts: the first sequence number and the prev_hash that row must carry."""

    seq: int
    prev_hash: str
    anchor_id: int | None = None


def chain_start() -> Start:
    """The newest anchor (after a prune), or sequence 1 after the all-zero hash."""
    anchor = AuditAnchor.objects.order_by("-id").values_list("id", "first_seq", "prev_hash").first()
    if anchor is None:
        return Start(1, GENESIS)
    anchor_id, first_seq, prev_hash = anchor
    return Start(first_seq, prev_hash, anchor_id)


@dataclass(frozen=True)
class Break:
    """The first broken link: the row it was found at and which check failed."""

    event_id: int | None
    seq: int | None
    check: str  # hash, format, link, sequence, missing, head, unchained, start
    detail: str

    def __str__(self) -> str:
        where = f"row id {self.event_id}" if self.event_id is not None else "the end of the chain"
        seq = f" (chain_seq {self.seq})" if self.seq is not None else ""
        return f"{where}{seq}: {self.check} check failed: {self.detail}"


@dataclass(frozen=True)
class Verification:
    """The result of walking the chain: how far it holds, and the first break if any."""

    start: Start
    checked: int
    last_seq: int
    last_hash: str
    last_id: int | None
    broken: Break | None
    # The format of the last row checked: the next may not be older.
    last_version: int = 1

    @property
    def ok(self) -> bool:
        return self.broken is None


def _rows(first_seq: int, last_seq: int) -> Iterator[dict[str, Any]]:
    rows: QuerySet[AuditEvent, dict[str, Any]] = (
        AuditEvent.objects.filter(chain_seq__gte=first_seq, chain_seq__lte=last_seq)
        .order_by("chain_seq")
        .values(*STORED_FIELDS)
    )
    return rows.iterator(chunk_size=_CHUNK_SIZE)


def _gap(
    expected_seq: int, expected_prev: str, found: Mapping[str, Any] | None, last_id: int | None
) -> Break:
    """Explain a missing sequence number: a row whose chain_seq was changed, or rows deleted.

    The row that belongs here is the one whose prev_hash is the last good hash; if it still
    exists somewhere else in the table, its chain_seq was changed.
    """
    moved = (
        AuditEvent.objects.filter(prev_hash=expected_prev)
        .order_by("id")
        .values_list("id", "chain_seq")
        .first()
    )
    if moved is not None:
        moved_id, moved_seq = moved
        return Break(moved_id, moved_seq, "sequence", f"chain_seq is {moved_seq}, expected {expected_seq}")
    if found is not None:
        return Break(
            found["id"],
            found["chain_seq"],
            "missing",
            f"expected chain_seq {expected_seq}; rows {expected_seq}..{found['chain_seq'] - 1} are missing",
        )
    return Break(last_id, None, "missing", f"the rows from chain_seq {expected_seq} on are missing")


def _walk(start: Start, resume: Verification | None, head_seq: int) -> Verification:
    if resume is not None:
        seq, prev, checked, last_id = resume.last_seq + 1, resume.last_hash, resume.checked, resume.last_id
        version = resume.last_version
    else:
        seq, prev, checked, last_id, version = start.seq, start.prev_hash, 0, None, 1

    def result(broken: Break | None) -> Verification:
        return Verification(start, checked, seq - 1, prev, last_id, broken, version)

    for row in _rows(seq, head_seq):
        if row["chain_seq"] != seq:
            return result(_gap(seq, prev, row, last_id))
        if row["prev_hash"] != prev:
            return result(
                Break(
                    row["id"],
                    seq,
                    "link",
                    f"prev_hash {row['prev_hash'][:16]}… is not the previous row's hash {prev[:16]}…",
                )
            )
        problem = _format_problem(row, version)
        if problem:
            return result(Break(row["id"], seq, "format", problem))
        if row_hash(row) != row[HASH_FIELD]:
            return result(
                Break(row["id"], seq, "hash", "the row's content does not match its chain_hash (changed)")
            )
        prev, seq, checked, last_id = row[HASH_FIELD], seq + 1, checked + 1, row["id"]
        version = row[VERSION_FIELD]
    if seq <= head_seq:
        return result(_gap(seq, prev, None, last_id))
    return result(None)


def verify(resume: Verification | None = None) -> Verification:
    """Walk the chain from its start (or on from ``resume``, an earlier good result) to the head.

    The head is read first and the walk stops at its sequence number, so rows finished
    while walking are left for the next run rather than mistaken for a broken tail.
    """
    for _attempt in range(2):
        start = chain_start()
        head = ChainHead.objects.filter(pk=HEAD_ID).values_list("seq", "hash").first()
        if resume is not None and not _still_ends_at(resume, start):
            resume = None
        if head is None:
            # Walk whatever is chained: rows on a chain without a head are themselves a break.
            last: int | None = (
                AuditEvent.objects.filter(chain_seq__isnull=False)
                .order_by("-chain_seq")
                .values_list("chain_seq", flat=True)
                .first()
            )
            head_seq = last if last is not None else start.seq - 1
            head_hash = start.prev_hash
        else:
            head_seq, head_hash = head
        verification = _walk(start, resume, head_seq)
        if verification.ok:
            verification = _check_ends(verification, head is not None, head_seq, head_hash)
        if verification.ok or chain_start() == start:
            return verification
        # A prune moved the start while walking: the rows it deleted are not a break.
        resume = None
    return verification


def _still_ends_at(resume: Verification, start: Start) -> bool:
    """Whether an earlier good walk can be continued: same start, and its last row unchanged."""
    if resume.start != start or not resume.ok:
        return False
    if not resume.checked:
        return True
    last = AuditEvent.objects.filter(chain_seq=resume.last_seq).values_list("id", HASH_FIELD).first()
    return last == (resume.last_id, resume.last_hash)


def _past_the_head(head_seq: int) -> tuple[int, int] | None:
    """(id, chain_seq) of a row numbered past the head, which no finished row can be.

    Rows finished since the head was first read are past it legitimately, so the last
    row is found first and the head read again after: a row finished by then has moved
    the head (in the same transaction) at least to its own number.
    """
    last = (
        AuditEvent.objects.filter(chain_seq__gt=head_seq)
        .order_by("-chain_seq")
        .values_list("id", "chain_seq")
        .first()
    )
    if last is None or last[1] is None:
        return None
    head_now = ChainHead.objects.filter(pk=HEAD_ID).values_list("seq", flat=True).first()
    return (last[0], last[1]) if head_now is None or last[1] > head_now else None


def _before_the_start(start: Start) -> tuple[int, int] | None:
    """(id, chain_seq) of a row numbered before the chain's start, which no prune leaves."""
    row = (
        AuditEvent.objects.filter(chain_seq__lt=start.seq)
        .order_by("chain_seq")
        .values_list("id", "chain_seq")
        .first()
    )
    return (row[0], row[1]) if row is not None and row[1] is not None else None


def _check_ends(verification: Verification, has_head: bool, head_seq: int, head_hash: str) -> Verification:
    """The head must name the last row, every finished row must be on the chain, none before its start."""
    broken: Break | None = None
    if not has_head and verification.checked:
        broken = Break(verification.last_id, verification.last_seq, "head", "the chain head row is missing")
    elif verification.last_hash != head_hash:
        broken = Break(
            verification.last_id,
            verification.last_seq,
            "head",
            f"the head's hash {head_hash[:16]}… is not the last row's {verification.last_hash[:16]}…",
        )
    elif beyond := _past_the_head(head_seq):
        broken = Break(beyond[0], beyond[1], "head", f"chain_seq {beyond[1]} is past the head")
    else:
        unchained = (
            AuditEvent.objects.filter(chain_seq__isnull=True)
            .exclude(status=AuditEvent.Status.RUNNING)
            .order_by("id")
            .values_list("id", flat=True)
            .first()
        )
        if unchained is not None:
            broken = Break(unchained, None, "unchained", "a finished row is not on the chain")
        elif before := _before_the_start(verification.start):
            # A prune deletes every row before the start it records: a row still there means the
            # record is forged (to stop the walk short of rows someone then edits) or the row was
            # put back.
            broken = Break(
                before[0],
                before[1],
                "start",
                f"chain_seq {before[1]} is before the chain's start at chain_seq {verification.start.seq}"
                " (a prune deletes every row before the start it records)",
            )
    if broken is None:
        return verification
    return Verification(
        verification.start,
        verification.checked,
        verification.last_seq,
        verification.last_hash,
        verification.last_id,
        broken,
        verification.last_version,
    )


@dataclass(frozen=True)
class ChainState:
    """What the admin index shows: whether the chain holds, over how many rows, as of when."""

    ok: bool
    checked: int
    first_broken_id: int | None
    checked_at: datetime
    problem: str = ""


# The last verification this process made, and when it last walked the whole chain.
_state: tuple[Verification, float] | None = None
_state_lock = threading.Lock()


def chain_state(*, full_every: float = 600.0) -> ChainState:
    """The chain's state, cheaply: only rows finished since the last call are hashed.

    A whole walk is made on the first call in a process and again when the last one is
    older than ``full_every`` seconds, so a change to an already-checked row shows up
    within that time; ``audit_verify`` always walks it all. A broken chain is reported
    as it was found until the next whole walk.
    """
    global _state
    with _state_lock:
        now = time.monotonic()
        previous, walked_at = _state if _state is not None else (None, 0.0)
        fresh = previous is not None and now - walked_at < full_every
        if previous is not None and fresh and not previous.ok:
            verification = previous
        else:
            verification = verify(resume=previous if fresh else None)
            if not fresh:
                walked_at = now
        _state = (verification, walked_at)
    broken = verification.broken
    return ChainState(
        ok=broken is None,
        checked=verification.checked,
        first_broken_id=broken.event_id if broken else None,
        checked_at=timezone.now(),
        problem=str(broken) if broken else "",
    )


def reset_chain_state() -> None:
    """Forget the cached position, so the next ``chain_state`` walks the whole chain (tests, prune)."""
    global _state
    with _state_lock:
        _state = None
