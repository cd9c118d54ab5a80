"""ssh_start_job is held to ssh_execute's rules (docs/security.md, "Background jobs").

A job runs later and longer, so a rule it skipped would be worth the most to an attacker: each
refusal here goes through the real MCP tool to the suite's real sshd, and afterwards nothing
may have run and no job may exist.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent
from hosts import approvals
from hosts.models import ApprovalRequest, Host
from sshcontrol.models import Job
from tests.mcp.conftest import McpHarness
from tests.sshd import SshServer


def test_a_job_is_held_to_the_grants_allow_list_read_only_rule_and_hidden_characters(
    as_client: Callable[..., McpHarness], make_host: Callable[..., Host], sshd: SshServer
) -> None:
    web = make_host("web1")
    reader = as_client("reader", hosts=[web], read_only=True, rules=[("allow", "(ls|cat|echo)( .*)?")])
    probe = Path(f"/tmp/sshc-job-probe-{sshd.user}")  # the sshd is on this machine
    probe.unlink(missing_ok=True)
    refusals = {
        "read-only": reader.error("ssh_start_job", host="web1", command=f"echo x > {probe}"),
        "allow-list": reader.error("ssh_start_job", host="web1", command="uptime"),
        "hidden": reader.error("ssh_start_job", host="web1", command="echo a\u200bb > /dev/null"),
    }
    assert "a read-only grant refuses" in refusals["read-only"], refusals
    assert "not on the allow-list" in refusals["allow-list"], refusals
    assert "invisible, reordering or control characters" in refusals["hidden"], refusals
    assert not probe.exists()
    assert not Job.objects.exists()
    # The two rule refusals are audited; hidden characters are refused before any row opens.
    rows = AuditEvent.objects.filter(client="reader", tool="ssh_start_job")
    assert sorted(rows.values_list("status", flat=True)) == ["denied", "denied"]
    # The same client's allowed job runs: the refusals above were the rules, not the tool.
    started = reader.ok("ssh_start_job", host="web1", command="echo fine")
    assert started["job_id"] and Job.objects.filter(job_id=started["job_id"]).exists()


def test_a_job_is_held_to_the_sudo_password_rule(
    as_client: Callable[..., McpHarness], make_host: Callable[..., Host], sshd: SshServer, sudoers: None
) -> None:
    """A sudo job where a client without sudo could capture the password is refused, unrun.

    The rule is ``ssh_execute``'s (docs/security.md, "The sudo password rule"): ``lurker`` may run
    commands as the account without sudo, so the account's start-up files are its to plant in.
    """
    web = make_host("web1", auth="ed25519")
    credential = web.credential
    assert credential is not None
    credential.set_sudo_password("not-the-login-password-of-the-test-user")
    credential.save()
    as_client("lurker", hosts=[web])  # execute, no sudo
    victim = as_client("victim", hosts=[web], can_sudo=True)
    message = victim.error("ssh_start_job", host="web1", command="id -u", sudo=True)
    assert "sudo is refused on host 'web1'" in message and "could capture it" in message, message
    event = AuditEvent.objects.get(client="victim", tool="ssh_start_job")
    assert event.status == "denied" and event.details["sudo_exposed_to"]
    assert not Job.objects.exists()
    # Without sudo the same client's job runs: the refusal was the rule, not the tool.
    assert victim.ok("ssh_start_job", host="web1", command="id -u")["job_id"]
    # And a client without sudo is refused sudo outright.
    lurker_sudo = as_client("lurker2", hosts=[web]).error(
        "ssh_start_job", host="web1", command="id", sudo=True
    )
    assert "sudo" in lurker_sudo, lurker_sudo
    assert Job.objects.count() == 1


def test_a_job_that_needs_an_approval_waits_for_one_and_runs_once_approved(
    as_client: Callable[..., McpHarness], make_host: Callable[..., Host], sshd: SshServer, settings: Any
) -> None:
    settings.APPROVAL_WAIT_SECONDS = 0.3
    web = make_host("web1")
    agent = as_client("agent", owner="alice", hosts=[web], rules=[("approve", r"^echo guarded")])
    probe = Path(f"/tmp/sshc-job-approval-{sshd.user}")
    probe.unlink(missing_ok=True)
    command = f"echo guarded >> {probe}"
    held = agent.ok("ssh_start_job", host="web1", command=command, reason="rotate")
    assert held["state"] == "pending" and held["job_id"] is None, held
    request = ApprovalRequest.objects.get(pk=held["pending_approval"]["request_id"])
    assert (request.state, request.command, request.reason) == ("pending", command, "rotate")
    assert not probe.exists() and not Job.objects.exists()
    # The owner may not approve their own agent; nothing runs on a refused decision.
    with pytest.raises(approvals.ApprovalError):
        approvals.decide(request.pk, "alice", approve=True)
    assert not probe.exists()
    approvals.decide(request.pk, "bob", approve=True)
    first = agent.ok("ssh_approval_status", request_id=request.pk)
    assert first["state"] == "executed" and first["decided_by"] == "bob", first
    again = agent.ok("ssh_approval_status", request_id=request.pk)
    assert again["execution"] is None
    assert probe.read_text() == "guarded\n"  # ran once, however often the status is asked
    probe.unlink()
