"""The audit admin: viewable by superusers, never addable, changeable or deletable."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit import writer
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def event_id():
    event_id = writer.begin(
        tool="ssh_execute", actor="claude", transport="stdio", command="cat /etc/motd <b>bold</b>"
    )
    writer.complete(event_id, status="ok", exit_status=0, stdout="<script>alert(1)</script>\nline 2")
    return event_id


def test_it_lists_events(admin_client, event_id):
    response = admin_client.get(reverse("admin:audit_auditevent_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "cat /etc/motd &lt;b&gt;bold&lt;/b&gt;" in body
    assert 'name="action"' not in body  # no bulk actions, delete_selected included


def test_it_searches_by_request_id(admin_client, event_id):
    request_id = AuditEvent.objects.get(pk=event_id).request_id
    url = reverse("admin:audit_auditevent_changelist")
    assert "cat /etc/motd" in admin_client.get(url, {"q": str(request_id)}).content.decode()
    assert "cat /etc/motd" not in admin_client.get(url, {"q": "nomatch"}).content.decode()


def test_it_shows_an_event_read_only_with_escaped_output(admin_client, event_id):
    response = admin_client.get(reverse("admin:audit_auditevent_change", args=[event_id]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert(1)" not in body
    assert "<pre" in body
    assert 'name="_save"' not in body


def test_it_refuses_add(admin_client):
    assert admin_client.get(reverse("admin:audit_auditevent_add")).status_code == 403


def test_it_refuses_delete(admin_client, event_id):
    url = reverse("admin:audit_auditevent_delete", args=[event_id])
    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event_id).exists()


def test_it_refuses_changes(admin_client, event_id):
    url = reverse("admin:audit_auditevent_change", args=[event_id])
    response = admin_client.post(url, {"status": "error", "command": "rm -rf /", "stdout": "forged"})
    assert response.status_code == 403
    event = AuditEvent.objects.get(pk=event_id)
    assert (event.status, event.command, event.stdout) == ("ok", "cat /etc/motd <b>bold</b>", event.stdout)
    assert event.stdout.startswith("<script>")


# --- the changelist: columns, filters, facets, search, export -------------------------------


@pytest.fixture
def events(monkeypatch):
    """Four calls: two in session s-1 on web1 (ok, then error), one denied on db1, one by another actor."""
    from datetime import UTC, datetime, timedelta

    from django.utils import timezone

    from hosts.models import Host

    web1 = Host.objects.create(name="web1", address="10.0.0.5", username="deploy")
    db1 = Host.objects.create(name="db1", address="10.0.0.6", username="deploy")
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    ids = {}
    for n, (key, host, actor, tool, command, status, session) in enumerate(
        [
            ("first", web1, "claude", "ssh_execute", "uptime", "ok", "s-1"),
            ("second", web1, "claude", "ssh_execute", "systemctl restart nginx", "error", "s-1"),
            ("denied", db1, "claude", "ssh_execute", "rm -rf /var/lib/pg", "denied", "s-2"),
            ("other", web1, "cursor", "upload_file", "", "ok", "s-3"),
        ]
    ):
        monkeypatch.setattr(timezone, "now", lambda n=n: start + timedelta(minutes=n))
        event_id = writer.begin(
            tool=tool, actor=actor, transport="http", host=host, session_id=session, command=command
        )
        writer.complete(event_id, status=status, exit_status=0 if status == "ok" else 1, stdout=f"{key}\n")
        ids[key] = event_id
    monkeypatch.undo()
    return ids


def _changelist(admin_client, **params):
    response = admin_client.get(reverse("admin:audit_auditevent_changelist"), params)
    assert response.status_code == 200
    return response.content.decode()


def test_it_lists_the_columns_an_auditor_reads(admin_client, events):
    body = _changelist(admin_client)
    for header in ("Time", "Caller", "Host name", "Command or tool", "Status", "Duration"):
        assert f">{header}<" in body or f">{header}</a>" in body, header
    assert "systemctl restart nginx" in body and " ms<" in body
    assert "2026-03-01 09:01:00" in body


def test_it_shortens_long_commands_in_the_list(admin_client):
    writer.begin(
        tool="ssh_execute", actor="a", transport="stdio", command="echo " + "x" * 200 + "\nsecond line"
    )
    body = _changelist(admin_client)
    assert "echo " + "x" * 75 + "…" in body
    assert "second line" not in body


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status__exact": "error"}, {"second"}),
        ({"tool__exact": "upload_file"}, {"other"}),
        ({"host_name__exact": "db1"}, {"denied"}),
        ({"actor__exact": "cursor"}, {"other"}),
        ({"started_at__gte": "2026-03-01 09:02:00+00:00"}, {"denied", "other"}),
        ({"started_at__year": "2026", "started_at__month": "3"}, {"first", "second", "denied", "other"}),
        ({"q": "nginx"}, {"second"}),
    ],
)
def test_it_filters_and_searches(admin_client, events, params, expected):
    body = _changelist(admin_client, **params)
    shown = {key for key, event_id in events.items() if f"/audit/auditevent/{event_id}/change/" in body}
    assert shown == expected


def test_it_shows_facet_counts_and_a_date_hierarchy(admin_client, events):
    body = _changelist(admin_client)
    assert "Error (1)" in body and "OK (2)" in body and "ssh_execute (3)" in body
    assert 'class="xfull"' in body or "toplinks" in body  # the date hierarchy's bar


def test_it_offers_exports_that_keep_the_current_filters(admin_client, events):
    body = _changelist(admin_client, status__exact="error", q="nginx")
    for fmt in ("csv", "jsonl"):
        url = reverse("admin:audit_auditevent_export", args=[fmt])
        assert f'href="{url}?status__exact=error&amp;q=nginx"' in body


def _export(admin_client, fmt, **params):
    response = admin_client.get(reverse("admin:audit_auditevent_export", args=[fmt]), params)
    assert response.status_code == 200
    assert f'.{fmt}"' in response["Content-Disposition"]
    return b"".join(response.streaming_content).decode()


def test_it_exports_the_filtered_list_as_csv(admin_client, events):
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(_export(admin_client, "csv", host_name__exact="web1"))))
    assert [int(row["id"]) for row in rows] == [events["first"], events["second"], events["other"]]
    assert rows[1]["command"] == "systemctl restart nginx" and rows[1]["status"] == "error"
    assert rows[0]["chain_seq"] == "1" and len(rows[0]["chain_hash"]) == 64


def test_it_exports_the_filtered_list_as_json_lines(admin_client, events):
    import json

    lines = _export(admin_client, "jsonl", q="rm -rf").splitlines()
    assert [json.loads(line)["id"] for line in lines] == [events["denied"]]
    assert json.loads(lines[0])["started_at"] == "2026-03-01T09:02:00+00:00"


def test_it_exports_what_audit_export_exports(admin_client, events):
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("audit_export", "--format", "jsonl", stdout=out)
    assert _export(admin_client, "jsonl") == out.getvalue()


def test_it_refuses_unknown_export_formats_and_anonymous_exports(admin_client, client, events):
    assert admin_client.get(reverse("admin:audit_auditevent_export", args=["xml"])).status_code == 404
    response = client.get(reverse("admin:audit_auditevent_export", args=["csv"]))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_it_shows_the_chain_state_on_the_list(admin_client, events):
    from audit import chain

    chain.reset_chain_state()
    assert "Hash chain verified: 4 rows" in _changelist(admin_client)
    AuditEvent.objects.filter(pk=events["second"]).update(stdout="forged")
    chain.reset_chain_state()
    body = _changelist(admin_client)
    assert "Hash chain broken" in body
    assert reverse("admin:audit_auditevent_change", args=[events["second"]]) in body
    chain.reset_chain_state()


# --- the detail page ------------------------------------------------------------------------


def test_it_shows_everything_about_one_call(admin_client, settings):
    settings.AUDIT_OUTPUT_BYTES = 50
    event_id = writer.begin(
        tool="download_file",
        actor="claude",
        transport="stdio",
        session_id="s-9",
        command="tar czf - /srv/app\n  --exclude .git",
        working_directory="/srv",
        remote_path="/srv/app.tgz",
        local_path="/data/app.tgz",
    )
    writer.complete(
        event_id,
        status="ok",
        exit_status=0,
        stdout="y" * 500,
        stdout_bytes=500,
        file_size=2048,
        file_sha256="ab" * 32,
    )
    event = AuditEvent.objects.get(pk=event_id)
    body = admin_client.get(reverse("admin:audit_auditevent_change", args=[event_id])).content.decode()
    assert "tar czf - /srv/app\n  --exclude .git</span></pre>" in body
    assert "/srv" in body and "/srv/app.tgz" in body and "/data/app.tgz" in body
    assert "Truncated: 500\xa0bytes (500 bytes) produced" in body
    assert "2.0\xa0KB (2048 bytes)" in body and "ab" * 32 in body
    assert str(event.request_id) in body
    assert event.chain_hash in body and event.prev_hash in body
    assert ">1<" in body  # chain_seq


def test_it_shows_the_session_s_timeline(admin_client, events):
    url = reverse("admin:audit_auditevent_change", args=[events["second"]])
    body = admin_client.get(url).content.decode()
    assert "Session timeline" in body
    assert reverse("admin:audit_auditevent_change", args=[events["first"]]) in body
    assert "(this call)" in body
    # Other sessions are not part of it.
    assert reverse("admin:audit_auditevent_change", args=[events["denied"]]) not in body
    first = admin_client.get(
        reverse("admin:audit_auditevent_change", args=[events["first"]])
    ).content.decode()
    assert url in first and first.index("uptime") < first.index("systemctl restart nginx")


def test_it_lists_a_session_s_calls_in_order_around_the_current_one():
    from audit.admin import TIMELINE_SPAN, AuditEventAdmin

    ids = []
    for n in range(2 * TIMELINE_SPAN + 5):
        ids.append(
            writer.begin(tool="ssh_execute", actor="a", transport="stdio", session_id="s", command=str(n))
        )
    writer.begin(tool="ssh_execute", actor="a", transport="stdio", session_id="elsewhere")
    middle = AuditEvent.objects.get(pk=ids[12])
    timeline = AuditEventAdmin.timeline(middle)
    assert [item["event"].pk for item in timeline] == ids[12 - TIMELINE_SPAN : 12 + TIMELINE_SPAN + 1]
    assert [item["current"] for item in timeline].index(True) == TIMELINE_SPAN


# --- nobody edits the trail ---------------------------------------------------------------------


def test_it_offers_no_add_link_and_refuses_the_anchor_admin_too(admin_client, event_id):
    assert reverse("admin:audit_auditevent_add") not in _changelist(admin_client)
    from django.core.management import call_command

    call_command("audit_prune", "--older-than", "0", stdout=None)
    from audit.models import AuditAnchor

    anchor = AuditAnchor.objects.get()
    assert admin_client.get(reverse("admin:audit_auditanchor_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:audit_auditanchor_add")).status_code == 403
    change = reverse("admin:audit_auditanchor_change", args=[anchor.pk])
    assert admin_client.post(change, {"first_seq": "1", "prev_hash": "0" * 64}).status_code == 403
    assert (
        admin_client.post(
            reverse("admin:audit_auditanchor_delete", args=[anchor.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert AuditAnchor.objects.get().first_seq == anchor.first_seq
