"""Commands that need an administrator's approval, end to end against the real sshd.

The tool waits (with progress), runs the command once approved, says why when denied,
and past the wait returns a normal result in state ``pending`` with the request id that
``ssh_approval_status`` picks up later.
Nothing on the MCP surface can approve.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from hosts import approvals
from hosts.models import ApprovalRequest
from tests.database import closing_connections
from tests.mcp.conftest import McpHarness

AsClient = Callable[..., McpHarness]
GUARDED = r"^echo guarded"


def held(agent: McpHarness, command: str, **arguments: Any) -> int:
    """Run a command nobody approves in time; the result must say pending and name the request."""
    result = agent.ok("ssh_execute", host="web1", command=command, **arguments)
    assert result["state"] == "pending" and result["exit_status"] is None
    request_id: int = result["pending_approval"]["request_id"]
    return request_id


@pytest.fixture
def agent(as_client: AsClient, make_host, settings) -> McpHarness:
    settings.APPROVAL_WAIT_SECONDS = 0.3
    web = make_host("web1")
    return as_client("agent", owner="alice", hosts=[web], rules=[("approve", GUARDED)])


def test_it_returns_a_pending_result_when_nobody_decides_in_time(agent: McpHarness) -> None:
    result = agent.call("ssh_execute", host="web1", command="echo guarded 1", reason="cleanup")
    assert not result.is_error
    content = result.structured_content
    assert content is not None and content["state"] == "pending"
    held_back = content["pending_approval"]
    request = ApprovalRequest.objects.get(pk=held_back["request_id"])
    assert held_back == {
        "request_id": request.pk,
        "expires_at": request.expires_at.isoformat(),
        "next_tool": "ssh_approval_status",
        "next_arguments": {"request_id": request.pk},
    }
    assert (content["approval_request"], content["stdout"], content["audit_id"]) == (
        request.pk,
        "",
        request.audit_event_id,
    )
    text = result.content[0].text  # type: ignore[union-attr]
    assert "needs an administrator's approval" in text and f"request_id={request.pk}" in text
    assert (request.state, request.command, request.reason, request.rule) == (
        "pending",
        "echo guarded 1",
        "cleanup",
        GUARDED,
    )
    assert request.audit_event_id is not None
    event = AuditEvent.objects.get(pk=request.audit_event_id)
    assert event.status == "pending" and event.details["approval_request"] == request.pk
    status = agent.ok("ssh_approval_status", request_id=request.pk)
    assert status["state"] == "pending" and status["execution"] is None


def test_it_runs_an_approved_request_once(agent: McpHarness) -> None:
    request_id = held(agent, "echo guarded 2", stdin="ignored")
    approvals.decide(request_id, "bob", approve=True, comment="go ahead")
    first = agent.ok("ssh_approval_status", request_id=request_id)
    assert first["state"] == "executed" and first["decided_by"] == "bob"
    assert first["execution"]["stdout"] == "guarded 2\n"
    assert first["execution"]["approval_request"] == request_id
    ran = AuditEvent.objects.get(pk=first["execution"]["audit_id"])
    assert (ran.status, ran.details["approved_by"]) == ("ok", "bob")
    again = agent.ok("ssh_approval_status", request_id=request_id)
    assert again["execution"] is None and again["executed_audit_id"] == ran.pk
    assert AuditEvent.objects.filter(command="echo guarded 2", status="ok").count() == 1
    assert ApprovalRequest.objects.get(pk=request_id).stdin == ""


def test_it_runs_the_command_when_approval_comes_during_the_wait(agent: McpHarness, settings) -> None:
    settings.APPROVAL_WAIT_SECONDS = 20

    @closing_connections
    def approve_when_asked() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            request = ApprovalRequest.objects.filter(state="pending").first()
            if request is not None:
                approvals.decide(request.pk, "bob", approve=True)
                return
            time.sleep(0.05)

    approver = threading.Thread(target=approve_when_asked)
    approver.start()
    result = agent.ok("ssh_execute", host="web1", command="echo guarded 3")
    approver.join()
    assert result["stdout"] == "guarded 3\n" and result["approval_request"]


def test_it_tells_the_client_it_waits_for_approval(agent: McpHarness, settings) -> None:
    settings.APPROVAL_WAIT_SECONDS = 0.5
    updates: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(message)

    result = agent.run(
        agent.client.call_tool(
            "ssh_execute", {"host": "web1", "command": "echo guarded 9"}, progress_callback=on_progress
        )
    )
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["state"] == "pending"
    request_id = ApprovalRequest.objects.get(command="echo guarded 9").pk
    assert f"waiting for approval of request {request_id}" in updates


def test_it_reports_a_denial_with_the_admins_comment(agent: McpHarness) -> None:
    request_id = held(agent, "echo guarded 4")
    approvals.decide(request_id, "bob", approve=False, comment="not on a Friday")
    status = agent.ok("ssh_approval_status", request_id=request_id)
    assert (status["state"], status["comment"], status["execution"]) == ("denied", "not on a Friday", None)


def test_it_never_lets_the_owner_approve_their_own_agent(agent: McpHarness) -> None:
    request_id = held(agent, "echo guarded 5")
    with pytest.raises(approvals.ApprovalError, match="owns client 'agent'"):
        approvals.decide(request_id, "alice", approve=True)
    assert ApprovalRequest.objects.get(pk=request_id).state == "pending"


def test_it_does_not_run_an_expired_approval(agent: McpHarness) -> None:
    request_id = held(agent, "echo guarded 6")
    approvals.decide(request_id, "bob", approve=True)
    ApprovalRequest.objects.filter(pk=request_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    status = agent.ok("ssh_approval_status", request_id=request_id)
    assert status["state"] == "expired" and status["execution"] is None
    with pytest.raises(approvals.ApprovalError, match="expired"):
        approvals.decide(request_id, "carol", approve=True)


def test_it_keeps_requests_private_to_their_client(agent: McpHarness, as_client: AsClient) -> None:
    request_id = held(agent, "echo guarded 7")
    other = as_client("other", all_hosts=True)
    assert f"unknown approval request {request_id}" in other.error(
        "ssh_approval_status", request_id=request_id
    )


def test_it_offers_no_way_to_approve_over_mcp(agent: McpHarness) -> None:
    names = {tool.name for tool in agent.run(agent.client.list_tools()).tools}
    assert "ssh_approval_status" in names
    assert not any("approve" in name for name in names)


def test_it_links_the_audit_rows_to_the_request_in_the_admin(agent: McpHarness, admin_client) -> None:
    request_id = held(agent, "echo guarded 8")
    approvals.decide(request_id, "bob", approve=True)
    ran = agent.ok("ssh_approval_status", request_id=request_id)["execution"]["audit_id"]
    asked = ApprovalRequest.objects.get(pk=request_id).audit_event_id
    for event_id in (asked, ran):
        page = admin_client.get(f"/admin/audit/auditevent/{event_id}/change/").content.decode()
        assert f"/admin/hosts/approvalrequest/{request_id}/change/" in page
    assert "approved by bob" in admin_client.get(f"/admin/audit/auditevent/{ran}/change/").content.decode()
