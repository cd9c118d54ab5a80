"""Every admin list fits its column at common window widths, with the app sidebar open.

At 1400 px with Django's sidebar open, the host keys, sessions and audit tables overflowed
and hid their right-hand columns (issue 15). Each list is filled with long, realistic values
(fingerprints, session ids, worker names, commands) and measured in Chromium: no table may
be wider than the box that holds it, and the page must not scroll sideways. No request a page
makes may end in a 404 (the favicon did, on every page).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Browser

from audit import prune, writer
from audit.chain import reset_chain_state
from hosts.access_models import ApprovalRequest, ClientGroup, CommandRule, Grant
from hosts.clients import create_client
from hosts.models import Credential, Host, HostKey
from sshcontrol.models import Job, SshSession, WorkerHeartbeat

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

ADMIN = "root"
ADMIN_PASSWORD = "browser-test-only-77c2"  # a throwaway account in the test database
WINDOWS = [(1280, 800), (1400, 900)]

# Per table: how far it reaches past its holder, and whether the page scrolls sideways.
_MEASURE = """() => {
  const tables = [...document.querySelectorAll('#content table')].filter(t => t.offsetParent !== null);
  const found = tables.map(t => {
    const holder = t.parentElement;
    return {
      id: t.id || t.className || t.parentElement.className,
      width: t.getBoundingClientRect().width,
      holder: holder.clientWidth,
      holderScrolls: holder.scrollWidth - holder.clientWidth,
      right: t.getBoundingClientRect().right,
      contentRight: document.querySelector('#content').getBoundingClientRect().right,
    };
  });
  return {tables: found, pageScrolls: document.documentElement.scrollWidth - window.innerWidth};
}"""

FINGERPRINT = "SHA256:" + "Qm9vdHN0cmFwIHRoZSBob3N0IGtleSBmaW5nZXJwcmlu"  # 43 characters, as ssh-keygen
LONG_COMMAND = (
    "sudo -n journalctl --since '2026-11-29 08:00' --unit nginx.service --no-pager --output short-iso"
    " | grep -E 'upstream timed out|connect\\(\\) failed' | tail -n 200"
)


def fill_every_list() -> None:
    """A handful of rows per model with the longest values the product really stores."""
    # A pruned first call leaves the anchor row the anchors list shows.
    writer.complete(writer.begin(tool="ssh_list_hosts", actor="a", transport="stdio"), status="ok")
    prune.prune(older_than=timedelta(0), pruned_by="administrator-with-a-long-name")
    credential = Credential(name="deploy-key-production-eu-west-1", kind="password")
    credential.set_secret("not-a-real-secret")
    credential.save()
    hosts = []
    for n in range(3):
        host = Host.objects.create(
            name=f"app-server-{n}.production.eu-west-1.example.internal",
            address=f"ip-10-20-30-{n}.eu-west-1.compute.internal",
            port=2222,
            username="deploy-automation",
            credential=credential,
            tags=["production", "eu-west-1", "nginx", "frontend", "pci"],
            description="The production web tier behind the public load balancer",
            proxy_jump="bastion.production.eu-west-1.example.internal:22",
        )
        hosts.append(host)
        for key_type, state in (
            ("ssh-ed25519", HostKey.State.TRUSTED),
            ("ecdsa-sha2-nistp256", HostKey.State.PENDING),
            ("rsa-sha2-512", HostKey.State.PENDING),
        ):
            HostKey.objects.create(
                host=host,
                key_type=key_type,
                public_key="AAAAC3NzaC1lZDI1NTE5AAAAI" + "x" * 400,
                fingerprint=FINGERPRINT[:-1] + str(n) + key_type[:1],
                state=state,
                approved_by="administrator-with-a-long-name" if state == HostKey.State.TRUSTED else "",
                approved_at=timezone.now() if state == HostKey.State.TRUSTED else None,
            )
    group = ClientGroup.objects.create(name="deployment-agents-production", description="Agents that deploy")
    client = create_client("claude-code-deploy-agent-production", owner="alice.administrator").client
    client.groups.add(group)
    grant = Grant.objects.create(
        client=client, description="Deploys to the production web tier", tags=["nginx"]
    )
    grant.hosts.set(hosts)
    Grant.objects.create(
        group=group, all_hosts=True, description="Read-only everywhere for the deployment agents"
    )
    CommandRule.objects.create(
        grant=grant, action="approve", pattern=r"^(sudo\s+)?systemctl\s+(restart|stop)\s+"
    )
    CommandRule.objects.create(host=hosts[0], action="deny", pattern=r"rm\s+-rf\s+/(\s|$)|mkfs|dd\s+if=")
    now = timezone.now()
    for n in range(3):
        session_id = f"s-{n}-4f9c2a7e1b3d5f60718293a4b5c6d7e8"
        SshSession.objects.create(
            session_id=session_id,
            host=hosts[n],
            host_name=hosts[n].name,
            worker=f"embedded:build-machine-{n}.example.internal:123456:1764400000.123",
            opened_by="claude-code-deploy-agent-production",
            host_key_fingerprint=FINGERPRINT,
            commands_run=1234,
        )
        WorkerHeartbeat.objects.create(
            node=f"worker-{n}@build-machine-{n}.example.internal", hostname=f"build-machine-{n}", pid=123456
        )
        for status in ("ok", "error", "timeout", "denied"):
            event_id = writer.begin(
                tool="ssh_execute", actor=client.name, client=client.name, transport="streamable-http",
                host=hosts[n], session_id=session_id, command=LONG_COMMAND,
            )  # fmt: skip
            writer.complete(event_id, status=status, exit_status=0, stdout="x" * 200)
        Job.objects.create(
            job_id=f"job_{n}f9c2a7e1b3d5f60718293a4b5c6d7e8a9b0c1d2", client=client,
            actor=client.name, host=hosts[n], host_name=hosts[n].name, session_id=session_id,
            command=LONG_COMMAND, timeout=3600, audit_event_id=event_id,
            holder=f"embedded:build-machine-{n}.example.internal:123456:1764400000.123",
            stdout_bytes=123_456_789, stderr_bytes=4_321,
        )  # fmt: skip
        ApprovalRequest.objects.create(
            client=client, host=hosts[n], command=LONG_COMMAND, requested_at=now,
            expires_at=now + timedelta(hours=1), reason="The deploy changed nginx.conf; reload it",
            rule=r"^(sudo\s+)?systemctl\s+(restart|stop)\s+",
        )  # fmt: skip
    User.objects.create_user("operator.with.a.long.name@example.com", email="operator@example.com")
    Group.objects.create(name="approvers-for-the-production-web-tier")


def every_changelist() -> list[str]:
    return sorted(
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        for model in admin.site._registry
    )


def test_every_list_fits_its_column_with_the_sidebar_open(live_server: Any, browser: Browser) -> None:
    reset_chain_state()  # the process may remember a chain position from another test's database
    User.objects.create_superuser(ADMIN, email="", password=ADMIN_PASSWORD)
    fill_every_list()
    lists = every_changelist()
    assert len(lists) >= 12, lists
    too_wide: list[str] = []
    not_found: list[str] = []
    cut_values = 0
    for width, height in WINDOWS:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'true')")
        page = context.new_page()
        # Every request a page makes is answered: the favicon too (it used to be a 404 on every page).
        page.on(
            "response", lambda response: not_found.extend([response.url] if response.status == 404 else [])
        )
        page.goto(live_server.url + "/admin/login/")
        page.fill("#id_username", ADMIN)
        page.fill("#id_password", ADMIN_PASSWORD)
        page.locator("input[type=submit]").click()
        page.wait_for_url("**/admin/")
        for path in ["/admin/", *lists]:
            page.goto(live_server.url + path)
            if path != "/admin/":  # the index has no sidebar
                assert page.locator("#nav-sidebar").is_visible(), "the sidebar is open, as Django starts it"
                assert page.locator("#result_list tbody tr").count() > 0, f"{path} has no rows to measure"
            measured = page.evaluate(_MEASURE)
            # A value cut to fit keeps its full text as the hover title.
            for cut in page.locator("#result_list .sc-cut").all():
                title = cut.get_attribute("title") or ""
                assert len(title) > 26 and " ".join(cut.inner_text().split()) == title, (path, title)
                cut_values += 1
            for table in measured["tables"]:
                if table["holderScrolls"] > 1 or table["width"] > table["holder"] + 1:
                    too_wide.append(f"{width}x{height} {path} {table}")
            if measured["pageScrolls"] > 1:
                too_wide.append(
                    f"{width}x{height} {path}: the page scrolls sideways by {measured['pageScrolls']}px"
                )
        assert page.evaluate("fetch('/favicon.ico').then(r => r.status)") == 200
        context.close()
    assert not not_found, not_found
    assert not too_wide, "\n".join(too_wide)
    assert cut_values > 0, "no value was cut: the test data is not long enough to test anything"
