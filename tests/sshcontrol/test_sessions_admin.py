"""The sessions admin: read-only rows, and "Terminate" on the process that holds a session or not."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from audit.models import AuditEvent
from hosts.models import Host
from sshcontrol.dispatch import get_dispatcher
from sshcontrol.holders import current_worker
from sshcontrol.models import SshSession
from sshcontrol.targets import resolve
from sshcontrol.taskspec import Owner
from sshlib.sessions import registry
from tests.database import closing_connections
from tests.server_process import server_env

CHANGELIST = "admin:sshcontrol_sshsession_changelist"


@pytest.fixture(autouse=True)
def _close_held_sessions():
    yield
    registry.close_all()


def terminate(client, *session_ids: str):
    rows = SshSession.objects.filter(session_id__in=session_ids)
    return client.post(
        reverse(CHANGELIST),
        {"action": "terminate_selected", "_selected_action": [str(row.pk) for row in rows]},
        follow=True,
    )


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def other_process_row(session_id: str = "box-0ther") -> SshSession:
    host, _ = Host.objects.get_or_create(name="box", defaults={"address": "192.0.2.1", "username": "u"})
    return SshSession.objects.create(
        session_id=session_id,
        host=host,
        host_name="box",
        worker="embedded:some-other-machine:4242:777",
        opened_by="claude (os:alice)",
    )


@pytest.mark.django_db
def test_it_terminates_a_session_held_by_this_process_through_dispatch(admin_client, make_host):
    host = make_host("box")
    session_id = get_dispatcher().connect(host.pk, Owner("claude")).session_id
    assert registry.get(session_id) is not None
    assert SshSession.objects.get(session_id=session_id).worker == current_worker()

    response = terminate(admin_client, session_id)

    assert registry.get(session_id) is None  # the connection itself is gone
    row = SshSession.objects.get(session_id=session_id)
    assert (row.state, row.close_reason) == ("closed", "terminated by admin admin")
    assert messages_of(response) == [f"Terminated 1 session(s): {session_id}."]
    event = AuditEvent.objects.get(tool="ssh_disconnect")
    assert (event.actor, event.transport, event.status) == ("admin:admin", "admin", "ok")
    assert (event.host_id, event.session_id) == (host.pk, session_id)
    assert event.details["was_open"] is True and event.details["reason"] == "terminated by admin admin"


@pytest.mark.django_db
def test_a_session_held_by_another_process_is_marked_closed_and_refused(admin_client):
    row = other_process_row()
    response = terminate(admin_client, row.session_id)

    row.refresh_from_db()
    assert (row.state, row.close_reason) == ("closed", "terminated by admin admin")
    [message] = messages_of(response)
    assert "held by another sshcontrol process" in message
    assert "closed by that process when it exits" in message
    event = AuditEvent.objects.get(tool="ssh_disconnect")
    assert (event.actor, event.transport, event.status) == ("admin:admin", "admin", "ok")
    assert event.details["marked_closed"] is True
    assert "is closed" in resolve(row.session_id, None, None).problem


@pytest.mark.django_db
def test_an_already_closed_session_is_left_alone_and_not_audited(admin_client):
    row = other_process_row()
    SshSession.objects.filter(pk=row.pk).update(state="closed", close_reason="closed by the client")
    response = terminate(admin_client, row.session_id)
    assert messages_of(response) == [f"Already closed, left alone: {row.session_id}."]
    assert SshSession.objects.get(pk=row.pk).close_reason == "closed by the client"
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_it_lists_sessions_read_only_with_filters(admin_client):
    row = other_process_row()
    SshSession.objects.create(session_id="box-closed", host_name="box", worker="w", state="closed")
    url = reverse(CHANGELIST)
    body = admin_client.get(url).content.decode()
    # The list's short column set (it fits at 1280 px); the worker and opening time are on the row's page.
    for column in ("Host", "Opened by", "Last used at", "Commands", "State"):
        assert f">{column}</a>" in body or f">{column}</span>" in body, column
    assert "Terminate selected sessions" in body
    assert 'value="delete_selected"' not in body
    assert admin_client.get(url, {"state__exact": "connected"}).context["cl"].result_count == 1
    assert admin_client.get(url, {"host_name": "box"}).context["cl"].result_count == 2
    assert admin_client.get(reverse("admin:sshcontrol_sshsession_add")).status_code == 403
    change = admin_client.get(reverse("admin:sshcontrol_sshsession_change", args=[row.pk]))
    assert change.status_code == 200 and 'name="_save"' not in change.content.decode()
    assert "Worker" in change.content.decode() and "Opened at" in change.content.decode()
    delete = reverse("admin:sshcontrol_sshsession_delete", args=[row.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403


@pytest.mark.django_db
def test_a_viewer_cannot_terminate(client):
    viewer = User.objects.create_user("viewer", password="pw-for-tests-only", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_sshsession"))
    client.force_login(viewer)
    row = other_process_row()
    assert "Terminate selected sessions" not in client.get(reverse(CHANGELIST)).content.decode()
    terminate(client, row.session_id)
    row.refresh_from_db()
    assert row.state == "connected"
    assert not AuditEvent.objects.exists()


def _ok(result: object) -> dict[str, Any]:
    assert isinstance(result, CallToolResult) and not result.is_error, result
    assert result.structured_content is not None
    return result.structured_content


@pytest.mark.django_db(transaction=True)
def test_a_real_mcp_server_refuses_a_session_the_admin_terminated(admin_client, make_host, tmp_path):
    """The embedded default: the session lives in an ``mcp_serve`` process, the admin elsewhere."""
    make_host("box")
    env = server_env(tmp_path, SSHCONTROL_LOG_LEVEL="WARNING")
    params = StdioServerParameters(command=sys.executable, args=["-m", "sshcontrol", "mcp_serve"], env=env)
    outcome: dict[str, object] = {}

    async def scenario() -> None:
        async with Client(params) as mcp:
            session_id = _ok(await mcp.call_tool("ssh_connect", {"host": "box"}))["session_id"]
            _ok(await mcp.call_tool("ssh_execute", {"session_id": session_id, "command": "true"}))
            outcome["session_id"] = session_id
            outcome["response"] = await anyio.to_thread.run_sync(
                closing_connections(terminate), admin_client, session_id
            )
            refused = await mcp.call_tool("ssh_execute", {"session_id": session_id, "command": "true"})
            outcome["refused"] = refused

    anyio.run(scenario)
    session_id = outcome["session_id"]
    row = SshSession.objects.get(session_id=session_id)
    assert row.worker != current_worker() and row.state == "closed"
    assert "held by another sshcontrol process" in messages_of(outcome["response"])[0]
    refused = outcome["refused"]
    assert isinstance(refused, CallToolResult) and refused.is_error
    assert "is closed" in refused.content[0].text  # type: ignore[union-attr]
    assert AuditEvent.objects.filter(tool="ssh_disconnect", actor="admin:admin", status="ok").count() == 1
