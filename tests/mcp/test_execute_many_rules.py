"""ssh_execute_many is held to the single-call rules host by host: sudo, hidden characters, tags.

Against the suite's real sshd (and a second one, another remote account) with real sudo: a
batch with ``sudo=true`` runs as root only where the caller may use sudo and the sudo password
rule lets the password go; the other hosts are refused in the result and audited ``denied``.
Hidden characters refuse the whole batch exactly as they refuse one call, before any row or
host. A tag the caller has no host of reads exactly like a tag nobody uses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent
from hosts.models import Grant, Host, McpClient
from tests.leaks import recoverable
from tests.mcp.conftest import McpHarness
from tests.mcp.test_hidden_characters import HIDDEN
from tests.server_hosts import register
from tests.sshd import SshServer

AsClient = Callable[..., McpHarness]
OTHER_SUDO_PASSWORD = "other-account-sudo-Pw-never-sent-9"


def statuses(result: dict[str, Any]) -> dict[str, str]:
    return {r["host"]: r["status"] for r in result["results"]}


def by_host(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["host"]: r for r in result["results"]}


def with_sudo_password(host: Host, password: str) -> Host:
    credential = host.credential
    assert credential is not None
    credential.set_sudo_password(password)
    credential.save()
    return host


# -- sudo, host by host --------------------------------------------------------------------------


def test_sudo_runs_where_the_caller_has_it_and_is_refused_where_it_has_not(
    as_client: AsClient, make_host: Callable[..., Host], sshd: SshServer, sudoers: None
) -> None:
    a = with_sudo_password(make_host("a"), sshd.password)
    b = with_sudo_password(make_host("b"), sshd.password)
    agent = as_client("agent", hosts=[a], can_execute=True, can_sudo=True)
    execute_only = Grant.objects.create(client=McpClient.objects.get(name="agent"), can_execute=True)
    execute_only.hosts.set([b])
    result = agent.ok("ssh_execute_many", hosts=["a", "b"], command="id -u", sudo=True)
    assert statuses(result) == {"a": "ok", "b": "refused"}
    assert by_host(result)["a"]["stdout"] == "0\n", "a ran as root"
    assert "client 'agent' may not use sudo on host 'b'" in by_host(result)["b"]["error"]
    rows = {r.host_name: r for r in AuditEvent.objects.filter(batch_id=result["batch_id"])}
    assert {name: row.status for name, row in rows.items()} == {"a": "ok", "b": "denied"}
    assert "may not use sudo" in rows["b"].error
    assert rows["b"].stdout == "" and rows["b"].exit_status is None, "nothing ran on b"


def test_the_sudo_password_rule_refuses_only_the_host_another_client_could_capture_it_on(
    as_client: AsClient,
    make_host: Callable[..., Host],
    sshd: SshServer,
    other_sshd: SshServer,
    sudoers: None,
) -> None:
    a = with_sudo_password(make_host("a"), sshd.password)
    b = with_sudo_password(register(other_sshd, "b"), OTHER_SUDO_PASSWORD)  # another account
    agent = as_client("agent", hosts=[a, b], can_execute=True, can_sudo=True)
    # A client without sudo that may run commands as b's account (and so plant code there).
    as_client("planter", hosts=[b], can_execute=True)
    result = agent.ok("ssh_execute_many", hosts=["a", "b"], command="id -u", sudo=True)
    assert statuses(result) == {"a": "ok", "b": "refused"}
    assert by_host(result)["a"]["stdout"] == "0\n"
    message = by_host(result)["b"]["error"]
    assert "sudo is refused on host 'b'" in message and "could capture it" in message
    assert "planter" not in message, "the caller is told how many other clients, not who"
    rows = {r.host_name: r for r in AuditEvent.objects.filter(batch_id=result["batch_id"])}
    assert {name: row.status for name, row in rows.items()} == {"a": "ok", "b": "denied"}
    assert any("planter" in who for who in rows["b"].details["sudo_exposed_to"])
    text = agent.text("ssh_execute_many", hosts=["a", "b"], command="id -u", sudo=True)
    for seen in (repr(result).encode(), text.encode()):
        assert not recoverable(OTHER_SUDO_PASSWORD, seen)
    for event in AuditEvent.objects.all():
        row = repr({f.attname: getattr(event, f.attname) for f in AuditEvent._meta.concrete_fields})
        assert not recoverable(OTHER_SUDO_PASSWORD, row.encode()), f"audit row {event.pk}"


# -- hidden characters: the single call's refusal, for the whole batch ---------------------------


def reason(message: str) -> str:
    """A tool error without the SDK's "Error executing tool NAME: " in front."""
    head, _, rest = message.partition(": ")
    assert head.startswith("Error executing tool "), message
    return rest


@pytest.mark.parametrize(("command", "named"), HIDDEN)
def test_hidden_characters_refuse_the_batch_as_they_refuse_one_call(
    mcp: McpHarness, make_host: Callable[..., Host], command: str, named: str
) -> None:
    make_host("a")
    make_host("b")
    Path("/tmp/sshc-bidi-pwned").unlink(missing_ok=True)  # what BIDI_ATTACK would create on a host
    single = reason(mcp.error("ssh_execute", host="a", command=command))
    message = reason(mcp.error("ssh_execute_many", hosts=["a", "b"], command=command))
    assert message == single
    assert "invisible, reordering or control characters" in message and named in message
    assert reason(mcp.error("ssh_execute_many", tag="anything", command=command)) == single
    assert not AuditEvent.objects.exists(), "a refused batch opens no audit row"
    assert not Path("/tmp/sshc-bidi-pwned").exists()


def test_hidden_characters_in_the_working_directory_refuse_the_batch(
    mcp: McpHarness, make_host: Callable[..., Host]
) -> None:
    make_host("a")
    single = reason(mcp.error("ssh_execute", host="a", command="ls", working_directory="/tmp/\u202eevil"))
    message = reason(
        mcp.error("ssh_execute_many", hosts=["a"], command="ls", working_directory="/tmp/\u202eevil")
    )
    assert message == single and "working_directory contains invisible" in message and "U+202E" in message
    assert not AuditEvent.objects.exists()


def test_a_batch_runs_them_on_every_host_when_the_administrator_allows_them(
    mcp: McpHarness, make_host: Callable[..., Host], settings: Any
) -> None:
    settings.ALLOW_INVISIBLE_CHARACTERS = True
    make_host("a")
    make_host("b")
    result = mcp.ok("ssh_execute_many", hosts=["a", "b"], command="printf 'a\u200bb'")
    assert statuses(result) == {"a": "ok", "b": "ok"}
    assert {r["stdout"] for r in result["results"]} == {"a\u200bb"}
    rows = AuditEvent.objects.filter(batch_id=result["batch_id"])
    assert sorted(r.command for r in rows) == ["printf 'a\u200bb'"] * 2


# -- tags: an ungranted one reads like an unknown one --------------------------------------------


def test_an_ungranted_tag_answers_exactly_like_an_unknown_tag(
    as_client: AsClient, make_host: Callable[..., Host]
) -> None:
    mine = make_host("mine-web-01", tags=["web"])
    make_host("secret-db-01", tags=["db"])
    make_host("secret-db-02", tags=["db"], enabled=False)
    agent = as_client("agent", hosts=[mine], can_execute=True, can_list=True)
    ungranted = agent.error("ssh_execute_many", tag="db", command="true")
    unknown = agent.error("ssh_execute_many", tag="zz", command="true")
    assert ungranted.replace("'db'", "'T'") == unknown.replace("'zz'", "'T'")
    assert "secret-db" not in ungranted
    assert "no host with tag 'db' is available to client 'agent'" in ungranted
    # The audit log holds no row for either (nothing was decided about a host) ...
    assert not AuditEvent.objects.exists()
    # ... and a granted tag does run, so the refusal above is about the grant, not the tag.
    assert statuses(agent.ok("ssh_execute_many", tag="web", command="true")) == {"mine-web-01": "ok"}
