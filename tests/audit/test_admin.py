"""The audit admin: viewable by superusers, never addable, changeable or deletable."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit import writer
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def event_id():
    event_id = writer.begin(
        tool="run_command", actor="claude", transport="stdio", command="cat /etc/motd <b>bold</b>"
    )
    writer.complete(event_id, status="ok", exit_status=0, stdout="<script>alert(1)</script>\nline 2")
    return event_id


def test_it_lists_events(admin_client, event_id):
    response = admin_client.get(reverse("admin:audit_auditevent_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "cat /etc/motd &lt;b&gt;bold&lt;/b&gt;" in body
    assert 'name="action"' not in body  # no bulk actions, delete_selected included


def test_it_searches_by_request_id(admin_client, event_id):
    request_id = AuditEvent.objects.get(pk=event_id).request_id
    url = reverse("admin:audit_auditevent_changelist")
    assert "cat /etc/motd" in admin_client.get(url, {"q": str(request_id)}).content.decode()
    assert "cat /etc/motd" not in admin_client.get(url, {"q": "nomatch"}).content.decode()


def test_it_shows_an_event_read_only_with_escaped_output(admin_client, event_id):
    response = admin_client.get(reverse("admin:audit_auditevent_change", args=[event_id]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert(1)" not in body
    assert "<pre" in body
    assert 'name="_save"' not in body


def test_it_refuses_add(admin_client):
    assert admin_client.get(reverse("admin:audit_auditevent_add")).status_code == 403


def test_it_refuses_delete(admin_client, event_id):
    url = reverse("admin:audit_auditevent_delete", args=[event_id])
    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event_id).exists()


def test_it_refuses_changes(admin_client, event_id):
    url = reverse("admin:audit_auditevent_change", args=[event_id])
    response = admin_client.post(url, {"status": "error", "command": "rm -rf /", "stdout": "forged"})
    assert response.status_code == 403
    event = AuditEvent.objects.get(pk=event_id)
    assert (event.status, event.command, event.stdout) == ("ok", "cat /etc/motd <b>bold</b>", event.stdout)
    assert event.stdout.startswith("<script>")
