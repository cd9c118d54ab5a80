"""The inventory admin: host list, host actions, host key review, key generation and import."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from hosts.importers import MAX_SOURCE_BYTES
from hosts.models import Credential, Host, HostKey
from sshcontrol.models import SshSession

DATA = Path(__file__).resolve().parent.parent / "data"


def _messages(response) -> list[str]:
    return [html.unescape(str(m)) for m in response.context["messages"]]


def _staff(username: str, *perms: str) -> Client:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    client = Client()
    client.force_login(user)
    return client


def _key(host: Host, key_type: str, fp: str, state: str = HostKey.State.PENDING) -> HostKey:
    return HostKey.objects.create(
        host=host, key_type=key_type, public_key="AAAA", fingerprint=fp, state=state
    )


# -- the host list -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_lists_hosts_with_key_state_sessions_and_tags(admin_client) -> None:
    changed = Host.objects.create(name="changed1", address="10.0.0.1", username="ops", tags=["web", "prod"])
    _key(changed, "ssh-ed25519", "SHA256:old", HostKey.State.TRUSTED)
    _key(changed, "ssh-ed25519", "SHA256:new")
    pending = Host.objects.create(name="pending1", address="10.0.0.2", username="ops", tags=["db"])
    _key(pending, "ssh-rsa", "SHA256:p")
    Host.objects.create(name="quiet1", address="10.0.0.3", username="ops", port=2222, enabled=False)
    for i, state in enumerate(("connected", "connected", "closed")):
        SshSession.objects.create(
            session_id=f"s{i}", host=changed, host_name="changed1", worker="w", state=state
        )

    response = admin_client.get(reverse("admin:hosts_host_changelist"))
    page = response.content.decode()
    assert "CHANGED - new key pending" in page
    assert "pending approval" in page
    assert "no key yet" in page
    assert "ops@10.0.0.3:2222" in page
    assert "web, prod" in page
    # A pending or changed badge links to the keys to review.
    assert f"/admin/hosts/hostkey/?host__id__exact={changed.pk}&amp;state__exact=pending" in page
    rows = {h.name: h for h in response.context["cl"].result_list}
    assert rows["changed1"].open_sessions == 2
    assert rows["pending1"].open_sessions == 0
    assert "Import hosts" in page


@pytest.mark.django_db
def test_it_filters_hosts_by_tag_key_state_and_enabled_and_searches_tags(admin_client) -> None:
    web = Host.objects.create(name="web1", address="10.0.0.1", username="ops", tags=["web"])
    _key(web, "ssh-ed25519", "SHA256:t", HostKey.State.TRUSTED)
    _key(web, "ssh-ed25519", "SHA256:n")
    db = Host.objects.create(name="db1", address="10.0.0.2", username="ops", tags=["db", "Backup"])
    _key(db, "ssh-ed25519", "SHA256:d", HostKey.State.TRUSTED)
    Host.objects.create(name="new1", address="10.0.0.3", username="ops", enabled=False)
    url = reverse("admin:hosts_host_changelist")

    def names(query: str) -> set[str]:
        response = admin_client.get(f"{url}?{query}")
        assert response.status_code == 200, query
        return {h.name for h in response.context["cl"].result_list}

    assert names("tag=db") == {"db1"}
    assert names("tag=web") == {"web1"}
    assert names("key_state=changed") == {"web1"}
    assert names("key_state=trusted") == {"db1"}
    assert names("key_state=unknown") == {"new1"}
    assert names("enabled__exact=0") == {"new1"}
    assert names("q=backup") == {"db1"}  # tags are searched, case-insensitively
    assert names("q=10.0.0.3") == {"new1"}
    page = admin_client.get(url).content.decode()
    assert "By tag" in page and "By host key state" in page


# -- host keys -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_approves_a_changed_key_only_through_the_replace_action(admin_client, admin_user) -> None:
    host = Host.objects.create(name="web1", address="10.0.0.1", username="ops")
    old = _key(host, "ssh-ed25519", "SHA256:old", HostKey.State.TRUSTED)
    new = _key(host, "ssh-ed25519", "SHA256:new")
    other = _key(host, "ssh-rsa", "SHA256:rsa")
    url = reverse("admin:hosts_hostkey_changelist")

    page = admin_client.get(url).content.decode()
    assert "replaces trusted <code>SHA256:old</code>" in page
    assert "A key marked CHANGED would replace a trusted key" in page

    response = admin_client.post(
        url, {"action": "approve_keys", "_selected_action": [new.pk, other.pk]}, follow=True
    )
    new.refresh_from_db()
    other.refresh_from_db()
    old.refresh_from_db()
    assert new.state == HostKey.State.PENDING  # a change is not approved by the bulk action
    assert other.state == HostKey.State.TRUSTED  # a new key type is
    assert old.state == HostKey.State.TRUSTED
    assert any("would replace a trusted key" in m for m in _messages(response))

    response = admin_client.post(
        url, {"action": "replace_trusted_keys", "_selected_action": [new.pk]}, follow=True
    )
    new.refresh_from_db()
    old.refresh_from_db()
    assert (new.state, new.approved_by) == (HostKey.State.TRUSTED, admin_user.username)
    assert (old.state, old.approved_by) == (HostKey.State.REVOKED, admin_user.username)
    assert old.approved_at == new.approved_at  # one decision, one moment
    assert any("revoked SHA256:old" in m for m in _messages(response))
    assert host.key_state == "trusted"


@pytest.mark.django_db
def test_it_never_brings_a_revoked_key_back_from_the_admin(admin_client) -> None:
    host = Host.objects.create(name="web1", address="10.0.0.1", username="ops")
    revoked = _key(host, "ssh-ed25519", "SHA256:gone", HostKey.State.REVOKED)
    fresh = _key(host, "ssh-rsa", "SHA256:fresh")
    url = reverse("admin:hosts_hostkey_changelist")
    for action in ("approve_keys", "replace_trusted_keys"):
        response = admin_client.post(
            url, {"action": action, "_selected_action": [revoked.pk, fresh.pk]}, follow=True
        )
        assert any("that are not pending" in m for m in _messages(response))
        revoked.refresh_from_db()
        assert revoked.state == HostKey.State.REVOKED
    fresh.refresh_from_db()
    assert fresh.state == HostKey.State.TRUSTED


@pytest.mark.django_db
def test_it_replaces_only_one_key_per_host_and_type(admin_client) -> None:
    host = Host.objects.create(name="web1", address="10.0.0.1", username="ops")
    _key(host, "ssh-ed25519", "SHA256:old", HostKey.State.TRUSTED)
    a = _key(host, "ssh-ed25519", "SHA256:a")
    b = _key(host, "ssh-ed25519", "SHA256:b")
    url = reverse("admin:hosts_hostkey_changelist")
    response = admin_client.post(
        url, {"action": "replace_trusted_keys", "_selected_action": [a.pk, b.pk]}, follow=True
    )
    assert any("one key per host and key type" in m for m in _messages(response))
    assert HostKey.objects.filter(state=HostKey.State.TRUSTED).get().fingerprint == "SHA256:old"


# -- key generation ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_generates_a_key_pair_and_shows_only_the_public_key(admin_client) -> None:
    listing = admin_client.get(reverse("admin:hosts_credential_changelist")).content.decode()
    assert reverse("admin:hosts_credential_generate") in listing

    url = reverse("admin:hosts_credential_generate")
    assert admin_client.get(url).status_code == 200
    response = admin_client.post(url, {"name": "deploy-key"})
    assert response.status_code == 200
    page = response.content.decode()
    credential = Credential.objects.get(name="deploy-key")
    assert credential.kind == Credential.Kind.PRIVATE_KEY
    assert credential.public_key.startswith("ssh-ed25519 ")
    assert credential.public_key.endswith(" sshcontrol:deploy-key")
    assert credential.public_key in page
    assert credential.fingerprint in page
    assert "PRIVATE KEY" not in page
    assert "BEGIN OPENSSH PRIVATE KEY" in credential.secret()
    assert credential.secret().split("\n")[1] not in page

    change = admin_client.get(reverse("admin:hosts_credential_change", args=[credential.pk])).content.decode()
    assert credential.public_key in change and "PRIVATE KEY" not in change

    # A name in use is refused.
    response = admin_client.post(url, {"name": "deploy-key"})
    assert "already exists" in response.content.decode()
    assert Credential.objects.count() == 1


# -- import --------------------------------------------------------------------------------------


def _upload(path: Path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes(), content_type="text/plain")


@pytest.mark.django_db
def test_it_imports_an_uploaded_inventory_after_a_dry_run(admin_client) -> None:
    url = reverse("admin:hosts_host_import")
    page = admin_client.get(url).content.decode()
    assert 'enctype="multipart/form-data"' in page and "csrfmiddlewaretoken" in page

    form = {"format": "ansible_ini", "dry_run": "on"}
    response = admin_client.post(url, {**form, "file": _upload(DATA / "ansible" / "inventory.ini")})
    page = response.content.decode()
    assert response.status_code == 200
    assert "Dry run: 8 host(s): 6 would be created" in page
    assert "would be created" in page and "not an SSH connection" in page
    assert "Inventory-Password-77" not in page
    assert not Host.objects.exists()

    response = admin_client.post(
        url, {"format": "ansible_ini", "file": _upload(DATA / "ansible" / "inventory.ini")}
    )
    assert "8 host(s): 6 created" in response.content.decode()
    assert Host.objects.count() == 6
    assert not Credential.objects.exists()  # passwords are not stored from an upload
    history = admin_client.get(
        reverse("admin:hosts_host_history", args=[Host.objects.get(name="db1").pk])
    ).content.decode()
    assert "Added." in history


@pytest.mark.django_db
def test_it_imports_an_uploaded_yaml_inventory_and_ssh_config(admin_client) -> None:
    url = reverse("admin:hosts_host_import")
    admin_client.post(url, {"format": "ansible_yaml", "file": _upload(DATA / "ansible" / "inventory.yml")})
    assert Host.objects.get(name="web2").port == 2222
    response = admin_client.post(url, {"format": "ssh_config", "file": _upload(DATA / "ssh_config")})
    page = response.content.decode()
    assert "Include is not followed for an uploaded file" in page
    assert Host.objects.get(name="db-example-com").proxy_jump == "jump@bastion.example.com:2200"
    assert not Host.objects.filter(name="cache").exists()  # it lives in an included file


@pytest.mark.django_db
def test_it_refuses_large_or_broken_uploads(admin_client) -> None:
    url = reverse("admin:hosts_host_import")
    big = SimpleUploadedFile("big.ini", b"#" * (MAX_SOURCE_BYTES + 1))
    page = admin_client.post(url, {"format": "ansible_ini", "file": big}).content.decode()
    assert "larger than 2 MiB" in page
    bad = SimpleUploadedFile("inv.yml", b"all: [\n")
    page = admin_client.post(url, {"format": "ansible_yaml", "file": bad}).content.decode()
    assert "not valid YAML" in page
    binary = SimpleUploadedFile("x", b"\xff\xfe\x00")
    page = admin_client.post(url, {"format": "ssh_config", "file": binary}).content.decode()
    assert "not UTF-8 text" in page
    assert not Host.objects.exists()


@pytest.mark.django_db
def test_it_protects_the_import_page_against_csrf(admin_user) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:hosts_host_import"),
        {"format": "ansible_ini", "file": _upload(DATA / "ansible" / "inventory.ini")},
    )
    assert response.status_code == 403
    assert not Host.objects.exists()


# -- permissions ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_forbids_the_import_page_actions_and_key_generation_without_permissions() -> None:
    host = Host.objects.create(name="web1", address="10.0.0.1", username="ops")
    nobody = _staff("nobody")
    assert nobody.get(reverse("admin:hosts_host_import")).status_code == 403
    assert (
        nobody.post(
            reverse("admin:hosts_host_import"),
            {"format": "ansible_ini", "file": _upload(DATA / "ansible" / "inventory.ini")},
        ).status_code
        == 403
    )
    assert nobody.get(reverse("admin:hosts_credential_generate")).status_code == 403
    assert nobody.post(reverse("admin:hosts_credential_generate"), {"name": "k"}).status_code == 403
    for action in ("test_connection_action", "scan_host_keys_action"):
        response = nobody.post(
            reverse("admin:hosts_host_changelist"), {"action": action, "_selected_action": [host.pk]}
        )
        assert response.status_code == 403
    key = _key(host, "ssh-ed25519", "SHA256:k")
    response = nobody.post(
        reverse("admin:hosts_hostkey_changelist"), {"action": "approve_keys", "_selected_action": [key.pk]}
    )
    assert response.status_code == 403
    key.refresh_from_db()
    assert key.state == HostKey.State.PENDING
    assert not Credential.objects.exists() and Host.objects.count() == 1


@pytest.mark.django_db
def test_it_offers_host_actions_only_to_those_who_may_change_hosts() -> None:
    host = Host.objects.create(name="web1", address="10.0.0.1", username="ops")
    viewer = _staff("viewer", "hosts.view_host", "hosts.view_hostkey")
    page = viewer.get(reverse("admin:hosts_host_changelist")).content.decode()
    assert "test_connection_action" not in page
    assert "Import hosts" not in page
    viewer.post(
        reverse("admin:hosts_host_changelist"),
        {"action": "scan_host_keys_action", "_selected_action": [host.pk]},
    )
    assert not HostKey.objects.exists()

    # Adding hosts is enough to import new ones, but not to update existing ones.
    adder = _staff("adder", "hosts.add_host", "hosts.view_host")
    assert adder.get(reverse("admin:hosts_host_import")).status_code == 200
    page = adder.post(
        reverse("admin:hosts_host_import"),
        {"format": "ansible_ini", "update": "on", "file": _upload(DATA / "ansible" / "inventory.ini")},
    ).content.decode()
    assert "You may add hosts but not change them." in page
    assert Host.objects.count() == 1


# -- actions against the real sshd ---------------------------------------------------------------


def test_it_tests_a_connection_through_the_audited_path(
    transactional_db, make_host, admin_client, admin_user
):
    host = make_host("box")
    response = admin_client.post(
        reverse("admin:hosts_host_changelist"),
        {"action": "test_connection_action", "_selected_action": [host.pk]},
        follow=True,
    )
    messages = _messages(response)
    assert len(messages) == 1
    assert "box: connected and ran 'true' (exit status 0) in" in messages[0]

    event = AuditEvent.objects.get(tool="ssh_execute")
    assert event.status == AuditEvent.Status.OK
    assert (event.actor, event.transport) == (f"admin:{admin_user.username}", "admin")
    assert (event.command, event.exit_status, event.host_name) == ("true", 0, "box")
    assert event.details.get("session_opened") is True
    assert f"audit row {event.pk}" in messages[0]
    # The session it opened is closed again.
    session = SshSession.objects.get(session_id=event.session_id)
    assert session.state == SshSession.State.CLOSED
    host.refresh_from_db()
    assert host.last_connected_at is not None


def test_it_reports_an_unknown_host_key_as_a_one_line_error(
    transactional_db, make_host, admin_client
) -> None:
    hosts = [make_host("fresh", trusted=False), make_host("off", enabled=False)]
    response = admin_client.post(
        reverse("admin:hosts_host_changelist"),
        {"action": "test_connection_action", "_selected_action": [h.pk for h in hosts]},
        follow=True,
    )
    messages = " | ".join(_messages(response))
    assert "fresh: host 'fresh' presented an unknown host key" in messages
    assert "off: host 'off' is disabled by an administrator" in messages
    statuses = dict(AuditEvent.objects.values_list("host_name", "status"))
    assert statuses == {"fresh": AuditEvent.Status.ERROR, "off": AuditEvent.Status.DENIED}
    assert not SshSession.objects.filter(state=SshSession.State.CONNECTED).exists()


def test_it_scans_host_keys_and_stores_them_pending(transactional_db, make_host, admin_client, sshd) -> None:
    host = make_host("scanme", trusted=False)
    response = admin_client.post(
        reverse("admin:hosts_host_changelist"),
        {"action": "scan_host_keys_action", "_selected_action": [host.pk]},
        follow=True,
    )
    keys = HostKey.objects.filter(host=host)
    assert keys.count() == 3
    assert {k.state for k in keys} == {HostKey.State.PENDING}
    page = response.content.decode()
    for key in keys:
        assert key.fingerprint in page
    assert f"/admin/hosts/hostkey/?host__id__exact={host.pk}&amp;state__exact=pending" in page
    assert "Review and approve the 3 pending key(s)" in page
