"""Running a command for a tool: on the call's session, its audit row completed, its result built.

Shared by ``ssh_execute`` and by ``ssh_approval_status``, which runs an approved request.
"""

from __future__ import annotations

from django.conf import settings
from mcp.server.mcpserver.exceptions import ToolError

from hosts import approvals
from hosts.access import Permission
from hosts.access_models import ApprovalRequest
from sshcontrol.caller import Caller
from sshcontrol.dbretry import complete_eventually
from sshcontrol.hostcall import AuditFields, CallRefused, HostCall, host_call
from sshcontrol.mcp.approval_flow import claim_once
from sshcontrol.mcp.schemas import ExecuteResult
from sshcontrol.taskspec import CommandSpec, ProgressFn
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


def run_command(
    call: HostCall,
    spec: CommandSpec,
    *,
    call_id: str,
    progress: ProgressFn | None,
    approval: ApprovalRequest | None = None,
) -> ExecuteResult:
    """Run the command on the call's session, complete its audit row, and build the result."""
    executed = call.execute(spec, call_id=call_id, progress=progress)
    audit_id = call.complete_execution(executed)
    if approval is not None:
        done = approval
        complete_eventually(
            lambda: approvals.finish(done, audit_id), f"recording approval request {done.pk} as run"
        )
    if executed.run.cancelled and executed.cancel_reason not in ("", CLIENT_CANCEL):
        # Not the client's doing (a worker shutting down): say so instead of a normal-looking result.
        raise CallRefused(
            f"{executed.cancel_reason} (audit row {audit_id}); the next call on the session re-opens it "
            "on a live worker"
        )
    return ExecuteResult.of(
        call.session_id, call.host.name, spec.command, executed.run, audit_id, approval=approval
    )


def run_approved(
    caller: Caller, request: ApprovalRequest, call_id: str, progress: ProgressFn | None
) -> ExecuteResult:
    """Run an approved request once, as its own audited ssh_execute call on the request's host."""
    seconds = checked_timeout(request.timeout)
    # As the run below feeds it: an empty stdin is none.
    audit = AuditFields(request.command, request.working_directory, request.stdin or None)
    with host_call(
        "ssh_execute",
        caller,
        host_name=request.host.name,
        permission=Permission.EXECUTE,
        audit=audit,
        sudo=request.sudo,
    ) as call:
        claimed = claim_once(request.pk, own_client(caller), call.event_id)
        if claimed is None:
            call.fail(f"approval request {request.pk} is no longer approved (it ran or expired)")
        call.details["approval_request"] = request.pk
        call.details["approved_by"] = claimed.decided_by
        spec = CommandSpec(
            claimed.command, claimed.working_directory or None, seconds, claimed.stdin or None, claimed.sudo
        )
        return run_command(call, spec, call_id=call_id, progress=progress, approval=claimed)
