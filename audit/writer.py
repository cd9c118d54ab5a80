"""The one writer of the audit log.

Every AuditEvent row is created by ``begin`` (status running, before the action) and
finished by ``complete`` (after it). Command text, stdout, stderr and error text are
redacted and capped here, so no caller can forget to.

Both functions are plain synchronous ORM calls in autocommit mode, one statement each
on the hot path, so they hold no transaction open and can be called from the threads
the MCP server runs blocking work in.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import CharField
from django.utils import timezone

from audit import process
from audit.models import AuditEvent
from audit.redaction import cap, redact
from hosts.models import Host

logger = logging.getLogger(__name__)

# A command longer than this is kept head and tail; a 64 KiB command line is already a
# script pasted inline, and the row must stay readable.
COMMAND_LIMIT = 64 << 10

_NOT_RUNNING = "audit event %s is not running; its completion (%s) was not recorded"

INTERRUPTED_ERROR = "the process that ran this call stopped before it finished"

_FINAL_STATUSES = frozenset(AuditEvent.Status.values) - {AuditEvent.Status.RUNNING}

# Start times of rows this process opened, so ``complete`` can time a call on the
# monotonic clock without reading the row back. Bounded: a row that is never completed
# (its caller crashed) must not grow this forever; an evicted row is timed from the
# database instead.
_STARTS_LIMIT = 4096
_starts: dict[int, float] = {}
_starts_lock = threading.Lock()


# Short text columns and their lengths. Values are cut to fit rather than rejected: some
# (actor, session id) come from the client, and on PostgreSQL an over-long value would
# fail the INSERT and with it the call being audited.
_MAX_LENGTHS: dict[str, int] = {
    field.name: field.max_length
    for field in AuditEvent._meta.concrete_fields
    if isinstance(field, CharField) and field.max_length is not None
}


def _fit(name: str, value: str) -> str:
    return value[: _MAX_LENGTHS[name]]


def _redact_json(value: Any, secrets: Sequence[str]) -> Any:
    """Redact every string inside a JSON-shaped value; callers put free text in ``details`` too."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, Mapping):
        return {key: _redact_json(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_json(item, secrets) for item in value]
    return value


def begin(
    *,
    tool: str,
    actor: str,
    transport: str,
    host: Host | None = None,
    session_id: str = "",
    command: str = "",
    working_directory: str = "",
    remote_path: str = "",
    local_path: str = "",
    request_id: uuid.UUID | None = None,
    details: Mapping[str, Any] | None = None,
    secrets: Sequence[str] = (),
) -> int:
    """Open a row in status ``running`` and return its id.

    The host's name and address are copied onto the row so it still says where the call
    ran after the host is deleted (the foreign key then becomes null).
    """
    command_text, _ = cap(redact(command, secrets), COMMAND_LIMIT)
    event = AuditEvent.objects.create(
        request_id=request_id or uuid.uuid4(),
        started_at=timezone.now(),
        status=AuditEvent.Status.RUNNING,
        actor=_fit("actor", actor),
        transport=_fit("transport", transport),
        process=process.current_process_key(),
        host=host,
        host_name=_fit("host_name", host.name) if host is not None else "",
        host_address=_fit("host_address", host.address) if host is not None else "",
        session_id=_fit("session_id", session_id),
        tool=_fit("tool", tool),
        command=command_text,
        working_directory=redact(working_directory, secrets),
        remote_path=redact(remote_path, secrets),
        local_path=redact(local_path, secrets),
        details=_redact_json(dict(details or {}), secrets),
    )
    with _starts_lock:
        if len(_starts) >= _STARTS_LIMIT:
            del _starts[next(iter(_starts))]
        _starts[event.pk] = time.monotonic()
    return event.pk


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
    if status not in _FINAL_STATUSES:
        raise ValueError(f"not a final audit status: {status!r} (expected one of {sorted(_FINAL_STATUSES)})")
    finished_at = timezone.now()
    with _starts_lock:
        started = _starts.pop(event_id, None)

    running = AuditEvent.objects.filter(pk=event_id, status=AuditEvent.Status.RUNNING)
    changes: dict[str, Any] = {}
    if started is not None:
        changes["duration_ms"] = (time.monotonic() - started) * 1000
    if started is None or details:
        # Read back only what is needed: the start when this process did not open the row,
        # the stored details when there are new ones to merge.
        row = running.values_list("started_at", "details").first()
        if row is None:
            logger.warning(_NOT_RUNNING, event_id, status)
            return
        started_at: datetime = row[0]
        if started is None:
            changes["duration_ms"] = (finished_at - started_at).total_seconds() * 1000
        if details:
            changes["details"] = {**row[1], **_redact_json(dict(details), secrets)}

    limit: int = settings.AUDIT_OUTPUT_BYTES
    stdout_text, stdout_cut = cap(redact(stdout, secrets), limit)
    stderr_text, stderr_cut = cap(redact(stderr, secrets), limit)
    error_text, _ = cap(redact(error, secrets), limit)
    if session_id is not None:
        changes["session_id"] = _fit("session_id", session_id)
    updated = running.update(
        status=status,
        finished_at=finished_at,
        exit_status=exit_status,
        signal=_fit("signal", signal),
        stdout=stdout_text,
        stderr=stderr_text,
        stdout_bytes=stdout_bytes,
        stderr_bytes=stderr_bytes,
        stdout_truncated=stdout_truncated or stdout_cut,
        stderr_truncated=stderr_truncated or stderr_cut,
        file_size=file_size,
        file_sha256=_fit("file_sha256", file_sha256),
        reconnected=reconnected,
        error=error_text,
        **changes,
    )
    if not updated:
        logger.warning(_NOT_RUNNING, event_id, status)


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
    return AuditEvent.objects.filter(status=AuditEvent.Status.RUNNING, process__in=gone).update(
        status=AuditEvent.Status.INTERRUPTED,
        finished_at=timezone.now(),
        error=INTERRUPTED_ERROR,
    )
