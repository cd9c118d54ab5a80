"""sudo through stdin, and opt-in ad-hoc connections, against the suite's real sshd and real sudo."""

from __future__ import annotations

from collections.abc import Callable

from audit.models import AuditEvent
from hosts.models import Credential, Host
from tests.mcp.conftest import McpHarness
from tests.sshd import SshServer

AsClient = Callable[..., McpHarness]


def set_sudo_password(host: Host, password: str) -> None:
    credential = host.credential
    assert credential is not None
    credential.set_sudo_password(password)
    credential.save()


def everything_recorded() -> str:
    return "\n".join(
        f"{e.command}\n{e.stdout}\n{e.stderr}\n{e.error}\n{e.details}" for e in AuditEvent.objects.all()
    )


def test_it_runs_a_command_as_root_with_the_password_on_stdin_only(
    as_client: AsClient, make_host, sshd: SshServer, sudoers: None
) -> None:
    web = make_host("web1")
    set_sudo_password(web, sshd.password)
    agent = as_client("agent", hosts=[web], can_sudo=True)
    # `cat` echoes what is left of stdin: the password line must have been taken by sudo.
    result = agent.ok("ssh_execute", host="web1", command="id -u; cat", stdin="after\n", sudo=True)
    assert result["stdout"] == "0\nafter\n", result
    assert sshd.password not in result["stdout"] + result["stderr"]
    assert sshd.password not in everything_recorded()


def test_it_refuses_sudo_without_a_grant_or_a_password(
    as_client: AsClient, make_host, sshd: SshServer, sudoers: None
) -> None:
    web = make_host("web1")
    plain = as_client("plain", hosts=[web])
    assert "may not use sudo on host 'web1'" in plain.error(
        "ssh_execute", host="web1", command="id", sudo=True
    )
    allowed = as_client("allowed", hosts=[web], can_sudo=True)
    assert "no sudo password" in allowed.error("ssh_execute", host="web1", command="id", sudo=True)


def test_it_keeps_a_wrong_sudo_password_out_of_the_output(
    as_client: AsClient, make_host, sshd: SshServer, sudoers: None
) -> None:
    web = make_host("web1")
    set_sudo_password(web, "not the password 42")
    agent = as_client("agent", hosts=[web], can_sudo=True)
    result = agent.ok("ssh_execute", host="web1", command="id -u", sudo=True, timeout=30)
    assert result["exit_status"] != 0
    assert "not the password 42" not in result["stdout"] + result["stderr"] + everything_recorded()


def test_it_refuses_ad_hoc_connections_by_default(as_client: AsClient, sshd: SshServer) -> None:
    agent = as_client("agent", all_hosts=True, can_adhoc_connect=True)
    message = agent.error(
        "ssh_connect", host="new1", address=sshd.address, username=sshd.user, password=sshd.password
    )
    assert "ad-hoc connections are off" in message and "register" in message
    assert not Host.objects.filter(name="new1").exists()
    event = AuditEvent.objects.get(client="agent")
    assert event.status == "denied" and sshd.password not in everything_recorded()


def test_it_registers_an_ad_hoc_host_for_a_granted_client(
    as_client: AsClient, sshd: SshServer, settings
) -> None:
    settings.ALLOW_ADHOC_CONNECT = True
    agent = as_client("agent", hosts=[], can_adhoc_connect=True, adhoc_trust_on_first_use=True)
    opened = agent.ok(
        "ssh_connect",
        host="new1",
        address=sshd.address,
        port=sshd.port,
        username=sshd.user,
        password=sshd.password,
    )
    assert opened["host"] == "new1" and sshd.password not in str(opened)
    assert agent.ok("ssh_execute", host="new1", command="echo adhoc")["stdout"] == "adhoc\n"
    credential = Credential.objects.get(name="adhoc-new1")
    assert credential.secret() == sshd.password and sshd.password not in credential.secret_encrypted
    assert sshd.password not in everything_recorded()
    # A client without the grant cannot, even with the switch on.
    other = as_client("other", all_hosts=True)
    assert "may not register hosts" in other.error(
        "ssh_connect", host="new2", address=sshd.address, username=sshd.user, password="x"
    )


def test_it_leaves_an_ad_hoc_host_key_pending_without_trust_on_first_use(
    as_client: AsClient, sshd: SshServer, settings
) -> None:
    settings.ALLOW_ADHOC_CONNECT = True
    agent = as_client("agent", hosts=[], can_adhoc_connect=True)
    message = agent.error(
        "ssh_connect", host="new1", address=sshd.address, port=sshd.port, username=sshd.user, password="pw"
    )
    assert "host key" in message
    assert Host.objects.get(name="new1").key_state == "pending"
