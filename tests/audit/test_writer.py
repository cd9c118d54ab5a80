"""The audit writer: begin/complete, redaction and capping on the way in, interrupted rows."""

from __future__ import annotations

import socket
import subprocess
import uuid

import pytest

from audit import chain, process, writer
from audit.models import AuditEvent
from audit.redaction import REDACTED
from audit.writer import Completion
from hosts.models import Host

pytestmark = pytest.mark.django_db


@pytest.fixture
def host():
    return Host.objects.create(name="web1", address="10.0.0.5", port=2222, username="deploy")


def _begin(**fields):
    fields.setdefault("tool", "ssh_execute")
    fields.setdefault("actor", "claude@laptop")
    fields.setdefault("transport", "stdio")
    return writer.begin(**fields)


def test_it_opens_a_running_row(host):
    request_id = uuid.uuid4()
    event_id = _begin(
        host=host,
        session_id="s-1",
        command="uptime",
        working_directory="/srv",
        request_id=request_id,
        details={"timeout": 30},
    )
    event = AuditEvent.objects.get(pk=event_id)
    assert event.status == AuditEvent.Status.RUNNING
    assert event.started_at is not None and event.finished_at is None
    assert (event.actor, event.transport, event.tool) == ("claude@laptop", "stdio", "ssh_execute")
    assert (event.host_id, event.host_name, event.host_address) == (host.pk, "web1", "10.0.0.5")
    assert (event.session_id, event.command, event.working_directory) == ("s-1", "uptime", "/srv")
    assert event.request_id == request_id
    assert event.details == {"timeout": 30}
    assert event.process == process.current_process_key()


def test_it_gives_each_row_a_request_id_when_none_is_passed():
    first, second = _begin(), _begin()
    ids = set(AuditEvent.objects.filter(pk__in=[first, second]).values_list("request_id", flat=True))
    assert len(ids) == 2


def test_it_completes_a_row(host):
    event_id = _begin(host=host, command="ls")
    writer.complete(
        event_id,
        status="ok",
        session_id="s-2",
        exit_status=0,
        stdout="a\nb\n",
        stderr="warn",
        stdout_bytes=4,
        stderr_bytes=4,
        reconnected=True,
        details={"attempts": 2},
    )
    event = AuditEvent.objects.get(pk=event_id)
    assert event.status == AuditEvent.Status.OK
    assert event.finished_at is not None and event.finished_at >= event.started_at
    assert event.duration_ms is not None and event.duration_ms >= 0
    assert (event.exit_status, event.stdout, event.stderr) == (0, "a\nb\n", "warn")
    assert (event.stdout_bytes, event.stderr_bytes) == (4, 4)
    assert not event.stdout_truncated and not event.stderr_truncated
    assert event.session_id == "s-2" and event.reconnected
    assert event.details == {"attempts": 2}


def test_it_times_and_merges_details_of_a_row_another_process_opened():
    event_id = _begin(details={"timeout": 5})
    writer._starts.clear()  # as if this process had not opened the row
    writer.complete(event_id, status="error", error="boom", details={"attempts": 1})
    event = AuditEvent.objects.get(pk=event_id)
    assert event.duration_ms is not None and event.duration_ms >= 0
    assert event.details == {"timeout": 5, "attempts": 1}
    assert event.error == "boom"


def test_it_never_rewrites_a_finished_row():
    event_id = _begin()
    writer.complete(event_id, status="ok", exit_status=0, stdout="first")
    writer.complete(event_id, status="error", exit_status=1, stdout="second", error="late")
    event = AuditEvent.objects.get(pk=event_id)
    assert (event.status, event.exit_status, event.stdout, event.error) == ("ok", 0, "first", "")


def test_it_ignores_completion_of_an_unknown_row():
    writer.complete(999_999, status="ok")
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize("status", ["done", "", "running", "OK"])
def test_it_rejects_a_status_that_is_not_final(status):
    event_id = _begin()
    with pytest.raises(ValueError, match="status"):
        writer.complete(event_id, status=status)
    assert AuditEvent.objects.get(pk=event_id).status == AuditEvent.Status.RUNNING


def test_it_redacts_known_secrets_and_patterns_everywhere():
    secret = "correct-horse-battery"
    event_id = _begin(
        command=f"echo {secret} | sudo -S true; mysql --password=hunter2",
        working_directory=f"/tmp/{secret}",
        details={"env": {"PW": secret}, "args": [secret]},
        secrets=[secret],
    )
    writer.complete(
        event_id,
        status="error",
        stdout=f"got {secret}\ntoken=abc123",
        stderr=f"{secret} rejected",
        error=f"auth failed for https://u:{secret}@h",
        details={"echo": secret},
        secrets=[secret],
    )
    event = AuditEvent.objects.get(pk=event_id)
    stored = [
        event.command,
        event.working_directory,
        event.stdout,
        event.stderr,
        event.error,
        str(event.details),
    ]
    assert all(secret not in text for text in stored)
    assert "hunter2" not in event.command and "abc123" not in event.stdout
    assert event.command == f"echo {REDACTED} | sudo -S true; mysql --password={REDACTED}"
    assert event.stdout == f"got {REDACTED}\ntoken={REDACTED}"
    assert event.details == {"env": {"PW": REDACTED}, "args": [REDACTED], "echo": REDACTED}


def test_it_caps_output_and_sets_the_truncated_flags(settings):
    settings.AUDIT_OUTPUT_BYTES = 100
    event_id = _begin()
    writer.complete(
        event_id,
        status="ok",
        stdout="x" * 1000,
        stderr="short",
        stdout_bytes=5000,
        stderr_bytes=5,
        stderr_truncated=True,  # the SSH layer already cut it
        error="e" * 500,
    )
    event = AuditEvent.objects.get(pk=event_id)
    assert event.stdout.startswith("x" * 50) and event.stdout.endswith("x" * 50)
    assert "[... 900 characters truncated ...]" in event.stdout
    assert event.stdout_truncated and event.stderr_truncated
    assert event.stderr == "short"
    assert (event.stdout_bytes, event.stderr_bytes) == (5000, 5)
    assert "[... 400 characters truncated ...]" in event.error


def test_it_caps_a_huge_command():
    event_id = _begin(command="y" * (writer.COMMAND_LIMIT + 10))
    command = AuditEvent.objects.get(pk=event_id).command
    assert "[... 10 characters truncated ...]" in command
    assert command.count("y") == writer.COMMAND_LIMIT


def test_it_keeps_the_host_name_and_address_after_the_host_is_deleted(host):
    event_id = _begin(host=host)
    host.delete()
    event = AuditEvent.objects.get(pk=event_id)
    assert event.host_id is None
    assert (event.host_name, event.host_address) == ("web1", "10.0.0.5")


def _begin_as(monkeypatch, key):
    monkeypatch.setattr(process, "current_process_key", lambda: key)
    event_id = _begin()
    monkeypatch.undo()
    return event_id


def _dead_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_it_marks_interrupted_the_rows_of_stopped_processes(monkeypatch):
    machine = socket.gethostname()
    mine = _begin()
    dead = _begin_as(monkeypatch, f"{machine}:{_dead_pid()}:12345")
    # This process's PID with another start time: a stopped process whose PID was reused.
    reused = _begin_as(monkeypatch, process.current_process_key().rsplit(":", 1)[0] + ":1")
    elsewhere = _begin_as(monkeypatch, "other-machine.example:1:100")
    finished = _begin_as(monkeypatch, f"{machine}:{_dead_pid()}:1")
    writer.complete(finished, status="ok")

    assert writer.mark_interrupted() == 2

    statuses = dict(AuditEvent.objects.values_list("pk", "status"))
    assert statuses == {
        mine: "running",
        dead: "interrupted",
        reused: "interrupted",
        elsewhere: "running",
        finished: "ok",
    }
    event = AuditEvent.objects.get(pk=dead)
    assert event.finished_at is not None
    assert event.error == "the process that ran this call stopped before it finished"
    assert writer.mark_interrupted() == 0


def test_it_writes_one_insert_to_begin_and_four_statements_to_complete(django_assert_num_queries):
    with django_assert_num_queries(1) as begin:
        event_id = _begin(command="true")
    assert begin.captured_queries[0]["sql"].startswith("INSERT")
    # Finish the row (reading it back), lock the head, link the row, move the head.
    with django_assert_num_queries(4) as complete:
        writer.complete(event_id, status="ok", exit_status=0)
    verbs = [query["sql"].split()[0] for query in complete.captured_queries]
    assert verbs == ["UPDATE", "SELECT", "UPDATE", "UPDATE"]


def test_it_reads_back_a_row_only_when_another_process_opened_it(django_assert_num_queries):
    event_id = _begin(command="true")
    writer._starts.clear()
    with django_assert_num_queries(5):
        writer.complete(event_id, status="ok", details={"late": True})


def test_it_finishes_many_rows_with_one_update_each_shape_and_chains_them_in_the_order_given(host):
    ids = writer.begin_many(
        [{"tool": "ssh_execute_many", "actor": "claude", "transport": "stdio", "host": host,
          "command": f"echo {i}", "details": {"i": i}} for i in range(6)]
    )  # fmt: skip
    first, second, third, fourth, fifth, _sixth = ids
    writer.complete(fifth, status="ok", exit_status=0, stdout="already")
    writer._starts.pop(fourth)  # as if another process had opened it: timed from the stored row
    writer.finish_many(
        [
            (third, Completion("ok", "s-3", exit_status=0, stdout="three", stdout_bytes=5)),
            (first, Completion("error", None, exit_status=None, stderr="one", details={"late": 1})),
            (fifth, Completion("error", None, error="finished before: left alone")),
            (second, Completion("timeout", "s-2", signal="TERM")),
            (fourth, Completion("ok", "s-4", exit_status=2, details={"late": 4})),
            (third, Completion("error", None, error="twice in one call: the first wins")),
        ]
    )
    rows = {r.pk: r for r in AuditEvent.objects.filter(pk__in=ids)}
    assert [rows[i].status for i in ids] == ["error", "timeout", "ok", "ok", "ok", "running"]
    assert (rows[third].session_id, rows[third].exit_status, rows[third].stdout) == ("s-3", 0, "three")
    assert (rows[first].session_id, rows[first].exit_status, rows[first].stderr) == ("", None, "one")
    assert rows[first].details == {"i": 0, "late": 1} and rows[fourth].details == {"i": 3, "late": 4}
    assert rows[second].signal == "TERM" and rows[fourth].duration_ms is not None
    assert (rows[fifth].stdout, rows[fifth].error) == ("already", "")
    # Chained in the order given, after the row completed alone; the chain verifies.
    chained = sorted((r.chain_seq, r.pk) for r in rows.values() if r.chain_seq is not None)
    assert [pk for _seq, pk in chained] == [fifth, third, first, second, fourth]
    assert [seq for seq, _pk in chained] == list(range(chained[0][0], chained[0][0] + 5))
    assert chain.verify().ok


def test_it_finishes_a_batch_in_one_update_locks_the_head_once_and_links_in_one_go(
    django_assert_num_queries,
):
    rows = [{"tool": "ssh_execute_many", "actor": "claude", "transport": "stdio"} for _ in range(30)]
    ids = writer.begin_many(rows)
    done = [(event_id, Completion("ok", "s", exit_status=0)) for event_id in ids]
    with django_assert_num_queries(4) as finishing:
        writer.finish_many(done)
    # Finish every row (reading them back), lock the head, link the rows (one executemany), move the head.
    finish, lock, link, move = (query["sql"] for query in finishing.captured_queries)
    assert finish.startswith("UPDATE") and " FROM (VALUES " in finish
    assert lock.startswith("SELECT") and move.startswith("UPDATE")
    assert link.startswith("30 times: UPDATE")
    assert AuditEvent.objects.filter(pk__in=ids, status="ok", chain_hash__isnull=False).count() == 30
    assert chain.verify().ok


def test_it_cuts_over_long_short_fields_instead_of_failing():
    event_id = _begin(actor="a" * 500, session_id="s" * 100)
    writer.complete(event_id, status="error", signal="SIG" * 20)
    event = AuditEvent.objects.get(pk=event_id)
    assert (len(event.actor), len(event.session_id), len(event.signal)) == (200, 64, 20)


@pytest.mark.django_db
def test_it_stores_nul_bytes_as_replacement_characters() -> None:
    """PostgreSQL text columns cannot hold NUL; binary output must still be audited."""
    event_id = writer.begin(tool="ssh_execute", actor="a\x00b", transport="stdio", command="printf '\\0'")
    writer.complete(event_id, status="ok", stdout="x\x00y", stderr="\x00", error="")
    row = AuditEvent.objects.get(pk=event_id)
    assert row.stdout == "x\ufffdy" and row.stderr == "\ufffd" and row.actor == "a\ufffdb"
