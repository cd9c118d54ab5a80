"""A call's audit writes, made safe to retry: each row is opened once and completed once.

``audit.writer`` does the writing; this wraps it in ``sshcontrol.dbretry``. A write whose
reply was lost may have committed all the same, so a retry first asks the database:

- opening: is there already a row with this call's request id? Then that is the row
  (an INSERT retried blindly would leave two rows for one call);
- completing: is the row no longer ``running``? Then it was completed (the writer only
  finishes running rows anyway; this also keeps the session's command count from being
  bumped twice).

An opening that cannot be written stops the call before anything reaches the host (fail
closed). A completion is never given up: past the bound it waits in the background until
the database is back, and the client gets its result meanwhile.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from audit import writer
from audit.models import AuditEvent
from sshcontrol import dbretry


def begin(*, request_id: uuid.UUID, **fields: Any) -> int:
    """``writer.begin``, retried; raises ``dbretry.DatabaseUnavailable`` if the row cannot be opened.

    Then the call stops before it acts, and its refusal is recorded once the database is back.
    """
    attempt = _opening(request_id, fields)
    try:
        return dbretry.retrying(attempt, "opening the audit row")
    except dbretry.DatabaseUnavailable as exc:
        _postpone_refusal(attempt, exc)
        raise


def refuse(exc: dbretry.DatabaseUnavailable, *, request_id: uuid.UUID, **fields: Any) -> None:
    """Record, once the database is back, a call refused because it could not be checked."""
    _postpone_refusal(_opening(request_id, fields), exc)


def _opening(request_id: uuid.UUID, fields: dict[str, Any]) -> Callable[[], int]:
    tried = False

    def attempt() -> int:
        nonlocal tried
        if tried:
            existing = (
                AuditEvent.objects.filter(request_id=request_id).order_by("id").values_list("id", flat=True)
            ).first()
            if existing is not None:
                return existing
        tried = True
        return writer.begin(request_id=request_id, **fields)

    return attempt


def _postpone_refusal(opening: Callable[[], int], exc: dbretry.DatabaseUnavailable) -> None:
    """The attempt is not lost: an ``error`` row saying nothing ran, written when the database is back."""
    message = f"{exc}; nothing was run"

    def write() -> None:
        event_id = opening()
        if not finished(event_id):
            writer.complete(event_id, status=AuditEvent.Status.ERROR, error=message)

    dbretry.postpone(write, "recording a call refused while the database was away")


def complete(event_id: int, work: Callable[[], None]) -> bool:
    """Run ``work`` (which completes row ``event_id``) once; True if recorded now, False if postponed."""
    tried = False

    def attempt() -> None:
        nonlocal tried
        if tried and finished(event_id):
            return
        tried = True
        work()

    return dbretry.complete_eventually(attempt, f"completing audit row {event_id}")


def finished(event_id: int) -> bool:
    return AuditEvent.objects.filter(pk=event_id).exclude(status=AuditEvent.Status.RUNNING).exists()
