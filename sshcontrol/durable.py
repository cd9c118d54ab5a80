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
the database is back, and the client gets its result meanwhile. A completion given with its
``outcome`` (the ``audit.writer.Completion`` that ``work`` writes) is also spooled to an owner-only file
(``sshcontrol.spool``), so a process killed before the database is back does not lose
it: the next start writes it (``replay_spooled``) before relabelling rows ``interrupted``.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from typing import Any

from audit import writer
from audit.models import AuditEvent
from audit.writer import Completion
from sshcontrol import dbretry, spool

log = logging.getLogger(__name__)


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


def complete(event_id: int, work: Callable[[], None], *, outcome: Completion | None = None) -> bool:
    """Run ``work`` (which completes row ``event_id``) once; True if recorded now, False if postponed.

    ``outcome``: the completion ``work`` writes; with it, a postponed
    completion survives the death of this process (spooled to disk until written).
    """
    tried = False

    def attempt() -> None:
        nonlocal tried
        if tried and finished(event_id):
            return
        tried = True
        work()

    what = f"completing audit row {event_id}"
    try:
        dbretry.retrying(attempt, what)
        return True
    except dbretry.DatabaseUnavailable:
        log.error("%s is postponed until the database is back", what)
    spooled = spool.save(event_id, outcome) if outcome is not None else None

    def later() -> None:
        attempt()
        if spooled is not None:
            spool.discard(spooled)

    dbretry.postpone(later, what)
    return False


def replay_spooled() -> int:
    """Write the spooled completions of processes that died before the database came back.

    Run at start, before ``audit.writer.mark_interrupted``: a row whose outcome is known
    gets it, not ``interrupted``. Returns how many files were handled.
    """
    handled = 0
    for path, pending in spool.orphaned():
        what = f"replaying the completion of audit row {pending.event_id}"
        dbretry.retrying(functools.partial(spool.replay, pending), what)
        spool.discard(path)
        handled += 1
    return handled


def finished(event_id: int) -> bool:
    return AuditEvent.objects.filter(pk=event_id).exclude(status=AuditEvent.Status.RUNNING).exists()
