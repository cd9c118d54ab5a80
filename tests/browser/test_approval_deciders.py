"""In real Chromium: the owner of a client blanks its owner field, and still may not approve its request."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from audit import writer
from audit.chain import reset_chain_state
from audit.models import AuditEvent
from hosts.access_models import ApprovalRequest
from hosts.clients import create_client
from hosts.models import Host
from tests.approval_requests import pending_request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

ADMIN = "root"
ADMIN_PASSWORD = "browser-test-only-5c1d"  # a throwaway account in the test database


def test_an_owner_who_blanks_the_owner_field_still_cannot_approve(live_server: Any, page: Page) -> None:
    reset_chain_state()  # the process may remember a chain position from another test's database
    User.objects.create_superuser(ADMIN, email="", password=ADMIN_PASSWORD)
    host = Host.objects.create(name="web1", address="10.0.0.1", username="deploy")
    client = create_client("root-bot", owner=ADMIN).client
    asked = writer.begin(
        tool="ssh_execute", actor="root-bot", client="root-bot", transport="stdio", host=host
    )
    writer.complete(asked, status="pending")
    request = pending_request(client, host, "reboot", rule="^reboot", audit_event_id=asked)

    page.goto(live_server.url + "/admin/")
    page.fill("#id_username", ADMIN)
    page.fill("#id_password", ADMIN_PASSWORD)
    page.locator("input[type=submit]").click()

    page.goto(f"{live_server.url}/admin/hosts/mcpclient/{client.pk}/change/")
    page.fill("#id_owner", "")
    page.locator("input[name=_save]").click()
    expect(page.locator("ul.messagelist li.success")).to_be_visible()

    page.goto(f"{live_server.url}/admin/hosts/approvalrequest/{request.pk}/change/")
    decision = page.locator("#decision")
    expect(decision).to_contain_text("You may not decide this request")
    expect(decision).to_contain_text("root owned client 'root-bot' when it made this request")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    expect(page.locator(".field-barred_display")).to_contain_text("root")

    request.refresh_from_db()
    assert request.state == ApprovalRequest.State.PENDING
    (change,) = AuditEvent.objects.filter(tool="admin_change", actor=f"admin:{ADMIN}")
    assert change.details["change"] == "client 'root-bot' changed: owner 'root' -> ''"
