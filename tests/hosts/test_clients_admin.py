"""The access-policy admin: client tokens shown once, grants and rules, approvals, sudo passwords."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.admin.exceptions import DisallowedModelAdminLookup
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from hosts.access_models import ApprovalRequest, ClientGroup, CommandRule, Grant, McpClient
from hosts.clients import ClientAuthError, authenticate, create_client
from hosts.models import Credential, Host

pytestmark = pytest.mark.django_db

TOKEN_RE = re.compile(r"sshc_[A-Za-z0-9_-]{20,}")
SUDO_PASSWORD = "Sudo-Never-Rendered-4471"
STDIN = "stdin-content-never-shown-8812"


def _token_in(html: str) -> str:
    found = TOKEN_RE.findall(html)
    assert len(set(found)) == 1, found
    return found[0]


def _assert_nowhere(client: Client, secret: str, *urls: str) -> None:
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert secret not in response.content.decode(), url


def _no_message_holds(response: object, secret: str) -> None:
    """The token is not in a message waiting in the cookie or the session for the next page."""
    cookies = getattr(response, "cookies", {})
    for morsel in cookies.values():
        assert secret not in morsel.value
    session = getattr(response, "wsgi_request").session  # noqa: B009
    assert all(secret not in str(value) for value in session.values())


def _listed(client: Client, url: str) -> list[str]:
    """The names in the first column of an admin list."""
    html = client.get(url).content.decode()
    return re.findall(r'<th class="field-name"><a href="[^"]*">([^<]+)</a>', html)


# -- clients -----------------------------------------------------------------------------


def test_it_shows_a_new_clients_token_once_and_never_again(admin_client: Client) -> None:
    ClientGroup.objects.create(name="ci")
    response = admin_client.post(
        reverse("admin:hosts_mcpclient_add"),
        {
            "name": "ci-bot",
            "owner": "alice",
            "description": "CI agent",
            "groups": [ClientGroup.objects.get().pk],
        },
    )
    assert response.status_code == 200  # the token page itself, not a redirect with a message
    page = response.content.decode()
    token = _token_in(page)
    assert "shown only this once" in page
    _no_message_holds(response, token)

    client = McpClient.objects.get(name="ci-bot")
    assert authenticate(token) == client
    assert [g.name for g in client.groups.all()] == ["ci"]
    for value in McpClient.objects.filter(pk=client.pk).values().get().values():
        assert token not in str(value)

    _assert_nowhere(
        admin_client,
        token,
        reverse("admin:hosts_mcpclient_changelist"),
        reverse("admin:hosts_mcpclient_change", args=[client.pk]),
        reverse("admin:hosts_mcpclient_history", args=[client.pk]),
        reverse("admin:index"),
    )
    for url in (
        reverse("admin:hosts_mcpclient_changelist"),
        reverse("admin:hosts_mcpclient_change", args=[client.pk]),
    ):
        html = admin_client.get(url).content.decode()
        assert client.token_digest not in html
        assert "token_digest" not in html
        assert client.token_prefix in html


def test_it_refuses_lookups_on_the_token_digest(admin_client: Client, settings) -> None:
    settings.DEBUG = False
    create_client("ci-bot")
    for url in (
        reverse("admin:hosts_mcpclient_changelist") + "?token_digest__startswith=a",
        reverse("admin:hosts_grant_changelist") + "?client__token_digest__startswith=a",
        reverse("admin:hosts_approvalrequest_changelist") + "?stdin__contains=a",
    ):
        try:
            response = admin_client.get(url)
        except DisallowedModelAdminLookup:
            continue
        assert response.status_code == 400, url


def test_it_issues_a_new_token_after_confirmation(admin_client: Client) -> None:
    old = create_client("ci-bot").token
    client = McpClient.objects.get()
    url = reverse("admin:hosts_mcpclient_token", args=[client.pk])
    change_page = admin_client.get(reverse("admin:hosts_mcpclient_change", args=[client.pk])).content.decode()
    assert url in change_page

    confirm = admin_client.get(url).content.decode()
    assert "stops working" in confirm and not TOKEN_RE.search(confirm)
    assert authenticate(old) == client  # a GET changes nothing

    response = admin_client.post(url)
    new = _token_in(response.content.decode())
    assert new != old
    _no_message_holds(response, new)
    with pytest.raises(ClientAuthError):
        authenticate(old)
    assert authenticate(new) == client
    _assert_nowhere(admin_client, new, reverse("admin:hosts_mcpclient_change", args=[client.pk]))


def test_it_revokes_a_client_by_post_only(admin_client: Client) -> None:
    token = create_client("ci-bot").token
    client = McpClient.objects.get()
    url = reverse("admin:hosts_mcpclient_revoke", args=[client.pk])
    assert admin_client.get(url).status_code == 405
    response = admin_client.post(url, follow=True)
    assert "its token no longer works" in response.content.decode()
    client.refresh_from_db()
    assert client.revoked_at is not None and not client.enabled
    with pytest.raises(ClientAuthError, match="revoked"):
        authenticate(token)
    # A revoked client offers no new token.
    page = admin_client.get(reverse("admin:hosts_mcpclient_change", args=[client.pk])).content.decode()
    assert "Issue new token" not in page
    response = admin_client.post(reverse("admin:hosts_mcpclient_token", args=[client.pk]), follow=True)
    assert "stays revoked" in response.content.decode()
    assert not TOKEN_RE.search(response.content.decode())


def test_the_revoke_action_and_the_state_column(admin_client: Client) -> None:
    create_client("a-bot")
    create_client("b-bot")
    create_client("c-bot", expires_at=timezone.now() - timedelta(days=1))
    changelist = reverse("admin:hosts_mcpclient_changelist")
    admin_client.post(
        changelist,
        {"action": "revoke_clients", "_selected_action": [McpClient.objects.get(name="a-bot").pk]},
    )
    assert McpClient.objects.get(name="a-bot").revoked_at is not None
    assert McpClient.objects.get(name="b-bot").revoked_at is None
    assert _listed(admin_client, changelist + "?state=active") == ["b-bot"]
    assert _listed(admin_client, changelist + "?state=expired") == ["c-bot"]
    assert _listed(admin_client, changelist + "?state=revoked") == ["a-bot"]
    page = admin_client.get(changelist).content.decode()
    for state in ("active", "expired", "revoked"):
        assert f">{state}</span>" in page


def test_a_group_page_lists_its_clients(admin_client: Client) -> None:
    group = ClientGroup.objects.create(name="ci")
    create_client("ci-bot").client.groups.add(group)
    page = admin_client.get(reverse("admin:hosts_clientgroup_change", args=[group.pk])).content.decode()
    assert "ci-bot" in page
    assert reverse("admin:hosts_grant_add") + f"?group={group.pk}" in page
    assert ">1<" in admin_client.get(reverse("admin:hosts_clientgroup_changelist")).content.decode()


# -- grants and rules ---------------------------------------------------------------------


def _grant_post(**fields: object) -> dict[str, object]:
    data: dict[str, object] = {
        "description": "",
        "enabled": "on",
        "tags": "",
        "can_list": "on",
        "can_execute": "on",
        "rules-TOTAL_FORMS": "0",
        "rules-INITIAL_FORMS": "0",
        "rules-MIN_NUM_FORMS": "0",
        "rules-MAX_NUM_FORMS": "1000",
    }
    data.update(fields)
    return data


def test_a_grant_is_for_a_client_or_a_group_and_gets_its_rules_on_its_page(admin_client: Client) -> None:
    client = create_client("ci-bot").client
    group = ClientGroup.objects.create(name="ci")
    host = Host.objects.create(name="web1", address="10.0.0.1", username="ops")
    url = reverse("admin:hosts_grant_add")

    page = admin_client.get(url + f"?client={client.pk}").content.decode()
    assert f'<option value="{client.pk}" selected>' in page
    assert "add_id_client" not in page  # no popup that would show a token in a throwaway window

    response = admin_client.post(url, _grant_post(client=client.pk, group=group.pk))
    assert response.status_code == 200
    assert "A grant is for exactly one client or one group." in response.content.decode()

    response = admin_client.post(url, _grant_post(client=client.pk, hosts=[host.pk], tags="web, staging"))
    grant = Grant.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:hosts_grant_change", args=[grant.pk])
    assert grant.tags == ["web", "staging"] and list(grant.hosts.all()) == [host]

    change = reverse("admin:hosts_grant_change", args=[grant.pk])
    rules = {
        "rules-TOTAL_FORMS": "1",
        "rules-0-action": "deny",
        "rules-0-pattern": "rm (-rf",
        "rules-0-description": "",
        "rules-0-enabled": "on",
    }
    response = admin_client.post(
        change, _grant_post(client=client.pk, hosts=[host.pk], tags="web, staging", **rules)
    )
    assert response.status_code == 200
    assert "Not a valid regular expression" in response.content.decode()
    assert not CommandRule.objects.exists()

    rules["rules-0-pattern"] = r"\brm\s+-rf\b"
    response = admin_client.post(
        change, _grant_post(client=client.pk, hosts=[host.pk], tags="web, staging", **rules)
    )
    assert response.status_code == 302
    rule = CommandRule.objects.get()
    assert (rule.grant, rule.action, rule.pattern) == (grant, "deny", r"\brm\s+-rf\b")

    listing = admin_client.get(reverse("admin:hosts_grant_changelist")).content.decode()
    assert "web1, tag:web, tag:staging" in listing
    client_page = admin_client.get(reverse("admin:hosts_mcpclient_change", args=[client.pk])).content.decode()
    assert "tag:web" in client_page  # the grants inline


def test_rules_for_a_host_or_a_tag_are_made_on_the_rule_admin(admin_client: Client) -> None:
    url = reverse("admin:hosts_commandrule_add")
    base = {"action": "approve", "description": "", "enabled": "on", "grant": "", "host": ""}
    response = admin_client.post(url, {**base, "pattern": "^reboot", "tag": ""})
    assert "A rule belongs to exactly one grant, host or tag." in response.content.decode()
    response = admin_client.post(url, {**base, "pattern": "[unclosed", "tag": "prod"})
    assert "Not a valid regular expression" in response.content.decode()
    response = admin_client.post(url, {**base, "pattern": "^reboot", "tag": "prod"})
    assert response.status_code == 302
    assert CommandRule.objects.get().tag == "prod"
    assert "tag prod" in admin_client.get(reverse("admin:hosts_commandrule_changelist")).content.decode()


# -- approvals ----------------------------------------------------------------------------


@pytest.fixture
def pending_request() -> ApprovalRequest:
    client = create_client("ci-bot", owner="alice").client
    host = Host.objects.create(name="web1", address="10.0.0.1", username="ops")
    now = timezone.now()
    return ApprovalRequest.objects.create(
        client=client,
        host=host,
        command="systemctl restart nginx",
        stdin=STDIN,
        reason="config changed",
        rule="^systemctl restart ",
        requested_at=now,
        expires_at=now + timedelta(minutes=30),
        audit_event_id=41,
    )


def _decide(admin_client: Client, request: ApprovalRequest, button: str, comment: str = "") -> str:
    url = reverse("admin:hosts_approvalrequest_decide", args=[request.pk])
    response = admin_client.post(url, {button: "1", "comment": comment}, follow=True)
    assert response.status_code == 200
    return response.content.decode()


def test_an_admin_approves_a_request_with_a_comment(admin_client: Client, pending_request) -> None:
    url = reverse("admin:hosts_approvalrequest_change", args=[pending_request.pk])
    page = admin_client.get(url).content.decode()
    assert 'name="_approve"' in page and 'name="_deny"' in page and "csrfmiddlewaretoken" in page
    assert "systemctl restart nginx" in page
    assert "given (not shown)" in page and STDIN not in page
    assert reverse("admin:audit_auditevent_change", args=[41]) in page

    page = _decide(admin_client, pending_request, "_approve", "go ahead")
    assert "Approved request" in page
    pending_request.refresh_from_db()
    assert pending_request.state == ApprovalRequest.State.APPROVED
    assert (pending_request.decided_by, pending_request.comment) == ("admin", "go ahead")
    assert pending_request.decided_at is not None
    assert 'name="_approve"' not in page  # decided: no more buttons
    assert STDIN not in page

    again = _decide(admin_client, pending_request, "_deny")
    assert "is approved, not pending" in again
    pending_request.refresh_from_db()
    assert pending_request.state == ApprovalRequest.State.APPROVED


def test_an_admin_denies_a_request(admin_client: Client, pending_request) -> None:
    page = _decide(admin_client, pending_request, "_deny", "not during business hours")
    assert "Denied request" in page
    pending_request.refresh_from_db()
    assert pending_request.state == ApprovalRequest.State.DENIED
    assert pending_request.comment == "not during business hours"
    assert pending_request.stdin == ""


def test_an_owner_cannot_approve_their_own_clients_request(admin_client: Client, pending_request) -> None:
    McpClient.objects.filter(pk=pending_request.client_id).update(owner="admin")
    detail = admin_client.get(reverse("admin:hosts_approvalrequest_change", args=[pending_request.pk]))
    assert "waiting for another admin" in detail.content.decode()
    page = _decide(admin_client, pending_request, "_approve")
    assert "admin owns client &#x27;ci-bot&#x27; and cannot decide its requests" in page
    assert 'class="error"' in page
    pending_request.refresh_from_db()
    assert pending_request.state == ApprovalRequest.State.PENDING
    assert pending_request.decided_by == ""


def test_an_expired_request_cannot_be_approved(admin_client: Client, pending_request) -> None:
    ApprovalRequest.objects.filter(pk=pending_request.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    page = _decide(admin_client, pending_request, "_approve")
    assert "is expired, not pending" in page
    pending_request.refresh_from_db()
    assert pending_request.state == ApprovalRequest.State.EXPIRED
    assert pending_request.decided_by == ""


def test_requests_cannot_be_added_edited_or_deleted(admin_client: Client, pending_request) -> None:
    assert admin_client.get(reverse("admin:hosts_approvalrequest_add")).status_code == 403
    assert (
        admin_client.get(reverse("admin:hosts_approvalrequest_delete", args=[pending_request.pk])).status_code
        == 403
    )
    change = reverse("admin:hosts_approvalrequest_change", args=[pending_request.pk])
    assert admin_client.post(change, {"command": "rm -rf /"}).status_code == 403
    decide = reverse("admin:hosts_approvalrequest_decide", args=[pending_request.pk])
    assert admin_client.get(decide).status_code == 405
    listing = admin_client.get(reverse("admin:hosts_approvalrequest_changelist")).content.decode()
    assert "systemctl restart nginx" in listing and STDIN not in listing


def test_deciding_needs_the_change_permission(client: Client, pending_request) -> None:
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_approvalrequest"))
    client.force_login(viewer)
    page = client.get(
        reverse("admin:hosts_approvalrequest_change", args=[pending_request.pk])
    ).content.decode()
    assert 'name="_approve"' not in page
    response = client.post(
        reverse("admin:hosts_approvalrequest_decide", args=[pending_request.pk]), {"_approve": "1"}
    )
    assert response.status_code == 403
    pending_request.refresh_from_db()
    assert pending_request.state == ApprovalRequest.State.PENDING


def test_the_index_lists_pending_requests_at_the_top(admin_client: Client, pending_request) -> None:
    other = create_client("own-bot", owner="admin").client
    ApprovalRequest.objects.create(
        client=other,
        host=pending_request.host,
        command="reboot " + "x" * 200,
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    page = admin_client.get(reverse("admin:index")).content.decode()
    band = page[page.index('id="approvals-pending"') :]
    assert page.index('id="approvals-pending"') < page.index('id="dashboard"')
    assert "2 commands waiting for approval" in band
    assert "systemctl restart nginx" in band
    decide_url = reverse("admin:hosts_approvalrequest_change", args=[pending_request.pk])
    assert f'<a href="{decide_url}">decide</a>' in band
    own_item = band[band.index("own-bot") :]
    assert "waiting for another admin" in own_item[: own_item.index("</li>")]
    assert "x" * 100 not in band  # shortened
    assert STDIN not in page

    pending_request.state = ApprovalRequest.State.DENIED
    pending_request.save()
    ApprovalRequest.objects.filter(client=other).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert 'id="approvals-pending"' not in admin_client.get(reverse("admin:index")).content.decode()


# -- the credential's sudo password -------------------------------------------------------


def test_the_sudo_password_is_write_only(admin_client: Client) -> None:
    add = reverse("admin:hosts_credential_add")
    page = admin_client.post(
        add, {"name": "", "kind": "password", "password": "login-pw", "sudo_password": SUDO_PASSWORD}
    ).content.decode()
    assert "This field is required" in page and SUDO_PASSWORD not in page

    response = admin_client.post(
        add, {"name": "ops", "kind": "password", "password": "login-pw", "sudo_password": SUDO_PASSWORD}
    )
    assert response.status_code == 302
    assert getattr(response.wsgi_request, "sensitive_post_parameters", None) == "__ALL__"
    credential = Credential.objects.get(name="ops")
    assert credential.sudo_password() == SUDO_PASSWORD
    assert SUDO_PASSWORD not in credential.sudo_password_encrypted

    sudo_url = reverse("admin:hosts_credential_sudo", args=[credential.pk])
    change_url = reverse("admin:hosts_credential_change", args=[credential.pk])
    _assert_nowhere(
        admin_client, SUDO_PASSWORD, reverse("admin:hosts_credential_changelist"), change_url, sudo_url
    )
    assert "sudo_password_encrypted" not in admin_client.get(change_url).content.decode()
    assert sudo_url in admin_client.get(change_url).content.decode()
    listing = admin_client.get(reverse("admin:hosts_credential_changelist")).content.decode()
    assert "Sudo password" in listing and "icon-yes.svg" in listing

    # Replace: an error does not echo what was typed; success stores the new one.
    page = admin_client.post(sudo_url, {"sudo_password": "new-Sudo-Pw-2", "clear": "on"}).content.decode()
    assert "not both" in page and "new-Sudo-Pw-2" not in page
    response = admin_client.post(sudo_url, {"sudo_password": "new-Sudo-Pw-2"})
    assert response.status_code == 302
    assert getattr(response.wsgi_request, "sensitive_post_parameters", None) == "__ALL__"
    credential.refresh_from_db()
    assert credential.sudo_password() == "new-Sudo-Pw-2"
    _assert_nowhere(admin_client, "new-Sudo-Pw-2", change_url, sudo_url)

    # Clear.
    assert admin_client.post(sudo_url, {"clear": "on"}).status_code == 302
    credential.refresh_from_db()
    assert not credential.has_sudo_password
    page = admin_client.post(sudo_url, {}).content.decode()
    assert "tick “Clear it”" in page


def test_a_client_is_edited_and_a_group_added_on_their_pages(admin_client: Client) -> None:
    token = create_client("ci-bot").token
    client = McpClient.objects.get()
    response = admin_client.post(
        reverse("admin:hosts_mcpclient_change", args=[client.pk]),
        {
            "name": "ci-bot",
            "owner": "bob",
            "description": "",
            "max_calls_per_minute": "30",
            "grants-TOTAL_FORMS": "0",
            "grants-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302
    client.refresh_from_db()
    assert (client.owner, client.enabled, client.max_calls_per_minute) == ("bob", False, 30)
    with pytest.raises(ClientAuthError, match="disabled"):
        authenticate(token)

    add = reverse("admin:hosts_clientgroup_add")
    page = admin_client.get(add).content.decode()
    assert "add_id_McpClient_groups" not in page  # no client popup: its token page would land there
    response = admin_client.post(
        add,
        {
            "name": "ci",
            "description": "CI agents",
            "McpClient_groups-TOTAL_FORMS": "1",
            "McpClient_groups-INITIAL_FORMS": "0",
            "McpClient_groups-0-mcpclient": str(client.pk),
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert [c.name for c in ClientGroup.objects.get(name="ci").clients.all()] == ["ci-bot"]
