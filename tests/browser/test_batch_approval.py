"""An admin decides one approval covering a batch of ssh_execute_many, in real Chromium."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import Page, expect

from audit.chain import reset_chain_state
from hosts.access_models import ApprovalRequest
from hosts.clients import create_client
from hosts.models import Host

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

ADMIN = "root"
ADMIN_PASSWORD = "browser-test-only-b71c"  # a throwaway account in the test database


def test_an_admin_sees_every_host_of_a_batch_and_approves_it_once(live_server: Any, page: Page) -> None:
    reset_chain_state()
    User.objects.create_superuser(ADMIN, email="", password=ADMIN_PASSWORD)
    made = [Host.objects.create(name=f"db{i}", address="10.0.0.1", username="deploy") for i in range(3)]
    client = create_client("fleet-bot", owner="alice").client
    now = timezone.now()
    request = ApprovalRequest.objects.create(
        client=client,
        host=made[0],
        command="systemctl restart postgresql",
        rule=r"^systemctl restart ",
        requested_at=now,
        expires_at=now + timedelta(hours=1),
        batch_id="batch-00aa11bb22cc33dd",
        batch_hosts=[h.name for h in made],
        batch_plan={"hosts": ["web0", *(h.name for h in made)]},
    )

    page.goto(live_server.url + "/admin/")
    page.fill("#id_username", ADMIN)
    page.fill("#id_password", ADMIN_PASSWORD)
    page.locator("input[type=submit]").click()

    item = page.locator(f"#approval-{request.pk}")
    expect(item).to_contain_text("3 hosts (db0, db1, db2)")
    item.get_by_role("link", name="decide").click()
    decision = page.locator("#decision")
    expect(decision).to_contain_text("on 3 hosts for fleet-bot")
    expect(page.locator("#batch-hosts")).to_contain_text("db0, db1, db2")
    expect(page.locator(".field-batch_display")).to_contain_text("3 hosts: db0, db1, db2")
    decision.get_by_role("button", name="Approve").click()
    expect(page.locator("ul.messagelist li.success")).to_contain_text("on db0, db1, db2")
    request.refresh_from_db()
    assert (request.state, request.decided_by) == (ApprovalRequest.State.APPROVED, ADMIN)
