"""A jump host's password is redacted from everything the model sees and from the audit log.

docs/security.md ("Jump hosts"): the hops' passwords and passphrases are redacted from the
session's output like the target's. The hop ``j1`` logs in with a password used nowhere else;
the target ``t1`` behind it with a key, so the hop's password is the only password of the
chain: a command on ``t1`` prints it (without naming it) on stdout and stderr, through
``ssh_execute``, ``ssh_execute_many`` and a background job, and a wrong hop password is
refused without being shown.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from audit.models import AuditEvent
from hosts.models import Credential
from tests.jobs.test_jobs import follow
from tests.leaks import recoverable
from tests.mcp.conftest import McpHarness
from tests.netns import JumpNet, NetnsSshServer
from tests.server_hosts import register

HOP_PASSWORD = "hop-only-Pw-5e2a91-of-the-bastion"
WRONG_HOP_PASSWORD = "wrong-hop-Pw-c07d3b-never-shown"


@pytest.fixture
def hop(jump_net: JumpNet) -> Iterator[NetnsSshServer]:
    """j1, its user's login password changed to ``HOP_PASSWORD`` for the test (restored after)."""
    server = jump_net.servers["j1"]
    subprocess.run(["chpasswd"], input=f"{server.user}:{HOP_PASSWORD}\n", text=True, check=True)
    try:
        yield server
    finally:
        subprocess.run(["chpasswd"], input=f"{server.user}:{server.password}\n", text=True, check=True)


def behind_the_hop(jump_net: JumpNet, hop: NetnsSshServer, hop_password: str) -> None:
    j1 = Credential(name="j1-cred")
    j1.store_password(hop_password)
    target = jump_net.servers["t1"]
    t1 = Credential(name="t1-cred")
    t1.store_password(target.password)
    register(target, "t1", t1, jump=register(hop, "j1", j1))


def octal(text: str) -> str:
    """``text`` as printf octal escapes: the command prints it without containing it."""
    return "".join(f"\\{ord(c):03o}" for c in text)


PRINTS_IT = f"printf 'pw={octal(HOP_PASSWORD)}\\n'; printf '{octal(HOP_PASSWORD)}\\n' >&2"


def assert_nowhere(secret: str, seen: list[Any]) -> None:
    for shown in seen:
        text = shown if isinstance(shown, str) else json.dumps(shown)
        assert not recoverable(secret, text.encode()), shown
    for event in AuditEvent.objects.all():
        row = repr({f.attname: getattr(event, f.attname) for f in AuditEvent._meta.concrete_fields})
        assert not recoverable(secret, row.encode()), f"audit row {event.pk}"


def test_a_hops_password_printed_by_the_target_is_redacted_everywhere(
    mcp: McpHarness, jump_net: JumpNet, hop: NetnsSshServer
) -> None:
    behind_the_hop(jump_net, hop, HOP_PASSWORD)
    one = mcp.ok("ssh_execute", host="t1", command=PRINTS_IT)
    assert one["exit_status"] == 0
    assert one["stdout"] == "pw=[REDACTED]\n" and one["stderr"] == "[REDACTED]\n"
    text = mcp.text("ssh_execute", host="t1", command=PRINTS_IT)
    many = mcp.ok("ssh_execute_many", hosts=["t1"], command=PRINTS_IT)
    assert many["results"][0]["stdout"] == "pw=[REDACTED]\n"
    many_text = mcp.text("ssh_execute_many", hosts=["t1"], command=PRINTS_IT)
    job = mcp.ok("ssh_start_job", host="t1", command=PRINTS_IT)
    job_out, job_err, last = follow(mcp, job["job_id"])
    assert (job_out, job_err) == ("pw=[REDACTED]\n", "[REDACTED]\n") and last["exit_status"] == 0
    rows = AuditEvent.objects.filter(host_name="t1").exclude(stdout="")
    assert rows.count() >= 5 and all(r.stdout == "pw=[REDACTED]\n" for r in rows)
    assert_nowhere(HOP_PASSWORD, [one, text, many, many_text, job, last])


def test_a_wrong_hop_password_is_refused_without_being_shown(
    mcp: McpHarness, jump_net: JumpNet, hop: NetnsSshServer
) -> None:
    behind_the_hop(jump_net, hop, WRONG_HOP_PASSWORD)
    seen: list[Any] = [
        mcp.error("ssh_execute", host="t1", command="true"),
        mcp.error("ssh_connect", host="t1"),
        mcp.ok("ssh_execute_many", hosts=["t1"], command="true"),
        mcp.text("ssh_execute_many", hosts=["t1"], command="true"),
    ]
    assert "j1" in seen[0], seen[0]
    assert seen[2]["results"][0]["status"] == "error"
    assert AuditEvent.objects.filter(status="error").count() >= 3
    assert_nowhere(WRONG_HOP_PASSWORD, seen)
