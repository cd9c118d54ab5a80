"""The admin warns on the host, credential and grant pages where the sudo password rule refuses sudo."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from hosts.models import Credential, Grant, Host, McpClient

pytestmark = pytest.mark.django_db

SUDO_PASSWORD = "admin-page-sudo-pw-4410"


@pytest.fixture
def exposed() -> dict[str, Any]:
    """web1's credential has a sudo password; 'admin-agent' may use it, 'reader' executes without sudo."""
    credential = Credential.objects.create(name="web1-cred", kind="password")
    credential.set_sudo_password(SUDO_PASSWORD)
    credential.save()
    web = Host.objects.create(name="web1", address="10.0.0.1", username="app", credential=credential)
    other = Host.objects.create(name="db1", address="10.0.0.9", username="app")
    sudo = Grant.objects.create(client=McpClient.objects.create(name="admin-agent"), can_sudo=True)
    sudo.hosts.set([web])
    reader = Grant.objects.create(client=McpClient.objects.create(name="reader"), read_only=True)
    reader.hosts.set([web, other])
    unrelated = Grant.objects.create(client=McpClient.objects.create(name="dba"))
    unrelated.hosts.set([other])
    return {
        "credential": credential,
        "web": web,
        "other": other,
        "sudo": sudo,
        "reader": reader,
        "unrelated": unrelated,
    }


def warnings_on(client: Client, name: str, pk: int) -> list[str]:
    response = client.get(reverse(f"admin:hosts_{name}_change", args=[pk]))
    assert response.status_code == 200
    assert SUDO_PASSWORD not in response.content.decode()
    return [str(m) for m in response.context["messages"] if "sudo on host" in str(m)]


def test_it_warns_on_every_page_involved_and_only_there(
    admin_client: Client, exposed: dict[str, Any]
) -> None:
    for name, obj in (
        ("host", exposed["web"]),
        ("credential", exposed["credential"]),
        ("grant", exposed["sudo"]),
        ("grant", exposed["reader"]),
    ):
        (line,) = warnings_on(admin_client, name, obj.pk)
        assert line.startswith("sudo on host 'web1' is refused (for 'admin-agent')"), (name, line)
        assert f"client 'reader' can run commands without sudo (grant #{exposed['reader'].pk})" in line
        assert "docs/security.md" in line
    assert warnings_on(admin_client, "host", exposed["other"].pk) == []
    assert warnings_on(admin_client, "grant", exposed["unrelated"].pk) == []


def test_it_warns_when_a_saved_grant_exposes_a_password_and_stops_once_fixed(
    admin_client: Client, exposed: dict[str, Any]
) -> None:
    reader: Grant = exposed["reader"]
    url = reverse("admin:hosts_grant_change", args=[reader.pk])
    form = {
        "client": reader.client_id,
        "description": "",
        "enabled": "on",
        "hosts": [exposed["web"].pk],
        "tags": "",
        "can_list": "on",
        "can_read_files": "on",
        "read_only": "on",
        "rules-TOTAL_FORMS": "0",
        "rules-INITIAL_FORMS": "0",
        "rules-MIN_NUM_FORMS": "0",
        "rules-MAX_NUM_FORMS": "1000",
    }
    saved = admin_client.post(url, {**form, "can_execute": "on"}, follow=True)
    assert [str(m) for m in saved.context["messages"] if "sudo on host 'web1' is refused" in str(m)]
    fixed = admin_client.post(url, form, follow=True)  # execute taken away: reading cannot plant
    reader.refresh_from_db()
    assert not reader.can_execute
    assert not [str(m) for m in fixed.context["messages"] if "sudo on host" in str(m)]
    assert warnings_on(admin_client, "host", exposed["web"].pk) == []
