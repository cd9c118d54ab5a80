"""The sudo password rule over grant configurations (hosts/sudo_rule.py), from the database.

Who could capture a sudo password: every active client that can run commands or upload files
as the same remote account (same credential, or same address, port and login name) without
having sudo there. Reading files alone cannot plant start-up code; a read-only grant that
executes still can.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from hosts import sudo_rule
from hosts.models import ClientGroup, Credential, Grant, Host, HostKey, McpClient

pytestmark = pytest.mark.django_db


def host(name: str, credential: Credential | None = None, **fields: Any) -> Host:
    if credential is None:
        credential = Credential.objects.create(name=f"{name}-cred", kind="password")
    values: dict[str, Any] = {"address": "10.0.0.1", "port": 22, "username": "app", **fields}
    return Host.objects.create(name=name, credential=credential, **values)


def sudo_host(name: str = "web1", **fields: Any) -> Host:
    made = host(name, **fields)
    assert made.credential is not None
    made.credential.set_sudo_password("root-pw")
    made.credential.save()
    return made


def client(name: str, **fields: Any) -> McpClient:
    return McpClient.objects.create(name=name, **fields)


def grant(who: McpClient | ClientGroup, hosts: list[Host] = [], **fields: Any) -> Grant:  # noqa: B006
    owner: dict[str, McpClient | ClientGroup] = {"group" if isinstance(who, ClientGroup) else "client": who}
    made = Grant.objects.create(**owner, **fields)
    made.hosts.set(hosts)
    return made


def exposed(target: Host) -> set[tuple[str, str, str]]:
    """(client, via host, how) of every exposure of ``target``'s sudo password."""
    return {(e.client, e.via_host, e.how) for e in sudo_rule.exposures_for_host(target.pk)}


def test_it_finds_nobody_when_every_executor_has_sudo() -> None:
    web = sudo_host()
    grant(client("admin"), [web], can_sudo=True)
    grant(client("reader"), [web], can_execute=False, can_read_files=True)  # reads cannot plant
    assert exposed(web) == set()


def test_it_counts_execute_read_only_and_write_grants_without_sudo() -> None:
    web = sudo_host()
    grant(client("admin"), [web], can_sudo=True)
    grant(client("runner"), [web])
    grant(client("looker"), [web], read_only=True)
    grant(client("uploader"), [web], can_execute=False, can_write_files=True)
    grant(client("ro-uploader"), [web], can_execute=False, can_write_files=True, read_only=True)
    grant(client("both"), [web], can_write_files=True)
    assert exposed(web) == {
        ("runner", "web1", "run commands"),
        ("looker", "web1", "run commands"),
        ("uploader", "web1", "write files"),
        ("both", "web1", "run commands and write files"),
    }


def test_it_lets_a_sudo_grant_cover_a_clients_other_grants_on_that_host() -> None:
    web = sudo_host()
    agent = client("agent")
    grant(agent, [web], can_write_files=True)
    grant(agent, [web], can_sudo=True)
    assert exposed(web) == set()
    # sudo without execute is no sudo at all
    other = client("other")
    grant(other, [web])
    grant(other, [web], can_execute=False, can_sudo=True)
    assert exposed(web) == {("other", "web1", "run commands")}


def test_it_follows_group_grants_to_their_active_members() -> None:
    web = sudo_host()
    team = ClientGroup.objects.create(name="team")
    active, disabled, revoked = (
        client("a"),
        client("b", enabled=False),
        client("c", revoked_at=timezone.now()),
    )
    team.clients.set([active, disabled, revoked])
    grant(team, [web])
    assert exposed(web) == {("a", "web1", "run commands")}
    grant(team, [web], can_sudo=True)
    assert exposed(web) == set()


def test_it_follows_tags_and_all_hosts_grants() -> None:
    web = sudo_host(tags=["prod", "web"])
    grant(client("tagged"), tags=["web"])
    grant(client("elsewhere"), tags=["db"])
    grant(client("everything"), all_hosts=True)
    assert exposed(web) == {("tagged", "web1", "run commands"), ("everything", "web1", "run commands")}


def test_it_ignores_disabled_grants() -> None:
    web = sudo_host()
    grant(client("runner"), [web], enabled=False)
    assert exposed(web) == set()


def test_it_sees_the_same_account_through_other_host_entries() -> None:
    web = sudo_host(address="Web1.Example.org")
    assert web.credential is not None
    same_credential = host("web1-by-ip", web.credential, address="192.0.2.7")
    same_account = host("web1-alias", address="web1.example.org.", port=22, username="app")
    other_port = host("web1-other-port", address="web1.example.org", port=2222, username="app")
    other_user = host("web1-other-user", address="web1.example.org", username="deploy")
    off = host("web1-off", address="web1.example.org", enabled=False)
    for name, target in (
        ("by-credential", same_credential),
        ("by-account", same_account),
        ("by-port", other_port),
        ("by-user", other_user),
        ("by-disabled", off),
    ):
        grant(client(name), [target])
    assert exposed(web) == {
        ("by-credential", "web1-by-ip", "run commands"),
        ("by-account", "web1-alias", "run commands"),
    }
    # sudo on the alias (its own credential) does not send web1's password: still exposed
    grant(McpClient.objects.get(name="by-account"), [same_account], can_sudo=True)
    assert exposed(web) == {
        ("by-credential", "web1-by-ip", "run commands"),
        ("by-account", "web1-alias", "run commands"),
    }
    # sudo where web1's credential is used does: that client may capture the password anyway
    grant(McpClient.objects.get(name="by-account"), [same_credential], can_sudo=True)
    grant(McpClient.objects.get(name="by-credential"), [web], can_sudo=True)
    assert exposed(web) == set()


def test_it_sees_other_spellings_and_other_names_of_the_same_server() -> None:
    web = sudo_host(address="::1")
    for name, address in (("long-form", "0:0:0:0:0:0:0:1"), ("bracketed", "[::1]")):
        grant(client(name), [host(name, address=address)])
    v4 = sudo_host("v4", address="192.0.2.7")
    grant(client("mapped"), [host("mapped", address="::ffff:192.0.2.7")])
    assert exposed(web) == {
        ("long-form", "long-form", "run commands"),
        ("bracketed", "bracketed", "run commands"),
    }
    assert exposed(v4) == {("mapped", "mapped", "run commands")}
    # A DNS name on another port, with the same host key as web1: the same server, same user.
    by_name = host("by-name", address="web1.example.org", port=2222)
    other_user = host("by-name-deploy", address="web1.example.org", port=2222, username="deploy")
    for target in (web, by_name, other_user):
        HostKey.objects.create(
            host=target, key_type="ssh-ed25519", public_key="AAAA", fingerprint="SHA256:same"
        )
    grant(client("by-name"), [by_name])
    grant(client("by-name-deploy"), [other_user])
    assert ("by-name", "by-name", "run commands") in exposed(web)
    assert not {e for e in exposed(web) if e[0] == "by-name-deploy"}
    # A revoked key no longer ties them.
    HostKey.objects.filter(host=by_name).update(state=HostKey.State.REVOKED)
    assert not {e for e in exposed(web) if e[0] == "by-name"}


def test_it_reports_only_hosts_whose_password_someone_may_use() -> None:
    web = sudo_host()
    plain = host("plain", address="10.0.0.2")  # another account, no sudo password
    grant(client("runner"), [web, plain])
    facts = sudo_rule.load_facts()
    assert sudo_rule.exposed_sudo_hosts(facts) == []  # nobody may use sudo on web1
    grant(client("admin"), [web, plain], can_sudo=True)
    entries = sudo_rule.exposed_sudo_hosts(sudo_rule.load_facts())
    assert [(h.name, users, [e.client for e in ex]) for h, users, ex in entries] == [
        ("web1", ["admin"], ["runner"])
    ]
    (line,) = sudo_rule.warning_lines(entries)
    assert line.startswith("sudo on host 'web1' is refused (for 'admin'): ")
    assert "credential 'web1-cred'" in line and "client 'runner' can run commands without sudo" in line


def test_it_tells_the_caller_how_many_but_not_who() -> None:
    web = sudo_host()
    grant(client("secret-agent-name"), [web])
    grant(client("another"), [web], can_execute=False, can_write_files=True)
    message = sudo_rule.refusal("web1", sudo_rule.exposures_for_host(web.pk))
    assert "2 other clients without sudo" in message and "app@10.0.0.1:22" in message
    assert "secret-agent-name" not in message and sudo_rule.CHECK_ID in message


def test_it_warns_when_the_clients_command_grants_what_could_capture_a_password() -> None:
    sudo_host()
    grant(client("admin"), list(Host.objects.filter(name="web1")), can_sudo=True)
    client("reader")
    out, err = StringIO(), StringIO()
    call_command("clients", "grant", "reader", "--host", "web1", "--read-files", stdout=out, stderr=err)
    reader = Grant.objects.get(client__name="reader")
    assert "Warning: sudo on host 'web1' is refused (for 'admin'): " in err.getvalue()
    assert f"client 'reader' can run commands without sudo (grant #{reader.pk})" in err.getvalue()
    out, err = StringIO(), StringIO()
    call_command("clients", "grant", "reader", "--host", "web1", "--no-execute", stdout=out, stderr=err)
    assert "Warning" not in err.getvalue()  # a grant that takes no part says nothing, though web1 is exposed
