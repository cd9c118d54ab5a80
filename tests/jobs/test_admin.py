"""Jobs in the admin: the list, a running job's page with its live output, and Cancel (as the admin)."""

from __future__ import annotations

import subprocess
from typing import Any

from django.test import Client as DjangoClient
from django.urls import reverse

from audit.models import AuditEvent
from sshcontrol.models import Job
from tests.mcp.conftest import McpHarness
from tests.polling import wait_until
from tests.sshd import SshServer


def test_an_admin_sees_a_running_job_and_cancels_it(
    mcp: McpHarness, admin_client: DjangoClient, make_host: Any, sshd: SshServer
) -> None:
    make_host("box")
    started = mcp.ok("ssh_start_job", host="box", command="echo hello-from-the-job; sleep 617", timeout=600)
    job_id = started["job_id"]
    wait_until(lambda: sshd.user_processes("sleep 617"), 30, "the job runs")
    listing = admin_client.get(reverse("admin:sshcontrol_job_changelist"))
    assert listing.status_code == 200 and job_id[:16] in listing.content.decode()

    def page() -> str:
        text: str = admin_client.get(reverse("admin:sshcontrol_job_change", args=[job_id])).content.decode()
        return text if "hello-from-the-job" in text else ""

    html = wait_until(page, 15, "the job's page shows its output")
    assert 'http-equiv="refresh"' in html, "a running job's page reloads itself"
    assert reverse("admin:audit_auditevent_change", args=[started["audit_id"]]) in html
    response = admin_client.post(
        reverse("admin:sshcontrol_job_changelist"),
        {"action": "cancel_selected", "_selected_action": [job_id]},
        follow=True,
    )
    assert "Asked 1 job(s) to stop" in response.content.decode()
    wait_until(lambda: not sshd.user_processes("sleep 617"), 15, "the job's processes are gone")
    wait_until(lambda: Job.objects.get(job_id=job_id).state == "cancelled", 15, "the job is cancelled")
    job_row = AuditEvent.objects.get(pk=started["audit_id"])
    assert job_row.status == "interrupted" and job_row.error == "cancelled by admin:admin"
    action = AuditEvent.objects.get(tool="ssh_cancel_job")
    assert action.actor == "admin:admin" and action.status == "ok" and action.details["job_id"] == job_id
    after = admin_client.get(reverse("admin:sshcontrol_job_change", args=[job_id])).content.decode()
    assert 'http-equiv="refresh"' not in after and "Cancelled" in after
    subprocess.run(["pkill", "-KILL", "-u", sshd.user, "-f", "sleep 617"], check=False)
