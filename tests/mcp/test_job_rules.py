"""ssh_start_job is held to ssh_execute's rules (docs/security.md, "Background jobs").

A job runs later and longer, so a rule it skipped would be worth the most to an attacker: each
refusal here goes through the real MCP tool to the suite's real sshd, and afterwards nothing
may have run and no job may exist.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from audit.models import AuditEvent
from hosts.models import Host
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
