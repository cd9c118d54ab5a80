"""Approval requests made as the MCP front makes them, for tests that decide them (admin, IdP)."""

from __future__ import annotations

from hosts import approvals
from hosts.access_models import ApprovalRequest, McpClient
from hosts.models import Host


def pending_request(
    client: McpClient, host: Host, command: str, rule: str, audit_event_id: int | None = 1
) -> ApprovalRequest:
    """A pending request of ``client`` to run ``command`` on ``host``, held by the rule ``rule``.

    No working directory, timeout, sudo, stdin, reason or session: what is decided is who may
    decide, not what runs. ``audit_event_id`` is the row of the call that asked.
    """
    return approvals.create(
        client_id=client.pk,
        host=host,
        command=command,
        working_directory="",
        timeout=None,
        sudo=False,
        stdin="",
        reason="",
        rule=rule,
        session_id="",
        audit_event_id=audit_event_id,
    )
