"""IdP identities as MCP clients: made on first use, groups synced from the token, admin still in charge."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from hosts import approvals
from hosts.access_models import ApprovalRequest, ClientGroup, McpClient
from hosts.clients import ClientAuthError, create_client
from hosts.idp import Identity, bind, client_name, group_slugs
from hosts.models import Host
from tests.approval_requests import pending_request

ISSUER = "https://idp.example.com/realms/acme"


def who(subject: str = "0f9c-11", name: str = "alice@example.com", groups: tuple[str, ...] = ()) -> Identity:
    return Identity(issuer=ISSUER, subject=subject, name=name, groups=groups)


def test_it_names_clients_and_groups_as_slugs() -> None:
    assert client_name(who(name="alice@example.com")) == "alice-example-com"
    assert client_name(who(name="", subject="auth0|123")) == "auth0-123"
    assert group_slugs(["SRE Team", "/ops/db", "sre-team", "", "!!"]) == ["opsdb", "sre-team"]


def test_it_binds_a_subject_to_one_client_made_on_first_use(db: None) -> None:
    first = bind(who())
    assert (first.name, first.owner, first.oauth_issuer, first.oauth_subject) == (
        "alice-example-com",
        "alice@example.com",
        ISSUER,
        "0f9c-11",
    )
    assert not first.grants.exists()  # nothing until an admin grants it (or its groups) hosts
    assert bind(who()).pk == first.pk
    assert "identity provider" in first.token_refusal()


def test_it_keeps_two_subjects_with_one_name_apart(db: None) -> None:
    create_client("alice-example-com")  # a token client already has the name
    other = bind(who(subject="second"))
    assert other.name == "alice-example-com-2"
    # The same subject at another issuer is another person.
    elsewhere = bind(Identity("https://other.example.com", "0f9c-11", "alice@example.com", ()))
    assert elsewhere.pk != bind(who()).pk


def test_it_syncs_groups_from_the_token_at_every_bind(db: None) -> None:
    ClientGroup.objects.create(name="sre-team")
    ClientGroup.objects.create(name="dba")
    client = bind(who(groups=("SRE Team", "dba", "not-known-here")))
    assert sorted(g.name for g in client.groups.all()) == ["dba", "sre-team"]
    assert not ClientGroup.objects.filter(name="not-known-here").exists()
    bind(who(groups=("dba",)))
    assert [g.name for g in client.groups.all()] == ["dba"]
    bind(who(groups=()))
    assert not client.groups.exists()


def test_it_creates_groups_on_first_sight_when_configured(db: None) -> None:
    client = bind(who(groups=("Platform Eng",)), create_groups=True)
    assert [g.name for g in client.groups.all()] == ["platform-eng"]


@pytest.mark.parametrize("change", [{"enabled": False}, {"revoked_at": timezone.now()}])
def test_it_refuses_a_disabled_or_revoked_idp_client(db: None, change: dict[str, object]) -> None:
    client = bind(who())
    McpClient.objects.filter(pk=client.pk).update(**change)
    with pytest.raises(ClientAuthError):
        bind(who())


def test_it_keeps_the_person_behind_a_client_from_approving_its_requests(db: None) -> None:
    client = bind(who(name="Alice@Example.com"))
    host = Host.objects.create(name="web1", address="127.0.0.1", username="u")
    request = pending_request(client, host, "reboot", rule="reboot")
    users = get_user_model()
    users.objects.create_user("alice", email="alice@example.com")
    users.objects.create_user("bob", email="bob@example.com")
    assert approvals.is_owner(client.owner, "alice")
    with pytest.raises(approvals.ApprovalError, match="cannot decide"):
        approvals.decide(request.pk, "alice", approve=True)
    assert approvals.decide(request.pk, "bob", approve=True).state == ApprovalRequest.State.APPROVED
