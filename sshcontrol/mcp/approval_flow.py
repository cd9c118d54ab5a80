"""A command that needs an admin's approval: ask, wait a while, then run it once or say why not.

Runs in the call's thread. The wait is bounded by ``SSHCONTROL_APPROVAL_WAIT_SECONDS``;
past it the call returns the request id and ``ssh_approval_status`` runs the command
later, once, if an admin approved it before it expired.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from django.conf import settings

from audit.models import AuditEvent
from hosts import approvals
from hosts.access_models import ApprovalRequest
from sshcontrol.mcp.calls import HostCall

Status = AuditEvent.Status
State = ApprovalRequest.State

POLL_SECONDS = 0.25
# A progress notification at most this often while waiting: it keeps clients from timing out.
NOTIFY_SECONDS = 5.0


@dataclass(frozen=True)
class Pending:
    """What the request records of the command it holds back."""

    command: str
    working_directory: str
    timeout: float | None
    sudo: bool
    stdin: str
    reason: str


def await_decision(
    call: HostCall,
    pending: Pending,
    notify: Callable[[str], None],
    cancelled: threading.Event,
) -> ApprovalRequest:
    """Create the request, wait for the decision, and return it claimed for this run.

    Every other outcome completes the audit row and raises through ``call.fail``: denied or
    expired (status denied), still undecided (status pending, with the request id).
    """
    assert call.host is not None and call.caller.client_id is not None and call.decision is not None
    request = approvals.create(
        client_id=call.caller.client_id,
        host=call.host,
        command=pending.command,
        working_directory=pending.working_directory,
        timeout=pending.timeout,
        sudo=pending.sudo,
        stdin=pending.stdin,
        reason=pending.reason,
        rule=call.decision.rule.pattern if call.decision.rule else "",
        session_id=call.session_id or "",
        audit_event_id=call.event_id,
    )
    call.details["approval_request"] = request.pk
    if wait(request.pk, notify, cancelled) == State.APPROVED:
        # Grants may have changed while it waited: a client given execute meanwhile could have
        # planted code to catch the sudo password. Checked before the claim, so the request
        # stays approved and ssh_approval_status can run it (checked again) once that is fixed.
        exposed = call.sudo_exposure(call.host) if pending.sudo else ""
        if exposed:
            call.fail(exposed, Status.DENIED)
        claimed = approvals.claim(request.pk, call.caller.client_id)
        if claimed is not None:
            call.details["approved_by"] = claimed.decided_by
            return claimed
    request.refresh_from_db()  # denied, expired, or still pending: the row says which, and why
    fail_for(call, request)


def wait(request_id: int, notify: Callable[[str], None], cancelled: threading.Event) -> str:
    """Poll the request until it is decided, the wait is over, or the client cancels."""
    deadline = time.monotonic() + float(settings.APPROVAL_WAIT_SECONDS)
    last_notice = 0.0
    while True:
        approvals.expire_overdue(request_id)
        state = ApprovalRequest.objects.filter(pk=request_id).values_list("state", flat=True).first()
        now = time.monotonic()
        if state != State.PENDING or now >= deadline or cancelled.is_set():
            return str(state)
        if now - last_notice >= NOTIFY_SECONDS:
            notify(f"waiting for approval of request {request_id}")
            last_notice = now
        cancelled.wait(min(POLL_SECONDS, max(0.0, deadline - now)))


def fail_for(call: HostCall, request: ApprovalRequest) -> NoReturn:
    """Complete the row for a request that will not run now, with a message the model can act on."""
    state = request.state
    if state == State.DENIED:
        comment = f": {request.comment}" if request.comment else ""
        call.fail(f"approval request {request.pk} was denied by {request.decided_by}{comment}", Status.DENIED)
    if state in (State.EXPIRED, State.EXECUTED):
        call.fail(f"approval request {request.pk} is {state} and will not run", Status.DENIED)
    call.fail(
        f"this command needs an administrator's approval: request {request.pk} is waiting for a decision "
        f"(expires {request.expires_at.isoformat()}). Call ssh_approval_status with "
        f"request_id={request.pk} later; once approved, that call runs the command once.",
        Status.PENDING,
    )
