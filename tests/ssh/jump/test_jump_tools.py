"""Registered hosts behind jump hosts, through the MCP tools: the chain, and a refused key on a hop."""

from __future__ import annotations

from audit.models import AuditEvent
from hosts.models import Host, HostKey
from sshlib.connect import fingerprint
from sshlib.sessions import registry
from tests.mcp.conftest import McpHarness
from tests.netns import JumpNet
from tests.polling import wait_until
from tests.server_hosts import register
from tests.sshd import reap_user_processes


def chain(net: JumpNet) -> tuple[Host, Host, Host]:
    j1 = register(net.servers["j1"], "j1")
    j2 = register(net.servers["j2"], "j2", jump=j1)
    return j1, j2, register(net.servers["t2"], "t2", jump=j2)


def test_it_runs_a_command_on_a_host_behind_two_jump_hosts(mcp: McpHarness, jump_net: JumpNet) -> None:
    chain(jump_net)
    result = mcp.ok("ssh_execute", host="t2", command="echo $SSH_CONNECTION")
    assert result["exit_status"] == 0
    assert result["stdout"].split()[0] == jump_net.addr(9)  # j2's end of its link to t2
    (session,) = registry.all()
    assert [hop.name for hop in session.connection.hops] == ["j1", "j2"]

    mcp.ok("ssh_disconnect", session_id=result["session_id"])
    assert not any(hop.is_active() for hop in session.connection.hops)
    j1 = jump_net.servers["j1"]
    wait_until(lambda: not j1.user_processes("sshd"), message="j1's connection to end with the session")


def test_it_reconnects_the_whole_chain_when_the_jump_connection_drops(
    mcp: McpHarness, jump_net: JumpNet
) -> None:
    chain(jump_net)
    first = mcp.ok("ssh_execute", host="t2", command="true")
    (session,) = registry.all()
    # The first jump host's side of the connection dies, as a bastion restart would do it.
    reap_user_processes(jump_net.servers["j1"].user)
    wait_until(lambda: not session.connection.is_active(), message="the session to see its jump host go")
    second = mcp.ok("ssh_execute", session_id=first["session_id"], command="echo back")
    assert second["stdout"] == "back\n"
    assert AuditEvent.objects.get(pk=second["audit_id"]).reconnected is True
    assert [hop.name for hop in session.connection.hops] == ["j1", "j2"] and session.connection.is_active()


def test_it_says_which_jump_host_has_no_credential(mcp: McpHarness, jump_net: JumpNet) -> None:
    j1 = register(jump_net.servers["j1"], "j1", credential=None)
    register(jump_net.servers["t1"], "t1", jump=j1)
    message = mcp.error("ssh_connect", host="t1")
    assert "jump host 'j1' of host 't1' has no credential" in message


def test_it_refuses_a_changed_key_on_the_middle_hop_and_stores_it_pending_for_that_hop(
    mcp: McpHarness, jump_net: JumpNet
) -> None:
    j1, j2, t2 = chain(jump_net)
    mcp.ok("ssh_connect", host="t2")
    before = {h.name: set(h.host_keys.values_list("fingerprint", "state")) for h in (j1, t2)}

    jump_net.servers["j2"].regenerate_host_keys()
    new_key = fingerprint(jump_net.servers["j2"].host_key())
    message = mcp.error("ssh_connect", host="t2")

    assert f"HOST KEY CHANGED for 'j2': the server presented ssh-ed25519 {new_key}" in message
    assert "not the trusted key of jump host 'j2' (on the way to 't2')" in message
    assert HostKey.objects.get(host=j2, state=HostKey.State.PENDING).fingerprint == new_key
    assert HostKey.objects.filter(host=j2, state=HostKey.State.TRUSTED).count() == 1  # the old one, kept
    # Nothing was recorded against the other hosts of the chain.
    assert {h.name: set(h.host_keys.values_list("fingerprint", "state")) for h in (j1, t2)} == before
    row = AuditEvent.objects.filter(tool="ssh_connect").order_by("id").last()
    assert row is not None and row.status == "error" and row.host_name == "t2"
    assert "'j2'" in row.error and new_key in row.error


def last_connect_row() -> AuditEvent:
    row = AuditEvent.objects.filter(tool="ssh_connect").order_by("id").last()
    assert row is not None
    return row


def test_it_names_the_jump_host_and_the_target_when_a_hop_key_is_unknown(
    mcp: McpHarness, jump_net: JumpNet
) -> None:
    _j1, j2, _t2 = chain(jump_net)
    j2.host_keys.all().delete()
    key = fingerprint(jump_net.servers["j2"].host_key())
    message = mcp.error("ssh_connect", host="t2")
    assert f"jump host 'j2' (on the way to 't2') presented an unknown host key ssh-ed25519 {key}" in message
    assert f"sshcontrol hosts trust j2 {key}" in message
    assert HostKey.objects.get(host=j2, state=HostKey.State.PENDING).fingerprint == key


def test_it_refuses_a_loop_stored_past_validation_and_names_its_hosts(
    mcp: McpHarness, jump_net: JumpNet
) -> None:
    j1, _j2, t2 = chain(jump_net)
    # A raw UPDATE skips Host.clean(), which refuses this loop when saved through a form.
    Host.objects.filter(pk=j1.pk).update(jump_host=t2)
    message = mcp.error("ssh_connect", host="t2")
    assert "the jump hosts make a loop: t2 -> j2 -> j1 -> t2;" in message
    assert "an administrator must correct the jump host links" in message
    assert "internal error" not in message
    row = last_connect_row()
    assert row.status == "error" and row.host_name == "t2" and "make a loop" in row.error
    assert not registry.all()


def test_it_refuses_a_connection_through_a_disabled_jump_host(mcp: McpHarness, jump_net: JumpNet) -> None:
    j1 = register(jump_net.servers["j1"], "j1")
    register(jump_net.servers["t1"], "t1", jump=j1)
    j1_server = jump_net.servers["j1"]
    wait_until(lambda: not j1_server.user_processes("sshd"), message="j1 free of earlier connections")
    Host.objects.filter(pk=j1.pk).update(enabled=False)

    message = mcp.error("ssh_connect", host="t1")

    refusal = "jump host 'j1' of host 't1' is disabled by an administrator"
    assert message.endswith(f": {refusal}")
    row = last_connect_row()
    assert row.status == "error" and row.host_name == "t1" and row.error == refusal
    # Refused before any connection: the disabled jump host was never contacted.
    assert not registry.all() and not j1_server.user_processes("sshd")


def test_it_does_not_reconnect_a_session_through_a_jump_host_disabled_since(
    mcp: McpHarness, jump_net: JumpNet
) -> None:
    j1 = register(jump_net.servers["j1"], "j1")
    register(jump_net.servers["t1"], "t1", jump=j1)
    first = mcp.ok("ssh_execute", host="t1", command="true")
    (session,) = registry.all()
    Host.objects.filter(pk=j1.pk).update(enabled=False)
    # The open connection drops (a bastion restart); reconnecting would pass through j1 again.
    reap_user_processes(jump_net.servers["j1"].user)
    wait_until(lambda: not session.connection.is_active(), message="the session to see its jump host go")

    message = mcp.error("ssh_execute", session_id=first["session_id"], command="true")

    refusal = "jump host 'j1' of host 't1' is disabled by an administrator"
    assert message.endswith(f": {refusal}")
    row = AuditEvent.objects.filter(tool="ssh_execute").order_by("id").last()
    assert row is not None and row.status == "error" and row.error == refusal


def test_sessions_through_one_jump_host_share_it_and_all_reconnect_when_it_drops(
    mcp: McpHarness, jump_net: JumpNet
) -> None:
    j1, _j2, _t2 = chain(jump_net)
    register(jump_net.servers["t1"], "t1", jump=j1)
    first = {name: mcp.ok("ssh_execute", host=name, command="true") for name in ("t1", "t2")}
    by_host = {s.connection.name: s for s in registry.all()}
    assert by_host["t1"].connection.hops[0] is by_host["t2"].connection.hops[0]  # one login on j1

    bastion = jump_net.servers["j1"]
    wait_until(lambda: bastion.user_processes("^sshd: "), message="j1's logged-in session process")
    reap_user_processes(bastion.user)  # the bastion restarts
    wait_until(
        lambda: not any(s.connection.is_active() for s in by_host.values()),
        message="both sessions to see their jump host go",
    )

    for opened in first.values():
        again = mcp.ok("ssh_execute", session_id=opened["session_id"], command="echo back")
        assert again["stdout"] == "back\n"
        assert AuditEvent.objects.get(pk=again["audit_id"]).reconnected is True
    assert by_host["t1"].connection.hops[0] is by_host["t2"].connection.hops[0]
    assert all(s.connection.is_active() for s in by_host.values())
