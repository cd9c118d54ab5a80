"""One audited call that touches a host, from its audit row's opening to its completion.

``host_call`` resolves the host or session the call names, authorizes it
(``hosts.access.authorize``), opens the audit row before anything reaches the host, and
yields a :class:`HostCall` whose methods dispatch the work (``sshcontrol/dispatch.py``) and
complete the row. However the block ends, the row is completed: a refusal or a failure
raises :class:`CallRefused` with one line for the caller (only the MCP layer turns it into
a ``ToolError``); anything unexpected is recorded as an internal error and re-raised.

Used by the MCP tools, the admin's Test connection and Terminate, and the ad-hoc refusal.
The row is written before acting and completed after, so a crash in between leaves a
``running`` row that the next start marks interrupted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, NoReturn, TypeVar

from django.db import connection, transaction

from audit import writelock, writer
from audit.models import AuditEvent
from audit.writer import Completion
from hosts import approvals
from hosts.access import (
    Authorization,
    ClientAccess,
    Permission,
    access_for,
    authorize,
    hidden_reason,
    sudo_exposure,
    unavailable,
)
from hosts.access_models import ApprovalRequest
from hosts.models import Host
from hosts.policy import Decision
from sshcontrol import calllog, durable, metrics
from sshcontrol.caller import Caller
from sshcontrol.dbretry import DatabaseUnavailable, complete_eventually, retrying
from sshcontrol.dispatch import Dispatcher, get_dispatcher
from sshcontrol.limits import LimitExceeded, check_limits
from sshcontrol.models import SshSession
from sshcontrol.opening import BatchOpen
from sshcontrol.targets import Target, resolve, reusable_session
from sshcontrol.taskspec import (
    CommandSpec,
    Connected,
    Copied,
    CopySpec,
    Disconnected,
    DispatchError,
    Downloaded,
    DownloadSpec,
    Executed,
    Failure,
    JobTicket,
    Listed,
    ListSpec,
    Owner,
    ProgressFn,
    StillRunning,
    Uploaded,
    UploadSpec,
)
from sshlib.execute import ExecResult
from sshlib.sessions import CLIENT_CANCEL

Status = AuditEvent.Status
R = TypeVar("R", Executed, Uploaded, Downloaded, Listed, Executed | StillRunning)


class CallRefused(Exception):
    """The call stopped before or instead of its work; its audit row is complete."""

    def __init__(self, message: str, status: str = Status.ERROR, event_id: int = 0) -> None:
        self.message = message
        self.status = status
        self.event_id = event_id  # the call's audit row (0 when none could be written)
        super().__init__(message)


@dataclass(frozen=True)
class AuditFields:
    """What the call's audit row opens with, besides who and where."""

    command: str = ""
    working_directory: str = ""
    stdin: str | None = None  # only the caller's: a sudo password is added later, by the holder
    remote_path: str = ""
    local_path: str = ""
    batch_id: str | None = None  # the ssh_execute_many call the row is one host of

    @classmethod
    def of(cls, spec: CommandSpec, batch_id: str | None = None) -> AuditFields:
        return cls(
            command=spec.command,
            working_directory=spec.working_directory or "",
            stdin=spec.stdin,
            batch_id=batch_id,
        )


@dataclass
class HostCall:
    """One audited call inside ``host_call``: ``host`` is known; the session is opened on demand."""

    tool: str
    caller: Caller
    host: Host
    event_id: int
    authorization: Authorization
    _session_id: str | None
    details: dict[str, Any] = field(default_factory=dict)
    completed: bool = False
    # A batch looks up the caller's reusable sessions of all its hosts in one query and hands
    # each call its answer ("" when none), instead of one query per host.
    known_reusable: str | None = None
    # A batch's new session comes from the host it prepared, its row written by the batch.
    batch_open: BatchOpen | None = None

    @property
    def decision(self) -> Decision | None:
        """For commands: the policy's verdict (allow, or approve: a denial never gets here)."""
        return self.authorization.decision

    @property
    def session_id(self) -> str:
        """The call's session: the one it names, else the caller's reusable one, else a new one."""
        if self._session_id is None:
            self._session_id = self._reuse_or_open()
        return self._session_id

    @property
    def open_session_id(self) -> str:
        """The session the call has so far, without opening one ("" when none yet)."""
        return self._session_id or ""

    # -- dispatching ---------------------------------------------------------------------------

    def open_new(self) -> Connected:
        """Open a fresh session for the call (never one the caller left open)."""
        try:
            connected = _dispatcher().connect(self.host.pk, self._owner(), batch=self.batch_open)
        except DispatchError as exc:
            self.fail(exc.message)
        self._session_id = connected.session_id
        self.details["session_opened"] = True
        self.details["host_key_fingerprint"] = connected.host_key_fingerprint
        return connected

    def reuse(self, session_id: str) -> Connected:
        """Re-attach to the caller's open session ``session_id`` of this host."""
        try:
            connected = _dispatcher().connect(self.host.pk, self._owner(), session_id=session_id)
        except DispatchError as exc:
            self.fail(exc.message)
        self._session_id = session_id
        return connected

    def execute(
        self, spec: CommandSpec, *, call_id: str = "", progress: ProgressFn | None = None
    ) -> Executed:
        return self._on_session(
            lambda d, sid: d.execute(
                sid, spec, call_id=call_id, progress=progress, audit_event_id=self.event_id
            )
        )

    def run_command(
        self,
        spec: CommandSpec,
        *,
        call_id: str = "",
        progress: ProgressFn | None = None,
        approval: ApprovalRequest | None = None,
    ) -> Executed:
        """Run the command on the call's session and complete its audit row (row id: ``event_id``).

        ``approval``, the request it ran under, is recorded as run. A run cancelled by
        anything but the client (a worker shutting down) is refused with that reason
        rather than returned as a normal-looking result.
        """
        executed = self.execute(spec, call_id=call_id, progress=progress)
        audit_id = self.complete_execution(executed)
        if approval is not None:
            done = approval
            complete_eventually(
                lambda: approvals.finish(done, audit_id), f"recording approval request {done.pk} as run"
            )
        if executed.run.cancelled and executed.cancel_reason not in ("", CLIENT_CANCEL):
            raise CallRefused(
                f"{executed.cancel_reason} (audit row {audit_id}); the next call on the session re-opens it "
                "on a live worker",
                Status.INTERRUPTED,
                audit_id,
            )
        return executed

    def run_job(
        self, spec: CommandSpec, ticket: JobTicket, *, progress: ProgressFn | None = None
    ) -> Executed | StillRunning:
        """``run_command`` that waits at most ``ticket.foreground`` seconds for the command.

        A command that ended by then completes the row here, as ``run_command`` does; one still
        running goes on as a background job, which completes this call's row when it ends
        (so a command that became a job has exactly one audit row).
        """
        done = self._on_session(
            lambda d, sid: d.execute_job(
                sid, spec, replace(ticket, session_id=sid), progress=progress, audit_event_id=self.event_id
            )
        )
        if isinstance(done, StillRunning):
            self.details["job_id"] = done.job_id
            self.completed = True  # the job's now: it completes the row
            return done
        audit_id = self.complete_execution(done)
        if done.run.cancelled and done.cancel_reason not in ("", CLIENT_CANCEL):
            raise CallRefused(
                f"{done.cancel_reason} (audit row {audit_id}); the next call on the session re-opens it "
                "on a live worker",
                Status.INTERRUPTED,
                audit_id,
            )
        return done

    def hand_over(self) -> None:
        """The row is now a detached job runner's to complete (embedded ``ssh_start_job``)."""
        self.completed = True

    def upload(self, spec: UploadSpec) -> Uploaded:
        return self._on_session(lambda d, sid: d.upload(sid, spec))

    def download(self, spec: DownloadSpec) -> Downloaded:
        return self._on_session(lambda d, sid: d.download(sid, spec))

    def list_files(self, spec: ListSpec) -> Listed:
        return self._on_session(lambda d, sid: d.list_files(sid, spec))

    def copy_here(self, source_session_id: str, spec: CopySpec) -> Copied:
        """``ssh_copy`` from ``source_session_id`` into this call's session, the destination.

        Not through ``_on_session``: a session not found may be the source's, and the
        destination's must not be marked lost (or re-opened) for it.
        """
        try:
            done = _dispatcher().copy(source_session_id, self.session_id, spec)
        except DispatchError as exc:
            self._dispatch_failed(exc)
        if done.reconnected:
            self.details["reconnected"] = True
        return done

    def disconnect(self, reason: str = "closed by the client") -> Disconnected:
        try:
            return _dispatcher().disconnect(self.session_id, reason)
        except DispatchError as exc:
            self.fail(exc.message)

    def _owner(self) -> Owner:
        return Owner(self.caller.actor, self.caller.client_id)

    def _reuse_or_open(self) -> str:
        host, caller = self.host, self.caller
        candidate = (
            self.known_reusable
            if self.known_reusable is not None
            else retrying(lambda: reusable_session(host, caller), "finding a session to reuse")
        )
        return candidate or self.open_new().session_id

    def _on_session(self, run: Callable[[Dispatcher, str], R]) -> R:
        """Run on the call's session; a host-named call whose reusable session went stale opens a new one."""
        auto = self._session_id is None
        session_id = self.session_id
        try:
            done = run(_dispatcher(), session_id)
        except DispatchError as exc:
            if exc.kind is not Failure.SESSION_NOT_FOUND:
                self._dispatch_failed(exc)
            retrying(
                lambda: SshSession.objects.filter(session_id=session_id).mark_lost(
                    "not held by any live process"
                ),
                "marking the session lost",
            )
            if not auto:
                self.fail(exc.message)
            try:
                done = run(_dispatcher(), self.open_new().session_id)
            except DispatchError as again:
                self._dispatch_failed(again)
        if done.reconnected:
            self.details["reconnected"] = True
        return done

    def _dispatch_failed(self, exc: DispatchError) -> NoReturn:
        # A worker that died mid-call, or a broker that vanished once the call was sent,
        # leaves the outcome unknown: that is an interruption, not an error.
        self.fail(exc.message, Status.INTERRUPTED if exc.kind.outcome_unknown else Status.ERROR)

    # -- completing ----------------------------------------------------------------------------

    def fail(self, message: str, status: str = Status.ERROR, *, audit_error: str = "") -> NoReturn:
        """Complete the audit row as failed and stop the call with a one-line error.

        ``audit_error`` is recorded instead of ``message`` where the message hides the reason.
        """
        calllog.note_status(status)
        error = audit_error or message
        event_id, details = self.event_id, self.details
        session_id = self._session_id
        outcome = Completion(status, session_id, error=error, details=details)
        with metrics.audit_write("complete"):
            durable.complete(event_id, lambda: writer.finish(event_id, outcome), outcome=outcome)
        self.completed = True
        raise CallRefused(message, status, event_id)

    def complete(
        self, status: str = Status.OK, *, file_size: int | None = None, file_sha256: str = ""
    ) -> int:
        """Complete the audit row of a call that did its work; returns the row's id."""
        outcome = Completion(
            status,
            self._session_id,
            reconnected=bool(self.details.get("reconnected")),
            details=self.details,
            file_size=file_size,
            file_sha256=file_sha256,
        )
        return self._complete(outcome, command_ran=False)

    def complete_execution(self, executed: Executed) -> int:
        """Complete the row of a command that ran, from what the holder returned."""
        return self._complete(self.ran_outcome(executed)[1], command_ran=True)

    def ran_outcome(self, executed: Executed) -> tuple[RanStatus, Completion]:
        """The host's status in a batch and the row's completion of a command that ran (``ran_outcome``)."""
        return ran_outcome(
            executed.run,
            cancel_reason=executed.cancel_reason,
            session_id=self._session_id,
            reconnected=bool(self.details.get("reconnected")),
            details=self.details,
        )

    def _complete(self, outcome: Completion, *, command_ran: bool) -> int:
        """Complete the audit row and record the session's use, in one transaction (one commit)."""
        calllog.note_status(outcome.status)
        session_id = self._session_id

        def write() -> None:
            with writelock.serialized(connection), transaction.atomic():
                writer.finish(self.event_id, outcome)
                if session_id:
                    SshSession.objects.touch(session_id, command_ran=command_ran)

        with metrics.audit_write("complete"):
            durable.complete(self.event_id, write, outcome=outcome)
        self.completed = True
        return self.event_id

    def crash(self, exc: BaseException) -> None:
        """Complete the row of a call that stopped on something unexpected (or the database)."""
        calllog.note_status(Status.ERROR)
        # The database staying away on the call's path (before its command started) is no
        # internal error: say so, to the client and in the row.
        error = str(exc) if isinstance(exc, DatabaseUnavailable) else f"internal error: {type(exc).__name__}"
        event_id, session_id = self.event_id, self._session_id
        outcome = Completion(Status.ERROR, session_id, error=error)
        durable.complete(event_id, lambda: writer.finish(event_id, outcome), outcome=outcome)
        self.completed = True


RanStatus = Literal["ok", "failed", "timed_out", "error"]


def ran_outcome(
    run: ExecResult,
    *,
    cancel_reason: str = "",
    session_id: str | None,
    reconnected: bool,
    details: Mapping[str, Any] | None,
) -> tuple[RanStatus, Completion]:
    """A command that ran: its host's status in a batch and how its audit row is completed.

    The one mapping for every path (a session's command, a batch's host on a session or on
    the libssh2 engine): timed out -> timed_out / row timeout; cancelled -> error / row
    interrupted, with why (``cancel_reason``, the client's cancellation by default); else ok
    or failed by the exit status / row ok (the row's exit status says the rest).
    """
    if run.timed_out:
        status: RanStatus = "timed_out"
    elif run.cancelled:
        status = "error"
    else:
        status = "ok" if run.exit_status == 0 else "failed"
    row_status = Status.TIMEOUT if run.timed_out else Status.INTERRUPTED if run.cancelled else Status.OK
    completion = Completion.of_command(
        run,
        status=row_status,
        error=(cancel_reason or CLIENT_CANCEL) if run.cancelled else "",
        session_id=session_id,
        reconnected=reconnected,
        details=details,
    )
    return status, completion


@contextmanager
def host_call(
    tool: str,
    caller: Caller,
    *,
    session_id: str | None = None,
    host_name: str | None = None,
    permission: Permission = Permission.CONNECT,
    audit: AuditFields = AuditFields(),
    sudo: bool = False,
    details: dict[str, Any] | None = None,
    target: Target | None = None,
) -> Iterator[HostCall]:
    """Open the audited call (refused calls raise ``CallRefused``, row completed) and complete it after.

    ``target`` is given by callers that found the session themselves (the admin's Terminate).

    A block that returns without completing the row has a bug: the row is completed as an
    internal error rather than left running.
    """
    opening = _Opening(tool, caller, session_id, host_name, permission, audit, sudo, dict(details or {}))
    call = opening.begin(target)
    try:
        yield call
    except CallRefused as exc:
        if not call.completed:
            call.fail(exc.message, exc.status)
        raise
    except BaseException as exc:
        if not call.completed:
            call.crash(exc)
        if isinstance(exc, DatabaseUnavailable):
            raise CallRefused(str(exc)) from None
        raise
    if not call.completed:
        call.crash(RuntimeError("the call ended without completing its audit row"))


@dataclass
class _Opening:
    """Everything before the call's row is open: target, grants, limits, and the row itself."""

    tool: str
    caller: Caller
    session_id: str | None
    host_name: str | None
    permission: Permission
    audit: AuditFields
    sudo: bool
    details: dict[str, Any]
    request_id: uuid.UUID = field(default_factory=uuid.uuid4)
    # The true reason of a refusal whose message hides it from the client (for the audit row).
    audit_error: str = ""

    def begin(self, target: Target | None) -> HostCall:
        try:
            if target is None:
                target = retrying(
                    lambda: resolve(self.session_id, self.host_name, self.caller.client_id),
                    "finding the host",
                )
            authorization, problem, status = self.check(target)
        except DatabaseUnavailable as exc:
            if self.host_name:
                self.details["host_requested"] = self.host_name[:100]
            found = target or Target(None, self.session_id)
            # Recorded once the database is back; fail closed: nothing ran.
            durable.refuse(exc, **self.row_fields(found.host, found.session_id))
            raise CallRefused(f"{exc}; nothing was run") from None
        if target.host is None and self.host_name:
            self.details["host_requested"] = self.host_name[:100]
        if authorization.sudo_exposed_to:
            self.details["sudo_exposed_to"] = list(authorization.sudo_exposed_to)
        try:
            with metrics.audit_write("begin"):
                event_id = durable.begin(**self.row_fields(target.host, target.session_id))
        except DatabaseUnavailable as exc:
            raise CallRefused(f"{exc}; nothing was run") from None
        calllog.note_audit(event_id, target.host.name if target.host else (self.host_name or ""))
        call = HostCall(
            self.tool,
            self.caller,
            # A call without a host is refused just below, or is the admin's Terminate of a session
            # whose host was removed: the stand-in only names it and is never saved or dispatched to.
            target.host or Host(name=self.host_name or ""),
            event_id,
            authorization,
            target.session_id,
            self.details,
        )
        if problem:
            call.fail(problem, status, audit_error=self.audit_error)
        return call

    def check(self, target: Target) -> tuple[Authorization, str, str]:
        """The authorization, and the refusal (with its audit status) if the call may not go on."""
        problem, status = target.problem, target.problem_status
        if self.host_name and not self.session_id and self.caller.client_id is not None:
            problem, status = retrying(
                lambda: self.hide_unavailable(target, problem, status), "checking the grants"
            )
        if problem or target.host is None:
            return Authorization(), problem, status
        host = target.host
        authorization = retrying(lambda: self.authorize(host, target.session_id), "checking the grants")
        return authorization, authorization.refusal, Status.DENIED

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

    def authorize(self, host: Host, session_id: str | None) -> Authorization:
        if self.caller.client_id is None:
            return Authorization()  # a signed-in admin's own action (Test connection)
        access = access_for(self.caller.client_id)
        decided = authorize(access, host, self.permission, command=self.audit.command, sudo=self.sudo)
        if decided.audit_error:
            self.audit_error = decided.audit_error
        if decided.allowed and self.permission is not Permission.DISCONNECT:
            return _within_limits(access, decided, opening_session=session_id is None)
        return decided

    def row_fields(self, host: Host | None, session_id: str | None) -> dict[str, Any]:
        """What the call's audit row opens with."""
        fields = asdict(self.audit)
        if fields["stdin"] is None:
            del fields["stdin"]
        return {
            "tool": self.tool,
            "actor": self.caller.actor,
            "client": self.caller.client_name,
            "oauth_issuer": self.caller.oauth_issuer,
            "oauth_subject": self.caller.oauth_subject,
            "transport": self.caller.transport,
            "host": host,
            "session_id": session_id or "",
            "request_id": self.request_id,
            "details": self.details,
            **fields,
        }


def refuse(
    tool: str,
    caller: Caller,
    message: str,
    *,
    host: Host | None = None,
    session_id: str = "",
    audit: AuditFields = AuditFields(),
    details: dict[str, Any] | None = None,
) -> NoReturn:
    """Record a call refused before it was looked at any further (denied), and stop it."""
    opening = _Opening(
        tool, caller, session_id or None, None, Permission.CONNECT, audit, False, dict(details or {})
    )
    HostCall(
        tool,
        caller,
        host or Host(),
        durable.begin(**opening.row_fields(host, session_id)),
        Authorization(message),
        session_id or None,
        opening.details,
    ).fail(message, Status.DENIED)


def _within_limits(access: ClientAccess, decided: Authorization, *, opening_session: bool) -> Authorization:
    try:
        check_limits(access, opening_session=opening_session)
    except LimitExceeded as exc:
        return Authorization(str(exc), decision=decided.decision)
    return decided


def recheck_sudo(call: HostCall) -> None:
    """Refuse (denied) a sudo command whose password a grant changed meanwhile would expose."""
    exposed, to = sudo_exposure(call.host)
    if exposed:
        call.details["sudo_exposed_to"] = list(to)
        call.fail(exposed, Status.DENIED)


def _dispatcher() -> Dispatcher:
    return get_dispatcher()
