"""One operation on many hosts: which hosts, in which order, and their audit rows.

``run_batch`` is the call service of ``ssh_execute_many`` (and, with another
``HostOperation``, of the fleet transfers of issue 14). It sits next to ``hostcall.py`` and
reuses its ``HostCall`` for each host, but pays the per-host costs once per batch:

- the caller's grants are read once (one ``hosts.access`` snapshot), every host is
  authorized against it, and a host the caller may not use is ``refused`` in the result
  (a host it may not even list reads exactly as an unregistered name, as for one call);
- the caller's reusable sessions of all the hosts are found in one query;
- the audit rows of a rolling batch are opened in one transaction (``writer.begin_many``)
  before any of its hosts is contacted (write before act), and the rows of hosts that
  finished are completed together (``writer.finish_many``) as they come in.

Hosts run on a shared thread pool, at most ``max_parallel`` at once per batch. Each host
goes through its ``HostCall`` and the dispatcher, so in distributed mode its command runs
on the worker that holds (or opens) its session. With ``batch_size`` the hosts run in
consecutive batches (the first is the canary); once ``stop_after_failures`` hosts failed,
no further batch starts, the one in flight finishes, and the rest are ``skipped``.

Hosts where a command rule asks for an administrator's approval share ONE request covering
the batch (``Approver``, built by the MCP front). The whole batch waits for it, the hosts that
need no approval included, so the canary and ``stop_after_failures`` see the hosts in the
order given: approved, everything runs as one batch (grants checked again first); denied, the
listed hosts are ``refused`` and the others run; undecided in time, nothing runs and
``ssh_approval_status`` runs the batch once later (``approved``).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import queue
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, TypeGuard

from django.db import close_old_connections, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from audit import writelock, writer
from audit.models import AuditEvent
from audit.writer import Completion
from hosts.access import (
    Authorization,
    ClientAccess,
    Permission,
    access_for,
    authorize,
    hidden_reason,
    unavailable,
)
from hosts.access_models import ApprovalRequest
from hosts.models import Host
from hosts.policy import Verdict
from hosts.specs import PreparedHost, prepare
from sshcontrol import calllog, dbretry, durable, fleet_engine, opening
from sshcontrol.caller import Caller
from sshcontrol.dbretry import DatabaseUnavailable, retrying
from sshcontrol.dispatch import get_dispatcher
from sshcontrol.holders import current_worker
from sshcontrol.hostcall import AuditFields, CallRefused, HostCall
from sshcontrol.limits import LimitExceeded, check_limits
from sshcontrol.models import SshSession
from sshcontrol.opening import BatchOpen, OpenedRow, OpenedRows
from sshcontrol.taskspec import CommandSpec
from sshlib.execute import ExecResult

log = logging.getLogger(__name__)

Status = AuditEvent.Status
HostStatus = Literal["ok", "failed", "timed_out", "refused", "skipped", "error"]
HOST_STATUSES: tuple[HostStatus, ...] = ("ok", "failed", "timed_out", "refused", "skipped", "error")
# The statuses stop_after_failures counts: a host that was tried and did not succeed.
FAILED: frozenset[HostStatus] = frozenset({"failed", "timed_out", "error"})

# Hosts one call may name or match (a tag): bounded so one call cannot open an unbounded batch.
MAX_HOSTS = 5000
# How often the rows of hosts that finished are completed while others still run.
FLUSH_SECONDS = 0.5
# Progress is reported at most this often (and when the last host is done): one notification
# per host of a 1,000-host batch would cost the event loop more than the hosts themselves.
PROGRESS_SECONDS = 0.2
# Rows completed per transaction: the write lock (all of SQLite) is held while they are chained,
# and a transaction of hundreds of rows, its statements each waiting for the GIL behind the
# host threads, held it past other writers' busy timeout on a loaded machine (1,000 hosts).
FINISH_ROWS = 25
# Threads shared by every batch of this process; each batch uses at most its max_parallel of them.
POOL_THREADS = 256


class BatchRefused(Exception):
    """The batch cannot start at all (no host selected, the client disabled, a limit reached)."""


@dataclass
class HostResult:
    """What one host of the batch came to."""

    host: str
    status: HostStatus
    audit_id: int = 0
    run: ExecResult | None = None  # for commands that ran (ok, failed, timed_out)
    error: str = ""
    session_id: str = ""


@dataclass
class BatchOutcome:
    batch_id: str
    results: list[HostResult]
    stopped_early: bool = False  # stop_after_failures was reached and later hosts were skipped
    # The approval request the batch asked for or ran under; in state pending, nothing ran.
    approval: ApprovalRequest | None = None


@dataclass(frozen=True)
class ApprovalAsk:
    """One approval for a batch: the hosts a rule held back, and every host that would run."""

    batch_id: str
    hosts: list[str]  # the hosts the request covers, in the batch's order
    rule: str  # the pattern of the first rule that asked
    all_hosts: list[str]  # the hosts that would run, in order (the ``ssh_approval_status`` run)


class Approver(Protocol):
    """Ask for the approval and wait a while: the request claimed for this run (state executed),
    denied or expired (the listed hosts are refused), or still pending (nothing runs)."""

    def __call__(self, ask: ApprovalAsk) -> ApprovalRequest: ...


@dataclass(frozen=True)
class Plan:
    """How the hosts are run: at most ``max_parallel`` at once, in batches, stopping after failures."""

    max_parallel: int = 50
    batch_size: int | None = None
    stop_after_failures: int | None = None


class HostOperation(Protocol):
    """The work done on each host, pluggable: a command here, file transfers later (issue 14)."""

    @property
    def tool(self) -> str: ...

    @property
    def permission(self) -> Permission: ...

    @property
    def sudo(self) -> bool: ...

    def audit(self, batch_id: str) -> AuditFields:
        """What each host's audit row opens with (its command is also what rules are checked against)."""
        ...

    def details(self) -> dict[str, Any]:
        """Details every host's audit row opens with (the caller's stated reason)."""
        ...

    def run(self, call: HostCall, call_id: str) -> tuple[HostResult, Completion]:
        """Do the work on ``call``'s host; the row is completed from the returned ``Completion``.

        A failure raises ``CallRefused`` after completing the row (``HostCall.fail``).
        """
        ...


@dataclass(frozen=True)
class RunCommand:
    """``ssh_execute_many``'s operation: one command on each host."""

    spec: CommandSpec
    reason: str = ""
    tool: str = "ssh_execute_many"
    permission: Permission = Permission.EXECUTE

    @property
    def sudo(self) -> bool:
        return self.spec.sudo

    def audit(self, batch_id: str) -> AuditFields:
        return AuditFields.of(self.spec, batch_id)

    def details(self) -> dict[str, Any]:
        return {"reason": self.reason[:2000]} if self.reason else {}

    def run(self, call: HostCall, call_id: str) -> tuple[HostResult, Completion]:
        executed = call.execute(self.spec, call_id=call_id)
        status, outcome = call.ran_outcome(executed)  # its error is set for a cancelled run only
        result = HostResult(
            call.host.name, status, call.event_id, executed.run, outcome.error, call.open_session_id
        )
        return result, outcome


@dataclass
class _Entry:
    """One named or matched host on its way through the batch."""

    name: str
    host: Host | None
    authorization: Authorization = field(default_factory=Authorization)
    refusal: str = ""  # for the client ("" when the host may run)
    audit_error: str = ""  # the true reason, where ``refusal`` hides it
    audit_status: str = Status.DENIED
    details: dict[str, Any] = field(default_factory=dict)
    result: HostResult | None = None
    approval_rule: str | None = None  # the pattern of the rule that asks for an approval here


# -- choosing the hosts ------------------------------------------------------------------------


def _select(
    access: ClientAccess, names: Sequence[str] | None, tag: str | None, *, sudo: bool = False
) -> list[_Entry]:
    """The batch's hosts, in order: the names given (each once), or the caller's listable hosts of ``tag``.

    A tag shows only hosts the caller may list, so the batch reveals no other host; a name the
    caller may not use reads exactly like an unregistered one, as ``ssh_execute``'s does.
    The hosts' credentials are read with them only for ``sudo`` (its authorization asks whether a
    credential holds a sudo password): a connection reads its host's credential where it is made
    (``tasks.connect``, on the worker that opens it), and a warm host needs none.
    """
    rows = Host.objects.select_related("credential") if sudo else Host.objects.all()
    if names is not None:
        wanted = list(dict.fromkeys(names))
        found = {h.name: h for h in rows.filter(name__in=wanted)}
        entries = []
        for name in wanted:
            host = found.get(name)
            entry = _Entry(name, host)
            reason = hidden_reason(access, name, host)
            if reason:
                entry.refusal, entry.audit_error = unavailable(name, access.name), reason
                entry.audit_status = Status.ERROR if host is None else Status.DENIED
                entry.details["host_requested"] = name[:100]
                if host is not None:  # the row names the host; the client's answer does not
                    entry.host = host
            elif host is not None and not host.enabled:
                entry.refusal = f"host '{name}' is disabled by an administrator"
            entries.append(entry)
        return entries
    assert tag is not None
    # Tags are a JSON list: filtered here, identically on SQLite and PostgreSQL.
    matched = rows.filter(enabled=True).order_by("name")
    return [_Entry(h.name, h) for h in matched if tag in h.tag_list and access.can_list(h)]


def _authorize(access: ClientAccess, entries: list[_Entry], op: HostOperation, command: str) -> None:
    for entry in entries:
        if entry.refusal or entry.host is None:
            continue
        decided = authorize(access, entry.host, op.permission, command=command, sudo=op.sudo)
        entry.authorization = decided
        if decided.refusal:
            entry.refusal, entry.audit_error = decided.refusal, decided.audit_error
            if decided.sudo_exposed_to:
                entry.details["sudo_exposed_to"] = list(decided.sudo_exposed_to)
        elif decided.decision is not None and decided.decision.verdict is Verdict.APPROVE:
            # Settled for the whole batch at once (``_settle_approval``).
            entry.approval_rule = decided.decision.rule.pattern if decided.decision.rule else ""


def _reusable_sessions(caller: Caller, host_ids: list[int]) -> dict[int, str]:
    """The caller's most recently used connected session on each host, found in one query."""
    rows = SshSession.objects.connected().filter(host_id__in=host_ids)
    rows = (
        rows.filter(client_id=caller.client_id)
        if caller.client_id is not None
        else rows.filter(opened_by=caller.actor)
    )
    if get_dispatcher().embedded:
        rows = rows.filter(worker=current_worker())
    found: dict[int, str] = {}
    for host_id, session_id in rows.order_by("last_used_at").values_list("host_id", "session_id"):
        found[host_id] = session_id  # the latest wins
    return found


# -- the audit rows ----------------------------------------------------------------------------


def _shared(caller: Caller, op: HostOperation, batch_id: str) -> dict[str, Any]:
    """What every audit row of the batch opens with."""
    fields = asdict(op.audit(batch_id))
    if fields["stdin"] is None:
        del fields["stdin"]
    return {
        "tool": op.tool,
        "actor": caller.actor,
        "client": caller.client_name,
        "oauth_issuer": caller.oauth_issuer,
        "oauth_subject": caller.oauth_subject,
        "transport": caller.transport,
        "session_id": "",
        **fields,
    }


def requested(hosts: Sequence[str] | None, tag: str | None) -> dict[str, Any]:
    """The hosts or tag a batch asked for, for a row written before they are resolved (capped)."""
    asked: dict[str, Any] = (
        {"hosts_requested": [h[:100] for h in hosts[:MAX_HOSTS]]} if hosts is not None else {}
    )
    return {**asked, **({"tag_requested": tag[:100]} if tag else {})}


def refuse_unchecked(
    caller: Caller,
    op: HostOperation,
    hosts: Sequence[str] | None,
    tag: str | None,
    exc: DatabaseUnavailable,
    nothing: str = "nothing was run",
) -> str:
    """A batch refused before its hosts were known (the database away): one ``error`` row for the
    call, written once the database is back (as ``durable.refuse`` does for one host). The message.
    """
    message = f"{exc}; {nothing}"
    row = {
        **_shared(caller, op, ""),
        "host": None,
        "request_id": uuid.uuid4(),
        "details": {**op.details(), **requested(hosts, tag)},
    }
    _postpone_refusals([row], message)
    return message


def _rows(caller: Caller, op: HostOperation, batch_id: str, entries: list[_Entry]) -> list[dict[str, Any]]:
    """The opening of each entry's audit row: what the batch says once, then each host's own."""
    shared = _shared(caller, op, batch_id)
    details = op.details()
    return [
        {**shared, "host": e.host, "request_id": uuid.uuid4(), "details": {**details, **e.details}}
        for e in entries
    ]


def _open_rows(rows: list[dict[str, Any]]) -> list[int]:
    """Open the rows in one transaction; a retry after a lost reply finds those already written."""
    if not rows:
        return []
    tried = False

    def attempt() -> list[int]:
        nonlocal tried
        if tried:
            ids = dict(
                AuditEvent.objects.filter(request_id__in=[r["request_id"] for r in rows]).values_list(
                    "request_id", "id"
                )
            )
            if len(ids) == len(rows):  # one transaction: all of them were written, or none
                return [ids[r["request_id"]] for r in rows]
        tried = True
        return writer.begin_many(rows)

    return retrying(attempt, "opening the batch's audit rows")


def _postpone_refusals(rows: list[dict[str, Any]], error: str) -> None:
    """Rows for hosts not started because the database was away, written once it is back (as a
    single call's refusal is, ``durable.refuse``): the attempt is not lost. The same request ids
    as the failed opening, so rows it committed before its reply was lost are completed, not doubled.
    """
    if not rows:
        return

    def write() -> None:
        request_ids = [r["request_id"] for r in rows]
        found = dict(AuditEvent.objects.filter(request_id__in=request_ids).values_list("request_id", "id"))
        # One transaction opened them: all of them were written, or none.
        ids = [found[r] for r in request_ids] if len(found) == len(rows) else writer.begin_many(rows)
        refused = Completion(Status.ERROR, None, error=error)
        with writelock.serialized(connection), transaction.atomic():
            writer.finish_many([(event_id, refused) for event_id in ids if not durable.finished(event_id)])

    dbretry.postpone(write, "recording a batch refused while the database was away")


def _close_rows(done: list[tuple[int, Completion, str]], opened: list[OpenedRow] | None = None) -> None:
    """Complete rows (and record each session's use) in one transaction; postponed if the database is away.

    ``opened``: new sessions of the batch, whose rows are written first, in the first transaction.
    """
    if not done and not opened:
        return
    # At least one chunk, even empty: it carries the new sessions.
    chunks = [done[start : start + FINISH_ROWS] for start in range(0, len(done), FINISH_ROWS)] or [[]]
    for i, chunk in enumerate(chunks):
        _close_some(chunk, opened if i == 0 else None)


def _close_some(done: list[tuple[int, Completion, str]], opened: list[OpenedRow] | None = None) -> None:
    def write() -> None:
        with writelock.serialized(connection), transaction.atomic():
            opening.write(opened or [])
            writer.finish_many([(event_id, outcome) for event_id, outcome, _session in done])
            SshSession.objects.touch_many(sorted({session for *_, session in done if session}))

    try:
        retrying(write, "completing the batch's audit rows")
    except DatabaseUnavailable:
        # A session is never used unrecorded: those opened are closed (their hosts' results stand).
        opening.abandon(opened or [])
        for event_id, outcome, _session in done:  # one by one, spooled until the database is back
            durable.complete(event_id, functools.partial(writer.finish, event_id, outcome), outcome=outcome)


def _refuse_all(caller: Caller, op: HostOperation, batch_id: str, entries: list[_Entry], status: str) -> None:
    """Rows for hosts that will not run (refused, or skipped): opened and completed together."""
    if not entries:
        return
    ids = _open_rows(_rows(caller, op, batch_id, entries))
    closing = []
    for event_id, entry in zip(ids, entries, strict=True):
        error = entry.audit_error or entry.refusal
        row_status = entry.audit_status if status == Status.DENIED else status
        closing.append((event_id, Completion(row_status, None, error=error), ""))
        shown: HostStatus = "refused" if status == Status.DENIED else "skipped"  # skipped or pending
        entry.result = HostResult(entry.name, shown, event_id, error=entry.refusal)
    _close_rows(closing)


# -- running -----------------------------------------------------------------------------------


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_thread_connections: list[BaseDatabaseWrapper] = []
_registered = threading.local()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="sshcontrol-fleet")
        return _pool


def close_thread_connections() -> int:
    """Close the database connections the fleet threads hold (a test run dropping its database)."""
    closed = 0
    with _pool_lock:
        for wrapper in _thread_connections:
            if wrapper.connection is not None:
                wrapper.inc_thread_sharing()
                try:
                    wrapper.close()
                finally:
                    wrapper.dec_thread_sharing()
                closed += 1
    return closed


def _on_host(op: HostOperation, call: HostCall, call_id: str) -> tuple[HostResult, Completion | None]:
    """One host's work, on a fleet thread: its result, and the completion still to write (None: written)."""
    close_old_connections()
    if not getattr(_registered, "done", False):
        with _pool_lock:
            _thread_connections.extend(connections[alias] for alias in connections)
        _registered.done = True
    try:
        return op.run(call, call_id)
    except CallRefused as exc:  # the row is complete (HostCall.fail)
        status: HostStatus = "error"
        if exc.status == Status.TIMEOUT:
            status = "timed_out"
        return HostResult(call.host.name, status, call.event_id, error=exc.message), None
    except Exception as exc:
        log.exception("batch host %s failed unexpectedly", call.host.name)
        call.crash(exc)
        return HostResult(
            call.host.name, "error", call.event_id, error="internal error; see the server log"
        ), None


@dataclass
class Batch:
    caller: Caller
    op: HostOperation
    plan: Plan
    batch_id: str
    total: int
    progress: Callable[[int, int], None] | None
    cancelled: threading.Event
    done: int = 0
    failures: int = 0
    call_ids: dict[str, str] = field(default_factory=dict)  # in flight: call id -> host
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The new sessions of the batch whose rows are written with the next completed audit rows.
    opened: OpenedRows = field(default_factory=OpenedRows)

    def report(self, finished: int) -> None:
        self.done += finished
        if self.progress is not None and finished:
            self.progress(self.done, self.total)

    def cancel(self) -> None:
        self.cancelled.set()
        with self.lock:
            in_flight = list(self.call_ids)
        for call_id in in_flight:
            get_dispatcher().cancel(call_id)

    def run_all(self, chunks: list[list[_Entry]], reusable: dict[int, str]) -> bool:
        """Run the chunks one after the other; True if stop_after_failures stopped them early."""
        limit = self.plan.stop_after_failures
        for index, chunk in enumerate(chunks):
            if self.cancelled.is_set() or (limit is not None and self.failures >= limit):
                rest = [e for c in chunks[index:] for e in c]
                stopped = not self.cancelled.is_set()
                for e in rest:
                    e.refusal = (
                        f"not started: {self.failures} host(s) failed (stop_after_failures={limit})"
                        if stopped
                        else "not started: the call was cancelled"
                    )
                _refuse_all(self.caller, self.op, self.batch_id, rest, Status.SKIPPED)
                self.report(len(rest))
                return stopped
            try:
                self.run_chunk(chunk, reusable)
            except DatabaseUnavailable as exc:
                # The chunk's rows could not be opened: none of its hosts (nor later ones) was
                # contacted. Earlier chunks ran, so the call returns what they did.
                for e in (e for c in chunks[index:] for e in c if e.result is None):
                    e.result = HostResult(e.name, "error", 0, error=f"not started: {exc}")
                later = [e for c in chunks[index + 1 :] for e in c]
                _postpone_refusals(_rows(self.caller, self.op, self.batch_id, later), f"not started: {exc}")
                return False
        return False

    def run_chunk(self, entries: list[_Entry], reusable: dict[int, str]) -> None:
        """Open the rows of ``entries``, then run them, at most ``max_parallel`` at once.

        Every row is committed (``_open_rows``) before the first host is contacted. Then
        ``max_parallel`` pool threads each take the next waiting host as soon as their last one
        is done, so no host waits for this thread to wake up and hand it on (under the GIL, with
        dozens of SSH threads busy, each such hand-off cost milliseconds). This thread only
        collects the results, completes their rows and reports progress.
        """
        rows = _rows(self.caller, self.op, self.batch_id, entries)
        try:
            ids = _open_rows(rows)
        except DatabaseUnavailable as exc:
            _postpone_refusals(rows, f"not started: {exc}")
            raise
        pairs = list(zip(ids, entries, strict=True))
        if _on_engine(self.op):
            on_engine = [(i, e) for i, e in pairs if e.host is not None and fleet_engine.eligible(e.host)]
            if on_engine:
                self.run_on_engine(on_engine, self.op.spec)
                pairs = [(i, e) for i, e in pairs if e.result is None]
                entries = [e for _i, e in pairs]
        prepared = _prepared(entries, reusable)
        waiting: collections.deque[tuple[_Entry, HostCall]] = collections.deque()
        for event_id, entry in pairs:
            assert entry.host is not None
            ready = prepared.get(entry.host.pk)
            calllog.note_audit(event_id, entry.name)
            call = HostCall(
                self.op.tool,
                self.caller,
                entry.host,
                event_id,
                entry.authorization,
                None,
                entry.details,
                known_reusable=reusable.get(entry.host.pk, ""),
                batch_open=BatchOpen(ready, self.opened) if ready is not None else None,
            )
            waiting.append((entry, call))
        finished: queue.SimpleQueue[_Finished | None] = queue.SimpleQueue()
        runners = min(self.plan.max_parallel, len(waiting))
        pool = _executor()
        for _ in range(runners):
            pool.submit(self.runner, waiting, finished)
        self.collect_all(finished, runners)
        if waiting:  # cancelled before these started: their rows are open, complete them as skipped
            reason = "not started: the call was cancelled"
            closing = []
            for entry, call in waiting:
                entry.result = HostResult(entry.name, "skipped", call.event_id, error=reason)
                closing.append((call.event_id, Completion(Status.SKIPPED, None, error=reason), ""))
                call.completed = True
            _close_rows(closing)
            self.report(len(waiting))

    def run_on_engine(self, pairs: list[tuple[int, _Entry]], spec: CommandSpec) -> None:
        """Run the hosts of ``pairs`` (rows open) on the libssh2 batch engine (``fleet_engine``).

        Their rows are completed in groups as they end, like ``collect_all``'s.
        """
        if self.cancelled.is_set():
            reason = "not started: the call was cancelled"
            for event_id, entry in pairs:
                entry.result = HostResult(entry.name, "skipped", event_id, error=reason)
            _close_rows([(i, Completion(Status.SKIPPED, None, error=reason), "") for i, _e in pairs])
            self.report(len(pairs))
            return
        host_ids = [e.host.pk for _i, e in pairs if e.host is not None]
        prepared = retrying(lambda: prepare(host_ids, direct=True), "reading the hosts")
        hosts = []
        for event_id, entry in pairs:
            assert entry.host is not None
            calllog.note_audit(event_id, entry.name)
            details = {**entry.details, "ssh_engine": "libssh2"}
            hosts.append(fleet_engine.EngineHost(event_id, entry.host.pk, details))
        owner = str(self.caller.client_id) if self.caller.client_id is not None else self.caller.actor
        closing: list[tuple[int, Completion, str]] = []
        flushed = reported = time.monotonic()
        unreported = 0
        ended_hosts = fleet_engine.run(
            owner, hosts, prepared, spec, self.cancelled, self.batch_id, idle=PROGRESS_SECONDS
        )
        for ended in ended_hosts:
            if ended is not None:
                event_id, entry = pairs[ended.index]
                status: HostStatus = ended.status  # type: ignore[assignment]
                entry.result = HostResult(entry.name, status, event_id, ended.run, ended.error)
                closing.append((event_id, ended.completion, ""))
                if status in FAILED:
                    self.failures += 1
                unreported += 1
            now = time.monotonic()
            if unreported and now - reported >= PROGRESS_SECONDS:
                self.report(unreported)
                unreported, reported = 0, now
            # Rows are completed FINISH_ROWS at a time as hosts end, while the engine's thread
            # (C, mostly outside the GIL) runs the rest: at the end only the last few are left
            # to write. (collect_all waits longer: its writes stall behind paramiko's threads.)
            if len(closing) >= FINISH_ROWS or (closing and now - flushed >= FLUSH_SECONDS):
                _close_rows(closing)
                closing, flushed = [], time.monotonic()
        _close_rows(closing)
        self.report(unreported)

    def runner(
        self,
        waiting: collections.deque[tuple[_Entry, HostCall]],
        finished: queue.SimpleQueue[_Finished | None],
    ) -> None:
        """On a pool thread: run waiting hosts one after the other until none is left (or cancelled)."""
        try:
            while True:
                with self.lock:
                    if self.cancelled.is_set() or not waiting:
                        return
                    entry, call = waiting.popleft()
                    call_id = f"{self.batch_id}-{call.event_id}"
                    self.call_ids[call_id] = entry.name
                try:
                    result, outcome = _on_host(self.op, call, call_id)
                finally:
                    with self.lock:
                        self.call_ids.pop(call_id, None)
                finished.put(_Finished(entry, call, result, outcome))
        finally:
            finished.put(None)  # this runner is done

    def collect_all(self, finished: queue.SimpleQueue[_Finished | None], runners: int) -> None:
        """Take the hosts' results until every runner is done; complete their rows in groups."""
        # Completed rows are written together, every FLUSH_SECONDS and at the end: each write
        # made while dozens of host threads hold the GIL waits for it once per statement.
        closing: list[tuple[int, Completion, str]] = []
        flushed = reported = time.monotonic()
        unreported = 0
        while runners:
            batch: list[_Finished | None] = []
            with contextlib.suppress(queue.Empty):
                batch.append(finished.get(timeout=PROGRESS_SECONDS))
                while True:  # everything that finished meanwhile, handled at once
                    batch.append(finished.get_nowait())
            for done in batch:
                if done is None:
                    runners -= 1
                else:
                    unreported += 1
                    self.collect(done, closing)
            now = time.monotonic()
            if unreported and (not runners or now - reported >= PROGRESS_SECONDS):
                self.report(unreported)
                unreported, reported = 0, now
            if closing and runners and now - flushed >= FLUSH_SECONDS:
                _close_rows(closing, self.opened.take())
                closing, flushed = [], time.monotonic()
        # Every runner is done: the last new sessions' rows are written before the batch answers.
        _close_rows(closing, self.opened.take())

    def collect(self, done: _Finished, closing: list[tuple[int, Completion, str]]) -> None:
        done.entry.result = done.result
        if done.outcome is not None:
            closing.append((done.call.event_id, done.outcome, done.call.open_session_id))
            done.call.completed = True
        if done.result.status in FAILED:
            self.failures += 1


@dataclass(frozen=True)
class _Finished:
    """A host whose work ended, handed from its pool thread to the batch's thread."""

    entry: _Entry
    call: HostCall
    result: HostResult
    outcome: Completion | None  # still to write (None: written already)


def _on_engine(op: HostOperation) -> TypeGuard[RunCommand]:
    """Whether the batch's eligible hosts run on the libssh2 engine (``fleet_engine``)."""
    return isinstance(op, RunCommand) and fleet_engine.enabled() and get_dispatcher().embedded


def _prepared(entries: list[_Entry], reusable: dict[int, str]) -> dict[int, PreparedHost]:
    """The hosts of ``entries`` that will open a session here, loaded in a few queries (embedded only).

    Loaded when the chunk starts, after its audit rows are open: the host keys its connections
    are checked against are the trusted keys at that moment (a key an administrator changed or
    revoked before it refuses the host; one changed while the chunk runs counts from the next
    call). In distributed mode the worker that connects loads its host itself.
    """
    if not get_dispatcher().embedded:
        return {}
    ids = [e.host.pk for e in entries if e.host is not None and e.host.pk not in reusable]
    if not ids:
        return {}
    return retrying(lambda: prepare(ids), "reading the hosts")


def _chunks(entries: list[_Entry], size: int | None) -> Iterator[list[_Entry]]:
    step = size or max(len(entries), 1)
    for start in range(0, len(entries), step):
        yield entries[start : start + step]


def new_batch_id() -> str:
    return f"batch-{secrets.token_hex(8)}"


def run_batch(
    caller: Caller,
    op: HostOperation,
    *,
    hosts: Sequence[str] | None = None,
    tag: str | None = None,
    plan: Plan = Plan(),
    progress: Callable[[int, int], None] | None = None,
    cancelled: threading.Event | None = None,
    on_start: Callable[[Batch], None] | None = None,
    approver: Approver | None = None,
    approved: ApprovalRequest | None = None,
    batch_id: str | None = None,
) -> BatchOutcome:
    """Run ``op`` on the hosts named (``hosts``) or tagged (``tag``), one audit row per host.

    Raises ``BatchRefused`` when nothing can start (no host selected, the client may not act,
    a limit reached); a host that cannot run is ``refused`` in the outcome instead. Hosts that
    need an approval ask ``approver`` for one covering the batch (without one they are
    refused); ``approved`` is a request already claimed for this run (``ssh_approval_status``),
    run under ``batch_id``, the batch that asked for it.
    """
    if (hosts is None) == (tag is None):
        raise BatchRefused("give exactly one of hosts or tag")
    assert caller.client_id is not None, "a batch is always a client's call"
    client_id = caller.client_id
    access = retrying(lambda: access_for(client_id), "checking the grants")
    if access.problem:
        raise BatchRefused(access.problem)
    entries = retrying(lambda: _select(access, hosts, tag, sudo=op.sudo), "finding the hosts")
    if not entries:
        raise BatchRefused(
            f"no host with tag '{tag}' is available to client '{access.name}'; ssh_list_hosts shows yours"
        )
    if len(entries) > MAX_HOSTS:
        raise BatchRefused(f"{len(entries)} hosts selected; one call runs on at most {MAX_HOSTS}")
    try:
        retrying(lambda: check_limits(access, opening_session=False), "checking the limits")
    except LimitExceeded as exc:
        raise BatchRefused(str(exc)) from None
    command = op.audit("").command
    retrying(lambda: _authorize(access, entries, op, command), "checking the grants")
    batch = Batch(
        caller, op, plan, batch_id or new_batch_id(), len(entries), progress, cancelled or threading.Event()
    )
    if on_start is not None:
        on_start(batch)
    refused = [e for e in entries if e.refusal]
    _refuse_all(caller, op, batch.batch_id, refused, Status.DENIED)
    batch.report(len(refused))
    request = _settle_approval(batch, client_id, [e for e in entries if not e.refusal], approver, approved)
    if request is not None and request.state == ApprovalRequest.State.PENDING:
        held = [e for e in entries if e.result is None]
        for e in held:
            e.refusal = (
                f"waiting for approval request {request.pk}; ssh_approval_status runs the batch once approved"
            )
        _refuse_all(caller, op, batch.batch_id, held, Status.PENDING)
        batch.report(len(held))
        return BatchOutcome(
            batch.batch_id, [e.result for e in entries if e.result is not None], False, request
        )
    runnable = [e for e in entries if not e.refusal]
    # Hosts the engine takes use no session; without a session limit to count them against,
    # their sessions are not looked for (a warm batch on the engine makes no such query).
    engine = _on_engine(op) and access.limits.open_sessions is None
    host_ids = [
        e.host.pk for e in runnable if e.host is not None and not (engine and fleet_engine.eligible(e.host))
    ]
    reusable = (
        retrying(lambda: _reusable_sessions(caller, host_ids), "finding sessions to reuse")
        if host_ids
        else {}
    )
    runnable = _within_session_limit(access, runnable, reusable, caller, op, batch.batch_id)
    batch.report(0)
    stopped = batch.run_all(list(_chunks(runnable, plan.batch_size)), reusable)
    results = [e.result for e in entries if e.result is not None]
    assert len(results) == len(entries)
    return BatchOutcome(batch.batch_id, results, stopped, request)


def _settle_approval(
    batch: Batch,
    client_id: int,
    entries: list[_Entry],
    approver: Approver | None,
    approved: ApprovalRequest | None,
) -> ApprovalRequest | None:
    """Decide the hosts a rule holds back: covered by an approval, refused, or all held (pending).

    Returns the request involved. Hosts refused here get their rows at once.
    """
    asking = [e for e in entries if e.approval_rule is not None]
    if approved is None and asking and approver is not None:
        request = approver(
            ApprovalAsk(
                batch.batch_id,
                [e.name for e in asking],
                asking[0].approval_rule or "",
                [e.name for e in entries],
            )
        )
        for e in asking:
            e.details["approval_request"] = request.pk
        if request.state == ApprovalRequest.State.PENDING:
            return request
        if request.state != ApprovalRequest.State.EXECUTED:
            if request.state == ApprovalRequest.State.DENIED:
                comment = f": {request.comment}" if request.comment else ""
                why = f"approval request {request.pk} was denied by {request.decided_by}{comment}"
            else:
                why = f"approval request {request.pk} is {request.state} and will not run"
            for e in asking:
                e.refusal = why
            _refuse_all(batch.caller, batch.op, batch.batch_id, asking, Status.DENIED)
            batch.report(len(asking))
            return request
        # Approved and claimed after a wait: the grants may have changed meanwhile (a client given
        # execute could have planted code to catch a sudo password), so every host is checked again.
        approved = request
        entries = _reauthorized(batch, client_id, entries)
        asking = [e for e in entries if e.approval_rule is not None]
    uncovered = []
    for e in asking:
        if approved is not None and e.name in approved.covered_hosts:
            e.details.update(approval_request=approved.pk, approved_by=approved.decided_by)
            continue
        e.refusal = (
            f"the command needs an administrator's approval on host '{e.name}' (rule {e.approval_rule!r})"
            + (f" and approval request {approved.pk} does not cover it" if approved is not None else "")
        )
        uncovered.append(e)
    _refuse_all(batch.caller, batch.op, batch.batch_id, uncovered, Status.DENIED)
    batch.report(len(uncovered))
    return approved


def _reauthorized(batch: Batch, client_id: int, entries: list[_Entry]) -> list[_Entry]:
    """Authorize ``entries`` again from fresh grants; those refused now get their rows. Returns the rest."""
    access = retrying(lambda: access_for(client_id), "checking the grants")
    for e in entries:
        e.approval_rule, e.authorization = None, Authorization()
        if access.problem:
            e.refusal = access.problem
    command = batch.op.audit("").command
    if not access.problem:
        retrying(lambda: _authorize(access, entries, batch.op, command), "checking the grants")
    refused = [e for e in entries if e.refusal]
    _refuse_all(batch.caller, batch.op, batch.batch_id, refused, Status.DENIED)
    batch.report(len(refused))
    return [e for e in entries if not e.refusal]


def _within_session_limit(
    access: ClientAccess,
    entries: list[_Entry],
    reusable: dict[int, str],
    caller: Caller,
    op: HostOperation,
    batch_id: str,
) -> list[_Entry]:
    """Hosts that would open a session beyond the client's open-session limit are refused."""
    limit = access.limits.open_sessions
    if limit is None:
        return entries
    open_now = SshSession.objects.filter(client_id=access.client_id, state=SshSession.State.CONNECTED).count()
    allowance = max(0, limit - open_now)
    kept, over = [], []
    for entry in entries:
        assert entry.host is not None
        if entry.host.pk in reusable:
            kept.append(entry)
        elif allowance > 0:
            allowance -= 1
            kept.append(entry)
        else:
            entry.refusal = (
                f"client '{access.name}' may have {limit} SSH sessions open and this host would open "
                "another; close some with ssh_disconnect or name fewer hosts"
            )
            over.append(entry)
    _refuse_all(caller, op, batch_id, over, Status.DENIED)
    return kept


def summary(results: Sequence[HostResult]) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(HOST_STATUSES, 0)
    for result in results:
        counts[result.status] += 1
    return counts
