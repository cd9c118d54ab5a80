"""The stdin a command was fed, as an auditor sees it in real Chromium on the audit detail page."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from hosts.clients import create_client
from hosts.models import Grant
from sshcontrol.mcp.identity import ClientRef
from sshlib.sessions import registry
from tests.browser.test_admin_flow import ADMIN, ADMIN_PASSWORD, Admin, log_in
from tests.mcp.conftest import McpHarness
from tests.sshd import SshServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

SCRIPT = "echo from-the-script\nexport API_TOKEN=s3cr3t-in-stdin\n"


def test_an_auditor_reads_the_stdin_of_a_command(
    live_server: Any, page: Page, make_host: Any, sshd: SshServer
) -> None:
    User.objects.create_superuser(ADMIN, email="", password=ADMIN_PASSWORD)
    web = make_host("web1")
    issued = create_client("agent")
    Grant.objects.create(client=issued.client).hosts.set([web])
    harness = McpHarness(ClientRef(issued.client.pk, issued.client.name))
    try:
        first = harness.call("ssh_execute", host="web1", command="sh -s", stdin="echo plain\n")
        second = harness.call("ssh_execute", host="web1", command="sh -s", stdin=SCRIPT)
        assert not first.is_error and not second.is_error
        assert first.structured_content is not None and second.structured_content is not None
    finally:
        harness.close()
        registry.close_all()

    admin = Admin(page=page, base_url=live_server.url, secret="s3cr3t-in-stdin", screenshot=None)
    log_in(admin)
    admin.go(f"/admin/audit/auditevent/{first.structured_content['audit_id']}/change/")
    stdin = admin.page.locator("fieldset", has=admin.page.locator("h2", has_text="Stdin"))
    expect(stdin).to_contain_text("echo plain")
    expect(stdin).to_contain_text("(11 bytes)")
    expect(stdin).to_contain_text(hashlib.sha256(b"echo plain\n").hexdigest())

    # A secret in stdin is hidden, and so is the digest that would let a reader test guesses of it.
    admin.go(f"/admin/audit/auditevent/{second.structured_content['audit_id']}/change/")
    expect(stdin).to_contain_text("API_TOKEN=[REDACTED]")
    expect(stdin).to_contain_text("not recorded: part of the stdin was redacted")
    expect(stdin).to_contain_text(f"({len(SCRIPT)} bytes)")
