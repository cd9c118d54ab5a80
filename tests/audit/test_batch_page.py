"""The admin shows a batch (ssh_execute_many) as one page, linked from each of its rows."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit import writer
from audit.models import AuditEvent
from audit.writer import Completion

pytestmark = pytest.mark.django_db


def batch_of(outcomes: list[tuple[str, str, int | None, str]], batch_id: str = "batch-test") -> list[int]:
    rows = [
        {"tool": "ssh_execute_many", "actor": "claude", "transport": "stdio", "command": "uptime",
         "batch_id": batch_id, "details": {"host_requested": host}}
        for host, *_ in outcomes
    ]  # fmt: skip
    ids = writer.begin_many(rows)
    writer.finish_many(
        [
            (event_id, Completion(status, exit_status=exit, stdout=stdout, error="" if stdout else "no"))
            for event_id, (_host, status, exit, stdout) in zip(ids, outcomes, strict=True)
        ]
    )
    return ids


def test_a_batch_page_groups_identical_outputs_and_links_every_host(admin_client) -> None:
    ids = batch_of(
        [
            ("web1", "ok", 0, "up 3 days"),
            ("web2", "ok", 0, "up 3 days"),
            ("web3", "ok", 0, "<b>up 9 days</b>"),
            ("web4", "denied", None, ""),
        ]
    )
    assert AuditEvent.objects.filter(batch_id="batch-test").count() == 4
    row_page = admin_client.get(reverse("admin:audit_auditevent_change", args=[ids[0]])).content.decode()
    batch_url = reverse("admin:audit_auditevent_batch", args=["batch-test"])
    assert batch_url in row_page
    body = admin_client.get(batch_url).content.decode()
    assert "2 host(s): OK, exit 0" in body and "1 host(s): OK, exit 0" in body
    assert "&lt;b&gt;up 9 days&lt;/b&gt;" in body and "<b>up 9" not in body
    for event_id in ids:
        assert reverse("admin:audit_auditevent_change", args=[event_id]) in body
    assert "Did not run to the end" in body
    listed = admin_client.get(reverse("admin:audit_auditevent_changelist"), {"batch_id": "batch-test"})
    assert listed.status_code == 200 and listed.content.decode().count("uptime") >= 4


def test_an_unknown_batch_is_not_found(admin_client) -> None:
    assert admin_client.get(reverse("admin:audit_auditevent_batch", args=["nope"])).status_code == 404


def test_the_chain_verifies_over_batch_rows_and_single_rows(admin_client) -> None:
    from django.core.management import call_command

    single = writer.begin(tool="ssh_execute", actor="claude", transport="stdio", command="id")
    writer.complete(single, status="ok", exit_status=0)
    batch_of([("a", "ok", 0, "x"), ("b", "ok", 0, "x")], "batch-chain")
    call_command("audit_verify")
    assert AuditEvent.objects.get(pk=single).batch_id is None
