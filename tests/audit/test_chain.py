"""The hash chain: built over finished rows in completion order, and every kind of tampering found."""

from __future__ import annotations

import datetime
import threading
import uuid
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, models
from django.utils import timezone

from audit import chain, process, writer
from audit.models import AuditEvent, ChainHead
from hosts.models import Host
from tests.audit import forge

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_chain_state():
    chain.reset_chain_state()
    yield
    chain.reset_chain_state()


@pytest.fixture
def hosts():
    return (
        Host.objects.create(name="web1", address="10.0.0.5", username="deploy"),
        Host.objects.create(name="db1", address="10.0.0.6", username="deploy"),
    )


def _finished(host=None, *, status="ok", session="s-1", **fields):
    event_id = writer.begin(
        tool="ssh_execute",
        actor="claude@laptop",
        transport="stdio",
        host=host,
        session_id=session,
        command=fields.pop("command", "uname -a"),
        working_directory="/srv",
        remote_path="/etc/motd",
        details={"timeout": 30},
    )
    writer.complete(
        event_id,
        status=status,
        exit_status=0,
        stdout="Linux web1\n",
        stderr="warning\n",
        stdout_bytes=11,
        stderr_bytes=8,
        file_size=123,
        file_sha256="ab" * 32,
        details={"attempts": 1},
        **fields,
    )
    return event_id


@pytest.fixture
def rows(hosts):
    """Three finished rows, in chain order, all fields filled in that a call fills in."""
    return [_finished(hosts[0]), _finished(hosts[0], status="error", signal="TERM"), _finished(None)]


def _verify_fails_at(event_id, check=None):
    verification = chain.verify()
    assert verification.broken is not None, "tampering went unnoticed"
    assert verification.broken.event_id == event_id, str(verification.broken)
    if check is not None:
        assert verification.broken.check == check, str(verification.broken)
    with pytest.raises(CommandError, match=f"BROKEN at row id {event_id}\\b") as excinfo:
        call_command("audit_verify")
    assert excinfo.value.returncode == 1
    return verification.broken


def test_it_chains_rows_in_completion_order():
    first, second, third = (
        writer.begin(tool="ssh_execute", actor="a", transport="stdio", command=str(n)) for n in range(3)
    )
    for event_id in (third, first, second):
        writer.complete(event_id, status="ok", exit_status=0)
    links = list(
        AuditEvent.objects.order_by("chain_seq").values_list("id", "chain_seq", "prev_hash", "chain_hash")
    )
    assert [row[0] for row in links] == [third, first, second]
    assert [row[1] for row in links] == [1, 2, 3]
    assert links[0][2] == chain.GENESIS
    assert links[1][2] == links[0][3] and links[2][2] == links[1][3]
    assert ChainHead.objects.values_list("seq", "hash").get() == (3, links[2][3])


def test_it_leaves_running_rows_off_the_chain(rows):
    running = writer.begin(tool="ssh_execute", actor="a", transport="stdio")
    event = AuditEvent.objects.get(pk=running)
    assert (event.chain_seq, event.prev_hash, event.chain_hash) == (None, "", "")
    assert chain.verify().ok


def test_it_hashes_every_stored_field_but_the_hash_and_the_live_host_link():
    # A column added later must be put in a format on purpose: this fails until it is.
    stored = {f.attname for f in AuditEvent._meta.concrete_fields}
    assert set(chain.V2_FIELDS) == stored - {"chain_hash", "host_id"}
    assert len(set(chain.V2_FIELDS)) == len(chain.V2_FIELDS)
    # New rows are written in the newest format.
    assert AuditEvent._meta.get_field("chain_version").get_default() == chain.FORMATS[-1]
    # What the writer reads back to hash, plus the link it adds, covers it.
    assert set(chain.V2_FIELDS) <= set(writer._RETURNED) | {"chain_seq", "prev_hash"}


def test_it_hashes_a_canonical_sorted_json_form():
    row = {
        "b": "é",
        "a": datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.get_fixed_timezone(60)),
        "request_id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "none": None,
        "chain_hash": "ignored",
        "details": {"z": 1, "k": [1.5, True]},
    }
    assert chain.canonical(row) == (
        b'{"a":"2026-01-02T02:04:05.000006+00:00","b":"\\u00e9",'
        b'"details":{"k":[1.5,true],"z":1},"request_id":"12345678-1234-5678-1234-567812345678"}'
    )


def test_it_verifies_an_untouched_chain(rows):
    verification = chain.verify()
    assert verification.ok and verification.checked == 3
    out = _call("audit_verify")
    assert out.startswith("audit chain OK: 3 rows verified from the beginning")


def test_it_verifies_an_empty_chain():
    assert chain.verify().ok
    assert "audit chain OK: 0 rows" in _call("audit_verify")


def _call(*args):
    import io

    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _tampered(name, value, hosts):
    """A different value of the right type for one stored field."""
    field = next(f for f in AuditEvent._meta.concrete_fields if f.attname == name)
    if name in ("id", "chain_seq"):
        return value + 1000
    if name == "host_id":
        # Pointing the row at another host; NULL is what deleting the host does, and no tampering.
        return hosts[1].pk
    if name == "status":
        return "ok" if value != "ok" else "error"
    if isinstance(field, models.BooleanField):
        return not value
    if isinstance(field, models.DateTimeField):
        return (value or timezone.now()) + timedelta(seconds=1)
    if isinstance(field, models.UUIDField):
        return uuid.uuid4()
    if isinstance(field, models.JSONField):
        return {**value, "forged": True}
    if isinstance(field, models.FloatField):
        return (value or 0) + 1.5
    if isinstance(field, models.IntegerField):  # BigIntegerField included
        return (value or 0) + 1
    if isinstance(field, models.CharField | models.TextField):
        if not value:
            return "x"
        return value[:-1] + ("y" if value[-1] == "x" else "x")
    raise AssertionError(f"no tampered value for {name} ({type(field).__name__})")


@pytest.mark.parametrize("position", [0, 1, 2])
@pytest.mark.parametrize("name", chain.STORED_FIELDS)
def test_it_detects_tampering_with_any_field_of_any_row(rows, hosts, name, position):
    event_id = rows[position]
    value = AuditEvent.objects.filter(pk=event_id).values_list(name, flat=True).get()
    forged = _tampered(name, value, hosts)
    # The attacker: a direct UPDATE, bypassing the writer.
    AuditEvent.objects.filter(pk=event_id).update(**{name: forged})
    _verify_fails_at(forged if name == "id" else event_id)


def test_it_names_the_check_that_failed(rows):
    AuditEvent.objects.filter(pk=rows[1]).update(stdout="forged")
    assert _verify_fails_at(rows[1], "hash").seq == 2
    AuditEvent.objects.filter(pk=rows[1]).update(stdout="Linux web1\n", prev_hash="f" * 64)
    _verify_fails_at(rows[1], "link")
    AuditEvent.objects.filter(pk=rows[1]).update(prev_hash=AuditEvent.objects.get(pk=rows[0]).chain_hash)
    assert chain.verify().ok
    AuditEvent.objects.filter(pk=rows[1]).update(chain_seq=None)
    _verify_fails_at(rows[1], "sequence")


def test_it_detects_a_deleted_middle_row(rows):
    AuditEvent.objects.filter(pk=rows[1]).delete()
    broken = _verify_fails_at(rows[2], "missing")
    assert "rows 2..2 are missing" in broken.detail


def test_it_detects_deleted_last_rows(rows):
    AuditEvent.objects.filter(pk=rows[2]).delete()
    _verify_fails_at(rows[1], "missing")


def test_it_detects_a_rewritten_head(rows):
    ChainHead.objects.update(hash="e" * 64)
    _verify_fails_at(rows[2], "head")


def test_it_detects_a_forged_row_past_the_head(rows):
    forged = writer.begin(tool="ssh_execute", actor="a", transport="stdio")
    head = ChainHead.objects.get()
    AuditEvent.objects.filter(pk=forged).update(status="ok", chain_seq=head.seq + 1, prev_hash=head.hash)
    row = AuditEvent.objects.filter(pk=forged).values(*chain.STORED_FIELDS).get()
    AuditEvent.objects.filter(pk=forged).update(chain_hash=chain.row_hash(row))
    _verify_fails_at(forged, "head")


def test_it_detects_a_finished_row_that_is_not_on_the_chain(rows):
    forged = writer.begin(tool="ssh_execute", actor="a", transport="stdio")
    AuditEvent.objects.filter(pk=forged).update(status="ok")
    _verify_fails_at(forged, "unchained")


def test_it_chains_interrupted_rows(monkeypatch, rows):
    monkeypatch.setattr(process, "current_process_key", lambda: "dead-machine-key:1:1")
    orphan = writer.begin(tool="ssh_execute", actor="a", transport="stdio")
    monkeypatch.undo()
    monkeypatch.setattr(process, "is_alive", lambda key: key != "dead-machine-key:1:1")
    assert writer.mark_interrupted() == 1
    event = AuditEvent.objects.get(pk=orphan)
    assert (event.status, event.chain_seq) == ("interrupted", 4)
    assert chain.verify().ok


def test_it_rebuilds_a_missing_head_from_the_last_row(rows):
    # A test run's flush, or a deletion: the writer carries on from the last chained row.
    ChainHead.objects.all().delete()
    assert _verify_fails_at(rows[2], "head")
    fourth = _finished()
    assert AuditEvent.objects.get(pk=fourth).chain_seq == 4
    assert chain.verify().ok


def test_it_starts_a_new_chain_when_the_tables_are_empty():
    ChainHead.objects.all().delete()
    event_id = _finished()
    event = AuditEvent.objects.get(pk=event_id)
    assert (event.chain_seq, event.prev_hash) == (1, chain.GENESIS)
    assert chain.verify().ok


def test_it_joins_the_caller_s_transaction_and_rolls_back_with_it():
    from django.db import transaction

    event_id = writer.begin(tool="ssh_execute", actor="a", transport="stdio")
    with pytest.raises(RuntimeError), transaction.atomic():
        writer.complete(event_id, status="ok")
        raise RuntimeError("the caller's next write failed")
    event = AuditEvent.objects.get(pk=event_id)
    assert (event.status, event.chain_seq) == ("running", None)
    assert ChainHead.objects.get().seq == 0
    writer.complete(event_id, status="ok")
    assert chain.verify().ok


def test_it_reports_the_chain_state_for_the_dashboard(rows):
    state = chain.chain_state()
    assert (state.ok, state.checked, state.first_broken_id, state.problem) == (True, 3, None, "")
    assert abs((timezone.now() - state.checked_at).total_seconds()) < 60
    _finished()
    assert chain.chain_state().checked == 4  # only the new row was hashed


def test_it_reports_a_broken_chain_state(rows):
    chain.chain_state()
    AuditEvent.objects.filter(pk=rows[0]).update(command="forged")
    # Already-checked rows are walked again once the last whole walk is older than full_every.
    state = chain.chain_state(full_every=0)
    assert (state.ok, state.first_broken_id) == (False, rows[0])
    assert f"row id {rows[0]}" in state.problem and "hash check failed" in state.problem


def test_it_notices_new_rows_appended_after_a_break_is_repaired_only_on_a_full_walk(rows):
    AuditEvent.objects.filter(pk=rows[2]).update(stdout="forged")
    assert not chain.chain_state().ok
    AuditEvent.objects.filter(pk=rows[2]).update(stdout="Linux web1\n")
    assert not chain.chain_state().ok  # a break is reported as found until the next whole walk
    assert chain.chain_state(full_every=0).ok


@pytest.mark.django_db(transaction=True)
def test_it_keeps_one_chain_under_concurrent_completions():
    ids = [writer.begin(tool="ssh_execute", actor="a", transport="stdio", command=str(n)) for n in range(60)]
    errors: list[BaseException] = []

    def finish(chunk: list[int]) -> None:
        try:
            for event_id in chunk:
                writer.complete(event_id, status="ok", exit_status=0, details={"n": event_id})
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=finish, args=(ids[n::4],)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    verification = chain.verify()
    assert verification.ok, str(verification.broken)
    assert verification.checked == 60


def test_it_refuses_a_row_moved_back_to_an_older_hash_format(rows):
    AuditEvent.objects.filter(pk=rows[1]).update(chain_version=1)
    broken = _verify_fails_at(rows[1], "format")
    assert "formats never go back" in broken.detail


def test_it_refuses_content_a_version_1_row_s_formula_does_not_cover(rows):
    # A forger re-hashes the whole chain with the old formula: that alone still verifies...
    forge.rehash_from(1, chain_version=1)
    assert chain.verify().ok
    # ...but the old formula ignores stdin, so stdin on such a row is refused outright.
    AuditEvent.objects.filter(pk=rows[1]).update(stdin="rm -rf /srv\n")
    broken = _verify_fails_at(rows[1], "format")
    assert "stdin is set on a version-1 row" in broken.detail


def test_it_refuses_a_host_link_to_another_host_than_the_call_ran_on(rows, hosts):
    AuditEvent.objects.filter(pk=rows[0]).update(host=hosts[1])
    broken = _verify_fails_at(rows[0], "format")
    assert "not the host the call ran on" in broken.detail


def test_it_verifies_after_the_host_is_renamed_and_deleted(rows, hosts):
    web1 = hosts[0].pk
    hosts[0].name = "web1-renamed"
    hosts[0].save()
    hosts[0].delete()
    # The database cleared the live link; the row keeps the id, name and address it ran with.
    kept = list(AuditEvent.objects.filter(pk__in=rows[:2]).values("host_id", "host_ref", "host_name"))
    assert kept == [{"host_id": None, "host_ref": web1, "host_name": "web1"}] * 2
    assert chain.verify().ok
