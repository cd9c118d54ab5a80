"""Where a distributed call goes: which worker holds a session, which one takes a new one.

Opening a session goes to the live worker holding the fewest sessions; every later call
for the session goes to the worker recorded on its row. A worker is live while its
heartbeat row is fresh (``sshcontrol/holders.py``).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

from sshcontrol import holders
from sshcontrol.dbretry import DatabaseUnavailable, retrying
from sshcontrol.models import SshSession

# How long the set of live workers is reused before the heartbeat table is read again.
LIVE_CACHE_SECONDS = 0.5


class Routing:
    """Worker choice and liveness for one dispatcher (the live set is cached briefly)."""

    def __init__(self) -> None:
        self._live: set[str] = set()
        self._live_at = float("-inf")
        # Sessions this process is opening on each worker and has not seen recorded yet: a batch
        # opening 200 sessions at once would otherwise send every one to the same least-loaded worker.
        self._opening: collections.Counter[str] = collections.Counter()
        self._opening_lock = threading.Lock()

    def pick_worker(self) -> str | None:
        """The live worker holding the fewest connected sessions (ties: by name, for determinism)."""
        counts = retrying(self._session_counts, "choosing a worker")
        if not counts:
            return None
        with self._opening_lock:
            return min(counts, key=lambda node: (counts[node] + self._opening[node], node))

    @contextmanager
    def opening(self, node: str) -> Iterator[None]:
        """Count a session being opened on ``node`` until its row records it."""
        with self._opening_lock:
            self._opening[node] += 1
        try:
            yield
        finally:
            with self._opening_lock:
                self._opening[node] -= 1
                if self._opening[node] <= 0:
                    del self._opening[node]

    def _session_counts(self) -> dict[str, int]:
        live = holders.live_workers()
        counts = dict.fromkeys(live, 0)
        for worker in SshSession.objects.connected().filter(worker__in=live).values_list("worker", flat=True):
            counts[worker] += 1
        return counts

    def is_live(self, node: str) -> bool:
        """Whether a worker's heartbeat is fresh; cached briefly so each call does not pay a query."""
        now = time.monotonic()
        if now - self._live_at > LIVE_CACHE_SECONDS:
            self._live = set(retrying(holders.live_workers, "reading the worker heartbeats"))
            self._live_at = now
        return node in self._live

    def holder(self, session_id: str) -> str | None:
        return retrying(lambda: _holder(session_id), "finding the session's worker")


def _holder(session_id: str) -> str | None:
    # Plain SQL: this runs on every distributed call, and the ORM's compiling costs ~0.3 ms.
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {q('worker')} FROM {q(SshSession._meta.db_table)} WHERE {q('session_id')} = %s",  # noqa: S608
            [session_id],
        )
        found = cursor.fetchone()
    return str(found[0]) if found else None


def worker_stopped(node: str) -> bool:
    """Whether ``node``'s heartbeat says it stopped (False when it runs or cannot be told)."""
    return retrying(lambda: holders.worker_alive(node), "reading heartbeats") is False


def holder_alive(node: str) -> bool | None:
    """The holder's heartbeat while a call waits on it; None (keep waiting) if the database is away.

    The wait goes on in one-second steps: a database outage must neither end a call whose
    command runs fine nor hold up the result that arrives meanwhile.
    """
    try:
        return retrying(lambda: holders.worker_alive(node), "reading the worker heartbeat", seconds=1.0)
    except DatabaseUnavailable:
        return None
