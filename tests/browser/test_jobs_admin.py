"""A running job in the admin, in real Chromium: its output grows on the page, and an admin cancels it."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from audit.models import AuditEvent
from sshcontrol.models import Job
from tests.mcp.conftest import McpHarness, mcp
from tests.polling import wait_until
from tests.sshd import SshServer

__all__ = ["mcp"]  # the MCP harness fixture, used here

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

ADMIN = "root"
ADMIN_PASSWORD = "browser-test-only-5d2e"  # a throwaway account in the test database
COMMAND = "for i in $(seq 1 600); do echo tick-$i; sleep 0.5; done"


def test_a_job_page_shows_live_output_and_an_admin_cancels_it(
    request: pytest.FixtureRequest, mcp: McpHarness, live_server: Any, make_host: Any, sshd: SshServer
) -> None:
    make_host("box")
    User.objects.create_superuser(ADMIN, email="", password=ADMIN_PASSWORD)
    # Started before Chromium opens: the harness runs its own event loop on this thread.
    started = mcp.ok("ssh_start_job", host="box", command=COMMAND, timeout=600)
    job_id = started["job_id"]
    wait_until(lambda: sshd.user_processes("tick-"), 30, "the job runs")
    page = request.getfixturevalue("page")
    try:
        page.goto(live_server.url + "/admin/")
        page.fill("#id_username", ADMIN)
        page.fill("#id_password", ADMIN_PASSWORD)
        page.locator("input[type=submit]").click()
        page.goto(f"{live_server.url}/admin/sshcontrol/job/{job_id}/change/")
        output = page.locator(".sshcontrol-job-output").first
        expect(output).to_contain_text("tick-2")
        # The page reloads itself while the job runs: later lines appear without a click.
        expect(output).to_contain_text("tick-8", timeout=30_000)
        expect(page.get_by_role("link", name=str(started["audit_id"]))).to_be_visible()

        page.goto(f"{live_server.url}/admin/sshcontrol/job/")
        page.locator(f"input[name=_selected_action][value='{job_id}']").check()
        page.select_option("select[name=action]", "cancel_selected")
        page.locator("button[name=index]").first.click()
        expect(page.locator("ul.messagelist")).to_contain_text("Asked 1 job(s) to stop")
        wait_until(lambda: Job.objects.get(job_id=job_id).state == "cancelled", 30, "the job is cancelled")
        wait_until(lambda: not sshd.user_processes("tick-"), 15, "the job's processes are gone")
        row = AuditEvent.objects.get(pk=started["audit_id"])
        assert row.status == "interrupted" and row.error == f"cancelled by admin:{ADMIN}"
        page.goto(f"{live_server.url}/admin/sshcontrol/job/{job_id}/change/")
        expect(page.locator("body")).to_contain_text("Cancelled")
        assert page.locator('meta[http-equiv="refresh"]').count() == 0
    finally:
        subprocess.run(["pkill", "-KILL", "-u", sshd.user, "-f", "tick-"], check=False)
