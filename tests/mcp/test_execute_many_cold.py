"""ssh_execute_many on hosts with no session open: hosts prepared up front, session rows written in bulk.

This is the paramiko path, which serves hosts behind a jump host, hosts trusted on first use,
the distributed mode, and everything with ``SSHCONTROL_BATCH_ENGINE_LIBSSH2=0``; the same
promises on the libssh2 engine (the embedded default for other hosts) are in
tests/mcp/test_execute_many_engine.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paramiko
import pytest

from audit.models import AuditEvent
from hosts.models import Host, HostKey
from hosts.specs import build_spec, prepare
from sshcontrol.models import SshSession
from tests.hostkeys import trust
from tests.mcp.conftest import McpHarness


@pytest.fixture(autouse=True)
def on_paramiko(settings: Any) -> None:
    settings.BATCH_ENGINE_LIBSSH2 = False


def statuses(result: dict[str, Any]) -> dict[str, str]:
    return {r["host"]: r["status"] for r in result["results"]}


def pin_another_key(host: Host) -> None:
    """An administrator replaced the host's trusted key: the server's real key is no longer it."""
    host.host_keys.all().delete()
    trust(host, paramiko.RSAKey.generate(2048), approved_by="test")


def test_a_changed_or_revoked_pinned_key_refuses_that_host_only(
    mcp: McpHarness, make_host: Callable[..., Host]
) -> None:
    made = [make_host(f"cold{i}") for i in range(4)]
    pin_another_key(made[1])
    made[2].host_keys.update(state=HostKey.State.REVOKED)
    result = mcp.ok("ssh_execute_many", hosts=[h.name for h in made], command="echo hi")
    assert statuses(result) == {"cold0": "ok", "cold1": "error", "cold2": "error", "cold3": "ok"}
    errors = {r["host"]: r["error"] for r in result["results"]}
    assert "HOST KEY CHANGED" in errors["cold1"]
    assert "unknown host key" in errors["cold2"]
    # The key the server presented is stored as pending for the changed host; the revoked one stays revoked.
    assert made[1].host_keys.filter(state=HostKey.State.PENDING).count() == 1
    assert not made[2].host_keys.exclude(state=HostKey.State.REVOKED).exists()
    # Only the hosts that connected have a session (and a last connection).
    sessions = SshSession.objects.filter(state=SshSession.State.CONNECTED)
    assert sorted(sessions.values_list("host_name", flat=True)) == ["cold0", "cold3"]
    connected = Host.objects.filter(last_connected_at__isnull=False).values_list("name", flat=True)
    assert sorted(connected) == ["cold0", "cold3"]
    rows = AuditEvent.objects.filter(batch_id=result["batch_id"])
    assert {r.host_name: r.status for r in rows} == {
        "cold0": "ok",
        "cold1": "error",
        "cold2": "error",
        "cold3": "ok",
    }


def test_new_sessions_are_recorded_before_the_batch_answers(
    mcp: McpHarness, make_host: Callable[..., Host]
) -> None:
    made = [make_host(f"rec{i}", auth="ed25519") for i in range(3)]
    result = mcp.ok("ssh_execute_many", hosts=[h.name for h in made], command="true")
    assert set(statuses(result).values()) == {"ok"}
    rows = {r.host_name: r for r in AuditEvent.objects.filter(batch_id=result["batch_id"])}
    for host in made:
        session = SshSession.objects.get(host=host)
        assert session.state == SshSession.State.CONNECTED
        assert session.opened_by == rows[host.name].actor and session.client_id is not None
        assert session.commands_run == 1
        assert rows[host.name].session_id == session.session_id
        assert session.host_key_fingerprint == rows[host.name].details["host_key_fingerprint"]
        host.refresh_from_db()
        assert host.last_connected_at is not None
    # Another call finds the batch's session and uses it (it was written before the answer).
    session_id = SshSession.objects.get(host=made[0]).session_id
    out = mcp.ok("ssh_execute", session_id=session_id, command="echo again")
    assert out["stdout"] == "again\n"


def test_a_disabled_host_is_refused_and_gets_no_session(
    mcp: McpHarness, make_host: Callable[..., Host]
) -> None:
    make_host("on")
    make_host("off", enabled=False)
    result = mcp.ok("ssh_execute_many", hosts=["on", "off"], command="true")
    assert statuses(result) == {"on": "ok", "off": "refused"}
    assert list(SshSession.objects.values_list("host_name", flat=True)) == ["on"]


def test_prepared_hosts_connect_without_a_query(
    make_host: Callable[..., Host], django_assert_num_queries: Any
) -> None:
    outer = make_host("outer")
    inner = make_host("inner", jump_host=outer)
    target = make_host("target", jump_host=inner)
    plain = make_host("plain")
    with django_assert_num_queries(2):  # the hosts with their credentials and jump hosts; the keys
        prepared = prepare([target.pk, plain.pk])
    for host in (target, plain):
        ready = prepared[host.pk]
        with django_assert_num_queries(0):
            spec = build_spec(ready.host, ready.trusted)
        assert (
            spec.trusted_keys and spec.trusted_keys == build_spec(Host.objects.get(pk=host.pk)).trusted_keys
        )
    assert [hop.name for hop in build_spec(prepared[target.pk].host, prepared[target.pk].trusted).hops] == [
        "outer",
        "inner",
    ]


def test_sessions_whose_rows_cannot_be_written_are_closed_not_used_unrecorded(
    mcp: McpHarness, make_host: Callable[..., Host], monkeypatch: Any
) -> None:
    from sshcontrol import dbretry, fleet
    from sshcontrol.dbretry import DatabaseUnavailable
    from sshlib.sessions import registry

    real = dbretry.retrying

    def away(fn: Callable[[], Any], what: str) -> Any:
        # The one seam faked: the group write of completed rows and new sessions finds no database.
        if what == "completing the batch's audit rows":
            raise DatabaseUnavailable(what, 0.0, OSError("connection refused"))
        return real(fn, what)

    monkeypatch.setattr(fleet, "retrying", away)
    made = [make_host(f"away{i}") for i in range(2)]
    result = mcp.ok("ssh_execute_many", hosts=[h.name for h in made], command="true")
    assert set(statuses(result).values()) == {"ok"}
    assert not SshSession.objects.exists()
    assert not [s for s in registry.all() if s.host_ref in {str(h.pk) for h in made}]
    # The completions went the spooled way, one by one: the audit rows are complete all the same.
    rows = AuditEvent.objects.filter(batch_id=result["batch_id"])
    assert sorted(rows.values_list("status", flat=True)) == ["ok", "ok"]
