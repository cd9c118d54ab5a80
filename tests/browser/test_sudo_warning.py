"""In real Chromium: the admin sees the sudo password rule's warning and clears it from the grant page."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from hosts.models import Credential, Grant, Host, McpClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

ADMIN, ADMIN_PASSWORD = "root", "browser-sudo-test-only-71a2"  # a throwaway account in the test database
SUDO_PASSWORD = "browser-sudo-pw-never-shown-5521"
WARNING = "sudo on host 'web1' is refused (for 'admin-agent')"


def test_an_admin_sees_who_could_capture_a_sudo_password_and_takes_their_execute_away(
    live_server: Any, page: Page
) -> None:
    User.objects.create_superuser(ADMIN, email="", password=ADMIN_PASSWORD)
    credential = Credential.objects.create(name="web1-cred", kind="password")
    credential.set_sudo_password(SUDO_PASSWORD)
    credential.save()
    web = Host.objects.create(name="web1", address="10.0.0.1", username="app", credential=credential)
    Grant.objects.create(client=McpClient.objects.create(name="admin-agent"), can_sudo=True).hosts.set([web])
    reader = Grant.objects.create(client=McpClient.objects.create(name="reader"), read_only=True)
    reader.hosts.set([web])

    page.goto(live_server.url + "/admin/login/?next=/admin/")
    page.fill("#id_username", ADMIN)
    page.fill("#id_password", ADMIN_PASSWORD)
    page.locator("input[type=submit]").click()
    page.wait_for_url(re.compile(r"/admin/$"))

    for path in (f"hosts/host/{web.pk}", f"hosts/credential/{credential.pk}", f"hosts/grant/{reader.pk}"):
        page.goto(f"{live_server.url}/admin/{path}/change/")
        warning = page.get_by_text(WARNING)
        expect(warning).to_be_visible()
        expect(warning).to_contain_text(f"client 'reader' can run commands without sudo (grant #{reader.pk})")
        assert SUDO_PASSWORD not in page.content()

    # On the reader's grant page: untick "execute" and save; the warning is gone everywhere.
    page.locator("#id_can_execute").uncheck()
    page.locator("input[name=_save]").click()
    page.wait_for_url(re.compile(r"/admin/hosts/grant/$"))
    expect(page.get_by_text(WARNING)).to_have_count(0)
    reader.refresh_from_db()
    assert not reader.can_execute
    page.goto(f"{live_server.url}/admin/hosts/host/{web.pk}/change/")
    expect(page.locator("#id_name")).to_have_value("web1")
    expect(page.get_by_text(WARNING)).to_have_count(0)
