"""The Celery edge: every task request and reply survives JSON unchanged, bytes included."""

from __future__ import annotations

import json

import pytest

from sshcontrol import wire
from sshcontrol.taskspec import (
    CommandSpec,
    Connected,
    Disconnected,
    DispatchError,
    Downloaded,
    DownloadSpec,
    Executed,
    Failure,
    Listed,
    ListSpec,
    Owner,
    Uploaded,
    UploadSpec,
)
from sshlib.execute import ExecResult
from sshlib.transfer import FileEntry

RUN = ExecResult(
    exit_status=None,
    signal="KILL",
    stdout="é\n",
    stderr="",
    stdout_bytes=3,
    stderr_bytes=0,
    stdout_truncated=False,
    stderr_truncated=True,
    timed_out=True,
    cancelled=False,
    duration_ms=12.5,
)

VALUES = [
    Owner("claude (os:alice)", 7),
    Owner("admin:root"),
    CommandSpec("printf '%s' \"$x\"", "/tmp/a b", 1.5, "line\n\u2603", True),
    CommandSpec("true"),
    UploadSpec("/tmp/f", content=bytes(range(256)) * 3, mode=0o640, overwrite=True),
    UploadSpec("/tmp/f", local_path="in/f.bin"),
    DownloadSpec("/etc/hostname", max_inline_bytes=10),
    ListSpec(".", show_hidden=True, max_entries=5),
    Connected("web1-abc", reused=False, reconnected=True, host_key_fingerprint="SHA256:x"),
    Executed(RUN, reconnected=True, cancel_reason="the worker is shutting down"),
    Uploaded("/tmp/f", 768, "ab" * 32),
    Downloaded("/bin/true", 3, "cd" * 32, b"\x00\xff\n", reconnected=True),
    Downloaded("/tmp/big", 3, "cd" * 32, None),
    Listed("/tmp", [FileEntry("a", "file", 1, "0644", "2026-11-29T00:00:00Z", None)], truncated=True),
    Disconnected("web1-abc", was_open=False),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_it_carries_each_request_and_reply_through_json_unchanged(value: object) -> None:
    carried = json.loads(json.dumps(wire.dump(value)))  # what Celery's JSON serializer does
    assert wire.load(type(value), carried) == value


def test_it_raises_a_failure_envelope_as_its_dispatch_error() -> None:
    envelope = json.loads(json.dumps(wire.failed(DispatchError(Failure.WORKER_LOST, "worker w1 stopped"))))
    with pytest.raises(DispatchError) as raised:
        wire.unwrap(envelope)
    assert (raised.value.kind, raised.value.message) == (Failure.WORKER_LOST, "worker w1 stopped")
    assert raised.value.kind.outcome_unknown


def test_it_reads_an_unknown_failure_kind_as_an_internal_error() -> None:
    with pytest.raises(DispatchError) as raised:
        wire.unwrap({"ok": False, "kind": "from_a_newer_worker", "message": "m"})
    assert raised.value.kind is Failure.INTERNAL_ERROR
