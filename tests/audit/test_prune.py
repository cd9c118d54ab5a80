"""audit_prune: old finished rows go, the rest of the chain still verifies from the anchor."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit import chain, writer
from audit.models import AuditAnchor, AuditEvent

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _now(monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: NOW)


def _at(monkeypatch, when, *, finish=True, status="ok"):
    monkeypatch.setattr(timezone, "now", lambda: when)
    event_id = writer.begin(tool="ssh_execute", actor="claude", transport="stdio", command=f"echo {when}")
    if finish:
        writer.complete(event_id, status=status, exit_status=0, stdout="hi\n")
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    return event_id


@pytest.fixture
def events(monkeypatch):
    """Chain order: two rows 60 and 40 days old, one 10 days old, and one still running from 90 days ago."""
    running = _at(monkeypatch, NOW - timedelta(days=90), finish=False)
    old = [
        _at(monkeypatch, NOW - timedelta(days=60)),
        _at(monkeypatch, NOW - timedelta(days=40), status="error"),
    ]
    new = _at(monkeypatch, NOW - timedelta(days=10))
    return {"running": running, "old": old, "new": new}


def _prune(*args):
    out = io.StringIO()
    call_command("audit_prune", *args, stdout=out)
    return out.getvalue()


def test_it_prunes_old_finished_rows_and_records_an_anchor(events):
    out = _prune("--older-than", "30", "--actor", "ops@example")
    assert "Deleted 2 audit rows" in out and "chain_seq 1..2" in out
    remaining = set(AuditEvent.objects.values_list("id", flat=True))
    assert remaining == {events["running"], events["new"]}
    anchor = AuditAnchor.objects.get()
    assert (anchor.pruned_by, anchor.pruned_count, anchor.first_seq) == ("ops@example", 2, 3)
    assert anchor.pruned_before == NOW - timedelta(days=30)
    assert anchor.created_at == NOW
    assert anchor.prev_hash == AuditEvent.objects.get(pk=events["new"]).prev_hash
    verification = chain.verify()
    assert verification.ok and verification.checked == 1
    assert f"from anchor #{anchor.pk}, chain_seq 3" in _call_verify()


def _call_verify():
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


def test_it_never_prunes_running_rows(events):
    _prune("--older-than", "0")
    assert list(AuditEvent.objects.values_list("id", flat=True)) == [events["running"]]
    assert chain.verify().ok


def test_it_changes_nothing_on_a_dry_run(events):
    out = _prune("--older-than", "30", "--dry-run")
    assert "Would delete 2 audit rows" in out
    assert AuditEvent.objects.count() == 4
    assert not AuditAnchor.objects.exists()


def test_it_reports_nothing_to_prune(events):
    assert "Nothing to prune" in _prune("--older-than", "365")
    assert not AuditAnchor.objects.exists()


def test_it_deletes_only_a_prefix_of_the_chain(monkeypatch, events):
    # An old row chained after a newer one stays: deleting it would cut the chain in two.
    straggler = _at(monkeypatch, NOW - timedelta(days=50))
    _prune("--older-than", "30")
    assert AuditEvent.objects.filter(pk=straggler).exists()
    assert chain.verify().ok


def test_it_keeps_chaining_after_a_prune(monkeypatch, events):
    _prune("--older-than", "0")
    later = _at(monkeypatch, NOW - timedelta(hours=1))
    assert AuditEvent.objects.get(pk=later).chain_seq == 4
    assert chain.verify().ok
    _prune("--older-than", "0")  # the whole chain: a second anchor, verification starts at the newest
    assert AuditAnchor.objects.count() == 2
    assert chain.verify().ok
    last = _at(monkeypatch, NOW)
    assert AuditEvent.objects.get(pk=last).chain_seq == 5
    verification = chain.verify()
    assert verification.ok and verification.checked == 1


def test_it_detects_tampering_after_a_prune(events):
    _prune("--older-than", "30")
    AuditEvent.objects.filter(pk=events["new"]).update(exit_status=1)
    with pytest.raises(CommandError, match=f"row id {events['new']} .*hash check failed"):
        call_command("audit_verify")


def test_it_detects_a_forged_anchor(events):
    _prune("--older-than", "30")
    AuditAnchor.objects.update(prev_hash="0" * 64)
    with pytest.raises(CommandError, match=f"row id {events['new']} .*link check failed"):
        call_command("audit_verify")


def test_it_refuses_to_prune_a_broken_chain(events):
    AuditEvent.objects.filter(pk=events["old"][0]).update(stdout="forged")
    with pytest.raises(CommandError, match="refusing to prune") as excinfo:
        _prune("--older-than", "30")
    assert excinfo.value.returncode == 1
    assert AuditEvent.objects.count() == 4


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf"])
def test_it_rejects_a_bad_age(value):
    with pytest.raises(CommandError, match="number of days"):
        _prune("--older-than", value)
