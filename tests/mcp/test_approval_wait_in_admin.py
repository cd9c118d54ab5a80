"""While a real ssh_execute waits for an admin, the audit list says so (issue 15).

The call's row is stored as ``running`` during the wait; the admin shows it as "Awaiting
approval" and the "Awaiting approval" filter counts it, then the decision shows as it is.
"""

from __future__ import annotations

from collections.abc import Callable

from django.urls import reverse

from audit.models import AuditEvent
from hosts import approvals
from hosts.models import ApprovalRequest
from tests.mcp.conftest import McpHarness
from tests.polling import wait_until

LIST = "admin:audit_auditevent_changelist"


def pending_request(seconds: float = 15) -> ApprovalRequest:
    request = wait_until(
        lambda: ApprovalRequest.objects.filter(state="pending").first(),
        seconds,
        "the call never asked for an approval",
    )
    assert request is not None
    return request


def test_a_waiting_call_is_awaiting_approval_in_the_audit_list(
    as_client: Callable[..., McpHarness], make_host, settings, admin_client
) -> None:
    settings.APPROVAL_WAIT_SECONDS = 30
    web = make_host("web1")
    agent = as_client("agent", owner="alice", hosts=[web], rules=[("approve", r"^echo guarded")])
    call = agent.submit("ssh_execute", host="web1", command="echo guarded 7")
    request = pending_request()
    assert request.audit_event_id is not None
    row = AuditEvent.objects.get(pk=request.audit_event_id)
    assert row.status == AuditEvent.Status.RUNNING  # as stored while the tool waits

    waiting = admin_client.get(reverse(LIST), {"status__exact": "pending"})
    assert [event.pk for event in waiting.context["cl"].result_list] == [row.pk]
    assert ">Awaiting approval</strong>" in waiting.content.decode()
    running = admin_client.get(reverse(LIST), {"status__exact": "running"})
    assert running.context["cl"].result_count == 0

    approvals.decide(request.pk, "bob", approve=False, comment="not now")
    result = call.result(timeout=30)
    assert result.is_error
    assert admin_client.get(reverse(LIST), {"status__exact": "pending"}).context["cl"].result_count == 0
    denied = admin_client.get(reverse(LIST), {"status__exact": "denied"})
    assert row.pk in [event.pk for event in denied.context["cl"].result_list]
