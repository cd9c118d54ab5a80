"""One tool call that touches a host: resolve the target, open the audit row, dispatch, complete.

This runs synchronously in a worker thread of the MCP server (see ``sshcontrol.mcp.threads``):
the audit row is written before anything reaches the host and completed after, so a
crash in between still leaves a ``running`` row that the next start marks interrupted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from django.db import connection, transaction
from django.utils import timezone
from mcp.server.mcpserver.exceptions import ToolError

from audit import writelock, writer
from audit.models import AuditEvent
from hosts import sudo_rule
from hosts.access import ClientAccess, access_for
from hosts.inventory import HostDisabled, HostNotFound, get_enabled_host
from hosts.models import Host
from hosts.policy import Decision
from sshcontrol import calllog, metrics
from sshcontrol.dbretry import DatabaseUnavailable, retrying
from sshcontrol.dispatch import ProgressFn, get_dispatcher
from sshcontrol.holders import EMBEDDED_PREFIX, current_worker, worker_alive
from sshcontrol.mcp import durable
from sshcontrol.mcp.identity import Caller
from sshcontrol.mcp.limits import LimitExceeded, check_limits
from sshcontrol.models import SshSession
from sshlib.sessions import CLIENT_CANCEL

Status = AuditEvent.Status
T = TypeVar("T")

# Failures a model can act on get their own wording; these kinds mean "the session is gone".
_SESSION_GONE = {"session_not_found"}
# Failures after the work was handed over: it may have run.
_OUTCOME_UNKNOWN = {"worker_lost", "outcome_unknown"}


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


# What an ``execute`` result and its audit row share, field for field.
EXECUTION_FIELDS = (
    "exit_status",
    "stdout",
    "stderr",
    "stdout_bytes",
    "stderr_bytes",
    "stdout_truncated",
    "stderr_truncated",
)


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
                get_dispatcher().call("disconnect", {"session_id": session_id, "reason": row.close_reason})
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


def unavailable(host_name: str, client_name: str) -> str:
    """The one answer for a host the client may not see, whether registered or not.

    An unregistered host and one registered but not granted must read the same, byte for
    byte, or a client could probe the inventory; the audit row keeps the true reason.
    """
    return (
        f"host '{host_name}' is not available to client '{client_name}' "
        "(not registered, or not granted to it); ssh_list_hosts shows yours"
    )


def hidden_reason(access: ClientAccess, host_name: str, host: Host | None) -> str:
    """For the audit row: why ``host_name`` is unavailable to the client ("" when it is available)."""
    if host is None:
        return f"no host named {host_name!r} is registered"
    if not access.grants_for(host):
        state = "registered" if host.enabled else "registered (and disabled)"
        return f"host '{host.name}' is {state} but no grant of client '{access.name}' covers it"
    return ""


def unreachable_reason(row: SessionRow) -> str:
    """Why this process cannot use a session another embedded process holds ("" when it can)."""
    if row.worker == current_worker() or not row.worker.startswith(EMBEDDED_PREFIX):
        return ""
    if worker_alive(row.worker) is False:
        mark_lost(row.session_id, "its server process stopped")
        return (
            f"session '{row.session_id}' was lost when the process holding it stopped; call ssh_connect again"
        )
    return (
        f"session '{row.session_id}' is held by another sshcontrol server process; embedded servers cannot "
        "share sessions (distributed mode can). Call ssh_connect to open one here"
    )


def reusable_session(host: Host, caller: Caller) -> str | None:
    """The caller's most recently used connected session on ``host`` that this process can reach."""
    rows = SshSession.objects.filter(host=host, state=SshSession.State.CONNECTED)
    rows = (
        rows.filter(client_id=caller.client_id)
        if caller.client_id is not None
        else rows.filter(opened_by=caller.actor)
    )
    if get_dispatcher().embedded:
        rows = rows.filter(worker=current_worker())
    return rows.order_by("-last_used_at").values_list("session_id", flat=True).first()


def touch_session(session_id: str, command_ran: bool) -> None:
    """Record a session's use: one UPDATE on every call, so written as plain SQL.

    The ORM would spend ten times the statement's cost compiling it (measured ~0.3 ms of
    a call's budget); the SQL is one table's columns, quoted by the backend.
    """
    ops = connection.ops
    table = ops.quote_name(SshSession._meta.db_table)
    last_used, state, count, sid = (
        ops.quote_name(c) for c in ("last_used_at", "state", "commands_run", "session_id")
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {last_used} = %s, {state} = %s, {count} = {count} + %s "  # noqa: S608
            f"WHERE {sid} = %s AND {state} <> %s",
            [
                ops.adapt_datetimefield_value(timezone.now()),
                SshSession.State.CONNECTED,
                int(command_ran),
                session_id,
                SshSession.State.CLOSED,
            ],
        )


def mark_lost(session_id: str, reason: str) -> None:
    SshSession.objects.filter(session_id=session_id, state=SshSession.State.CONNECTED).update(
        state=SshSession.State.LOST, closed_at=timezone.now(), close_reason=reason
    )


@dataclass
class HostCall:
    """The state of one audited call; ``run`` drives it from start to completed audit row."""

    tool: str
    caller: Caller
    session_id: str | None
    host_name: str | None
    audit_fields: dict[str, str] = field(default_factory=dict)
    request_id: uuid.UUID = field(default_factory=uuid.uuid4)
    # What the call needs on its host: "connect", "execute", "read", "write" or "disconnect".
    permission: str = "connect"
    sudo: bool = False
    host: Host | None = None
    event_id: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    # For commands: the policy's verdict ("allow" or "approve" once begin has passed).
    decision: Decision | None = None
    # The true reason of a refusal whose message hides it from the client (for the audit row).
    audit_error: str = ""

    def begin(self) -> None:
        by_host_name = bool(self.host_name) and not self.session_id
        try:
            target = retrying(
                lambda: resolve(self.session_id, self.host_name, self.caller.client_id), "finding the host"
            )
            self.host = target.host
            self.session_id = target.session_id
            problem, status = target.problem, target.problem_status
            if by_host_name and self.caller.client_id is not None:
                shown, shown_status = problem, status
                problem, status = retrying(
                    lambda: self.hide_unavailable(target, shown, shown_status), "checking the grants"
                )
            if not problem and target.host is not None:
                host = target.host
                problem, status = retrying(lambda: self.authorize(host), "checking the grants"), Status.DENIED
        except DatabaseUnavailable as exc:
            if self.host_name:
                self.details["host_requested"] = self.host_name[:100]
            durable.refuse(exc, **self.row_fields())  # recorded once the database is back
            raise
        if target.host is None and self.host_name:
            self.details["host_requested"] = self.host_name[:100]
        with metrics.audit_write("begin"):
            self.event_id = durable.begin(**self.row_fields())
        calllog.note_audit(self.event_id, target.host.name if target.host else (self.host_name or ""))
        if problem:
            self.fail(problem, status, audit_error=self.audit_error)

    def hide_unavailable(self, target: Target, problem: str, status: str) -> tuple[str, str]:
        """A host-named call: refuse an unregistered and an ungranted host with the same words.

        The client's own state comes first, so a disabled client learns nothing about hosts either.
        """
        assert self.caller.client_id is not None and self.host_name is not None
        access = access_for(self.caller.client_id)
        if access.problem:
            return access.problem, Status.DENIED
        reason = hidden_reason(access, self.host_name, target.host)
        if not reason:
            return problem, status  # granted: the client may know it (and that it is disabled)
        self.audit_error = reason
        # The audit status stays true too: an unknown name is an error, an ungranted host a denial.
        return unavailable(self.host_name, access.name), status if target.host is None else Status.DENIED

    def row_fields(self) -> dict[str, Any]:
        """What the call's audit row opens with."""
        return {
            "tool": self.tool,
            "actor": self.caller.actor,
            "client": self.caller.client_name,
            "oauth_issuer": self.caller.oauth_issuer,
            "oauth_subject": self.caller.oauth_subject,
            "transport": self.caller.transport,
            "host": self.host,
            "session_id": self.session_id or "",
            "request_id": self.request_id,
            "details": self.details,
            **self.audit_fields,
        }

    def authorize(self, host: Host) -> str:
        """Why the caller may not make this call on ``host`` ("" when it may).

        For commands this also records the policy's decision, which may ask for approval.
        """
        if self.caller.client_id is None:
            return ""  # a signed-in admin's own action (Test connection)
        access = access_for(self.caller.client_id)
        if access.problem:
            return access.problem
        if self.permission == "disconnect":
            return ""  # closing one's own session is always allowed
        who = f"client '{access.name}'"
        if not access.grants_for(host):
            self.audit_error = hidden_reason(access, host.name, host)
            return unavailable(host.name, access.name)
        if self.permission == "execute":
            self.decision = access.command(host, self.audit_fields.get("command", ""), self.sudo)
            if self.decision.verdict == "deny":
                return self.decision.reason
            if self.sudo:
                exposed = self.sudo_exposure(host)
                if exposed:
                    return exposed
        elif self.permission == "read" and not access.can_read(host):
            return f"{who} may not read files on host '{host.name}'"
        elif self.permission == "write" and not access.can_write(host):
            return f"{who} may not write files on host '{host.name}'"
        elif self.permission == "connect" and not access.can_connect(host):
            return f"{who} may not open sessions on host '{host.name}'"
        try:
            check_limits(access, opening_session=self.session_id is None)
        except LimitExceeded as exc:
            return str(exc)
        return ""

    def sudo_exposure(self, host: Host) -> str:
        """Why the sudo password rule refuses sudo on ``host`` ("" when it allows it).

        Checked on every sudo call (and again when an approved one runs): a grant changed
        since is taken into account. Without a sudo password there is nothing to expose.
        """
        credential = host.credential
        if credential is None or not credential.has_sudo_password:
            return ""
        exposures = sudo_rule.exposures_for_host(host.pk)
        if not exposures:
            return ""
        self.details["sudo_exposed_to"] = [e.describe() for e in exposures]
        return sudo_rule.refusal(host.name, exposures)

    def fail(
        self, message: str, status: str = Status.ERROR, *, audit_error: str = "", **fields: Any
    ) -> NoReturn:
        """Complete the audit row as failed and stop the tool with a one-line error.

        ``audit_error`` is recorded instead of ``message`` where the message hides the reason.
        """
        calllog.note_status(status)
        with metrics.audit_write("complete"):
            durable.complete(
                self.event_id,
                lambda: writer.complete(
                    self.event_id,
                    status=status,
                    error=audit_error or message,
                    session_id=self.session_id,
                    details=self.details,
                    **fields,
                ),
            )
        raise ToolError(message)

    def connect(self, reuse: bool) -> str:
        """Ensure a session: reuse the caller's connected one on the host, else open a new one."""
        assert self.host is not None
        dispatcher = get_dispatcher()
        if reuse:
            host = self.host
            candidate = retrying(lambda: reusable_session(host, self.caller), "finding a session to reuse")
            if candidate:
                return candidate
        envelope = dispatcher.call(
            "connect",
            {"host_id": self.host.pk, "actor": self.caller.actor, "client_id": self.caller.client_id},
        )
        if not envelope["ok"]:
            self.fail(envelope["message"])
        session_id: str = envelope["result"]["session_id"]
        self.session_id = session_id
        self.details["session_opened"] = True
        self.details["host_key_fingerprint"] = envelope["result"]["host_key_fingerprint"]
        return session_id

    def dispatch(
        self,
        task: str,
        kwargs: dict[str, Any],
        call_id: str = "",
        progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """Run ``task`` on the session (opening one for host-addressed calls); fail cleanly on errors."""
        dispatcher = get_dispatcher()
        auto = self.session_id is None
        session_id = self.session_id or self.connect(reuse=True)
        self.session_id = session_id
        envelope = dispatcher.call(
            task, {**kwargs, "session_id": session_id}, call_id=call_id, progress=progress
        )
        if not envelope["ok"] and envelope["kind"] in _SESSION_GONE:
            retrying(
                lambda: mark_lost(session_id, "not held by any live process"), "marking the session lost"
            )
            if not auto:
                self.fail(envelope["message"])
            # A host-addressed call never fails because a reusable session went stale: open a new one.
            session_id = self.connect(reuse=False)
            envelope = dispatcher.call(
                task, {**kwargs, "session_id": session_id}, call_id=call_id, progress=progress
            )
        if not envelope["ok"]:
            # A worker that died mid-call, or a broker that vanished once the call was sent,
            # leaves the outcome unknown: that is an interruption, not an error.
            status = Status.INTERRUPTED if envelope["kind"] in _OUTCOME_UNKNOWN else Status.ERROR
            self.fail(envelope["message"], status)
        result: dict[str, Any] = envelope["result"]
        if result.get("reconnected"):
            self.details["reconnected"] = True
        return result

    def complete_execution(self, r: dict[str, Any]) -> int:
        """Complete the row of a command that ran, from the ``execute`` task's result."""
        if r["timed_out"]:
            status = Status.TIMEOUT
        elif r["cancelled"]:
            status = Status.INTERRUPTED
        else:
            status = Status.OK
        return self.complete(
            status,
            command_ran=True,
            signal=r["signal"] or "",
            error=(r.get("cancel_reason") or CLIENT_CANCEL) if r["cancelled"] else "",
            **{key: r[key] for key in EXECUTION_FIELDS},
        )

    def complete(self, status: str, command_ran: bool = False, **fields: Any) -> int:
        """Complete the audit row and record the session's use, in one transaction (one commit)."""
        calllog.note_status(status)

        def write() -> None:
            with writelock.serialized(connection), transaction.atomic():
                writer.complete(
                    self.event_id,
                    status=status,
                    session_id=self.session_id,
                    reconnected=bool(self.details.get("reconnected")),
                    details=self.details,
                    **fields,
                )
                if self.session_id:
                    touch_session(self.session_id, command_ran)

        with metrics.audit_write("complete"):
            durable.complete(self.event_id, write)
        return self.event_id


def run_host_call(
    tool: str,
    caller: Caller,
    body: Callable[[HostCall], T],
    *,
    session_id: str | None = None,
    host_name: str | None = None,
    audit_fields: dict[str, str] | None = None,
    permission: str = "connect",
    sudo: bool = False,
    details: dict[str, Any] | None = None,
) -> T:
    """Run one audited call of ``tool`` on the host or session it names; ``body`` does the work."""
    call = HostCall(
        tool,
        caller,
        session_id=session_id,
        host_name=host_name,
        audit_fields=audit_fields or {},
        permission=permission,
        sudo=sudo,
        details=details or {},
    )
    result: T = run_guarded(call, body)
    return result


def run_guarded(call: HostCall, body: Callable[[HostCall], Any]) -> Any:
    """Run ``body`` after opening the audit row; any unexpected error still completes the row."""
    try:
        call.begin()
    except DatabaseUnavailable as exc:
        raise ToolError(f"{exc}; nothing was run") from None  # fail closed: no row, no action
    try:
        return body(call)
    except ToolError:
        raise
    except BaseException as exc:
        calllog.note_status(Status.ERROR)
        # The database staying away on the call's path (before its command started) is no
        # internal error: say so, to the client and in the row.
        unavailable = isinstance(exc, DatabaseUnavailable)
        error = str(exc) if unavailable else f"internal error: {type(exc).__name__}"
        durable.complete(
            call.event_id,
            lambda: writer.complete(
                call.event_id, status=Status.ERROR, session_id=call.session_id, error=error
            ),
        )
        if unavailable:
            raise ToolError(error) from None
        raise
