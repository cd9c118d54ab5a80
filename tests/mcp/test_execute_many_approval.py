"""ssh_execute_many with hosts a command rule holds back: one approval for the batch, real sshd.

The hosts that need an approval share one request that lists them; the whole batch waits
for it (the hosts that need none too, so the canary order holds); approved, everything runs
in the batch with one audit row per host; denied, the listed hosts are refused with the
admin's comment; undecided in time, nothing runs and ssh_approval_status runs it once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from hosts import approvals
from hosts.models import ApprovalRequest, CommandRule, Host
from tests.database import closing_connections
from tests.mcp.conftest import McpHarness
from tests.polling import wait_until

AsClient = Callable[..., McpHarness]
GUARDED = r"^echo guarded"
NAMES = ["n0", "n1", "n2", "n3"]
HELD = ["n1", "n3"]  # the hosts whose rule asks for an approval


@pytest.fixture
def agent(as_client: AsClient, make_host: Callable[..., Host], settings: Any) -> McpHarness:
    settings.APPROVAL_WAIT_SECONDS = 0.3
    made = [make_host(name) for name in NAMES]
    for host in made:
        if host.name in HELD:
            CommandRule.objects.create(host=host, action="approve", pattern=GUARDED)
    return as_client("agent", owner="alice", hosts=made, can_execute=True, can_list=True)


def statuses(result: dict[str, Any]) -> dict[str, str]:
    return {r["host"]: r["status"] for r in result["results"]}


def decide_when_asked(approve: bool, comment: str = "") -> threading.Thread:
    """Decide the batch's request as admin bob once it is pending, from another thread."""

    @closing_connections
    def decide() -> None:
        pk = wait_until(
            lambda: ApprovalRequest.objects.filter(state="pending").values_list("pk", flat=True).first(),
            15,
            "no request made",
        )
        assert pk is not None
        approvals.decide(pk, "bob", approve=approve, comment=comment)

    thread = threading.Thread(target=decide)
    thread.start()
    return thread


def test_one_approval_covers_the_batch_and_every_host_runs(agent: McpHarness, settings: Any) -> None:
    settings.APPROVAL_WAIT_SECONDS = 20
    decider = decide_when_asked(approve=True, comment="go")
    result = agent.ok("ssh_execute_many", hosts=NAMES, command="echo guarded", batch_size=2)
    decider.join()
    assert statuses(result) == dict.fromkeys(NAMES, "ok")
    [request] = ApprovalRequest.objects.all()
    assert (request.batch_hosts, request.batch_id, request.state) == (HELD, result["batch_id"], "executed")
    assert request.host.name == "n1" and request.client_owner == "alice"
    assert result["state"] == "completed"
    assert result["approval"] == {
        "request_id": request.pk,
        "state": "executed",
        "hosts": HELD,
        "decided_by": "bob",
        "comment": "go",
    }
    rows = list(AuditEvent.objects.filter(batch_id=result["batch_id"]).order_by("id"))
    assert sorted(r.host_name for r in rows) == NAMES  # one row per host
    assert all(r.status == "ok" and r.tool == "ssh_execute_many" for r in rows)
    linked = {r.host_name: (r.details.get("approval_request"), r.details.get("approved_by")) for r in rows}
    assert linked == {
        "n0": (None, None),
        "n1": (request.pk, "bob"),
        "n2": (None, None),
        "n3": (request.pk, "bob"),
    }


def test_a_denial_refuses_the_listed_hosts_with_the_comment_and_the_others_run(
    agent: McpHarness, settings: Any
) -> None:
    settings.APPROVAL_WAIT_SECONDS = 20
    decider = decide_when_asked(approve=False, comment="not during the freeze")
    result = agent.ok("ssh_execute_many", hosts=NAMES, command="echo guarded")
    decider.join()
    assert statuses(result) == {"n0": "ok", "n1": "refused", "n2": "ok", "n3": "refused"}
    by_host = {r["host"]: r for r in result["results"]}
    assert "denied by bob: not during the freeze" in by_host["n1"]["error"]
    assert result["approval"]["state"] == "denied"
    rows = {r.host_name: r for r in AuditEvent.objects.filter(batch_id=result["batch_id"])}
    assert len(rows) == 4 and rows["n3"].status == "denied" and "not during the freeze" in rows["n3"].error
    text = agent.text("ssh_execute_many", hosts=["n0"], command="echo guarded")
    assert "1 ok" in text


def test_undecided_nothing_runs_and_ssh_approval_status_runs_the_batch_once(agent: McpHarness) -> None:
    result = agent.ok("ssh_execute_many", hosts=NAMES, command="echo guarded", reason="rotate")
    assert result["state"] == "pending"
    request_id = result["pending_approval"]["request_id"]
    assert result["pending_approval"]["next_arguments"] == {"request_id": request_id}
    assert set(statuses(result).values()) == {"skipped"}
    asked = AuditEvent.objects.filter(batch_id=result["batch_id"])
    assert asked.count() == 4 and set(asked.values_list("status", flat=True)) == {"pending"}
    text = agent.text("ssh_approval_status", request_id=request_id)
    assert "n1, n3" in text and "waiting for an administrator" in text

    approvals.decide(request_id, "bob", approve=True)
    first = agent.ok("ssh_approval_status", request_id=request_id)
    assert first["state"] == "executed" and first["batch_hosts"] == HELD
    ran = first["batch_execution"]
    assert ran["batch_id"] == result["batch_id"] and ran["summary"]["ok"] == 4
    assert {r["stdout"] for r in ran["results"]} == {"guarded\n"}
    done = AuditEvent.objects.filter(batch_id=result["batch_id"], status="ok")
    assert sorted(done.values_list("host_name", flat=True)) == NAMES
    assert {r.details.get("approval_request") for r in done if r.host_name in HELD} == {request_id}

    again = agent.ok("ssh_approval_status", request_id=request_id)
    assert again["state"] == "executed" and again["batch_execution"] is None
    assert AuditEvent.objects.filter(batch_id=result["batch_id"], status="ok").count() == 4
    assert "ran earlier" in agent.text("ssh_approval_status", request_id=request_id)


def test_the_clients_owner_cannot_approve_the_batch(agent: McpHarness) -> None:
    result = agent.ok("ssh_execute_many", hosts=NAMES, command="echo guarded")
    request_id = result["pending_approval"]["request_id"]
    with pytest.raises(approvals.ApprovalError, match="owns client 'agent'"):
        approvals.decide(request_id, "alice", approve=True)
    assert ApprovalRequest.objects.get(pk=request_id).state == "pending"


def test_a_host_not_listed_in_the_approval_is_refused_when_it_runs(agent: McpHarness) -> None:
    result = agent.ok("ssh_execute_many", hosts=NAMES, command="echo guarded")
    request_id = result["pending_approval"]["request_id"]
    # A rule added while the request waited holds back n0 too: the approval does not cover it.
    CommandRule.objects.create(host=Host.objects.get(name="n0"), action="approve", pattern=GUARDED)
    approvals.decide(request_id, "bob", approve=True)
    ran = agent.ok("ssh_approval_status", request_id=request_id)["batch_execution"]
    assert statuses(ran) == {"n0": "refused", "n1": "ok", "n2": "ok", "n3": "ok"}
    assert "does not cover it" in ran["results"][0]["error"]


def test_the_admin_shows_the_hosts_on_the_request_and_the_band(agent: McpHarness, admin_client: Any) -> None:
    result = agent.ok("ssh_execute_many", hosts=NAMES, command="echo guarded")
    request_id = result["pending_approval"]["request_id"]
    page = admin_client.get(reverse("admin:hosts_approvalrequest_change", args=[request_id]))
    html = page.content.decode()
    assert page.status_code == 200
    assert 'id="batch-hosts"' in html and "n1, n3" in html and result["batch_id"] in html
    assert "2 hosts: n1, n3" in html
    band = admin_client.get(reverse("admin:index")).content.decode()
    assert "2 hosts (n1, n3)" in band
    listing = admin_client.get(reverse("admin:hosts_approvalrequest_changelist")).content.decode()
    assert "n1 +1" in listing
    # The batch's rows wait on the one request: the audit list shows them awaiting approval.
    waiting = admin_client.get(reverse("admin:audit_auditevent_changelist"), {"status__exact": "pending"})
    assert waiting.context["cl"].result_count == 4
    approvals.decide(request_id, "bob", approve=False)
    held = admin_client.get(reverse("admin:audit_auditevent_changelist"), {"status__exact": "pending"})
    assert held.context["cl"].result_count == 0
