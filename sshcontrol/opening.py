"""A batch's new sessions: connected from prepared hosts, their rows written together.

A cold ``ssh_execute_many`` opens a session on every host. Loading each host, its credential
and its trusted keys, then committing its session row and ``last_connected_at``, one host at a
time, cost more than the SSH handshakes (issue 13). The batch instead prepares its hosts in a
few queries (``hosts.specs.prepare``) and hands each connection a ``BatchOpen``; the new
sessions' rows gathered in ``OpenedRows`` are written with the batch's completed audit rows,
in the same transaction (``sshcontrol.fleet``), before the batch answers: no other call can
know a session id before its row exists.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from hosts.models import Host
from hosts.specs import PreparedHost
from sshcontrol.models import SshSession
from sshlib.sessions import registry


@dataclass(frozen=True)
class OpenedRow:
    """A session opened for a batch, its row still to write."""

    session_id: str
    host_id: int
    host_name: str
    worker: str
    actor: str
    client_id: int | None
    fingerprint: str
    opened_at: datetime


class OpenedRows:
    """The batch's new sessions whose rows are not written yet; the host threads add, the batch takes."""

    def __init__(self) -> None:
        self._rows: list[OpenedRow] = []
        self._lock = threading.Lock()

    def add(self, row: OpenedRow) -> None:
        with self._lock:
            self._rows.append(row)

    def take(self) -> list[OpenedRow]:
        with self._lock:
            rows, self._rows = self._rows, []
        return rows


@dataclass(frozen=True)
class BatchOpen:
    """What a batch's connection uses instead of per-host queries and commits."""

    prepared: PreparedHost
    rows: OpenedRows


def write(rows: list[OpenedRow]) -> None:
    """The sessions' rows and their hosts' ``last_connected_at``, in the caller's transaction.

    A retried write whose first reply was lost inserts nothing twice (``session_id`` is
    unique). ``last_connected_at`` is the latest opening of the group for all of its hosts:
    at most one flush of the batch (``fleet.FLUSH_SECONDS``) later than each host's own.
    """
    if not rows:
        return
    # A host deleted since the batch prepared it: its session row keeps the name only (the FK
    # is SET_NULL on delete), rather than failing the whole group's transaction.
    hosts = set(Host.objects.filter(pk__in={r.host_id for r in rows}).values_list("pk", flat=True))
    SshSession.objects.bulk_create(
        [
            SshSession(
                session_id=r.session_id,
                host_id=r.host_id if r.host_id in hosts else None,
                host_name=r.host_name,
                worker=r.worker,
                opened_by=r.actor,
                client_id=r.client_id,
                host_key_fingerprint=r.fingerprint,
                opened_at=r.opened_at,
                last_used_at=r.opened_at,
            )
            for r in rows
        ],
        ignore_conflicts=True,
    )
    latest = max(r.opened_at for r in rows)
    Host.objects.filter(pk__in=sorted(hosts)).update(last_connected_at=latest)


def abandon(rows: list[OpenedRow]) -> None:
    """Close sessions whose rows could not be written (the database stayed away): none is used unrecorded."""
    for row in rows:
        registry.close(row.session_id)
