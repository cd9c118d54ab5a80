"""``ssh_execute_many``: one command on many hosts, with a result a model reads at a glance.

The batch itself (which hosts, rolling batches, audit rows) is ``sshcontrol/fleet.py``; this
module checks the arguments, turns the outcome into the typed result (each host's output
cleaned by ``audit/output_hygiene.py`` as ``ssh_execute``'s is, identical outputs grouped)
and renders it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from django.conf import settings
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import Field

from audit.output_hygiene import clean
from hosts import visible
from hosts.access_models import ApprovalRequest
from sshcontrol import fleet
from sshcontrol.calllog import observed
from sshcontrol.dbretry import DatabaseUnavailable
from sshcontrol.fleet import BatchOutcome, BatchRefused, HostResult, Plan, RunCommand
from sshcontrol.mcp.approved_runs import checked_timeout
from sshcontrol.mcp.arguments import (
    BatchFormatArg,
    BatchReasonArg,
    BatchSizeArg,
    CommandArg,
    HostsArg,
    ParallelArg,
    StopArg,
    SudoArg,
    TagArg,
    TimeoutArg,
    WorkingDirectoryArg,
)
from sshcontrol.mcp.batch_approval import Asker
from sshcontrol.mcp.batch_progress import hosts_done_reporter
from sshcontrol.mcp.identity import own_client
from sshcontrol.mcp.render import fence, hygiene
from sshcontrol.mcp.schemas import (
    BatchApproval,
    BatchSummary,
    ExecuteManyResult,
    HostRun,
    OutputGroup,
    PendingApproval,
    warnings_of,
)
from sshcontrol.taskspec import CommandSpec

if TYPE_CHECKING:
    from sshcontrol.mcp.tools import Tools


def host_run(result: HostResult) -> HostRun:
    run = result.run
    if run is None:
        return HostRun(
            host=result.host,
            status=result.status,
            exit_status=None,
            stdout="",
            stderr="",
            error=result.error,
            audit_id=result.audit_id,
        )
    stdout, stderr = clean(run.stdout), clean(run.stderr)
    return HostRun(
        host=result.host,
        status=result.status,
        exit_status=run.exit_status,
        stdout=stdout.text,
        stderr=stderr.text,
        stdout_bytes=run.stdout_bytes,
        stderr_bytes=run.stderr_bytes,
        stdout_truncated=run.stdout_truncated,
        stderr_truncated=run.stderr_truncated,
        error=result.error,
        audit_id=result.audit_id,
        output_warnings=warnings_of("stdout", stdout) + warnings_of("stderr", stderr),
        redactions=stdout.redactions + stderr.redactions,
    )


RAN: frozenset[str] = frozenset({"ok", "failed", "timed_out"})


def groups_of(runs: Sequence[HostRun]) -> list[OutputGroup]:
    """Hosts that ran, one entry per distinct (exit status, stdout, stderr), the largest group first."""
    grouped: dict[tuple[int | None, str, str], list[str]] = {}
    for run in runs:
        if run.status in RAN:
            grouped.setdefault((run.exit_status, run.stdout, run.stderr), []).append(run.host)
    entries = [
        OutputGroup(hosts=hosts, count=len(hosts), exit_status=key[0], stdout=key[1], stderr=key[2])
        for key, hosts in grouped.items()
    ]
    return sorted(entries, key=lambda g: -g.count)  # stable: ties keep the hosts' order


def approval_of(request: ApprovalRequest | None) -> BatchApproval | None:
    if request is None:
        return None
    return BatchApproval(
        request_id=request.pk,
        state=request.state,  # type: ignore[arg-type]
        hosts=request.covered_hosts,
        decided_by=request.decided_by,
        comment=request.comment,
    )


def result_of(command: str, outcome: BatchOutcome) -> ExecuteManyResult:
    runs = [host_run(r) for r in outcome.results]
    counts = fleet.summary(outcome.results)
    request = outcome.approval
    pending = request is not None and request.state == ApprovalRequest.State.PENDING
    return ExecuteManyResult(
        state="pending" if pending else "completed",
        approval=approval_of(request),
        pending_approval=PendingApproval(
            request_id=request.pk,
            expires_at=request.expires_at.isoformat(),
            next_arguments={"request_id": request.pk},
        )
        if pending and request is not None
        else None,
        batch_id=outcome.batch_id,
        command=command,
        summary=BatchSummary(**counts, total=len(runs)),
        groups=groups_of(runs),
        results=runs,
        stopped_early=outcome.stopped_early,
    )


def _names(hosts: Sequence[str]) -> str:
    return ", ".join(hosts)


def render(result: ExecuteManyResult) -> str:
    s = result.summary
    counted = ", ".join(
        f"{n} {label}"
        for n, label in (
            (s.ok, "ok"),
            (s.failed, "failed"),
            (s.timed_out, "timed out"),
            (s.refused, "refused"),
            (s.skipped, "skipped"),
            (s.error, "error"),
        )
        if n
    )
    parts = [f"`{result.command}` on {s.total} host(s): {counted}. Batch `{result.batch_id}`."]
    if (approval := result.approval) is not None:
        hosts = _names(approval.hosts)
        if result.state == "pending":
            parts.append(
                f"Waiting for approval request {approval.request_id} covering {hosts}: nothing ran. "
                f"Call ssh_approval_status with request_id {approval.request_id} later; once approved it "
                "runs the whole batch, once."
            )
        else:
            by = f" by {approval.decided_by}" if approval.decided_by else ""
            comment = f": {approval.comment}" if approval.comment else ""
            parts.append(
                f"Approval request {approval.request_id} ({approval.state}{by}{comment}) covers {hosts}."
            )
    if result.stopped_early:
        parts.append("stop_after_failures was reached: later batches did not start (skipped).")
    by_host = {r.host: r for r in result.results}
    for group in result.groups:
        first = by_host[group.hosts[0]]
        if group.exit_status is None:
            ended = "timed out" if first.status == "timed_out" else "killed"
        else:
            ended = f"exit {group.exit_status}"
        lines = [f"**{group.count} host(s), {ended}:** {_names(group.hosts)}"]
        if note := hygiene(first.output_warnings, first.redactions):
            lines.append(note)
        for name, text in (("stdout", group.stdout), ("stderr", group.stderr)):
            if text:
                lines.append(f"{name}:\n{fence(text)}")
        if not group.stdout and not group.stderr:
            lines.append("(no output)")
        parts.append("\n".join(lines))
    others = [r for r in result.results if r.status not in RAN or r.error]
    if others:
        rows = ["| host | status | audit | why |", "|---|---|---|---|"]
        rows += [
            f"| {r.host} | {r.status} | #{r.audit_id} | {r.error.replace('|', '/').replace(chr(10), ' ')} |"
            for r in others
        ]
        parts.append("\n".join(rows))
    return "\n\n".join(parts)


class FleetTools:
    """The fleet tools, sharing the single-host tools' caller and progress plumbing."""

    def __init__(self, tools: Tools) -> None:
        self.tools = tools

    async def ssh_execute_many(
        self,
        ctx: Context,
        command: Annotated[CommandArg, Field(description="Shell command line to run on every host.")],
        hosts: HostsArg = None,
        tag: TagArg = None,
        timeout: Annotated[
            TimeoutArg, Field(description="Seconds before each host's command is killed (default 60).")
        ] = None,
        max_parallel: Annotated[ParallelArg, Field(description="Hosts running at once (default 50).")] = 50,
        batch_size: BatchSizeArg = None,
        stop_after_failures: Annotated[
            StopArg,
            Field(
                description="Once this many hosts failed (failed, timed_out or error), start no further "
                "batch; the rest are skipped."
            ),
        ] = None,
        working_directory: WorkingDirectoryArg = None,
        sudo: SudoArg = False,
        reason: BatchReasonArg = None,
        response_format: BatchFormatArg = "markdown",
    ) -> Annotated[CallToolResult, ExecuteManyResult]:
        """Run one shell command on many hosts in parallel (host names, or a tag) and get counts per status,
        outputs grouped (identical exit status, stdout and stderr shown once) and one result per host.
        batch_size runs consecutive batches (the first is the canary); stop_after_failures stops starting
        batches once that many hosts failed. Each host is authorized and audited alone."""
        caller = self.tools.caller(ctx)
        seconds = checked_timeout(timeout)
        if any(ord(c) < 32 and c not in "\t\n\r" for c in command):
            raise ToolError("command contains a control character; remove it")
        for name, text in (("command", command), ("working_directory", working_directory or "")):
            if not settings.ALLOW_INVISIBLE_CHARACTERS and (hidden := visible.hidden_characters(text)):
                raise ToolError(visible.refusal(name, hidden))
        if (hosts is None) == (tag is None):
            raise ToolError("give exactly one of hosts or tag")
        if hosts is not None and any("\x00" in h for h in hosts):
            raise ToolError("hosts contains a NUL byte; remove it")
        if hosts is not None and not hosts:
            raise ToolError("hosts is empty; name at least one host")
        own_client(caller)
        spec = CommandSpec(command, working_directory, seconds, None, sudo)
        plan = Plan(max_parallel=max_parallel, batch_size=batch_size, stop_after_failures=stop_after_failures)
        loop = asyncio.get_running_loop()

        report = hosts_done_reporter(ctx)

        cancelled = threading.Event()
        started: list[fleet.Batch] = []

        def notify(message: str) -> None:
            # While waiting for an approval: the hosts done so far (refused ones), never going back.
            done, total = (started[0].done, started[0].total) if started else (0, None)
            asyncio.run_coroutine_threadsafe(ctx.report_progress(done, total, message), loop)

        def work() -> ExecuteManyResult:
            op = RunCommand(spec, reason=reason or "")
            try:
                outcome = fleet.run_batch(
                    caller,
                    op,
                    hosts=hosts,
                    tag=tag,
                    plan=plan,
                    progress=report,
                    cancelled=cancelled,
                    on_start=started.append,
                    approver=Asker(caller, spec, reason or "", plan, notify, cancelled),
                )
            except BatchRefused as exc:
                raise ToolError(str(exc)) from None
            except DatabaseUnavailable as exc:
                raise ToolError(fleet.refuse_unchecked(caller, op, hosts, tag, exc)) from None
            return result_of(command, outcome)

        def on_cancel() -> None:
            cancelled.set()
            for batch in started:
                batch.cancel()

        from sshcontrol.mcp.tools import serve

        return await serve(work, render, response_format, on_cancel=on_cancel)


def register(server: MCPServer, tools: Tools) -> None:
    from sshcontrol.mcp.tools import describe, hints, offered_only, refusing_nul

    fleet_tools = FleetTools(tools)
    fn = fleet_tools.ssh_execute_many
    server.add_tool(
        observed(offered_only(tools, fn.__name__, refusing_nul(fn))),
        name=fn.__name__,
        title="Run a command on many hosts over SSH",
        description=describe(fn),
        annotations=hints(False, True, False, True),
    )
