"""An admin decides a held command in real Chromium: the band on the index, the request, Approve."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Page, expect

from audit import writer
from audit.chain import reset_chain_state
from hosts.access_models import ApprovalRequest
from hosts.clients import create_client
from hosts.models import Host

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

ADMIN = "root"
ADMIN_PASSWORD = "browser-test-only-a93e"  # a throwaway account in the test database
STDIN = "stdin-the-browser-never-sees-5521"


def held_command(client_name: str, owner: str, command: str, host: Host) -> ApprovalRequest:
    """A request as the MCP front leaves it: the asking call's audit row, then the pending request."""
    client = create_client(client_name, owner=owner).client
    event_id = writer.begin(
        tool="ssh_execute", actor=client_name, client=client_name, transport="streamable-http", host=host,
        command=command,
    )  # fmt: skip
    writer.complete(event_id, status="pending")
    now = timezone.now()
    return ApprovalRequest.objects.create(
        client=client,
        host=host,
        command=command,
        stdin=STDIN,
        reason="the deploy changed nginx.conf",
        rule=r"^systemctl restart ",
        requested_at=now,
        expires_at=now + timedelta(hours=1),
        audit_event_id=event_id,
    )


def test_an_admin_approves_a_held_command_from_the_index(
    live_server: Any, page: Page, screenshot: Any
) -> None:
    reset_chain_state()  # the process may remember a chain position from another test's database
    User.objects.create_superuser(ADMIN, email="", password=ADMIN_PASSWORD)
    host = Host.objects.create(name="web1", address="10.0.0.1", username="deploy")
    request = held_command("deploy-bot", "alice", "systemctl restart nginx", host)
    own = held_command("root-bot", ADMIN, "reboot", host)

    page.goto(live_server.url + "/admin/")
    page.fill("#id_username", ADMIN)
    page.fill("#id_password", ADMIN_PASSWORD)
    page.locator("input[type=submit]").click()

    # The band is the first thing in the content, above the dashboard cards.
    band = page.locator("#approvals-pending")
    expect(band).to_be_visible()
    expect(band).to_contain_text("2 commands waiting for approval")
    first_box, dashboard_box = band.bounding_box(), page.locator("#dashboard").bounding_box()
    assert first_box is not None and dashboard_box is not None
    assert first_box["y"] < dashboard_box["y"]
    mine = page.locator(f"#approval-{own.pk}")
    expect(mine).to_contain_text("waiting for another admin")
    item = page.locator(f"#approval-{request.pk}")
    expect(item).to_contain_text("deploy-bot")
    expect(item).to_contain_text("web1")
    expect(item).to_contain_text("systemctl restart nginx")
    screenshot(page, "approvals")
    assert STDIN not in page.content()

    item.get_by_role("link", name="decide").click()
    decision = page.locator("#decision")
    expect(decision).to_contain_text("systemctl restart nginx")
    expect(page.locator("#content")).to_contain_text("given (not shown)")
    assert STDIN not in page.content()
    # The asking call's audit row is one click away.
    expect(page.get_by_role("link", name=f"audit row {request.audit_event_id}")).to_be_visible()

    decision.locator("textarea[name=comment]").fill("nginx -t passed on staging")
    decision.get_by_role("button", name="Approve").click()
    expect(page.locator("ul.messagelist li.success")).to_contain_text(f"Approved request #{request.pk}")
    expect(page.locator("#decision")).to_have_count(0)
    expect(page.locator(".field-state_display")).to_contain_text("Approved")

    request.refresh_from_db()
    assert request.state == ApprovalRequest.State.APPROVED
    assert (request.decided_by, request.comment) == (ADMIN, "nginx -t passed on staging")

    # Only the request this admin may not decide is left at the top of the index.
    page.goto(live_server.url + "/admin/")
    expect(band).to_contain_text("1 command waiting for approval")
    expect(page.locator(f"#approval-{request.pk}")).to_have_count(0)
    page.locator(f"#approval-{own.pk}").get_by_role("link", name="view").click()
    expect(page.locator("#decision")).to_contain_text(re.compile("waiting for another admin"))
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
