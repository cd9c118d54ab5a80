"""Running a command for a tool: the timeout, the dispatch, the audit row and the result.

Shared by ``ssh_execute`` and by ``ssh_approval_status``, which runs an approved request.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from django.conf import settings
from mcp.server.mcpserver.exceptions import ToolError

from hosts import approvals
from hosts.access_models import ApprovalRequest
from sshcontrol.dbretry import complete_eventually
from sshcontrol.mcp.approval_flow import claim_once
from sshcontrol.mcp.calls import EXECUTION_FIELDS, HostCall, run_host_call
from sshcontrol.mcp.identity import Caller
from sshcontrol.mcp.schemas import ExecuteResult
from sshlib.sessions import CLIENT_CANCEL


def checked_timeout(timeout: float | None) -> float:
    """The command timeout in seconds: the default when unset, refused above the maximum."""
    limit = float(settings.MAX_TIMEOUT)
    seconds = float(settings.DEFAULT_TIMEOUT) if timeout is None else timeout
    if seconds > limit:
        raise ToolError(f"timeout {seconds:g} s is above the maximum of {limit:g} s (SSHCONTROL_MAX_TIMEOUT)")
    return seconds


def own_client(caller: Caller) -> int:
    """The caller's client id; every MCP caller has one (only admin actions go without)."""
    if caller.client_id is None:
        raise ToolError("this call needs an MCP client identity")
    return caller.client_id


def execute_on(
    call: HostCall,
    command: str,
    working_directory: str | None,
    seconds: float,
    stdin: str | None,
    sudo: bool,
    call_id: str,
    progress: Callable[[int, int], None],
    approval: ApprovalRequest | None,
) -> ExecuteResult:
    """Run the command on the call's session, complete its audit row, and build the result."""
    assert call.host is not None
    r = call.dispatch(
        "execute",
        {
            "command": command,
            "working_directory": working_directory,
            "timeout": seconds,
            "stdin_b64": base64.b64encode(stdin.encode()).decode() if stdin is not None else None,
            "sudo": sudo,
            "audit_event_id": call.event_id,
        },
        call_id=call_id,
        progress=progress,
    )
    audit_id = call.complete_execution(r)
    if approval is not None:
        done = approval
        complete_eventually(
            lambda: approvals.finish(done, audit_id), f"recording approval request {done.pk} as run"
        )
    if r["cancelled"] and r.get("cancel_reason", CLIENT_CANCEL) != CLIENT_CANCEL:
        # Not the client's doing (a worker shutting down): say so instead of a normal-looking result.
        raise ToolError(
            f"{r['cancel_reason']} (audit row {audit_id}); the next call on the session re-opens it "
            "on a live worker"
        )
    assert call.session_id is not None
    return ExecuteResult(
        session_id=call.session_id,
        host=call.host.name,
        command=command,
        signal=r["signal"],
        timed_out=r["timed_out"],
        duration_ms=r["duration_ms"],
        audit_id=audit_id,
        approval_request=approval.pk if approval is not None else None,
        **{key: r[key] for key in EXECUTION_FIELDS},
    )


def run_approved(
    caller: Caller, request: ApprovalRequest, call_id: str, progress: Callable[[int, int], None]
) -> ExecuteResult:
    """Run an approved request once, as its own audited ssh_execute call on the request's host."""
    seconds = checked_timeout(request.timeout)

    def body(call: HostCall) -> ExecuteResult:
        claimed = claim_once(request.pk, own_client(caller), call.event_id)
        if claimed is None:
            call.fail(f"approval request {request.pk} is no longer approved (it ran or expired)")
        assert claimed is not None
        call.details["approval_request"] = request.pk
        call.details["approved_by"] = claimed.decided_by
        stdin = claimed.stdin if claimed.stdin else None
        return execute_on(
            call,
            claimed.command,
            claimed.working_directory or None,
            seconds,
            stdin,
            claimed.sudo,
            call_id,
            progress,
            claimed,
        )

    return run_host_call(
        "ssh_execute",
        caller,
        body,
        host_name=request.host.name,
        audit_fields={
            "command": request.command,
            "working_directory": request.working_directory,
            # As the run below feeds it: an empty stdin is none.
            **({"stdin": request.stdin} if request.stdin else {}),
        },
        permission="execute",
        sudo=request.sudo,
    )
