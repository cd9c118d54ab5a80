"""Background jobs on the embedded default, against the real sshd: start, follow, cancel, own.

``ssh_start_job`` runs each job in a detached runner process (``sshcontrol/jobrunner.py``)
that shares the test database; the in-process MCP harness calls the tools.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from audit.models import AuditEvent
from sshcontrol.models import Job
from tests.mcp.conftest import McpHarness
from tests.polling import wait_until
from tests.sshd import SshServer


def follow(mcp: McpHarness, job_id: str, max_bytes: int = 1000, timeout: float = 60) -> tuple[str, str, dict[str, Any]]:
    """Poll ssh_job_status with the offsets it gives until the job ended and both streams are complete."""
    out, err = [], []
    offsets = {"since_offset": 0, "stderr_offset": 0}
    last: dict[str, Any] = {}

    def step() -> bool:
        nonlocal last
        last = mcp.ok("ssh_job_status", job_id=job_id, max_bytes=max_bytes, **offsets)
        for stream, key, parts in (("stdout", "since_offset", out), ("stderr", "stderr_offset", err)):
            chunk = last[stream]
            assert chunk["offset"] == offsets[key], "a page starts where the previous one ended"
            parts.append(chunk["text"])
            offsets[key] = chunk["next_offset"]
        return last["state"] != "running" and last["stdout"]["complete"] and last["stderr"]["complete"]

    wait_until(step, timeout, "the job ended and its output was read to the end")
    return "".join(out), "".join(err), last


def test_a_job_is_read_to_the_end_every_byte_once(mcp: McpHarness, make_host: Any, sshd: SshServer) -> None:
    make_host("box")
    command = "for i in $(seq 1 300); do echo line $i; sleep 0.005; done; echo done >&2; exit 3"
    started = mcp.ok("ssh_start_job", host="box", command=command)
    assert started["state"] == "running" and started["job_id"].startswith("job_")
    stdout, stderr, last = follow(mcp, started["job_id"], max_bytes=700)
    assert stdout == "".join(f"line {i}\n" for i in range(1, 301))
    assert stderr == "done\n"
    assert last["state"] == "exited" and last["exit_status"] == 3
    rows = AuditEvent.objects.filter(tool="ssh_start_job")
    assert rows.count() == 1
    row = rows.get()
    assert row.status == "ok" and row.exit_status == 3 and row.pk == started["audit_id"]
    listed = mcp.ok("ssh_list_jobs")
    assert [j["job_id"] for j in listed["jobs"]] == [started["job_id"]]
