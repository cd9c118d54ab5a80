"""ssh_execute_many end to end: many Host rows on the suite's real sshd, through the MCP client."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.core.management import call_command

from audit.models import AuditEvent
from hosts.models import CommandRule, Grant, Host, McpClient
from sshcontrol.models import SshSession
from tests.mcp.conftest import McpHarness
from tests.sshd import SshServer


def hosts(make_host: Callable[..., Any], count: int, prefix: str = "node", **fields: Any) -> list[Host]:
    return [make_host(f"{prefix}{i:02d}", **fields) for i in range(count)]


def statuses(result: dict[str, Any]) -> dict[str, str]:
    return {r["host"]: r["status"] for r in result["results"]}


def test_it_runs_on_every_host_and_groups_identical_output(mcp: McpHarness, make_host) -> None:
    made = hosts(make_host, 5)
    result = mcp.ok("ssh_execute_many", hosts=[h.name for h in made], command="echo same; echo err >&2")
    assert result["summary"] == {
        "ok": 5,
        "failed": 0,
        "timed_out": 0,
        "refused": 0,
        "skipped": 0,
        "error": 0,
        "total": 5,
    }
    assert [r["host"] for r in result["results"]] == [h.name for h in made]
    assert all(r["exit_status"] == 0 and r["stdout"] == "same\n" for r in result["results"])
    [group] = result["groups"]
    assert group["hosts"] == [h.name for h in made]
    shape = (group["count"], group["exit_status"], group["stdout"], group["stderr"])
    assert shape == (5, 0, "same\n", "err\n")
    text = mcp.text("ssh_execute_many", hosts=[h.name for h in made], command="echo same")
    assert "5 host(s), exit 0:" in text and "node00, node01" in text


def test_different_outputs_stand_out_as_their_own_groups(mcp: McpHarness, make_host, tmp_path) -> None:
    made = hosts(make_host, 4)
    # Each host takes the next number from a shared counter: two hosts exit 0, two exit 3.
    counter = f"/tmp/sshc-fanout-{tmp_path.name}"
    command = (
        f"n=$(flock {counter}.lock sh -c 'n=$(cat {counter} 2>/dev/null || echo 0); "
        f"echo $((n+1)) > {counter}; echo $n'); if [ $n -lt 2 ]; then echo low; else echo high; exit 3; fi"
    )
    try:
        result = mcp.ok("ssh_execute_many", hosts=[h.name for h in made], command=command)
    finally:
        call_command_cleanup(counter)
    assert result["summary"]["ok"] == 2 and result["summary"]["failed"] == 2
    groups = {(g["exit_status"], g["stdout"]): g["count"] for g in result["groups"]}
    assert groups == {(0, "low\n"): 2, (3, "high\n"): 2}


def call_command_cleanup(counter: str) -> None:
    import subprocess

    subprocess.run(["rm", "-f", counter, f"{counter}.lock"], check=False)


def test_statuses_timeout_error_and_one_audit_row_per_host_with_the_batch_id(
    mcp: McpHarness, make_host
) -> None:
    make_host("good")
    make_host("badpass", password="not-the-password")
    result = mcp.ok("ssh_execute_many", hosts=["good", "badpass", "nosuch"], command="sleep 5", timeout=0.5)
    assert statuses(result) == {"good": "timed_out", "badpass": "error", "nosuch": "refused"}
    by_host = {r["host"]: r for r in result["results"]}
    assert "not available" in by_host["nosuch"]["error"]
    assert by_host["badpass"]["error"]
    rows = AuditEvent.objects.filter(batch_id=result["batch_id"])
    assert rows.count() == 3
    assert {r.host_name or r.details.get("host_requested"): r.status for r in rows} == {
        "good": AuditEvent.Status.TIMEOUT,
        "badpass": AuditEvent.Status.ERROR,
        "nosuch": AuditEvent.Status.ERROR,
    }
    assert all(r.tool == "ssh_execute_many" and r.command == "sleep 5" for r in rows)
    assert {r["audit_id"] for r in result["results"]} == set(rows.values_list("id", flat=True))
    call_command("audit_verify")
    out = io.StringIO()
    call_command("audit_export", "--format", "jsonl", "--batch", result["batch_id"], stdout=out)
    exported = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(exported) == 3 and {e["batch_id"] for e in exported} == {result["batch_id"]}


def test_a_failed_command_is_failed_and_sessions_are_reused(mcp: McpHarness, make_host, settings) -> None:
    # The paramiko path's sessions (hosts behind a jump, trust on first use, distributed mode);
    # the engine's pooled connections: tests/mcp/test_execute_many_engine.py.
    settings.BATCH_ENGINE_LIBSSH2 = False
    made = hosts(make_host, 3)
    names = [h.name for h in made]
    first = mcp.ok("ssh_execute_many", hosts=names, command="exit 4")
    assert set(statuses(first).values()) == {"failed"}
    assert first["groups"][0]["exit_status"] == 4
    opened = SshSession.objects.filter(state=SshSession.State.CONNECTED).count()
    assert opened == 3
    mcp.ok("ssh_execute_many", hosts=names, command="true")
    assert SshSession.objects.filter(state=SshSession.State.CONNECTED).count() == 3  # reused, none opened


def test_rolling_batches_stop_after_failures_and_skip_the_rest(mcp: McpHarness, make_host) -> None:
    made = hosts(make_host, 5)
    result = mcp.ok(
        "ssh_execute_many",
        hosts=[h.name for h in made],
        command="exit 1",
        batch_size=2,
        stop_after_failures=1,
    )
    # The canary batch (two hosts) ran and failed; once one failure was counted nothing else started.
    assert [r["status"] for r in result["results"]] == ["failed", "failed", "skipped", "skipped", "skipped"]
    assert result["stopped_early"] is True
    assert result["summary"]["skipped"] == 3
    skipped = AuditEvent.objects.filter(batch_id=result["batch_id"], status=AuditEvent.Status.SKIPPED)
    assert skipped.count() == 3
    assert "stop_after_failures=1" in result["results"][4]["error"]


def test_batches_run_one_after_the_other(mcp: McpHarness, make_host) -> None:
    made = hosts(make_host, 4)
    result = mcp.ok(
        "ssh_execute_many", hosts=[h.name for h in made], command="true", batch_size=2, stop_after_failures=1
    )
    assert result["summary"]["ok"] == 4 and not result["stopped_early"]
    rows = list(AuditEvent.objects.filter(batch_id=result["batch_id"]).order_by("id"))
    first, second = rows[:2], rows[2:]
    # The second batch's rows were opened after the first batch had finished.
    assert max(r.finished_at or r.started_at for r in first) <= min(r.started_at for r in second)


def test_a_host_the_client_may_not_use_is_refused_in_the_middle(as_client, make_host) -> None:
    a, b, c = make_host("a"), make_host("b"), make_host("c")
    agent = as_client("agent", hosts=[a, c], can_execute=True, can_list=True)
    result = agent.ok("ssh_execute_many", hosts=["a", "b", "c", "zzz"], command="echo hi")
    assert statuses(result) == {"a": "ok", "b": "refused", "c": "ok", "zzz": "refused"}
    by_host = {r["host"]: r for r in result["results"]}
    # Not granted and not registered read the same: the batch reveals no host.
    assert by_host["b"]["error"].replace("'b'", "X") == by_host["zzz"]["error"].replace("'zzz'", "X")
    row = AuditEvent.objects.get(batch_id=result["batch_id"], host_name="b")
    assert row.status == AuditEvent.Status.DENIED and "no grant" in row.error
    assert b.pk  # registered all the same


def test_a_tag_selects_only_hosts_the_client_may_list(as_client, make_host) -> None:
    a = make_host("a", tags=["web"])
    make_host("b", tags=["web"])
    make_host("c", tags=["db"])
    agent = as_client("agent", hosts=[a], can_execute=True, can_list=True)
    result = agent.ok("ssh_execute_many", tag="web", command="true")
    assert statuses(result) == {"a": "ok"}
    assert "no host with tag" in agent.error("ssh_execute_many", tag="db", command="true")


def test_command_rules_apply_per_host(as_client, make_host) -> None:
    made = hosts(make_host, 2)
    agent = as_client("agent", hosts=made, can_execute=True, can_list=True, rules=[("deny", "rm *")])
    result = agent.ok("ssh_execute_many", hosts=[h.name for h in made], command="rm -rf /tmp/nothing-here")
    assert set(statuses(result).values()) == {"refused"}
    denied = AuditEvent.objects.filter(batch_id=result["batch_id"], status=AuditEvent.Status.DENIED)
    assert denied.count() == 2


def test_a_rule_on_one_host_refuses_that_host_only(as_client, make_host) -> None:
    a, b = hosts(make_host, 2)
    CommandRule.objects.create(host=b, action="deny", pattern="echo .*")
    agent = as_client("agent", hosts=[a, b], can_execute=True)
    result = agent.ok("ssh_execute_many", hosts=[a.name, b.name], command="echo hi")
    assert statuses(result) == {a.name: "ok", b.name: "refused"}
    rows = AuditEvent.objects.filter(batch_id=result["batch_id"])
    assert {(row.host_name, row.status) for row in rows} == {(a.name, "ok"), (b.name, "denied")}


def test_a_read_only_grant_refuses_a_write_on_its_hosts_only(as_client, make_host, sshd: SshServer) -> None:
    a, b = hosts(make_host, 2)  # both on the suite's sshd: one file tells which host wrote
    agent = as_client("agent", hosts=[a], can_execute=True)
    read_only = Grant.objects.create(client=McpClient.objects.get(name="agent"), read_only=True)
    read_only.hosts.set([b])
    # Every line allowed: only the read-only classification stands between the batch and b.
    CommandRule.objects.create(grant=read_only, action="allow", pattern=".*")
    probe = Path(f"/tmp/sshc-batch-ro-{sshd.user}")
    probe.unlink(missing_ok=True)
    try:
        result = agent.ok("ssh_execute_many", hosts=[a.name, b.name], command=f"echo x >> {probe}")
        assert statuses(result) == {a.name: "ok", b.name: "refused"}
        refused = next(r for r in result["results"] if r["host"] == b.name)
        assert "a read-only grant refuses" in refused["error"]
        assert probe.read_text() == "x\n", "only the writable host wrote"
    finally:
        probe.unlink(missing_ok=True)


def test_progress_reports_hosts_done_out_of_total(mcp: McpHarness, make_host) -> None:
    made = hosts(make_host, 3)
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    result = mcp.run(
        mcp.client.call_tool(
            "ssh_execute_many",
            {"hosts": [h.name for h in made], "command": "true"},
            progress_callback=on_progress,
        )
    )
    assert not result.is_error
    assert seen and seen[-1][:2] == (3, 3)
    assert seen[-1][2] == "3 of 3 hosts done"


def test_arguments_are_checked(mcp: McpHarness, make_host) -> None:
    make_host("a")
    assert "exactly one of hosts or tag" in mcp.error("ssh_execute_many", command="true")
    both = mcp.error("ssh_execute_many", hosts=["a"], tag="x", command="true")
    assert "exactly one of hosts or tag" in both
    assert "empty" in mcp.error("ssh_execute_many", hosts=[], command="true")


def test_output_is_cleaned_for_the_model_as_ssh_execute_cleans_it(mcp: McpHarness, make_host) -> None:
    made = hosts(make_host, 2)
    result = mcp.ok(
        "ssh_execute_many", hosts=[h.name for h in made], command=r"printf 'a\033[31mred\033[0m\n'"
    )
    assert {r["stdout"] for r in result["results"]} == {"ared\n"}
    assert all(w["kind"] == "escape_sequences" for r in result["results"] for w in r["output_warnings"])
    assert result["results"][0]["output_warnings"]
    [group] = result["groups"]
    assert group["stdout"] == "ared\n" and group["count"] == 2
    text = mcp.text(
        "ssh_execute_many", hosts=[h.name for h in made], command=r"printf 'a\033[31mred\033[0m\n'"
    )
    assert "\033" not in text and "escape sequence" in text
