"""The one writer of the audit log.

Every AuditEvent row is created by ``begin`` (status running, before the action) and
finished by ``complete`` (after it). Command text, stdout, stderr and error text are
redacted and capped here, so no caller can forget to.

``begin`` is one INSERT in autocommit mode. ``complete`` is one short transaction that
finishes the row and links it into the hash chain (``audit.chain``): it updates the row
(reading back what is stored), locks the chain head, then stores the row's link and
moves the head. Inside a caller's transaction it joins that one instead. Both run
precompiled SQL (``audit.statements``): they sit on the path of every tool call.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Required, TypedDict, Unpack, cast

from django.conf import settings
from django.db import connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models import CharField
from django.utils import timezone

from audit import chain, process, writelock
from audit.models import AuditEvent, ChainHead
from audit.redaction import cap, redact
from audit.statements import Insert, MultiInsert, SelectForUpdate, Update, UpdateMany
from hosts.models import Host
from sshlib.execute import ExecResult

logger = logging.getLogger(__name__)

# A command longer than this is kept head and tail; a 64 KiB command line is already a
# script pasted inline, and the row must stay readable.
COMMAND_LIMIT = 64 << 10

_NOT_RUNNING = "audit event %s is not running; its completion (%s) was not recorded"

INTERRUPTED_ERROR = "the process that ran this call stopped before it finished"

_FINAL_STATUSES = frozenset(AuditEvent.Status.values) - {AuditEvent.Status.RUNNING}


def _storable(text: str, secrets: Sequence[str] = ()) -> str:
    """Redacted text that every database can store: PostgreSQL text cannot hold NUL bytes."""
    if not secrets and text in _clean:
        return text
    stored = redact(text, secrets).replace("\x00", "\ufffd")
    if not secrets and stored == text and len(text) <= _CLEAN_LENGTH:
        if len(_clean) >= _CLEAN_LIMIT:
            _clean.clear()
        _clean[text] = None
    return stored


# Short texts that redaction leaves as they are, remembered: a batch's rows repeat the same
# command, paths and details words, and looking for secret patterns in each again was a
# tenth of opening and completing them. Only texts with nothing to hide (no secret of the
# call given, nothing redacted), so nothing secret is kept here.
_CLEAN_LENGTH = 256
_CLEAN_LIMIT = 4096
_clean: dict[str, None] = {}


@dataclass(frozen=True)
class _Begun:
    """What ``begin`` stored that ``complete`` needs: the start on the monotonic clock, the details."""

    started: float
    details: dict[str, Any]


# Rows this process opened, so ``complete`` can time a call on the monotonic clock and
# merge details without reading the row back. Bounded: a row that is never completed
# (its caller crashed) must not grow this forever; an evicted row is read back instead.
_STARTS_LIMIT = 4096
_starts: dict[int, _Begun] = {}
_starts_lock = threading.Lock()

# begin: the columns it sets, then every other column (but the id) at its default, bound
# as constants; the id comes back from RETURNING.
_BEGUN = (
    "request_id",
    "started_at",
    "status",
    "actor",
    "client",
    "oauth_issuer",
    "oauth_subject",
    "transport",
    "process",
    "host_id",
    "host_ref",
    "host_name",
    "host_address",
    "session_id",
    "tool",
    "command",
    "working_directory",
    "stdin",
    "stdin_bytes",
    "stdin_sha256",
    "stdin_truncated",
    "remote_path",
    "local_path",
    "details",
    "batch_id",
)
_INSERT = Insert(
    AuditEvent,
    _BEGUN,
    returning=("id",),
    constants={
        field.attname: field.get_default()
        for field in AuditEvent._meta.concrete_fields
        if not field.primary_key and field.attname not in _BEGUN
    },
)

_INSERT_MANY = MultiInsert(_INSERT)
# Rows per INSERT statement of begin_many: well below every backend's limit on parameters.
_INSERT_ROWS = 100

# complete: the chain fields are set after the head is locked; everything else comes back
# from the finishing UPDATE, so the hash covers the values as stored.
_LINK_FIELDS = ("chain_seq", "prev_hash", chain.HASH_FIELD)
_RETURNED = tuple(name for name in chain.STORED_FIELDS if name not in _LINK_FIELDS)
_LINK = Update(AuditEvent, _LINK_FIELDS, where=("id",))
_HEAD = SelectForUpdate(ChainHead, ("id",), returning=("seq", "hash"))
_MOVE_HEAD = Update(ChainHead, ("seq", "hash"), where=("id",))


@functools.lru_cache(maxsize=16)
def _finishing(fields: tuple[str, ...]) -> Update:
    """UPDATE ... SET fields WHERE id = %s AND status = %s RETURNING every other column."""
    return Update(AuditEvent, fields, where=("id", "status"), returning=_RETURNED)


@functools.lru_cache(maxsize=16)
def _finishing_many(fields: tuple[str, ...]) -> UpdateMany:
    """``_finishing`` for many rows in one statement (``finish_many``)."""
    return UpdateMany(_finishing(fields))


# Rows per statement of finish_many: well below every backend's limit on parameters (about 20 each).
_FINISH_ROWS = 100


def _connection() -> BaseDatabaseWrapper:
    return connections[router.db_for_write(AuditEvent)]


# Short text columns and their lengths. Values are cut to fit rather than rejected: some
# (actor, session id) come from the client, and on PostgreSQL an over-long value would
# fail the INSERT and with it the call being audited.
_MAX_LENGTHS: dict[str, int] = {
    field.name: field.max_length
    for field in AuditEvent._meta.concrete_fields
    if isinstance(field, CharField) and field.max_length is not None
}


def _fit(name: str, value: str) -> str:
    return value[: _MAX_LENGTHS[name]].replace("\x00", "\ufffd")


def _redact_json(value: Any, secrets: Sequence[str]) -> Any:
    """Redact every string inside a JSON-shaped value; callers put free text in ``details`` too."""
    if isinstance(value, str):
        return _storable(value, secrets)
    if isinstance(value, Mapping):
        return {key: _redact_json(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_json(item, secrets) for item in value]
    return value


def _stdin_columns(stdin: str | None, secrets: Sequence[str]) -> tuple[str, int | None, str, bool]:
    """(text, bytes, sha256, truncated) of the caller's stdin: the text redacted and capped like stdout.

    The digest is of the bytes sent, unless redaction hid part of them: the digest of a
    text whose only unknown is a hidden password would let a reader test guesses of it.
    """
    if stdin is None:
        return "", None, "", False
    sent = stdin.encode("utf-8", "surrogatepass")
    redacted = _storable(stdin, secrets)
    hid_something = redacted != stdin.replace("\x00", "\ufffd")
    text, cut = cap(redacted, settings.AUDIT_OUTPUT_BYTES)
    return text, len(sent), "" if hid_something else hashlib.sha256(sent).hexdigest(), cut


class Opening(TypedDict, total=False):
    """``begin``'s keyword arguments: what a row says about a call when it is opened."""

    tool: Required[str]
    actor: Required[str]
    transport: Required[str]
    client: str | None
    oauth_issuer: str | None
    oauth_subject: str | None
    host: Host | None
    session_id: str
    command: str
    working_directory: str
    stdin: str | None
    remote_path: str
    local_path: str
    request_id: uuid.UUID | None
    details: Mapping[str, Any] | None
    secrets: Sequence[str]
    batch_id: str | None


def begin(**opening: Unpack[Opening]) -> int:
    """Open a row in status ``running`` and return its id.

    The host's id, name and address are copied onto the row so it still says where the
    call ran after the host is deleted (the foreign key then becomes null); the hash
    covers the copies. ``stdin`` is what the caller feeds the command (None: none).
    ``batch_id`` ties the row to the other hosts of one ``ssh_execute_many`` call.
    """
    values = _begin_values(opening)
    connection = _connection()
    with writelock.serialized(connection), connection.cursor() as cursor:
        row = _INSERT.execute(cursor, values)
    assert row is not None
    event_id: int = row["id"]
    _remember(event_id, values)
    return event_id


def begin_many(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Open several rows (each ``begin``'s keyword arguments) in one transaction; their ids, in order.

    One commit for a whole batch of hosts instead of one each: on SQLite a commit is most of
    a row's cost. Every row is committed before this returns, so a caller that acts only
    afterwards still writes before it acts.
    """
    connection = _connection()
    prepared = [_begin_values(_opening(row)) for row in rows]
    ids: list[int] = []
    with (
        writelock.serialized(connection),
        transaction.atomic(using=connection.alias, savepoint=False),
        connection.cursor() as cursor,
    ):
        for start in range(0, len(prepared), _INSERT_ROWS):
            ids += _INSERT_MANY.execute(cursor, prepared[start : start + _INSERT_ROWS])
    assert len(ids) == len(prepared)
    for event_id, values in zip(ids, prepared, strict=True):
        _remember(event_id, values)
    return ids


def _remember(event_id: int, values: Sequence[Any]) -> None:
    with _starts_lock:
        if len(_starts) >= _STARTS_LIMIT:
            del _starts[next(iter(_starts))]
        _starts[event_id] = _Begun(time.monotonic(), values[_DETAILS])


_DETAILS = _BEGUN.index("details")


def _begin_values(opening: Opening) -> tuple[Any, ...]:
    """The INSERT's values for one row, in ``_BEGUN`` order, redacted and cut to fit."""
    o = opening
    secrets = o.get("secrets", ())
    host = o.get("host")
    client, issuer, subject = o.get("client"), o.get("oauth_issuer"), o.get("oauth_subject")
    batch_id = o.get("batch_id")
    command_text, _ = cap(_storable(o.get("command", ""), secrets), COMMAND_LIMIT)
    stored_details = _redact_json(dict(o.get("details") or {}), secrets)
    return (
        o.get("request_id") or uuid.uuid4(),
        timezone.now(),
        AuditEvent.Status.RUNNING,
        _fit("actor", o["actor"]),
        _fit("client", client) if client is not None else None,
        _fit("oauth_issuer", issuer) if issuer is not None else None,
        _fit("oauth_subject", subject) if subject is not None else None,
        _fit("transport", o["transport"]),
        process.current_process_key(),
        host.pk if host is not None else None,
        host.pk if host is not None else None,
        _fit("host_name", host.name) if host is not None else "",
        _fit("host_address", host.address) if host is not None else "",
        _fit("session_id", o.get("session_id", "")),
        _fit("tool", o["tool"]),
        command_text,
        _storable(o.get("working_directory", ""), secrets),
        *_stdin_columns(o.get("stdin"), secrets),
        _storable(o.get("remote_path", ""), secrets),
        _storable(o.get("local_path", ""), secrets),
        stored_details,
        _fit("batch_id", batch_id) if batch_id is not None else None,
    )


_OPENING_KEYS = frozenset(Opening.__annotations__)


def _opening(row: Mapping[str, Any]) -> Opening:
    """A row of ``begin_many`` as ``begin``'s arguments; an unknown name is refused as by ``begin``."""
    unknown = set(row) - _OPENING_KEYS
    if unknown:
        raise TypeError(f"unexpected audit row fields: {sorted(unknown)}")
    return cast(Opening, row)


def complete(
    event_id: int,
    *,
    status: str,
    session_id: str | None = None,
    exit_status: int | None = None,
    signal: str = "",
    stdout: str = "",
    stderr: str = "",
    stdout_bytes: int | None = None,
    stderr_bytes: int | None = None,
    stdout_truncated: bool = False,
    stderr_truncated: bool = False,
    file_size: int | None = None,
    file_sha256: str = "",
    reconnected: bool = False,
    error: str = "",
    details: Mapping[str, Any] | None = None,
    secrets: Sequence[str] = (),
) -> None:
    """Finish a running row; a row that is already finished is never rewritten.

    ``details`` given here are merged over those given to ``begin``. The ``*_truncated``
    flags are set when either the SSH layer (the flags passed in) or the audit cap cut
    the text; byte counts are stored as the SSH layer measured them.
    """
    completion = Completion(
        status=status,
        session_id=session_id,
        exit_status=exit_status,
        signal=signal,
        stdout=stdout,
        stderr=stderr,
        stdout_bytes=stdout_bytes,
        stderr_bytes=stderr_bytes,
        stdout_truncated=stdout_truncated,
        stderr_truncated=stderr_truncated,
        file_size=file_size,
        file_sha256=file_sha256,
        reconnected=reconnected,
        error=error,
        details=details,
    )
    _complete(event_id, completion, secrets)


def _complete(event_id: int, completion: Completion, secrets: Sequence[str] = ()) -> None:
    changes = _changes(event_id, completion, secrets)
    if changes is not None and not _finish(event_id, changes):
        logger.warning(_NOT_RUNNING, event_id, completion.status)


def _changes(event_id: int, c: Completion, secrets: Sequence[str] = ()) -> dict[str, Any] | None:
    """The columns that finish the row, redacted and capped.

    None (and a warning logged) when the row was opened by another process and is not running.
    """
    if c.status not in _FINAL_STATUSES:
        raise ValueError(
            f"not a final audit status: {c.status!r} (expected one of {sorted(_FINAL_STATUSES)})"
        )
    finished_at = timezone.now()
    with _starts_lock:
        begun = _starts.pop(event_id, None)

    limit: int = settings.AUDIT_OUTPUT_BYTES
    stdout_text, stdout_cut = cap(_storable(c.stdout, secrets), limit)
    stderr_text, stderr_cut = cap(_storable(c.stderr, secrets), limit)
    error_text, _ = cap(_storable(c.error, secrets), limit)
    changes: dict[str, Any] = {
        "status": c.status,
        "finished_at": finished_at,
        "exit_status": c.exit_status,
        "signal": _fit("signal", c.signal),
        "stdout": stdout_text,
        "stderr": stderr_text,
        "stdout_bytes": c.stdout_bytes,
        "stderr_bytes": c.stderr_bytes,
        "stdout_truncated": c.stdout_truncated or stdout_cut,
        "stderr_truncated": c.stderr_truncated or stderr_cut,
        "file_size": c.file_size,
        "file_sha256": _fit("file_sha256", c.file_sha256),
        "reconnected": c.reconnected,
        "error": error_text,
    }
    if c.session_id is not None:
        changes["session_id"] = _fit("session_id", c.session_id)
    if begun is not None:
        changes["duration_ms"] = (time.monotonic() - begun.started) * 1000
        if c.details:
            changes["details"] = {**begun.details, **_redact_json(dict(c.details), secrets)}
        return changes
    # Opened by another process (or evicted): time it, and merge details, from the stored row.
    row = (
        AuditEvent.objects.filter(pk=event_id, status=AuditEvent.Status.RUNNING)
        .values_list("started_at", "details")
        .first()
    )
    if row is None:
        logger.warning(_NOT_RUNNING, event_id, c.status)
        return None
    started_at: datetime = row[0]
    changes["duration_ms"] = (finished_at - started_at).total_seconds() * 1000
    if c.details:
        changes["details"] = {**row[1], **_redact_json(dict(c.details), secrets)}
    return changes


@dataclass(frozen=True)
class Completion:
    """How a row is finished: ``complete``'s arguments as one value (kept on disk as JSON by
    ``sshcontrol/spool.py`` while the database is away)."""

    status: str
    session_id: str | None = None
    exit_status: int | None = None
    signal: str = ""
    stdout: str = ""
    stderr: str = ""
    stdout_bytes: int | None = None
    stderr_bytes: int | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    file_size: int | None = None
    file_sha256: str = ""
    reconnected: bool = False
    error: str = ""
    details: Mapping[str, Any] | None = None

    @classmethod
    def of_command(cls, run: ExecResult, *, status: str, **fields: Any) -> Completion:
        """A command that ran, from the SSH runtime's result field for field."""
        return cls(
            status=status,
            exit_status=run.exit_status,
            signal=run.signal or "",
            stdout=run.stdout,
            stderr=run.stderr,
            stdout_bytes=run.stdout_bytes,
            stderr_bytes=run.stderr_bytes,
            stdout_truncated=run.stdout_truncated,
            stderr_truncated=run.stderr_truncated,
            **fields,
        )


def finish(event_id: int, completion: Completion) -> None:
    """``complete`` with the arguments held by ``completion``."""
    _complete(event_id, completion)


def _finish(event_id: int, changes: Mapping[str, Any]) -> bool:
    """Finish a running row with ``changes`` and chain it; False if it was not running.

    The row is updated first (its row lock, on PostgreSQL, is taken before the head's, in
    every caller, so two finishers cannot deadlock), then the head is locked: from there to
    the commit, no other row can be chained.
    """
    connection = _connection()
    with (
        writelock.serialized(connection),
        transaction.atomic(using=connection.alias, savepoint=False),
        connection.cursor() as cursor,
    ):
        row = _finishing(tuple(changes)).execute(
            cursor, [*changes.values(), event_id, AuditEvent.Status.RUNNING]
        )
        if row is None:
            return False
        seq, prev_hash = _lock_head(cursor)
        seq += 1
        row["chain_seq"] = seq
        row["prev_hash"] = prev_hash
        digest = chain.row_hash(row)
        _LINK.execute(cursor, [seq, prev_hash, digest, event_id])
        _MOVE_HEAD.execute(cursor, [seq, digest, chain.HEAD_ID])
    return True


def _lock_head(cursor: CursorWrapper) -> tuple[int, str]:
    """Lock the chain head and return its (seq, hash); recreate it if it is missing.

    It is missing after a test run flushes the tables, and if someone deletes it; it is
    then rebuilt from the chain's last row (or the newest anchor), and ``audit_verify``
    still reports the deletion if rows were lost with it.
    """
    head = _HEAD.execute(cursor, [chain.HEAD_ID])
    if head is None:
        last = (
            AuditEvent.objects.filter(chain_seq__isnull=False)
            .order_by("-chain_seq")
            .values_list("chain_seq", chain.HASH_FIELD)
            .first()
        )
        if last is None:
            start = chain.chain_start()
            last = (start.seq - 1, start.prev_hash)
        ChainHead.objects.bulk_create(
            [ChainHead(pk=chain.HEAD_ID, seq=last[0], hash=last[1])], ignore_conflicts=True
        )
        head = _HEAD.execute(cursor, [chain.HEAD_ID])
        assert head is not None
    return head["seq"], head["hash"]


def hand_over(event_id: int, process_key: str) -> int:
    """A running row is now worked on by another process (a background job's holder).

    ``mark_interrupted`` judges a row by the process named on it: the process that opened
    the call may stop (an ``mcp_serve`` restart) while the job it handed on still runs.
    The process is not yet covered by the hash chain (a row is chained when it completes).
    Returns 1 if the row was running, else 0.
    """
    connection = _connection()
    with writelock.serialized(connection):
        return AuditEvent.objects.filter(pk=event_id, status=AuditEvent.Status.RUNNING).update(
            process=process_key[: _MAX_LENGTHS["process"]]
        )


def mark_interrupted() -> int:
    """Mark ``interrupted`` the running rows whose process (on this machine) is gone; return how many.

    Rows opened on other machines are left alone: whether their process lives cannot be
    told from here (``process.is_alive`` answers None), so they are not guessed at.
    """
    keys = set(
        AuditEvent.objects.filter(status=AuditEvent.Status.RUNNING)
        .exclude(process="")
        .order_by()  # the model's default ordering would defeat DISTINCT
        .values_list("process", flat=True)
        .distinct()
    )
    gone = [key for key in keys if process.is_alive(key) is False]
    if not gone:
        return 0
    ids = list(
        AuditEvent.objects.filter(status=AuditEvent.Status.RUNNING, process__in=gone)
        .order_by("id")
        .values_list("id", flat=True)
    )
    changes = {
        "status": AuditEvent.Status.INTERRUPTED,
        "finished_at": timezone.now(),
        "error": INTERRUPTED_ERROR,
    }
    with transaction.atomic(using=_connection().alias):
        return sum(_finish(event_id, changes) for event_id in ids)


def finish_many(completions: Sequence[tuple[int, Completion]]) -> None:
    """``finish`` several rows in one transaction (one commit), chained in the order given.

    A batch's hosts finish together. Committing each row alone cost most of its write, and a
    statement per row most of the rest: here the rows are finished by one
    ``UPDATE ... FROM (VALUES ...)`` per shape of completion (the columns it sets: with or
    without a session id or details; a batch has one or two), which returns the values as
    stored for the hashes, as ``complete``'s UPDATE does; then the head is locked, the rows are
    chained in the order given, linked in one ``executemany``, and the head is moved once.
    """
    prepared: list[tuple[int, str, dict[str, Any]]] = []
    seen: set[int] = set()
    for event_id, completion in completions:
        changes = _changes(event_id, completion) if event_id not in seen else None
        if changes is not None:
            prepared.append((event_id, completion.status, changes))
        elif event_id in seen:  # finished a moment ago, by this very call
            logger.warning(_NOT_RUNNING, event_id, completion.status)
        seen.add(event_id)
    if not prepared:
        return
    shapes: dict[tuple[str, ...], list[list[Any]]] = {}
    for event_id, _status, changes in prepared:
        shapes.setdefault(tuple(changes), []).append([*changes.values(), event_id, AuditEvent.Status.RUNNING])
    connection = _connection()
    with (
        writelock.serialized(connection),
        transaction.atomic(using=connection.alias, savepoint=False),
        connection.cursor() as cursor,
    ):
        stored: dict[int, dict[str, Any]] = {}
        for fields, rows in shapes.items():
            statement = _finishing_many(fields)
            for start in range(0, len(rows), _FINISH_ROWS):
                stored.update(
                    (row["id"], row) for row in statement.execute(cursor, rows[start : start + _FINISH_ROWS])
                )
        links: list[tuple[int, str, str, int]] = []
        head: tuple[int, str] | None = None
        for event_id, status, _changed in prepared:
            row = stored.get(event_id)
            if row is None:
                logger.warning(_NOT_RUNNING, event_id, status)
                continue
            seq, prev_hash = head if head is not None else _lock_head(cursor)
            seq += 1
            row["chain_seq"] = seq
            row["prev_hash"] = prev_hash
            head = (seq, chain.row_hash(row))
            links.append((seq, prev_hash, head[1], event_id))
        if head is not None:
            _LINK.execute_many(cursor, links)
            _MOVE_HEAD.execute(cursor, [*head, chain.HEAD_ID])
