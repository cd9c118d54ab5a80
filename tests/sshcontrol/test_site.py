"""The admin's frame: named sshcontrol, with an icon, and messages as they were written."""

from __future__ import annotations

import pytest
from django.urls import reverse

from hosts.models import Host

pytestmark = pytest.mark.django_db


def test_it_names_the_site_sshcontrol_without_a_view_site_link(admin_client):
    body = admin_client.get(reverse("admin:index")).content.decode()
    assert "<title>sshcontrol | sshcontrol</title>" in body
    assert '<div id="site-name"><a href="/admin/">sshcontrol</a></div>' in body
    assert "Django administration" not in body and "Django site admin" not in body
    assert "View site" not in body


@pytest.mark.parametrize("path", ["/favicon.ico", "/favicon.svg"])
def test_it_serves_a_favicon(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml" and response.content.startswith(b"<svg")


def test_every_admin_page_points_at_its_icon(admin_client):
    body = admin_client.get(reverse("admin:hosts_host_changelist")).content.decode()
    assert '<link rel="icon" href="/favicon.svg" type="image/svg+xml">' in body


def test_action_messages_keep_the_case_of_host_names(admin_client):
    # Port 9 on loopback: nothing listens, the scan fails at once and says so, naming the host.
    host = Host.objects.create(name="web1", address="127.0.0.1", port=9, username="deploy")
    response = admin_client.post(
        reverse("admin:hosts_host_changelist"),
        {"action": "scan_host_keys_action", "_selected_action": [host.pk]},
        follow=True,
    )
    body = response.content.decode()
    assert '<li class="error">web1: cannot scan' in body and "Web1:" not in body


def test_the_host_key_help_is_a_paragraph_not_the_title(admin_client):
    body = admin_client.get(reverse("admin:hosts_hostkey_changelist")).content.decode()
    assert '<p class="help sc-key-note" id="host-key-note"' in body
    title = body.split("<title>", 1)[1].split("</title>", 1)[0]
    assert title == "Select host key to change | sshcontrol"
    assert "<h2>A key marked CHANGED" not in body
