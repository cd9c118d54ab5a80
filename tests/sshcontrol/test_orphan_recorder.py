"""The group commit of ``RemoteCommand`` rows: written at once when no write is in progress,
queued (and written by the writer in progress) otherwise, never written for a command that
ended while its row still waited."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from hosts.models import Host
from sshcontrol import orphans
from sshcontrol.models import RemoteCommand
from tests.polling import wait_until


@pytest.fixture
def host_id(db: None) -> int:
    return Host.objects.create(name="box", address="127.0.0.1", username="u").pk


@pytest.fixture
def recorder(db: None) -> Iterator[orphans._Recorder]:
    fresh = orphans._Recorder()
    previous, orphans._recorder = orphans._recorder, fresh
    try:
        yield fresh
    finally:
        orphans._recorder = previous


def test_a_lone_command_is_recorded_at_once_and_forgotten_at_its_end(
    recorder: orphans._Recorder, host_id: int
) -> None:
    tracker = orphans.Tracker("s-1", host_id, 42)
    tracker.started(1234)
    row = RemoteCommand.objects.get()
    assert (row.session_id, row.host_id, row.pgid, row.audit_event_id) == ("s-1", host_id, 1234, 42)
    tracker.done()
    assert not RemoteCommand.objects.exists()


def test_rows_queued_during_a_write_are_written_together_by_the_writer(
    recorder: orphans._Recorder, host_id: int
) -> None:
    recorder._writing = True  # another thread is writing: these only queue
    trackers = [orphans.Tracker(f"s-{i}", host_id, 100 + i) for i in range(3)]
    for i, tracker in enumerate(trackers):
        tracker.started(2000 + i)
    assert not RemoteCommand.objects.exists()
    recorder._write_queued()  # what the writing thread does before it goes back to its command
    assert sorted(RemoteCommand.objects.values_list("pgid", flat=True)) == [2000, 2001, 2002]
    assert not recorder._writing
    for tracker in trackers:
        tracker.done()
    assert not RemoteCommand.objects.exists()


def test_a_command_that_ends_while_its_row_waits_is_never_written(
    recorder: orphans._Recorder, host_id: int
) -> None:
    recorder._writing = True
    quick, slow = orphans.Tracker("quick", host_id, 1), orphans.Tracker("slow", host_id, 2)
    quick.started(3001)
    slow.started(3002)
    quick.done()
    recorder._write_queued()
    assert list(RemoteCommand.objects.values_list("pgid", flat=True)) == [3002]
    slow.done()
    assert not RemoteCommand.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_tracker_behind_never_waits_for_the_database_and_its_rows_are_still_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch engine's trackers: started/done return at once, the recorder's thread writes."""
    host_id = Host.objects.create(name="box", address="127.0.0.1", username="u").pk
    recorder = orphans._Recorder()
    monkeypatch.setattr(orphans, "_recorder", recorder)
    database_back = threading.Event()
    record = orphans._record

    def slow_record(rows: list[list[Any]]) -> list[int]:
        assert database_back.wait(30), "the test never let the database come back"
        return record(rows)

    monkeypatch.setattr(orphans, "_record", slow_record)
    trackers = [orphans.Tracker(f"e-{i}", host_id, 500 + i, behind=True) for i in range(5)]
    for i, tracker in enumerate(trackers):
        tracker.started(4000 + i)  # returns although no row can be written yet
    assert not RemoteCommand.objects.exists()
    database_back.set()
    wait_until(lambda: RemoteCommand.objects.count() == 5, message="the rows written behind")
    assert sorted(RemoteCommand.objects.values_list("pgid", flat=True)) == [4000 + i for i in range(5)]
    assert recorder._writer is not None and recorder._writer.name == "sshcontrol-command-rows"
    for tracker in trackers:
        tracker.done()
    wait_until(lambda: not RemoteCommand.objects.exists(), message="the rows deleted behind")
