"""A command that needs an admin's approval: ask, wait a while, then run it once or say why not.

Runs in the call's thread. The wait is bounded by ``SSHCONTROL_APPROVAL_WAIT_SECONDS``;
past it the call returns a normal result in state ``pending`` with the request id, and
``ssh_approval_status`` runs the command later, once, if an admin approved it before it
expired. Not having a decision yet is not an error: a program reads the state and the id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NoReturn

from django.conf import settings

from audit.models import AuditEvent
from hosts import approvals
from hosts.access_models import ApprovalRequest
from sshcontrol.dbretry import retrying
from sshcontrol.hostcall import HostCall, recheck_sudo
from sshcontrol.mcp.schemas import ExecuteResult
from sshcontrol.taskspec import CommandSpec

Status = AuditEvent.Status
State = ApprovalRequest.State

POLL_SECONDS = 0.25
# A progress notification at most this often while waiting: it keeps clients from timing out.
NOTIFY_SECONDS = 5.0


def await_decision(
    call: HostCall,
    spec: CommandSpec,
    reason: str,
    notify: Callable[[str], None],
    cancelled: threading.Event,
) -> ApprovalRequest:
    """Create the request, wait for the decision, and return it: claimed for this run, or undecided.

    An undecided request comes back in state pending, its audit row completed as pending
    (``held_back`` makes the tool's result). Denied or expired requests complete the row as
    denied and raise through ``call.fail``.
    """
    assert call.caller.client_id is not None and call.decision is not None  # a client's command
    client_id, host, rule = call.caller.client_id, call.host, call.decision.rule
    created = False

    def create() -> ApprovalRequest:
        nonlocal created
        if created:  # a lost reply may hide a committed INSERT: one request per call, never two
            existing = ApprovalRequest.objects.filter(audit_event_id=call.event_id).first()
            if existing is not None:
                return existing
        created = True
        return approvals.create(
            client_id=client_id,
            host=host,
            command=spec.command,
            working_directory=spec.working_directory or "",
            timeout=spec.timeout,
            sudo=spec.sudo,
            stdin=spec.stdin or "",
            reason=reason,
            rule=rule.pattern if rule else "",
            session_id=call.open_session_id,
            audit_event_id=call.event_id,
        )

    request = retrying(create, "creating the approval request")
    call.details["approval_request"] = request.pk
    if wait(request.pk, notify, cancelled) == State.APPROVED:
        # Grants may have changed while it waited: a client given execute meanwhile could have
        # planted code to catch the sudo password. Checked before the claim, so the request
        # stays approved and ssh_approval_status can run it (checked again) once that is fixed.
        if spec.sudo:
            recheck_sudo(call)
        claimed = claim_once(request.pk, client_id, call.event_id)
        if claimed is not None:
            call.details["approved_by"] = claimed.decided_by
            return claimed
    retrying(request.refresh_from_db, "reading the approval request")  # denied, expired or pending: why
    if request.state == State.PENDING:
        call.complete(Status.PENDING)
        return request
    fail_for(call, request)


def claim_once(request_id: int, client_id: int, event_id: int) -> ApprovalRequest | None:
    """``approvals.claim``, retried: a claim committed before its reply was lost is still ours."""
    tried = False

    def attempt() -> ApprovalRequest | None:
        nonlocal tried
        if tried:
            mine = ApprovalRequest.objects.select_related("host").filter(
                pk=request_id, state=State.EXECUTED, executed_event_id=event_id
            )
            if (found := mine.first()) is not None:
                return found
        tried = True
        return approvals.claim(request_id, client_id, event_id)

    return retrying(attempt, "claiming the approved request")


def wait(request_id: int, notify: Callable[[str], None], cancelled: threading.Event) -> str:
    """Poll the request until it is decided, the wait is over, or the client cancels."""
    deadline = time.monotonic() + float(settings.APPROVAL_WAIT_SECONDS)
    last_notice = 0.0

    def read() -> str | None:
        approvals.expire_overdue(request_id)
        return ApprovalRequest.objects.filter(pk=request_id).values_list("state", flat=True).first()

    while True:
        state = retrying(read, "reading the approval request")
        now = time.monotonic()
        if state != State.PENDING or now >= deadline or cancelled.is_set():
            return str(state)
        if now - last_notice >= NOTIFY_SECONDS:
            notify(f"waiting for approval of request {request_id}")
            last_notice = now
        cancelled.wait(min(POLL_SECONDS, max(0.0, deadline - now)))


def fail_for(call: HostCall, request: ApprovalRequest) -> NoReturn:
    """Complete the row for a request that was refused, with a message the model can act on."""
    if request.state == State.DENIED:
        comment = f": {request.comment}" if request.comment else ""
        call.fail(f"approval request {request.pk} was denied by {request.decided_by}{comment}", Status.DENIED)
    call.fail(f"approval request {request.pk} is {request.state} and will not run", Status.DENIED)


def held_back(call: HostCall, spec: CommandSpec, request: ApprovalRequest) -> ExecuteResult:
    """The result of a command still waiting for a decision: state pending and what to call next."""
    return ExecuteResult.held_back(call.open_session_id, call.host.name, spec.command, request, call.event_id)
