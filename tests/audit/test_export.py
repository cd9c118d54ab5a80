"""audit_export: JSON lines and CSV, filtered by time, host and status."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from audit import writer
from hosts.models import Host

pytestmark = pytest.mark.django_db


@pytest.fixture
def events(monkeypatch):
    """Three calls: web1 on Jan 10 and Jan 20, db1 on Jan 20 (the last one failed)."""
    web1 = Host.objects.create(name="web1", address="10.0.0.5", username="deploy")
    db1 = Host.objects.create(name="db1", address="10.0.0.6", username="deploy")
    ids: list[int] = []
    for when, host, status in [
        (datetime(2026, 1, 10, 8, 0, tzinfo=UTC), web1, "ok"),
        (datetime(2026, 1, 20, 9, 30, tzinfo=UTC), web1, "ok"),
        (datetime(2026, 1, 20, 23, 59, tzinfo=UTC), db1, "error"),
    ]:
        monkeypatch.setattr(timezone, "now", lambda when=when: when)
        event_id = writer.begin(
            tool="ssh_execute",
            actor="claude",
            transport="stdio",
            host=host,
            command="echo 'password=hunter2', done",
            details={"n": len(ids)},
        )
        writer.complete(event_id, status=status, exit_status=0 if status == "ok" else 1, stdout="hi\n")
        ids.append(event_id)
    monkeypatch.undo()
    return ids


def _export(*args):
    out = io.StringIO()
    call_command("audit_export", *args, stdout=out)
    return out.getvalue()


def test_it_exports_json_lines_with_every_field(events):
    lines = _export("--format", "jsonl").splitlines()
    rows = [json.loads(line) for line in lines]
    assert [row["id"] for row in rows] == events
    first = rows[0]
    assert first["started_at"] == "2026-01-10T08:00:00+00:00"
    assert first["finished_at"] == "2026-01-10T08:00:00+00:00"
    assert (first["host_id"], first["host_name"], first["host_address"]) == (
        Host.objects.get(name="web1").pk,
        "web1",
        "10.0.0.5",
    )
    assert first["details"] == {"n": 0}
    assert first["stdout"] == "hi\n" and first["exit_status"] == 0
    assert len(first["request_id"]) == 36
    assert {"command", "stderr", "process", "tool", "status", "duration_ms", "file_sha256"} <= set(first)
    assert "hunter2" not in "\n".join(lines)


def test_it_exports_csv_with_a_header(events):
    rows = list(csv.DictReader(io.StringIO(_export("--format", "csv"))))
    assert [int(row["id"]) for row in rows] == events
    assert rows[0]["host_name"] == "web1"
    assert rows[0]["started_at"] == "2026-01-10T08:00:00+00:00"
    assert rows[0]["stdout"] == "hi\n"
    assert rows[0]["stdout_truncated"] == "false"
    assert rows[0]["signal"] == ""
    assert json.loads(rows[2]["details"]) == {"n": 2}
    assert rows[0]["command"] == "echo 'password=[REDACTED]', done"


def test_it_filters_by_time_host_and_status(events):
    def ids(*args):
        return [json.loads(line)["id"] for line in _export("--format", "jsonl", *args).splitlines()]

    assert ids("--since", "2026-01-15") == events[1:]
    assert ids("--since", "2026-01-20T09:30") == events[1:]
    assert ids("--since", "2026-01-20T10:30:00+01:00") == events[1:]
    assert ids("--since", "2026-01-20T09:31") == events[2:]
    assert ids("--until", "2026-01-20") == events  # a bare date includes that day
    assert ids("--until", "2026-01-20T09:30") == events[:1]
    assert ids("--host", "web1") == events[:2]
    assert ids("--host", "web1", "--since", "2026-01-15") == events[1:2]
    assert ids("--status", "error") == events[2:]
    assert ids("--host", "nowhere") == []


def test_it_writes_to_a_file(events, tmp_path):
    path = tmp_path / "audit.csv"
    assert _export("--format", "csv", "--host", "db1", "--output", str(path)) == ""
    with path.open(newline="") as exported:
        rows = list(csv.DictReader(exported))
    assert [int(row["id"]) for row in rows] == events[2:]


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01", "2026-01-32T00:00", "20260101T25"])
def test_it_rejects_a_bad_since(events, value):
    with pytest.raises(CommandError, match="ISO 8601"):
        _export("--format", "jsonl", "--since", value)


def test_it_requires_a_known_format():
    with pytest.raises(CommandError):
        _export("--format", "xml")
