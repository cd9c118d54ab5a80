from __future__ import annotations

import pytest
from django.contrib.admin.exceptions import DisallowedModelAdminLookup
from django.urls import reverse
from django.utils import timezone

from hosts.models import Credential, Host, HostKey

pytestmark = pytest.mark.django_db

SECRET = "Admin-Visible-Never-9931"


@pytest.fixture
def credential() -> Credential:
    credential = Credential(name="shared")
    credential.store_password(SECRET)
    credential.save()
    Host.objects.create(name="web1", address="10.0.0.1", username="ops", credential=credential, tags=["web"])
    return credential


def _assert_no_secret(html: str, *secrets: str) -> None:
    for secret in (SECRET, *secrets):
        assert secret not in html
    assert "sshc:v1:" not in html
    assert "secret_encrypted" not in html
    assert "passphrase_encrypted" not in html


def test_it_adds_a_password_credential_without_rendering_the_secret(admin_client) -> None:
    url = reverse("admin:hosts_credential_add")
    page = admin_client.get(url).content.decode()
    assert 'type="password"' in page
    _assert_no_secret(page)

    # A form that comes back with an error does not echo the password either.
    response = admin_client.post(url, {"name": "", "kind": "password", "password": SECRET})
    assert response.status_code == 200
    _assert_no_secret(response.content.decode())

    response = admin_client.post(url, {"name": "db-pass", "kind": "password", "password": SECRET})
    assert response.status_code == 302
    # Error reports (Django's technical 500 page, mail to admins) will not include the POST values.
    assert response.wsgi_request.sensitive_post_parameters == "__ALL__"
    credential = Credential.objects.get(name="db-pass")
    assert credential.secret() == SECRET
    assert credential.secret_encrypted.startswith("sshc:v1:")


def test_it_adds_a_private_key_credential_and_checks_the_passphrase(admin_client, keygen) -> None:
    path = keygen("ed25519", passphrase="key phrase")
    key_text = path.read_text()
    key_line = key_text.splitlines()[1]
    url = reverse("admin:hosts_credential_add")

    response = admin_client.post(url, {"name": "k", "kind": "private_key", "private_key": key_text})
    assert response.status_code == 200
    page = response.content.decode()
    assert "The key is encrypted: enter its passphrase." in page
    _assert_no_secret(page, key_line)

    response = admin_client.post(
        url, {"name": "k", "kind": "private_key", "private_key": key_text, "passphrase": "wrong phrase"}
    )
    page = response.content.decode()
    assert "This passphrase does not decrypt the key." in page
    _assert_no_secret(page, key_line, "wrong phrase")

    response = admin_client.post(
        url, {"name": "k", "kind": "private_key", "private_key": key_text, "passphrase": "key phrase"}
    )
    assert response.status_code == 302
    credential = Credential.objects.get(name="k")
    assert credential.secret() == key_text
    assert credential.passphrase() == "key phrase"
    assert credential.public_key.split()[:2] == path.with_suffix(".pub").read_text().split()[:2]
    assert credential.fingerprint.startswith("SHA256:")


def test_it_never_shows_the_secret_on_list_change_and_replace_pages(admin_client, credential) -> None:
    for url in (
        reverse("admin:hosts_credential_changelist"),
        reverse("admin:hosts_credential_change", args=[credential.pk]),
        reverse("admin:hosts_credential_secret", args=[credential.pk]),
        reverse("admin:hosts_host_changelist"),
        reverse("admin:hosts_host_change", args=[Host.objects.get().pk]),
        reverse("admin:hosts_credential_history", args=[credential.pk]),
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        _assert_no_secret(response.content.decode())

    change_page = admin_client.get(
        reverse("admin:hosts_credential_change", args=[credential.pk])
    ).content.decode()
    assert reverse("admin:hosts_credential_secret", args=[credential.pk]) in change_page
    assert 'name="password"' not in change_page


def test_it_replaces_the_secret_on_its_own_page(admin_client, credential, keygen) -> None:
    url = reverse("admin:hosts_credential_secret", args=[credential.pk])
    response = admin_client.post(url, {"kind": "password", "password": "New-Secret-1"})
    assert response.status_code == 302
    assert response.wsgi_request.sensitive_post_parameters == "__ALL__"
    credential.refresh_from_db()
    assert credential.secret() == "New-Secret-1"

    # Switching to a key: a bad key is refused without echoing it, a good one is stored.
    response = admin_client.post(url, {"kind": "private_key", "private_key": "not a key at all"})
    assert response.status_code == 200
    assert "not a key at all" not in response.content.decode()

    path = keygen("rsa")
    response = admin_client.post(url, {"kind": "private_key", "private_key": path.read_text()})
    assert response.status_code == 302
    credential.refresh_from_db()
    assert credential.kind == Credential.Kind.PRIVATE_KEY
    assert credential.secret() == path.read_text()
    assert credential.public_key.startswith("ssh-rsa ")

    history = admin_client.get(
        reverse("admin:hosts_credential_history", args=[credential.pk])
    ).content.decode()
    assert "Replaced the secret." in history


def test_it_refuses_lookups_on_secret_fields(admin_client, credential, settings) -> None:
    settings.DEBUG = False
    for url in (
        reverse("admin:hosts_credential_changelist") + "?secret_encrypted__startswith=s",
        reverse("admin:hosts_credential_changelist") + "?passphrase_encrypted=x",
        reverse("admin:hosts_host_changelist") + "?credential__secret_encrypted__startswith=s",
        reverse("admin:hosts_hostkey_changelist") + "?host__credential__secret_encrypted__contains=s",
    ):
        try:
            response = admin_client.get(url)
        except DisallowedModelAdminLookup:
            continue
        assert response.status_code == 400, url


def test_it_shows_host_key_state_badges(admin_client, credential) -> None:
    host = Host.objects.get()
    HostKey.objects.create(host=host, key_type="ssh-ed25519", public_key="AAAA", fingerprint="SHA256:pending")
    page = admin_client.get(reverse("admin:hosts_host_changelist")).content.decode()
    assert "pending approval" in page
    page = admin_client.get(reverse("admin:hosts_host_change", args=[host.pk])).content.decode()
    assert "SHA256:pending" in page


def test_it_edits_tags_as_text(admin_client, credential) -> None:
    host = Host.objects.get()
    url = reverse("admin:hosts_host_change", args=[host.pk])
    assert 'value="web"' in admin_client.get(url).content.decode()
    data = {
        "name": "web1",
        "address": "10.0.0.2",
        "port": "22",
        "username": "ops",
        "credential": str(credential.pk),
        "description": "",
        "tags": "web, prod, web",
        "enabled": "on",
        "host_keys-TOTAL_FORMS": "0",
        "host_keys-INITIAL_FORMS": "0",
        "host_keys-MIN_NUM_FORMS": "0",
        "host_keys-MAX_NUM_FORMS": "1000",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    host.refresh_from_db()
    assert host.tags == ["web", "prod"]
    assert host.address == "10.0.0.2"
    response = admin_client.post(url, {**data, "port": "70000"})
    assert response.status_code == 200


def test_it_approves_and_revokes_host_keys_recording_who_and_when(
    admin_client, admin_user, credential
) -> None:
    host = Host.objects.get()
    key = HostKey.objects.create(
        host=host, key_type="ssh-ed25519", public_key="AAAA", fingerprint="SHA256:k1"
    )
    url = reverse("admin:hosts_hostkey_changelist")
    before = timezone.now()

    response = admin_client.post(url, {"action": "approve_keys", "_selected_action": [str(key.pk)]})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.state == HostKey.State.TRUSTED
    assert key.approved_by == admin_user.username
    assert key.approved_at is not None and key.approved_at >= before

    admin_client.post(url, {"action": "revoke_keys", "_selected_action": [str(key.pk)]})
    key.refresh_from_db()
    assert key.state == HostKey.State.REVOKED


def test_it_does_not_let_host_keys_be_added_or_edited_by_hand(admin_client, credential) -> None:
    key = HostKey.objects.create(
        host=Host.objects.get(), key_type="ssh-ed25519", public_key="AAAA", fingerprint="f"
    )
    assert admin_client.get(reverse("admin:hosts_hostkey_add")).status_code == 403
    page = admin_client.get(reverse("admin:hosts_hostkey_change", args=[key.pk])).content.decode()
    assert 'name="fingerprint"' not in page
    assert 'name="public_key"' not in page
    assert 'name="state"' not in page
