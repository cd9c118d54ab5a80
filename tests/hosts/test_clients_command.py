from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from hosts.access_models import ClientGroup, CommandRule, Grant, McpClient
from hosts.clients import TOKEN_PREFIX, ClientAuthError, authenticate, digest
from hosts.models import Host

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def alice(django_user_model: Any) -> None:
    """The admin user the clients below are owned by."""
    django_user_model.objects.create_user("alice", is_staff=True)


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("clients", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def add(name: str, *extra: str) -> str:
    out, _ = run("add", name, *extra)
    return out.strip()


def assert_token_in_no_column(token: str) -> None:
    for row in McpClient.objects.values():
        for column, value in row.items():
            assert token not in str(value), f"the token is stored in McpClient.{column}"


def test_it_adds_a_client_prints_its_token_once_and_stores_only_the_digest() -> None:
    ClientGroup.objects.create(name="ci")
    out, err = run(
        "add", "ci-bot", "--owner", "alice", "--description", "CI agent", "--expires-in-days", "30",
        "--group", "ci",
    )  # fmt: skip
    token = out.strip()
    # stdout is the token alone, so $(sshcontrol clients add ...) captures exactly it.
    assert out == token + "\n"
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    assert "will not be shown again" in err and token not in err
    assert len(err.strip().splitlines()) == 1

    client = McpClient.objects.get(name="ci-bot")
    assert (client.owner, client.description) == ("alice", "CI agent")
    assert [g.name for g in client.groups.all()] == ["ci"]
    assert client.expires_at is not None
    assert timedelta(days=29) < client.expires_at - timezone.now() <= timedelta(days=30)
    assert client.token_digest == digest(token)
    assert token.startswith(client.token_prefix)
    assert_token_in_no_column(token)
    assert authenticate(token) == client


def test_it_refuses_an_owner_who_is_not_a_user() -> None:
    with pytest.raises(CommandError, match="no admin user named 'bob': --owner names the admin account"):
        run("add", "ci-bot", "--owner", "bob")
    assert not McpClient.objects.exists()


def test_it_lists_clients_without_the_digest() -> None:
    token = add("ci-bot", "--owner", "alice")
    add("old-bot")
    run("revoke", "old-bot")
    client = McpClient.objects.get(name="ci-bot")

    out, _ = run("list")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "OWNER", "STATE", "EXPIRES", "LAST", "USED", "TOKEN"]
    assert lines[1].split()[:3] == ["ci-bot", "alice", "active"]
    assert f"{client.token_prefix}..." in lines[1]
    assert lines[2].split()[:3] == ["old-bot", "-", "revoked"]
    listed_json, _ = run("list", "--json")
    for text in (out, listed_json):
        assert client.token_digest not in text
        assert token not in text
    rows = json.loads(listed_json)
    assert [r["state"] for r in rows] == ["active", "revoked"]
    assert all("token_digest" not in r for r in rows)


def test_it_says_so_when_there_are_no_clients() -> None:
    out, _ = run("list")
    assert "No clients" in out


def test_it_revokes_a_client() -> None:
    token = add("ci-bot")
    out, _ = run("revoke", "ci-bot")
    assert "Revoked client 'ci-bot'" in out
    client = McpClient.objects.get(name="ci-bot")
    assert client.revoked_at is not None and not client.enabled
    with pytest.raises(ClientAuthError, match="revoked"):
        authenticate(token)
    with pytest.raises(CommandError, match="already revoked"):
        run("revoke", "ci-bot")
    # A revoked client stays revoked: no new token brings it back.
    with pytest.raises(CommandError, match="stays revoked"):
        run("token", "ci-bot")


def test_a_new_token_replaces_the_old_one() -> None:
    old = add("ci-bot")
    out, err = run("token", "ci-bot")
    new = out.strip()
    assert new.startswith(TOKEN_PREFIX) and new != old
    assert "will not be shown again" in err and new not in err
    with pytest.raises(ClientAuthError, match="unknown client token"):
        authenticate(old)
    assert authenticate(new).name == "ci-bot"
    assert_token_in_no_column(new)


def test_it_grants_hosts_with_rules() -> None:
    Host.objects.create(name="web1", address="10.0.0.1", username="ops")
    Host.objects.create(name="web2", address="10.0.0.2", username="ops")
    add("ci-bot")
    out, _ = run(
        "grant", "ci-bot", "--host", "web1", "--host", "web2", "--tag", "staging", "--read-files", "--sudo",
        "--allow", r"^uptime$", "--allow", r"^df\b", "--deny", r"\brm\b", "--approve", r"^systemctl restart ",
    )  # fmt: skip
    grant = Grant.objects.get(client__name="ci-bot")
    assert sorted(h.name for h in grant.hosts.all()) == ["web1", "web2"]
    assert grant.tags == ["staging"]
    assert (grant.all_hosts, grant.can_execute, grant.can_read_files, grant.can_sudo) == (
        False,
        True,
        True,
        True,
    )
    assert (grant.can_write_files, grant.read_only) == (False, False)
    rules = sorted((r.action, r.pattern) for r in CommandRule.objects.filter(grant=grant))
    assert rules == [
        ("allow", r"^df\b"),
        ("allow", r"^uptime$"),
        ("approve", r"^systemctl restart "),
        ("deny", r"\brm\b"),
    ]
    assert f"(grant #{grant.pk})" in out and "web1, web2, tag:staging" in out


def test_it_grants_every_host_read_only_without_execute() -> None:
    add("auditor")
    run("grant", "auditor", "--all-hosts", "--no-execute", "--read-files", "--read-only")
    grant = Grant.objects.get(client__name="auditor")
    assert grant.all_hosts and grant.read_only and grant.can_read_files
    assert not grant.can_execute and not grant.can_sudo and not grant.can_write_files


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "ci-bot"), "a client named 'ci-bot' already exists"),
        (("add", "new-bot", "--group", "nope"), "no client group named 'nope'"),
        (("add", "not a slug"), "name"),
        (("revoke", "ghost"), "no client named 'ghost'"),
        (("token", "ghost"), "no client named 'ghost'"),
        (("grant", "ghost", "--all-hosts"), "no client named 'ghost'"),
        (("grant", "ci-bot", "--host", "nohost"), "no host named 'nohost'"),
        (("grant", "ci-bot"), "say which hosts"),
        (("grant", "ci-bot", "--all-hosts", "--tag", "web"), "--all-hosts already covers every host"),
        (("grant", "ci-bot", "--all-hosts", "--deny", "rm (-rf"), "--deny 'rm (-rf'"),
    ],
)
def test_it_reports_user_errors_clearly(args: tuple[str, ...], message: str) -> None:
    add("ci-bot")
    with pytest.raises(CommandError) as excinfo:
        run(*args)
    assert message in str(excinfo.value)
    # Nothing half-made: no new client, no grant (the bad-regex grant was rolled back).
    assert list(McpClient.objects.values_list("name", flat=True)) == ["ci-bot"]
    assert not Grant.objects.exists() and not CommandRule.objects.exists()


def test_a_local_client_gets_no_token() -> None:
    McpClient.objects.create(name="local-alice", local_user="alice")
    with pytest.raises(CommandError, match="has no token"):
        run("token", "local-alice")
    out, _ = run("list")
    assert "(local, none)" in out
