"""The audit list tells the truth about calls waiting for an admin, and filters by host without a blank."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from audit import writer
from audit.models import AuditEvent
from hosts.access_models import ApprovalRequest
from hosts.clients import create_client
from hosts.models import Host

pytestmark = pytest.mark.django_db

LIST = "admin:audit_auditevent_changelist"


def waiting_call(command: str, expires_in: timedelta = timedelta(hours=1)) -> int:
    """A call as the MCP front leaves it while the tool waits: row running, request pending."""
    host = Host.objects.get_or_create(name="web1", address="192.0.2.1", username="deploy")[0]
    client = create_client(f"bot-{command.split()[0]}").client
    event_id = writer.begin(
        tool="ssh_execute", actor=client.name, client=client.name, transport="stdio", host=host,
        command=command,
    )  # fmt: skip
    now = timezone.now()
    ApprovalRequest.objects.create(
        client=client, host=host, command=command, requested_at=now, expires_at=now + expires_in,
        audit_event_id=event_id,
    )  # fmt: skip
    return event_id


def finished(command: str, status: str, host: Host | None = None) -> int:
    event_id = writer.begin(tool="ssh_execute", actor="a", transport="stdio", host=host, command=command)
    writer.complete(event_id, status=status)
    return event_id


def listed(admin_client, **query: str) -> list[int]:
    response = admin_client.get(reverse(LIST), query)
    assert response.status_code == 200
    return sorted(event.pk for event in response.context["cl"].result_list)


def test_a_call_waiting_for_approval_shows_and_filters_as_awaiting_approval(admin_client):
    waiting = waiting_call("systemctl restart nginx")
    running = writer.begin(tool="ssh_execute", actor="a", transport="stdio", command="sleep 100")
    done = finished("uptime", "ok")
    assert AuditEvent.objects.get(pk=waiting).status == AuditEvent.Status.RUNNING  # as stored

    assert listed(admin_client, status__exact="pending") == [waiting]
    assert listed(admin_client, status__exact="running") == [running]
    assert listed(admin_client, status__exact="ok") == [done]
    body = admin_client.get(reverse(LIST)).content.decode()
    assert body.count(">Awaiting approval</strong>") == 1 and body.count(">Running</strong>") == 1
    detail = admin_client.get(reverse("admin:audit_auditevent_change", args=[waiting])).content.decode()
    assert ">Awaiting approval</strong>" in detail
    # The sidebar's count is the number of rows behind the link.
    assert "Awaiting approval (1)" in " ".join(body.split())


def test_an_expired_or_decided_request_no_longer_awaits(admin_client):
    expired = waiting_call("reboot", expires_in=timedelta(seconds=-1))
    held = finished("shutdown now", "pending")  # the wait ended undecided; the request is gone
    assert listed(admin_client, status__exact="pending") == []
    assert listed(admin_client, status__exact="running") == [expired]
    assert listed(admin_client, status__exact="held") == [held]
    body = admin_client.get(reverse(LIST)).content.decode()
    assert "Held for approval (since decided or expired)</strong>" in body


def test_the_host_name_and_client_filters_have_no_blank_entry(admin_client):
    finished("uptime", "ok", Host.objects.create(name="web1", address="192.0.2.1", username="deploy"))
    no_host = writer.begin(tool="ssh_list_hosts", actor="a", transport="stdio")
    writer.complete(no_host, status="ok")
    response = admin_client.get(reverse(LIST))
    (host_filter,) = [f for f in response.context["cl"].filter_specs if f.title == "host name"]
    choices = [choice["display"] for choice in host_filter.choices(response.context["cl"])]
    assert all(str(display).strip() for display in choices), choices
    assert choices == ["All", "web1 (1)", "(no host) (1)"]  # with facet counts
    assert listed(admin_client, host_name__exact="-") == [no_host]
    (client_filter,) = [f for f in response.context["cl"].filter_specs if f.title == "client"]
    assert [c["display"] for c in client_filter.choices(response.context["cl"])] == [
        "All",
        "(no client) (2)",
    ]
    assert len(listed(admin_client, client__exact="-")) == 2
