"""Riding out a database that goes away for a moment: reconnect and retry, within a bound.

A PostgreSQL restart, a failover or ``pg_terminate_backend`` kills the connection a call
thread holds; SQLite answers "database is locked" when another process keeps its write
lock past the busy timeout. Django reports both as ``OperationalError`` (or
``InterfaceError`` on a connection already known dead) and never reconnects by itself
inside a thread. Everything on a call's path that reads or writes the database goes
through ``retrying``: on such an error the thread's connection is dropped if it is
unusable, and the work is tried again with backoff until ``SSHCONTROL_DB_RETRY_SECONDS``
have passed; then ``DatabaseUnavailable`` says what could not be done.

The retried work must be safe to repeat: reads are; the audit writes are made so by
their callers (``sshcontrol.durable``). Inside a transaction nothing is retried (the
transaction is lost with the connection): the error goes up to the ``retrying`` around
the whole transaction.

``complete_eventually`` is for the one write that must never be given up: the outcome of
a command that ran. If the database is still away after the bound, a background thread
keeps trying until it is back, while the client already gets its result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT = (OperationalError, InterfaceError)
FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0
# The background completer tries this often once the call's own bound has passed.
LATER_BACKOFF = 2.0


class DatabaseUnavailable(Exception):
    """The database stayed unreachable (or locked) for the whole retry bound."""

    def __init__(self, what: str, seconds: float, cause: BaseException) -> None:
        self.what = what
        super().__init__(
            f"the database is unavailable: {what} failed for {seconds:g} s "
            f"({type(cause).__name__}); an admin must check the database"
        )


def retry_seconds() -> float:
    return float(settings.DB_RETRY_SECONDS)


def _reset(alias: str) -> None:
    """Drop this thread's connection if it is broken, so the next attempt opens a new one."""
    connection = connections[alias]
    if connection.in_atomic_block:
        return
    try:
        connection.close_if_unusable_or_obsolete()
    except TRANSIENT:
        connection.close()


def retrying(
    fn: Callable[[], T], what: str, seconds: float | None = None, alias: str = DEFAULT_DB_ALIAS
) -> T:
    """Run ``fn``; on a transient database error reconnect and run it again, for up to ``seconds``."""
    bound = retry_seconds() if seconds is None else seconds
    deadline = time.monotonic() + bound
    backoff = FIRST_BACKOFF
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except TRANSIENT as exc:
            if connections[alias].in_atomic_block:
                raise  # the surrounding transaction is gone: its own retrying starts it over
            _reset(alias)
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("database unavailable: %s failed after %d attempts: %s", what, attempt, exc)
                raise DatabaseUnavailable(what, bound, exc) from exc
            if attempt == 1:
                log.info("database error during %s, retrying: %s", what, exc)
            time.sleep(min(backoff, left))
            backoff = min(backoff * 2, MAX_BACKOFF)


# -- writes that must happen, however long the database is away -----------------------------

_later: list[tuple[str, Callable[[], None]]] = []
_later_lock = threading.Lock()
_later_wake = threading.Condition(_later_lock)
_later_thread: threading.Thread | None = None


def complete_eventually(fn: Callable[[], None], what: str) -> bool:
    """Run ``fn`` with ``retrying``; past the bound, hand it to a background thread. True if done now."""
    try:
        retrying(fn, what)
        return True
    except DatabaseUnavailable:
        log.error("%s is postponed until the database is back", what)
        postpone(fn, what)
        return False


def postpone(fn: Callable[[], None], what: str) -> None:
    """Run ``fn`` in the background, retrying until the database is back (or the process ends)."""
    global _later_thread
    with _later_wake:
        _later.append((what, fn))
        if _later_thread is None or not _later_thread.is_alive():
            _later_thread = threading.Thread(target=_drain_later, name="sshcontrol-db-later", daemon=True)
            _later_thread.start()
        _later_wake.notify_all()


def _drain_later() -> None:
    while True:
        with _later_wake:
            if not _later:
                # This thread's connections would otherwise stay open until collected (and keep
                # a test database, or a PostgreSQL backend, busy).
                connections.close_all()
                return
            what, fn = _later[0]
        try:
            retrying(fn, what, seconds=LATER_BACKOFF * 5)
        except DatabaseUnavailable:
            time.sleep(LATER_BACKOFF)
            continue
        except Exception:
            log.exception("%s failed for good", what)
        else:
            log.warning("%s recorded after the database came back", what)
        with _later_wake:
            _later.pop(0)
            _later_wake.notify_all()


def pending_writes() -> int:
    with _later_lock:
        return len(_later)


def flush_pending(seconds: float) -> bool:
    """Wait up to ``seconds`` for postponed writes (at shutdown); True when none is left."""
    deadline = time.monotonic() + seconds
    with _later_wake:
        while _later:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _later_wake.wait(left)
    return True
