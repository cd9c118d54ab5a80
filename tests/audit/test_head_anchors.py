"""Head anchors: the chain's head written outside the database catches what the chain alone cannot
(a cut tail, a chain rewritten from some row on), in a file and over syslog."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection
from django.utils import timezone

from audit import chain, head_anchors, prune, writer
from audit.models import AuditAnchor, AuditEvent, ChainHead
from tests.audit import forge
from tests.polling import wait_until

pytestmark = pytest.mark.django_db


def _row(n: int = 0) -> int:
    event_id = writer.begin(tool="ssh_execute", actor="claude", transport="stdio", command=f"echo {n}")
    writer.complete(event_id, status="ok", exit_status=0, stdout=f"{n}\n")
    return event_id


def _call(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def anchor_file(tmp_path: Path) -> Path:
    return tmp_path / "anchors" / "audit-anchors.jsonl"


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_it_anchors_the_verified_head_in_an_owner_only_append_only_file(anchor_file, loose_umask):
    anchor_file.parent.mkdir()
    for n in range(3):
        _row(n)
    out = _call("audit_anchor", "--file", str(anchor_file))
    head = ChainHead.objects.get()
    assert f"anchored chain_seq 3 hash {head.hash}" in out
    assert stat.S_IMODE(anchor_file.stat().st_mode) == 0o600  # with umask 0
    _row(3)
    _call("audit_anchor", "--file", str(anchor_file))
    assert [(line["seq"], line["hash"]) for line in _lines(anchor_file)] == [
        (3, head.hash),
        (4, ChainHead.objects.get().hash),
    ]
    assert "anchors OK: the chain holds all 2 anchored heads" in _call(
        "audit_verify", "--anchors", str(anchor_file)
    )


def test_it_reports_a_tail_cut_after_an_anchor(anchor_file):
    anchor_file.parent.mkdir()
    for n in range(3):
        _row(n)
    _call("audit_anchor", "--file", str(anchor_file))
    _row(3)
    _row(4)
    _call("audit_anchor", "--file", str(anchor_file))
    # The attacker deletes the newest rows and moves the head back: the chain alone still holds...
    forge.truncate_after(3)
    assert chain.verify().ok
    assert "audit chain OK: 3 rows" in _call("audit_verify")
    # ...but the head anchored at chain_seq 5 is gone.
    with pytest.raises(CommandError) as excinfo:
        _call("audit_verify", "--anchors", str(anchor_file))
    assert excinfo.value.returncode == 1
    message = str(excinfo.value)
    assert "does NOT hold 1 anchored head(s)" in message and "(1 held)" in message
    assert "line 2: the head anchored at" in message and "(chain_seq 5) is no longer in the chain" in message


def test_it_reports_a_row_rewritten_before_an_anchor(anchor_file):
    anchor_file.parent.mkdir()
    rows = [_row(n) for n in range(3)]
    _call("audit_anchor", "--file", str(anchor_file))
    _row(3)
    # The attacker edits row 2 and re-links every row after it, head included.
    AuditEvent.objects.filter(pk=rows[1]).update(stdout="nothing happened\n")
    forge.rehash_from(2)
    assert chain.verify().ok
    with pytest.raises(CommandError) as excinfo:
        _call("audit_verify", "--anchors", str(anchor_file))
    assert "line 1: chain_seq 3 has hash" in str(excinfo.value)
    assert "the chain was rewritten at or before it" in str(excinfo.value)


def test_it_appends_to_a_file_the_kernel_keeps_append_only(anchor_file):
    anchor_file.parent.mkdir()
    anchor_file.write_text("")
    anchor_file.chmod(0o600)
    made = subprocess.run(["chattr", "+a", str(anchor_file)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(
            f"chattr +a is not available here (needs root and a supporting file system): {made.stderr}"
        )
    try:
        _row(0)
        _call("audit_anchor", "--file", str(anchor_file))
        _row(1)
        _call("audit_anchor", "--file", str(anchor_file))
        assert [line["seq"] for line in _lines(anchor_file)] == [1, 2]
        # What the advice buys: not even the owner can rewrite or cut what was anchored.
        with pytest.raises(PermissionError):
            anchor_file.write_text("")
        with pytest.raises(PermissionError):
            os.truncate(anchor_file, 0)
    finally:
        subprocess.run(["chattr", "-a", str(anchor_file)], check=True)
    assert "holds all 2 anchored heads" in _call("audit_verify", "--anchors", str(anchor_file))


def test_it_refuses_to_anchor_a_broken_chain(anchor_file):
    anchor_file.parent.mkdir()
    rows = [_row(n) for n in range(2)]
    AuditEvent.objects.filter(pk=rows[0]).update(stdout="forged\n")
    with pytest.raises(CommandError, match="not anchored: the audit chain is BROKEN at row id"):
        _call("audit_anchor", "--file", str(anchor_file))
    assert not anchor_file.exists()


def test_it_refuses_an_anchor_file_others_may_write(anchor_file):
    anchor_file.parent.mkdir()
    _row()
    anchor_file.write_text("")
    anchor_file.chmod(0o666)
    with pytest.raises(CommandError, match=f"writable by others .*chmod 600 {anchor_file}"):
        _call("audit_anchor", "--file", str(anchor_file))
    assert anchor_file.read_text() == ""


def test_it_refuses_a_symlink_in_place_of_the_anchor_file(anchor_file, tmp_path):
    anchor_file.parent.mkdir()
    _row()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("")
    anchor_file.symlink_to(elsewhere)
    with pytest.raises(CommandError, match="cannot open the anchor file"):
        _call("audit_anchor", "--file", str(anchor_file))
    assert elsewhere.read_text() == ""


def test_it_needs_somewhere_to_anchor(settings):
    settings.AUDIT_ANCHOR_FILE = ""
    with pytest.raises(CommandError, match="nowhere to anchor"):
        _call("audit_anchor")


def test_it_reads_the_anchor_file_from_the_setting(anchor_file, settings):
    anchor_file.parent.mkdir()
    settings.AUDIT_ANCHOR_FILE = str(anchor_file)
    _row()
    _call("audit_anchor")
    assert "anchors OK: the chain holds all 1 anchored heads" in _call("audit_verify", "--anchors")


def test_it_names_a_malformed_anchor_line(anchor_file):
    anchor_file.parent.mkdir()
    _row()
    _call("audit_anchor", "--file", str(anchor_file))
    with anchor_file.open("a") as handle:
        handle.write('{"v": 1, "seq": "two"}\n')
    with pytest.raises(CommandError, match=r"anchors NOT checked: .* line 2:"):
        _call("audit_verify", "--anchors", str(anchor_file))


def test_it_checks_anchors_across_a_prune(anchor_file):
    anchor_file.parent.mkdir()
    _row(0)
    _call("audit_anchor", "--file", str(anchor_file))
    _row(1)
    _row(2)
    _call("audit_anchor", "--file", str(anchor_file))
    pruned = prune.prune(older_than=timedelta(0), pruned_by="admin:alice")
    assert pruned.count == 3
    # The head anchored last is the prune's recorded start; the earlier one was pruned away.
    out = _call("audit_verify", "--anchors", str(anchor_file))
    assert "holds all 1 anchored heads" in out and "1 anchored before the newest prune, not checkable" in out
    assert chain.chain_start().seq == 4


def test_it_sends_anchors_to_syslog():
    directory = tempfile.mkdtemp(
        prefix="sshc-syslog-", dir="/tmp"
    )  # short: a socket path is at most 107 bytes
    address = os.path.join(directory, "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(10)
        _row()
        out = _call("audit_anchor", "--syslog", "--syslog-address", address)
        message = server.recv(4096).decode()
    os.unlink(address)
    os.rmdir(directory)
    assert f"syslog {address}" in out
    prefix = f"<38>sshcontrol-audit[{os.getpid()}]: audit chain head "
    assert message.startswith(prefix)
    anchor = head_anchors.parse_line(message[len(prefix) :])
    assert (anchor.seq, anchor.hash) == (1, ChainHead.objects.get().hash)


def test_it_fails_when_syslog_is_not_listening():
    _row()
    with pytest.raises(CommandError, match="cannot send the anchor to syslog at /nonexistent/log"):
        _call("audit_anchor", "--syslog", "--syslog-address", "/nonexistent/log")


@pytest.mark.django_db(transaction=True)
def test_it_anchors_each_new_head_until_sigterm(anchor_file, monkeypatch):
    anchor_file.parent.mkdir()
    _row(0)
    failures: list[str] = []
    # The loop's passes, counted, so the test can watch several of them go by.
    passes = itertools.count()
    seen = {"passes": 0}
    real_verify = chain.verify

    def counted(resume=None):
        seen["passes"] = next(passes) + 1
        return real_verify(resume=resume)

    monkeypatch.setattr(chain, "verify", counted)

    def wait_for_lines(count: int, deadline: float) -> bool:
        def written() -> bool:
            return anchor_file.exists() and len(anchor_file.read_text().splitlines()) >= count

        try:
            wait_until(written, max(deadline - time.monotonic(), 0.0))
        except AssertionError:
            return False
        return True

    def drive() -> None:
        deadline = time.monotonic() + 30
        try:
            if not wait_for_lines(1, deadline):
                failures.append("no first anchor")
                return
            # Three more passes of the loop over an unchanged head: none may write a line.
            after = seen["passes"] + 3
            try:
                wait_until(lambda: seen["passes"] >= after, max(deadline - time.monotonic(), 0.0))
            except AssertionError:
                failures.append("the loop stopped passing")
                return
            if len(anchor_file.read_text().splitlines()) != 1:
                failures.append("an unchanged head was anchored again")
            _row(1)
            if not wait_for_lines(2, deadline):
                failures.append("the moved head was not anchored")
        finally:
            connection.close()
            os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive)
    handler_before = signal.getsignal(signal.SIGTERM)
    driver.start()
    out = _call("audit_anchor", "--file", str(anchor_file), "--every", "0.05")
    driver.join(10)
    assert failures == []
    assert out.rstrip().endswith("stopped")
    assert [line["seq"] for line in _lines(anchor_file)] == [1, 2]
    assert signal.getsignal(signal.SIGTERM) == handler_before


@pytest.mark.django_db(transaction=True)  # the loop closes connections left outside autocommit
def test_it_keeps_anchoring_after_the_database_was_unreachable(anchor_file, monkeypatch):
    anchor_file.parent.mkdir()
    _row()
    real_verify = chain.verify
    calls = {"n": 0}

    def flaky(resume=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("server closed the connection unexpectedly")
        os.kill(os.getpid(), signal.SIGTERM)  # one good round is enough
        return real_verify(resume=resume)

    monkeypatch.setattr(chain, "verify", flaky)
    err = io.StringIO()
    out = io.StringIO()
    call_command("audit_anchor", "--file", str(anchor_file), "--every", "0.01", stdout=out, stderr=err)
    assert "cannot read the audit chain: server closed the connection" in err.getvalue()
    assert [line["seq"] for line in _lines(anchor_file)] == [1]
    assert out.getvalue().rstrip().endswith("stopped")


def _forge_prune_record(first_seq: int) -> None:
    """What a database writer can add: a prune record saying the chain now starts at ``first_seq``."""
    prev = AuditEvent.objects.filter(chain_seq=first_seq - 1).values_list("chain_hash", flat=True).get()
    now = timezone.now()
    AuditAnchor.objects.create(
        created_at=now,
        pruned_by="admin:nobody",
        pruned_before=now,
        pruned_count=0,
        first_seq=first_seq,
        prev_hash=prev,
    )


def test_it_reports_rows_kept_before_a_forged_prune_record():
    # Attack: record a prune that never happened, so the walk starts past the rows, then edit them.
    rows = [_row(n) for n in range(4)]
    _forge_prune_record(4)
    AuditEvent.objects.filter(pk=rows[0]).update(stdout="nothing happened\n")
    verification = chain.verify()
    assert not verification.ok
    assert verification.broken is not None and verification.broken.event_id == rows[0]
    assert "before the chain's start" in str(verification.broken)
    with pytest.raises(CommandError):
        _call("audit_verify")


def test_it_reports_a_prune_the_anchor_file_does_not_record(anchor_file):
    # Attack: delete the oldest rows and record a prune for them; the anchors outside still know.
    anchor_file.parent.mkdir()
    for n in range(3):
        _row(n)
    _call("audit_anchor", "--file", str(anchor_file))
    for n in range(3, 6):
        _row(n)
    _forge_prune_record(5)
    AuditEvent.objects.filter(chain_seq__lt=5).delete()
    assert chain.verify().ok
    with pytest.raises(CommandError) as excinfo:
        _call("audit_verify", "--anchors", str(anchor_file))
    assert "after a prune the anchors do not record" in str(excinfo.value)


def test_a_prune_with_the_anchor_file_set_records_its_last_row_there(anchor_file, settings):
    anchor_file.parent.mkdir()
    settings.AUDIT_ANCHOR_FILE = str(anchor_file)
    for n in range(3):
        _row(n)
    _call("audit_anchor")
    _row(3)
    _row(4)
    out = _call("audit_prune", "--older-than", "0")
    assert "Deleted 5 audit rows" in out
    assert [line["seq"] for line in _lines(anchor_file)] == [3, 5]
    out = _call("audit_verify", "--anchors", str(anchor_file))
    assert "holds all 1 anchored heads" in out and "1 anchored before the newest prune, not checkable" in out
