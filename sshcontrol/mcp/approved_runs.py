"""Running an approved request once, for ``ssh_approval_status``; and the timeout a command may ask for."""

from __future__ import annotations

from django.conf import settings
from mcp.server.mcpserver.exceptions import ToolError

from hosts.access import Permission
from hosts.access_models import ApprovalRequest
from sshcontrol.caller import Caller
from sshcontrol.hostcall import AuditFields, host_call
from sshcontrol.mcp.approval_flow import claim_once
from sshcontrol.mcp.identity import own_client
from sshcontrol.mcp.schemas import ExecuteResult
from sshcontrol.taskspec import CommandSpec, ProgressFn


def checked_timeout(timeout: float | None) -> float:
    """The command timeout in seconds: the default when unset, refused above the maximum."""
    limit = float(settings.MAX_TIMEOUT)
    seconds = float(settings.DEFAULT_TIMEOUT) if timeout is None else timeout
    if seconds > limit:
        raise ToolError(f"timeout {seconds:g} s is above the maximum of {limit:g} s (SSHCONTROL_MAX_TIMEOUT)")
    return seconds


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
        executed = call.run_command(spec, call_id=call_id, progress=progress, approval=claimed)
        return ExecuteResult.of(
            call.session_id, call.host.name, spec.command, executed.run, call.event_id, approval=claimed
        )
