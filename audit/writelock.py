"""One writer at a time per process on SQLite.

SQLite allows one write transaction per database; a thread that finds it taken waits in
SQLite's busy handler, which sleeps in growing steps (up to 100 ms) rather than waking when
the lock frees. With dozens of call threads writing audit rows that turned into seconds of
tail latency; queueing on a Python lock first wakes the next writer at once. Other
databases take row locks and need none of this.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db.backends.base.base import BaseDatabaseWrapper

_lock = threading.RLock()  # re-entrant: a completion nests the writer inside the caller's transaction


@contextmanager
def serialized(connection: BaseDatabaseWrapper) -> Iterator[None]:
    if connection.vendor != "sqlite":
        yield
        return
    with _lock:
        yield
