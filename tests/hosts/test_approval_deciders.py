"""Who may decide an approval request is fixed when it is made (issue 9, item 8).

The attacks go through the real admin views with Django's test client: the owner of a client
blanks its owner field, approves, and restores it; an admin edits the client's grant while
its request waits, then approves it. Each such change must be audited, and its author (and
the owner at request time) refused.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from hosts import approvals
from hosts.access_models import ApprovalRequest, ClientGroup, Grant, McpClient
from hosts.clients import create_client
from hosts.models import Host
from tests.approval_requests import pending_request

pytestmark = pytest.mark.django_db


class _FormFields(HTMLParser):
    """The values a browser would submit from the page's main form (the Save button included)."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, list[str]] = {}
        self._select: str | None = None
        self._textarea: str | None = None
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method", "").lower() == "post" and "_form" in a.get("id", ""):
            self._in_form = True
        if not self._in_form:
            return
        name = a.get("name", "")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            if kind == "submit" and name != "_save":
                return
            self.data.setdefault(name, []).append(a.get("value", "on" if kind == "checkbox" else ""))
        elif tag == "select" and name:
            self._select = name
            self.data.setdefault(name, [])
        elif tag == "option" and self._select and "selected" in a:
            self.data[self._select].append(a.get("value", ""))
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = [""]

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form":
            self._in_form = False

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.data[self._textarea][-1] += data.lstrip("\n") if not self.data[self._textarea][-1] else data


def submit_change_form(browser: Client, url: str, **changes: Any) -> None:
    """GET the admin change form, change some fields, POST it as a browser would, expect the redirect."""
    page = browser.get(url)
    assert page.status_code == 200
    parser = _FormFields()
    parser.feed(page.content.decode())
    data: dict[str, Any] = dict(parser.data)
    data.setdefault("_save", ["Save"])
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value if isinstance(value, list) else [value]
    response = browser.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]


def browser_for(username: str) -> Client:
    user = User.objects.create_superuser(username, f"{username}@example.invalid", "unused-password-1")
    browser = Client()
    browser.force_login(user)
    return browser


def decide(browser: Client, request: ApprovalRequest, button: str = "_approve") -> str:
    url = reverse("admin:hosts_approvalrequest_decide", args=[request.pk])
    response = browser.post(url, {button: "1", "comment": ""}, follow=True)
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def waiting() -> ApprovalRequest:
    """A pending request of client 'agent', owned by alice, with one grant over its host."""
    client = create_client("agent", owner="alice").client
    host = Host.objects.create(name="web1", address="10.0.0.1", username="ops")
    grant = Grant.objects.create(client=client, description="agent on web1")
    grant.hosts.set([host])
    return pending_request(client, host, "systemctl restart nginx", rule="^systemctl restart ")


def changes_recorded(author: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(tool="admin_change", actor=f"admin:{author}").order_by("id"))


def test_it_stores_the_client_and_its_owner_when_the_request_is_made(waiting: ApprovalRequest) -> None:
    assert (waiting.client.name, waiting.client_owner, waiting.barred) == ("agent", "alice", [])


def test_an_owner_cannot_approve_by_blanking_the_owner_and_restoring_it(waiting: ApprovalRequest) -> None:
    alice, bob = browser_for("alice"), browser_for("bob")
    client_url = reverse("admin:hosts_mcpclient_change", args=[waiting.client_id])

    submit_change_form(alice, client_url, owner="")
    assert McpClient.objects.get(pk=waiting.client_id).owner == ""
    page = decide(alice, waiting)
    assert "alice owned client &#x27;agent&#x27; when it made this request and cannot decide it" in page
    submit_change_form(alice, client_url, owner="alice")

    waiting.refresh_from_db()
    assert (waiting.state, waiting.decided_by, waiting.barred) == ("pending", "", ["alice"])
    detail = alice.get(reverse("admin:hosts_approvalrequest_change", args=[waiting.pk])).content.decode()
    assert "You may not decide this request" in detail and 'name="_approve"' not in detail
    # Both edits are in the audit log, with what changed and which requests were waiting.
    recorded = changes_recorded("alice")
    assert [e.details["change"] for e in recorded] == [
        "client 'agent' changed: owner 'alice' -> ''",
        "client 'agent' changed: owner '' -> 'alice'",
    ]
    assert all(e.details["pending_requests"] == [waiting.pk] and e.status == "ok" for e in recorded)
    assert recorded[0].client == "agent" and recorded[0].chain_seq is not None

    assert "Approved request" in decide(bob, waiting)
    waiting.refresh_from_db()
    assert (waiting.state, waiting.decided_by) == ("approved", "bob")


def test_whoever_changes_the_owner_meanwhile_cannot_decide_and_neither_can_the_old_owner(
    waiting: ApprovalRequest,
) -> None:
    alice, bob, carol = browser_for("alice"), browser_for("bob"), browser_for("carol")
    submit_change_form(bob, reverse("admin:hosts_mcpclient_change", args=[waiting.client_id]), owner="dave")
    assert "bob changed client &#x27;agent&#x27; or one of its grants" in decide(bob, waiting)
    assert "alice owned client" in decide(alice, waiting)
    waiting.refresh_from_db()
    assert waiting.state == "pending"
    assert [e.details["change"] for e in changes_recorded("bob")] == [
        "client 'agent' changed: owner 'alice' -> 'dave'"
    ]
    # The index no longer offers bob the decision either (it asks approvals.refusal).
    current = ApprovalRequest.objects.get(pk=waiting.pk)
    assert approvals.refusal(current, "bob")
    assert approvals.refusal(current, "carol") == ""
    assert "Denied request" in decide(carol, waiting, "_deny")


def test_whoever_changes_a_grant_of_the_client_meanwhile_cannot_decide(waiting: ApprovalRequest) -> None:
    bob, carol = browser_for("bob"), browser_for("carol")
    grant = Grant.objects.get(client_id=waiting.client_id)
    submit_change_form(carol, reverse("admin:hosts_grant_change", args=[grant.pk]), can_sudo="on")
    assert Grant.objects.get(pk=grant.pk).can_sudo

    page = decide(carol, waiting)
    assert (
        "carol changed client &#x27;agent&#x27; or one of its grants while this request was pending" in page
    )
    waiting.refresh_from_db()
    assert (waiting.state, waiting.barred) == ("pending", ["carol"])
    (recorded,) = changes_recorded("carol")
    assert recorded.details["change"] == f"grant {grant.pk} (agent: listed hosts) changed"
    assert recorded.details["pending_requests"] == [waiting.pk]

    # Deleting the grant is such a change too.
    response = bob.post(reverse("admin:hosts_grant_delete", args=[grant.pk]), {"post": "yes"})
    assert response.status_code == 302 and not Grant.objects.filter(pk=grant.pk).exists()
    assert [e.details["change"] for e in changes_recorded("bob")] == [
        f"grant {grant.pk} (agent: listed hosts) deleted"
    ]
    assert "bob changed client" in decide(bob, waiting)
    waiting.refresh_from_db()
    assert waiting.state == "pending" and sorted(waiting.barred) == ["bob", "carol"]


def test_a_change_with_no_request_waiting_is_not_an_approval_event(waiting: ApprovalRequest) -> None:
    ApprovalRequest.objects.filter(pk=waiting.pk).update(state=ApprovalRequest.State.DENIED)
    bob = browser_for("bob")
    submit_change_form(bob, reverse("admin:hosts_mcpclient_change", args=[waiting.client_id]), owner="")
    assert changes_recorded("bob") == []


def test_an_owner_cannot_decide_by_renaming_their_own_account(waiting: ApprovalRequest) -> None:
    alice = browser_for("alice")
    user = User.objects.get(username="alice")
    submit_change_form(alice, reverse("admin:auth_user_change", args=[user.pk]), username="alice2")
    assert User.objects.get(pk=user.pk).username == "alice2"
    page = decide(alice, waiting)
    # The client's owner follows the account, and the new name is barred from the waiting request.
    assert "alice2 owns client &#x27;agent&#x27;" in page
    waiting.refresh_from_db()
    assert (waiting.state, waiting.barred) == ("pending", ["alice2"])
    assert [e.details["change"] for e in changes_recorded("alice2")] == [
        "admin user 'alice' renamed to 'alice2'; the clients they owned follow: agent"
    ]


def test_whoever_changes_a_group_grant_or_the_group_members_meanwhile_cannot_decide(
    waiting: ApprovalRequest,
) -> None:
    bob, carol = browser_for("bob"), browser_for("carol")
    team = ClientGroup.objects.create(name="team")
    team.clients.add(waiting.client_id)
    group_grant = Grant.objects.create(group=team, description="team grant")
    submit_change_form(carol, reverse("admin:hosts_grant_change", args=[group_grant.pk]), can_sudo="on")
    assert "carol changed client" in decide(carol, waiting)
    assert [e.details["change"] for e in changes_recorded("carol")] == [
        f"grant {group_grant.pk} (team: listed hosts) changed"
    ]

    # Taking the client out of the group on the group's page is such a change too.
    url = reverse("admin:hosts_clientgroup_change", args=[team.pk])
    page = bob.get(url).content.decode()
    parser = _FormFields()
    parser.feed(page)
    (delete_box,) = [name for name in parser.data if name.endswith("-0-id")]
    submit_change_form(bob, url, **{delete_box.replace("-id", "-DELETE"): "on"})
    assert not team.clients.exists()
    assert [e.details["change"] for e in changes_recorded("bob")] == [
        "members of group 'team' changed (its grants apply to them)"
    ]
    assert "bob changed client" in decide(bob, waiting)
    waiting.refresh_from_db()
    assert waiting.state == "pending" and sorted(waiting.barred) == ["bob", "carol"]


@pytest.mark.parametrize("how", ["delete_view", "delete_selected"])
def test_whoever_deletes_a_group_with_a_grant_of_the_client_meanwhile_cannot_decide(
    waiting: ApprovalRequest, how: str
) -> None:
    # Deleting a group deletes its grants with it: a grant change like any other.
    bob = browser_for("bob")
    team = ClientGroup.objects.create(name="team")
    team.clients.add(waiting.client_id)
    Grant.objects.create(group=team, description="team grant")
    if how == "delete_view":
        response = bob.post(reverse("admin:hosts_clientgroup_delete", args=[team.pk]), {"post": "yes"})
    else:
        response = bob.post(
            reverse("admin:hosts_clientgroup_changelist"),
            {"action": "delete_selected", "_selected_action": [str(team.pk)], "post": "yes"},
        )
    assert response.status_code == 302
    assert not ClientGroup.objects.exists() and not Grant.objects.filter(group__isnull=False).exists()
    assert [e.details["change"] for e in changes_recorded("bob")] == [
        "group 'team' deleted, with its grants and members"
    ]
    assert "bob changed client" in decide(bob, waiting)
    waiting.refresh_from_db()
    assert waiting.state == "pending" and waiting.barred == ["bob"]


def test_an_owner_who_renames_their_account_before_the_request_still_owns_the_client() -> None:
    # Attack: with nothing pending, alice renames her account; the client still names 'alice',
    # so the request made next would not bar 'alice2'.
    client = create_client("agent", owner="alice").client
    host = Host.objects.create(name="web1", address="10.0.0.1", username="ops")
    alice = browser_for("alice")
    user = User.objects.get(username="alice")
    submit_change_form(alice, reverse("admin:auth_user_change", args=[user.pk]), username="alice2")
    client.refresh_from_db()
    assert client.owner == "alice2"
    request = pending_request(client, host, "systemctl restart nginx", rule="^systemctl restart ")
    assert "alice2 owns client &#x27;agent&#x27;" in decide(alice, request)
    request.refresh_from_db()
    assert request.state == "pending"
    assert [e.details["change"] for e in changes_recorded("alice2")] == [
        "admin user 'alice' renamed to 'alice2'; the clients they owned follow: agent"
    ]
