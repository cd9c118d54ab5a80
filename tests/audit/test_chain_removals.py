"""Removing or renaming what audit rows name never breaks the chain, and tampering is still found.

Rows are written the real way (MCP calls against the real sshd, an admin's Test connection);
then hosts are removed and renamed, credentials, a client and the admin user deleted. Run on SQLite and,
with DATABASE_URL set, on PostgreSQL.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from audit import chain
from audit.models import AuditEvent
from hosts.models import Credential, Host, McpClient
from tests.mcp.conftest import McpHarness

AsClient = Callable[..., McpHarness]


def _verify_output() -> str:
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def _reported_at(event_id: int, check: str) -> None:
    with pytest.raises(CommandError, match=f"BROKEN at row id {event_id}\\b.*{check} check failed"):
        _verify_output()


@pytest.fixture
def history(as_client: AsClient, make_host, client, sshd) -> dict[str, int]:
    """Calls by two clients and an admin on three hosts, then every kind of removal and renaming."""
    web, db, cache = make_host("web1"), make_host("db1"), make_host("cache1")
    agent = as_client("agent", hosts=[web, db, cache])
    other = as_client("other", hosts=[web])
    admin = User.objects.create_superuser("alice", "alice@example.com", "pw-for-tests-only")
    client.force_login(admin)
    ids = {
        "web": agent.ok("ssh_execute", host="web1", command="hostname", stdin="x\n")["audit_id"],
        "db": agent.ok("ssh_execute", host="db1", command="echo db")["audit_id"],
        "other": other.ok("ssh_execute", host="web1", command="echo other")["audit_id"],
        "cache": agent.ok("ssh_execute", host="cache1", command="echo cache")["audit_id"],
    }
    response = client.post(
        reverse("admin:hosts_host_changelist"),
        {"action": "test_connection_action", "_selected_action": [web.pk]},
        follow=True,
    )
    assert response.status_code == 200
    ids["admin"] = AuditEvent.objects.get(actor="admin:alice").pk
    assert chain.verify().ok

    # Every removal the admin can make of what the rows name.
    web_id = web.pk
    web.delete()
    db.name = "db1-renamed"
    db.address = "10.9.9.9"
    db.save()
    cache.delete()
    Credential.objects.filter(name__in=["web1-cred", "cache1-cred"]).delete()  # their hosts are gone
    McpClient.objects.filter(name="other").delete()
    client.logout()
    admin.delete()
    assert not Host.objects.filter(pk=web_id).exists()
    assert not Credential.objects.filter(name="web1-cred").exists()
    assert (
        AuditEvent.objects.filter(host_ref=web_id, host_id__isnull=True).count() == 3
    )  # two calls and the test
    return ids


def test_it_verifies_after_hosts_clients_and_users_are_removed_or_renamed(history: dict[str, int]) -> None:
    out = _verify_output()
    assert out.startswith("audit chain OK:"), out
    # What the rows say about the call has not moved.
    db_row = AuditEvent.objects.get(pk=history["db"])
    assert (db_row.host_name, db_row.client) == ("db1", "agent")
    assert AuditEvent.objects.get(pk=history["other"]).client == "other"
    assert AuditEvent.objects.get(pk=history["admin"]).actor == "admin:alice"


def test_it_still_reports_an_edited_row_after_the_removals(history: dict[str, int]) -> None:
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(AuditEvent._meta.db_table)
        cursor.execute(f"UPDATE {table} SET stdout = %s WHERE id = %s", ["forged\n", history["db"]])  # noqa: S608
    _reported_at(history["db"], "hash")


def test_it_still_reports_a_changed_stdin_after_the_removals(history: dict[str, int]) -> None:
    AuditEvent.objects.filter(pk=history["web"]).update(stdin="rm -rf /\n")
    _reported_at(history["web"], "hash")


def test_it_still_reports_a_deleted_row_after_the_removals(history: dict[str, int]) -> None:
    AuditEvent.objects.filter(pk=history["other"]).delete()
    _reported_at(history["cache"], "missing")


def test_it_still_reports_an_inserted_row_after_the_removals(history: dict[str, int]) -> None:
    head = AuditEvent.objects.order_by("-chain_seq").first()
    assert head is not None and head.chain_seq is not None
    forged = AuditEvent.objects.create(
        request_id=uuid.uuid4(),
        started_at=timezone.now(),
        finished_at=timezone.now(),
        status="ok",
        actor="local-agent",
        client="agent",
        transport="stdio",
        tool="ssh_execute",
        host_name="web1",
        command="true",
        chain_seq=head.chain_seq + 1,
        prev_hash=head.chain_hash,
    )
    row = AuditEvent.objects.filter(pk=forged.pk).values(*chain.STORED_FIELDS).get()
    AuditEvent.objects.filter(pk=forged.pk).update(chain_hash=chain.row_hash(row))
    _reported_at(forged.pk, "head")


def test_it_still_reports_an_unchained_inserted_row_after_the_removals(history: dict[str, int]) -> None:
    forged = AuditEvent.objects.create(
        request_id=uuid.uuid4(),
        started_at=timezone.now(),
        finished_at=timezone.now(),
        status="ok",
        actor="local-agent",
        transport="stdio",
        tool="ssh_execute",
    )
    _reported_at(forged.pk, "unchained")
