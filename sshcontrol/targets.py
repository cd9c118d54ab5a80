"""What a call names: the host and session behind a ``session_id`` or a host name.

Resolving runs before every call's audit row opens, so the session lookup is one plain
query; a session that belongs to another client, or that another embedded server process
holds, reads as unusable here with a reason the model can act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db import connection

from audit.models import AuditEvent
from hosts.inventory import HostDisabled, HostNotFound, get_enabled_host
from hosts.models import Host
from sshcontrol.caller import Caller
from sshcontrol.dispatch import get_dispatcher
from sshcontrol.holders import EMBEDDED_PREFIX, current_worker, worker_alive
from sshcontrol.models import SshSession

Status = AuditEvent.Status


# The host fields a call needs (audit row, result); loading only these keeps the hot query cheap.
# Tags too: grants and rules by tag are checked on every call, and a deferred field would cost
# a second query each time. Taken in the model's field order, which Model.from_db maps values by.
_HOST_FIELDS = tuple(
    f.attname
    for f in Host._meta.concrete_fields
    if f.attname in {"id", "name", "address", "port", "username", "tags", "enabled"}
)
_TAGS = _HOST_FIELDS.index("tags")


@dataclass
class SessionRow:
    """What a call needs to know of the session it names."""

    session_id: str
    state: str
    worker: str
    close_reason: str
    client_id: int | None
    host: Host | None


def session_row(session_id: str) -> SessionRow | None:
    """The session and its host in one plain query: it runs before every session-addressed call.

    Through the ORM (select_related + only) this lookup cost ~0.4 ms of compiling per call,
    the largest share of a call's own overhead; the SQL is fixed, quoted by the backend.
    """
    q = connection.ops.quote_name
    session_table, host_table = q(SshSession._meta.db_table), q(Host._meta.db_table)
    host_columns = ", ".join(f"h.{q(name)}" for name in _HOST_FIELDS)
    sql = (
        f"SELECT s.{q('state')}, s.{q('worker')}, s.{q('close_reason')}, s.{q('client_id')}, {host_columns} "  # noqa: S608
        f"FROM {session_table} s LEFT JOIN {host_table} h ON h.{q('id')} = s.{q('host_id')} "
        f"WHERE s.{q('session_id')} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [session_id])
        found = cursor.fetchone()
    if found is None:
        return None
    state, worker, close_reason, client_id, *host_values = found
    host = None
    if host_values[0] is not None:
        # from_db keeps the other fields deferred: reading one later loads it, never a wrong default.
        # Raw SQL returns the JSON column as text (SQLite, and Django's psycopg setup): decode it.
        raw_tags = host_values[_TAGS]
        host_values[_TAGS] = json.loads(raw_tags) if isinstance(raw_tags, str | bytes) else raw_tags
        host = Host.from_db(connection.alias, list(_HOST_FIELDS), host_values)
        host.enabled = bool(host.enabled)  # SQLite returns 0/1
    return SessionRow(session_id, state, worker, close_reason, client_id, host)


@dataclass
class Target:
    host: Host | None
    session_id: str | None
    problem: str = ""
    problem_status: str = Status.ERROR


def resolve(session_id: str | None, host_name: str | None, client_id: int | None) -> Target:
    """Find the host (and session) a call names, or say why it cannot run.

    A session belongs to the client that opened it: to any other client it does not exist.
    """
    if bool(session_id) == bool(host_name):
        return Target(None, None, "give exactly one of session_id or host")
    if session_id:
        row = session_row(session_id)
        if row is None or (client_id is not None and row.client_id != client_id):
            return Target(
                None, session_id, f"unknown session_id {session_id!r}; ssh_status lists your sessions"
            )
        if row.host is None:
            return Target(
                None, session_id, f"the host of session '{session_id}' was removed by an administrator"
            )
        if row.state == SshSession.State.CLOSED:
            if row.worker == current_worker():
                # Closed elsewhere (an admin terminated it): drop the connection this process holds.
                get_dispatcher().disconnect(session_id, row.close_reason)
            return Target(
                row.host, session_id, f"session '{session_id}' is closed; call ssh_connect to open a new one"
            )
        unreachable = unreachable_reason(row)
        if unreachable:
            return Target(row.host, session_id, unreachable)
        if not row.host.enabled:
            return Target(
                row.host, session_id, f"host '{row.host.name}' is disabled by an administrator", Status.DENIED
            )
        return Target(row.host, session_id)
    assert host_name is not None
    try:
        return Target(get_enabled_host(host_name), None)
    except HostNotFound as exc:
        return Target(None, None, str(exc))
    except HostDisabled as exc:
        host = Host.objects.filter(name=host_name).first()
        return Target(host, None, str(exc), Status.DENIED)


def unreachable_reason(row: SessionRow) -> str:
    """Why this process cannot use a session another embedded process holds ("" when it can)."""
    if row.worker == current_worker() or not row.worker.startswith(EMBEDDED_PREFIX):
        return ""
    if worker_alive(row.worker) is False:
        SshSession.objects.filter(session_id=row.session_id).mark_lost("its server process stopped")
        return (
            f"session '{row.session_id}' was lost when the process holding it stopped; call ssh_connect again"
        )
    return (
        f"session '{row.session_id}' is held by another sshcontrol server process; embedded servers cannot "
        "share sessions (distributed mode can). Call ssh_connect to open one here"
    )


def reusable_session(host: Host, caller: Caller) -> str | None:
    """The caller's most recently used connected session on ``host`` that this process can reach."""
    rows = SshSession.objects.connected().filter(host=host)
    rows = (
        rows.filter(client_id=caller.client_id)
        if caller.client_id is not None
        else rows.filter(opened_by=caller.actor)
    )
    if get_dispatcher().embedded:
        rows = rows.filter(worker=current_worker())
    return rows.order_by("-last_used_at").values_list("session_id", flat=True).first()
