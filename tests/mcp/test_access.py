"""Who may run what, where: grants, command rules, session ownership and limits, end to end.

Every call goes through the MCP client/server path against the suite's real sshd; each
refusal must leave an audit row with status ``denied`` naming the client.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from audit.models import AuditEvent
from hosts.clients import revoke
from hosts.models import ClientGroup, CommandRule, Grant, Host, McpClient
from tests.mcp.conftest import McpHarness

AsClient = Callable[..., McpHarness]


def last_event(client: str) -> AuditEvent:
    event = AuditEvent.objects.filter(client=client).order_by("-id").first()
    assert event is not None
    return event


def test_it_gives_the_local_user_a_grant_over_every_host(mcp: McpHarness, make_host) -> None:
    make_host("web1")
    assert mcp.ok("ssh_execute", host="web1", command="echo hi")["stdout"] == "hi\n"
    local = McpClient.objects.get(local_user__gt="")
    assert local.name.startswith("local-") and local.grants.get().all_hosts
    assert last_event(local.name).actor.startswith(local.name)


def test_it_lets_the_admin_restrict_the_local_user_like_any_client(mcp: McpHarness, make_host) -> None:
    web = make_host("web1")
    mcp.ok("ssh_list_hosts")  # the local client and its grant over every host are made on first use
    grant = Grant.objects.get(client__local_user__gt="")
    grant.all_hosts, grant.read_only = False, True
    grant.save()
    grant.hosts.set([web])
    CommandRule.objects.create(grant=grant, action="allow", pattern=r"uptime")
    assert mcp.ok("ssh_execute", host="web1", command="uptime")["exit_status"] == 0
    assert "allow" in mcp.error("ssh_execute", host="web1", command="id")
    assert "may not write files" in mcp.error("ssh_upload_file", host="web1", remote_path="x", content="x")


def test_it_gives_a_group_grant_to_every_client_in_the_group(as_client: AsClient, make_host) -> None:
    web = make_host("web1")
    team = ClientGroup.objects.create(name="team")
    group_grant = Grant.objects.create(group=team, can_execute=True)
    group_grant.hosts.set([web])
    member, outsider = as_client("member", grant=False), as_client("outsider", grant=False)
    McpClient.objects.get(name="member").groups.add(team)
    assert [h["name"] for h in member.ok("ssh_list_hosts")["hosts"]] == ["web1"]
    assert member.ok("ssh_execute", host="web1", command="echo team")["stdout"] == "team\n"
    # No grant anywhere: ssh_execute is not even offered (mcp/visibility.py), and a call is refused.
    assert "may not run commands on any host" in outsider.error("ssh_execute", host="web1", command="id")


def test_it_shows_a_client_without_grants_nothing_and_denies_it_everything(
    as_client: AsClient, make_host
) -> None:
    make_host("web1")
    agent = as_client("agent", grant=False)
    assert agent.ok("ssh_list_hosts")["hosts"] == []
    message = agent.error("ssh_execute", host="web1", command="id")
    assert "client 'agent' may not run commands on any host" in message
    event = last_event("agent")
    assert (event.status, event.tool, event.host_name, event.command) == (
        "denied",
        "ssh_execute",
        "web1",
        "id",
    )


def test_it_lets_a_client_see_and_use_only_its_granted_hosts(as_client: AsClient, make_host) -> None:
    web, db = make_host("web1", tags=["web"]), make_host("db1", tags=["db"])
    by_host = as_client("by-host", hosts=[web])
    by_tag = as_client("by-tag", tags=["db"])
    assert [h["name"] for h in by_host.ok("ssh_list_hosts")["hosts"]] == ["web1"]
    assert [h["name"] for h in by_tag.ok("ssh_list_hosts")["hosts"]] == ["db1"]
    assert by_tag.ok("ssh_execute", host="db1", command="true")["exit_status"] == 0
    assert "host 'web1' is not available to client 'by-tag'" in by_tag.error("ssh_connect", host="web1")
    assert db.pk and Grant.objects.count() == 2


def test_it_hides_one_clients_sessions_from_another(as_client: AsClient, make_host) -> None:
    web = make_host("web1")
    alice, bob = as_client("alice", hosts=[web]), as_client("bob", hosts=[web])
    session = alice.ok("ssh_connect", host="web1")["session_id"]
    assert f"unknown session_id '{session}'" in bob.error("ssh_execute", session_id=session, command="id")
    assert bob.ok("ssh_status")["sessions"] == []
    assert "unknown session_id" in bob.error("ssh_disconnect", session_id=session)
    assert alice.ok("ssh_execute", session_id=session, command="echo mine")["stdout"] == "mine\n"


def test_it_lets_deny_rules_win_over_allow_rules(as_client: AsClient, make_host) -> None:
    web = make_host("web1")
    agent = as_client("agent", hosts=[web], rules=[("allow", r"(echo|ls)( .*)?"), ("deny", r"\bsecret\b")])
    assert agent.ok("ssh_execute", host="web1", command="echo fine")["stdout"] == "fine\n"
    assert "secret" in agent.error("ssh_execute", host="web1", command="echo secret")
    assert last_event("agent").status == "denied"


@pytest.mark.parametrize(
    "command",
    [
        "echo ok\nid",
        "echo ok; id",
        "echo ok && id",
        "echo ok | id",
        "echo $(id)",
        "echo `id`",
        "echo ok &\nid",
    ],
)
def test_it_catches_commands_smuggled_past_an_allow_list(
    as_client: AsClient, make_host, command: str
) -> None:
    web = make_host("web1")
    agent = as_client("agent", hosts=[web], rules=[("allow", r"echo( .*)?")])
    assert "allow" in agent.error("ssh_execute", host="web1", command=command)
    assert last_event("agent").status == "denied"


def test_it_holds_a_read_only_grant_to_its_allow_list_and_to_reading(as_client: AsClient, make_host) -> None:
    web = make_host("web1")
    reader = as_client(
        "reader", hosts=[web], read_only=True, can_write_files=True, rules=[("allow", "uptime")]
    )
    assert reader.ok("ssh_execute", host="web1", command="uptime")["exit_status"] == 0
    assert "allow" in reader.error("ssh_execute", host="web1", command="touch /tmp/x")
    assert reader.ok("ssh_list_files", host="web1", remote_path="/")["entries"]
    message = reader.error("ssh_upload_file", host="web1", remote_path="x.txt", content="no")
    assert "may not write files on any host" in message


def test_it_applies_rules_attached_to_a_host_or_a_tag(as_client: AsClient, make_host) -> None:
    web = make_host("web1", tags=["prod"])
    agent = as_client("agent", hosts=[web])
    CommandRule.objects.create(host=web, action="deny", pattern=r"^reboot\b")
    CommandRule.objects.create(tag="prod", action="deny", pattern=r"\bshutdown\b")
    assert "host web1" in agent.error("ssh_execute", host="web1", command="reboot now")
    assert "tag prod" in agent.error("ssh_execute", host="web1", command="sudo shutdown -h now")


def test_it_denies_a_revoked_or_disabled_client_at_once(as_client: AsClient, make_host) -> None:
    web = make_host("web1")
    agent = as_client("agent", hosts=[web])
    assert agent.ok("ssh_execute", host="web1", command="true")["exit_status"] == 0
    revoke(McpClient.objects.get(name="agent"))
    assert "client 'agent' was revoked" in agent.error("ssh_execute", host="web1", command="true")
    assert agent.ok("ssh_list_hosts")["hosts"] == []


def test_it_limits_calls_per_minute(as_client: AsClient, make_host) -> None:
    web = make_host("web1")
    agent = as_client("agent", hosts=[web], max_calls_per_minute=2)
    agent.ok("ssh_execute", host="web1", command="true")
    agent.ok("ssh_execute", host="web1", command="true")
    assert "limit 2" in agent.error("ssh_execute", host="web1", command="true")


def test_it_limits_open_sessions(as_client: AsClient, make_host) -> None:
    web = make_host("web1")
    agent = as_client("agent", hosts=[web], max_open_sessions=1)
    first = agent.ok("ssh_connect", host="web1")["session_id"]
    assert "1 SSH sessions open (limit 1)" in agent.error("ssh_connect", host="web1")
    # The session it has keeps working, and closing it makes room.
    assert agent.ok("ssh_execute", session_id=first, command="true")["exit_status"] == 0
    agent.ok("ssh_disconnect", session_id=first)
    agent.ok("ssh_connect", host="web1")


def test_it_limits_concurrent_calls(as_client: AsClient, make_host) -> None:
    web = make_host("web1")
    agent = as_client("agent", hosts=[web], max_concurrent_calls=1)
    session = agent.ok("ssh_connect", host="web1")["session_id"]
    slow = agent.submit("ssh_execute", session_id=session, command="sleep 2")
    deadline = time.monotonic() + 10
    while not AuditEvent.objects.filter(client="agent", status="running").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "1 calls running (limit 1)" in agent.error("ssh_execute", session_id=session, command="true")
    assert not slow.result(30).is_error


def test_it_checks_file_permissions_per_grant(as_client: AsClient, make_host) -> None:
    web = make_host("web1")
    runner = as_client("runner", hosts=[web], can_read_files=False)
    assert "may not read files" in runner.error("ssh_download_file", host="web1", remote_path=".profile")
    assert "may not write files" in runner.error("ssh_upload_file", host="web1", remote_path="x", content="x")
    assert Host.objects.count() == 1


def test_it_loads_the_host_of_a_session_in_one_query(as_client: AsClient, make_host) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from sshcontrol.targets import session_row

    web = make_host("web1", tags=["prod", "web"])
    session = as_client("agent", tags=["prod"]).ok("ssh_connect", host="web1")["session_id"]
    with CaptureQueriesContext(connection) as queries:
        row = session_row(session)
        assert row is not None and row.host is not None
        assert (row.host.pk, row.host.tags, row.host.enabled) == (web.pk, ["prod", "web"], True)
    assert len(queries) == 1
