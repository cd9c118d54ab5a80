"""The job tools: start a command in the background, follow it, cancel it, page its output.

A job is bound to the client that started it: to any other client its id answers exactly
as a random id does ("unknown job_id"). ``ssh_start_job`` goes through ``host_call`` as
``ssh_execute`` does (grants, command rules, approvals, the sudo rule, one audit row); the
rest read the job's row and its kept output, which is cleaned for the model
(``audit/output_hygiene.py``) like any command output. ``run_in_foreground`` is
``ssh_execute``'s side of the same mechanism: a command still running at its foreground
limit is answered with the output so far and the job's id.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Literal

from django.conf import settings
from django.utils import timezone
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import Field

from audit.output_hygiene import Cleaned, clean, plain
from hosts import approvals, visible
from hosts.access import Permission
from hosts.access_models import ApprovalRequest
from hosts.policy import Verdict
from sshcontrol import jobrunner, jobs
from sshcontrol.caller import Caller
from sshcontrol.dbretry import complete_eventually, retrying
from sshcontrol.dispatch import get_dispatcher
from sshcontrol.hostcall import AuditFields, HostCall, host_call
from sshcontrol.mcp import job_render
from sshcontrol.mcp.approval_flow import await_decision
from sshcontrol.mcp.approved_runs import checked_timeout
from sshcontrol.mcp.arguments import (
    CommandArg,
    FormatArg,
    HostArg,
    ReasonArg,
    SessionIdArg,
    StdinArg,
    SudoArg,
    TimeoutArg,
    WorkingDirectoryArg,
)
from sshcontrol.mcp.identity import own_client
from sshcontrol.mcp.job_schemas import (
    CancelResult,
    JobInfo,
    JobList,
    JobStarted,
    JobStatus,
    OutputChunk,
    ReadOutputResult,
)
from sshcontrol.mcp.schemas import ExecuteResult, PendingApproval, warnings_of
from sshcontrol.models import Job
from sshcontrol.taskspec import (
    CommandSpec,
    DispatchError,
    JobTicket,
    OutputPage,
    ProgressFn,
    ReadSpec,
    StillRunning,
)

if TYPE_CHECKING:
    from sshcontrol.mcp.tools import Tools

DEFAULT_PAGE_BYTES = 16 << 10
# How long ssh_start_job waits for the embedded runner to connect and start the command,
# and ssh_cancel_job for the job to end, before answering with the state so far.
START_WAIT_SECONDS = 30.0
CANCEL_WAIT_SECONDS = 15.0
POLL_SECONDS = 0.1

JobIdArg = Annotated[
    str, Field(min_length=1, max_length=64, description="A job_id from ssh_start_job or ssh_execute.")
]
OffsetArg = Annotated[
    int, Field(ge=0, le=2**62, description="Byte offset to read from (the next_offset you were given).")
]
MaxBytesArg = Annotated[
    int | None,
    Field(
        ge=1,
        description=f"Most bytes per stream to return (default {DEFAULT_PAGE_BYTES}; capped by the server).",
    ),
]


def foreground_limit(asked: float | None) -> float:
    """Seconds ssh_execute waits before a command still running becomes a job; refused above the maximum."""
    limit = float(settings.MAX_FOREGROUND_SECONDS)
    seconds = float(settings.FOREGROUND_SECONDS) if asked is None else asked
    if seconds > limit:
        raise ToolError(
            f"foreground_seconds {seconds:g} is above the maximum of {limit:g} s "
            "(SSHCONTROL_MAX_FOREGROUND_SECONDS)"
        )
    return seconds


def page_size(asked: int | None) -> int:
    limit = int(settings.READ_OUTPUT_MAX_BYTES)
    if asked is not None and asked > limit:
        raise ToolError(
            f"max_bytes {asked} is above the maximum of {limit} (SSHCONTROL_READ_OUTPUT_MAX_BYTES)"
        )
    return asked or min(DEFAULT_PAGE_BYTES, limit)


def check_command(command: str, working_directory: str | None) -> None:
    """ssh_execute's refusals of text the rules and an admin would read differently from the shell."""
    if any(ord(c) < 32 and c not in "\t\n\r" for c in command):
        raise ToolError("command contains a control character; remove it")
    for name, text in (("command", command), ("working_directory", working_directory or "")):
        if not settings.ALLOW_INVISIBLE_CHARACTERS and (hidden := visible.hidden_characters(text)):
            raise ToolError(visible.refusal(name, hidden))


def _iso(value: dt.datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def job_hint(job_id: str, stdout_next: int, stderr_next: int) -> str:
    return (
        f"The command is still running as background job {job_id}: call ssh_job_status with "
        f"job_id={job_id!r}, since_offset={stdout_next}, stderr_offset={stderr_next} for its state and "
        "new output."
    )


# -- ssh_execute's foreground limit -----------------------------------------------------------


def run_in_foreground(
    call: HostCall,
    spec: CommandSpec,
    caller: Caller,
    foreground: float,
    job_id: str,
    progress: ProgressFn | None,
) -> ExecuteResult:
    """Run the command, waiting up to ``foreground`` s; still running, it goes on as job ``job_id``."""
    ticket = JobTicket(job_id, foreground, caller.actor, caller.client_id)
    done = call.run_job(spec, ticket, progress=progress)
    if isinstance(done, StillRunning):
        return became_job(call.session_id, call.host.name, spec.command, done, call.event_id)
    return ExecuteResult.of(
        call.session_id,
        call.host.name,
        spec.command,
        done.run,
        call.event_id,
        output_id=done.output_id or None,
    )


def became_job(session_id: str, host: str, command: str, still: StillRunning, audit_id: int) -> ExecuteResult:
    stdout, stderr = clean(still.stdout), clean(still.stderr)
    return ExecuteResult(
        session_id=session_id,
        host=host,
        command=command,
        exit_status=None,
        signal=None,
        stdout=stdout.text,
        stderr=stderr.text,
        stdout_bytes=still.stdout_bytes,
        stderr_bytes=still.stderr_bytes,
        stdout_truncated=still.stdout_next_offset < still.stdout_bytes,
        stderr_truncated=still.stderr_next_offset < still.stderr_bytes,
        timed_out=False,
        duration_ms=still.duration_ms,
        audit_id=audit_id,
        output_warnings=warnings_of("stdout", stdout) + warnings_of("stderr", stderr),
        redactions=stdout.redactions + stderr.redactions,
        still_running=True,
        job_id=still.job_id,
        note=job_hint(still.job_id, still.stdout_next_offset, still.stderr_next_offset),
    )


# -- reading a job's output -------------------------------------------------------------------


def own_job(caller: Caller, job_id: str) -> Job:
    """The caller's job; another client's answers as a random id does."""
    client_id = own_client(caller)
    job = retrying(lambda: Job.objects.of_client(client_id).filter(job_id=job_id).first(), "reading the job")
    if job is None:
        raise ToolError(f"unknown job_id {job_id!r}")
    return job


# A finished job's row no longer changes (only its removal at expiry, after which its output
# is gone too), and a model paging through a large output asks for it once per page: it is
# kept here for this long instead of queried again (a third of a small page's cost).
_FINISHED_SECONDS = 30.0
_finished: dict[tuple[int, str], tuple[float, Job]] = {}
_finished_lock = threading.Lock()


def readable_job(caller: Caller, output_id: str) -> Job:
    """``own_job`` for ``ssh_read_output``, a finished job's row remembered for a while."""
    key, now = (own_client(caller), output_id), time.monotonic()
    with _finished_lock:
        known = _finished.get(key)
        if known is not None and now - known[0] < _FINISHED_SECONDS:
            return known[1]
    job = own_job(caller, output_id)
    if job.state != Job.State.RUNNING:
        with _finished_lock:
            for stale in [k for k, (at, _) in _finished.items() if now - at >= _FINISHED_SECONDS]:
                del _finished[stale]
            _finished[key] = (now, job)
    return job


def read_chunk(
    job: Job, stream: Literal["stdout", "stderr"], offset: int, max_bytes: int
) -> tuple[OutputChunk, Cleaned, str]:
    """A page of the job's output from wherever it is kept, cleaned; and why there is none, if so."""
    spec = ReadSpec(job.job_id, stream, offset, max_bytes, job.host_id)
    total = job.stdout_bytes if stream == "stdout" else job.stderr_bytes
    try:
        got: OutputPage = get_dispatcher().read_output(job.holder, spec)
    except DispatchError as exc:
        shown = Cleaned("")
        chunk = OutputChunk(
            text="", offset=offset, next_offset=offset, total=total, complete=job.state != Job.State.RUNNING
        )
        return chunk, shown, f"its {stream} cannot be read: {exc.message}"
    shown = plain(got.text) if got.plain else clean(got.text, redacted=True)  # jobs.page redacted it
    chunk = OutputChunk(
        text=shown.text,
        offset=got.offset,
        next_offset=got.next_offset,
        total=got.total,
        complete=got.complete,
        skipped=got.skipped,
    )
    return chunk, shown, ""


def status_of(job: Job, since_offset: int, stderr_offset: int, max_bytes: int) -> JobStatus:
    out, out_shown, out_problem = read_chunk(job, "stdout", since_offset, max_bytes)
    err, err_shown, err_problem = read_chunk(job, "stderr", stderr_offset, max_bytes)
    end = job.finished_at or timezone.now()
    notes = [p for p in (out_problem, err_problem) if p]
    if job.state == Job.State.RUNNING:
        notes.append(
            f"Still running: call ssh_job_status again with since_offset={out.next_offset}, "
            f"stderr_offset={err.next_offset}."
        )
    elif not (out.complete and err.complete) and not notes:
        notes.append(
            f"It ended; more output is kept: call ssh_job_status again with since_offset={out.next_offset}, "
            f"stderr_offset={err.next_offset} (or ssh_read_output)."
        )
    return JobStatus(
        job_id=job.job_id,
        state=job.state,  # type: ignore[arg-type]
        host=job.host_name,
        session_id=job.session_id,
        command=job.command,
        exit_status=job.exit_status,
        signal=job.signal or None,
        error=job.error,
        started_at=_iso(job.started_at),
        finished_at=_iso(job.finished_at) or None,
        duration_s=round((end - job.started_at).total_seconds(), 3),
        expires_at=_iso(job.expires_at) or None,
        cancel_requested_by=job.cancel_requested_by,
        stdout=out,
        stderr=err,
        output_warnings=warnings_of("stdout", out_shown) + warnings_of("stderr", err_shown),
        redactions=out_shown.redactions + err_shown.redactions,
        audit_id=job.audit_event_id,
        note=" ".join(notes),
    )


def _wait_for(job_id: str, done: Callable[[Job], object], seconds: float) -> Job:
    """Read the job's row until ``done(job)`` or ``seconds`` pass; the last row read."""
    deadline = time.monotonic() + seconds
    while True:
        job = retrying(lambda: Job.objects.get(job_id=job_id), "reading the job")
        if done(job) or time.monotonic() >= deadline:
            return job
        time.sleep(POLL_SECONDS)


class JobTools:
    """The job tools, sharing the transport and caller of ``mcp/tools.py``'s ``Tools``."""

    def __init__(self, tools: Tools) -> None:
        self.tools = tools

    # -- ssh_start_job ---------------------------------------------------------------------------

    async def ssh_start_job(
        self,
        ctx: Context,
        command: CommandArg,
        session_id: SessionIdArg = None,
        host: Annotated[HostArg, Field(description="A registered host name (instead of session_id).")] = None,
        working_directory: WorkingDirectoryArg = None,
        timeout: Annotated[
            TimeoutArg, Field(description="Seconds before the job is killed (default 60).")
        ] = None,
        stdin: StdinArg = None,
        sudo: SudoArg = False,
        reason: ReasonArg = None,
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, JobStarted]:
        """Start a long command in the background (builds, upgrades, backups) and return its job_id at once.
        Follow it with ssh_job_status (state and new output by offset), stop it with ssh_cancel_job. Same
        rules as ssh_execute (grants, approvals, sudo); the job belongs to you alone. Audited."""
        from sshcontrol.mcp.tools import serve

        caller = self.tools.caller(ctx)
        seconds = checked_timeout(timeout)
        check_command(command, working_directory)
        cancelled = threading.Event()
        notify, _progress = self.tools.notifiers(ctx)
        spec = CommandSpec(command, working_directory, seconds, stdin, sudo)
        job_id = jobs.new_job_id()

        def work() -> JobStarted:
            with host_call(
                "ssh_start_job",
                caller,
                session_id=session_id,
                host_name=host,
                permission=Permission.EXECUTE,
                audit=AuditFields.of(spec),
                sudo=sudo,
            ) as call:
                if call.decision is not None and call.decision.verdict is Verdict.APPROVE:
                    approval = await_decision(call, spec, reason or "", notify, cancelled)
                    if approval.state == ApprovalRequest.State.PENDING:
                        return JobStarted(
                            state="pending",
                            job_id=None,
                            host=call.host.name,
                            session_id=call.open_session_id,
                            command=command,
                            audit_id=call.event_id,
                            pending_approval=PendingApproval(
                                request_id=approval.pk,
                                expires_at=approval.expires_at.isoformat(),
                                next_arguments={"request_id": approval.pk},
                            ),
                            next_step=f"Call ssh_approval_status with request_id={approval.pk} later; once "
                            "approved it runs the command (in the foreground, like ssh_execute).",
                        )
                    event_id, done = call.event_id, approval
                    complete_eventually(
                        lambda: approvals.finish(done, event_id),
                        f"recording approval request {done.pk} as run",
                    )
                return self._start(call, spec, caller, job_id)

        return await serve(work, job_render.started, response_format, on_cancel=cancelled.set)

    def _start(self, call: HostCall, spec: CommandSpec, caller: Caller, job_id: str) -> JobStarted:
        ticket = JobTicket(job_id, 0.0, caller.actor, caller.client_id, call.open_session_id)
        if get_dispatcher().embedded:
            # A process of its own, so the job outlives this server (sshcontrol/jobrunner.py).
            jobs.record(
                ticket,
                spec,
                host_id=call.host.pk,
                host_name=call.host.name,
                audit_event_id=call.event_id,
                holder="",
            )
            call.hand_over()
            jobrunner.spawn(job_id, spec.stdin)
            job = _wait_for(job_id, lambda j: j.holder or j.state != Job.State.RUNNING, START_WAIT_SECONDS)
            if job.state != Job.State.RUNNING and job.error:
                raise ToolError(f"the job could not start: {job.error} (audit row {call.event_id})")
            session_id = ""
        else:
            done = call.run_job(spec, ticket)
            assert isinstance(done, StillRunning)  # a foreground of 0 always makes a job
            session_id = call.session_id
        return JobStarted(
            state="running",
            job_id=job_id,
            host=call.host.name,
            session_id=session_id,
            command=spec.command,
            audit_id=call.event_id,
            next_step=f"Call ssh_job_status with job_id={job_id!r} for its state and output.",
        )

    # -- ssh_job_status --------------------------------------------------------------------------

    async def ssh_job_status(
        self,
        ctx: Context,
        job_id: JobIdArg,
        since_offset: OffsetArg = 0,
        stderr_offset: OffsetArg = 0,
        max_bytes: MaxBytesArg = None,
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, JobStatus]:
        """A job's state (running, exited, timed_out, cancelled, lost), exit status, duration, and its
        output from since_offset (stdout) and stderr_offset (stderr), with the next offsets to ask for.
        Poll it until the state is no longer running and both streams are complete."""
        from sshcontrol.mcp.tools import serve

        caller = self.tools.caller(ctx)
        size = page_size(max_bytes)

        def work() -> JobStatus:
            return status_of(own_job(caller, job_id), since_offset, stderr_offset, size)

        return await serve(work, job_render.status, response_format)

    # -- ssh_cancel_job --------------------------------------------------------------------------

    async def ssh_cancel_job(
        self, ctx: Context, job_id: JobIdArg, response_format: FormatArg = "markdown"
    ) -> Annotated[CallToolResult, CancelResult]:
        """Cancel a running job: its remote process group is killed (TERM, then KILL). Its audit row
        records who cancelled it."""
        from sshcontrol.mcp.tools import serve

        caller = self.tools.caller(ctx)

        def work() -> CancelResult:
            job = own_job(caller, job_id)
            if job.state != Job.State.RUNNING:
                return CancelResult(
                    job_id=job.job_id,
                    state=job.state,  # type: ignore[arg-type]
                    cancel_requested=False,
                    note=f"The job already ended ({job.state}).",
                )
            asked = retrying(lambda: jobs.request_cancel(job, caller.actor), "asking for the cancellation")
            job = _wait_for(job.job_id, lambda j: j.state != Job.State.RUNNING, CANCEL_WAIT_SECONDS)
            note = (
                f"The job ended ({job.state})."
                if job.state != Job.State.RUNNING
                else "Cancellation requested; the job's processes are being killed: ssh_job_status shows "
                "when it ended."
            )
            return CancelResult(job_id=job.job_id, state=job.state, cancel_requested=asked, note=note)  # type: ignore[arg-type]

        return await serve(work, job_render.cancelled, response_format)

    # -- ssh_list_jobs ---------------------------------------------------------------------------

    async def ssh_list_jobs(
        self,
        ctx: Context,
        state: Annotated[
            Literal["running", "exited", "timed_out", "cancelled", "lost"] | None,
            Field(description="Only jobs in this state."),
        ] = None,
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, JobList]:
        """List your background jobs, newest first: id, state, host, command, exit status and output size."""
        from sshcontrol.mcp.tools import serve

        caller = self.tools.caller(ctx)

        def work() -> JobList:
            client_id = own_client(caller)

            def rows() -> list[Job]:
                mine = Job.objects.of_client(client_id)
                return list((mine.filter(state=state) if state else mine)[:200])

            infos = [
                JobInfo(
                    job_id=j.job_id,
                    state=j.state,  # type: ignore[arg-type]
                    host=j.host_name,
                    command=j.command,
                    exit_status=j.exit_status,
                    started_at=_iso(j.started_at),
                    finished_at=_iso(j.finished_at) or None,
                    stdout_bytes=j.stdout_bytes,
                    stderr_bytes=j.stderr_bytes,
                )
                for j in retrying(rows, "listing your jobs")
            ]
            return JobList(jobs=infos, count=len(infos))

        return await serve(work, job_render.listing, response_format)

    # -- ssh_read_output -------------------------------------------------------------------------

    async def ssh_read_output(
        self,
        ctx: Context,
        output_id: Annotated[
            str, Field(min_length=1, max_length=64, description="An output_id (a job's job_id is one).")
        ],
        stream: Annotated[Literal["stdout", "stderr"], Field(description="'stdout' or 'stderr'.")] = "stdout",
        offset: OffsetArg = 0,
        max_bytes: MaxBytesArg = None,
        response_format: FormatArg = "markdown",
    ) -> Annotated[CallToolResult, ReadOutputResult]:
        """Page through kept output by byte offset: returns the text from offset and the next_offset to ask
        for; complete is true at the end of a finished command's stream. A page larger than the output
        budget is whole in the structured content; the text then shows its head and tail."""
        from sshcontrol.mcp.tools import serve

        caller = self.tools.caller(ctx)
        size = page_size(max_bytes)

        def work() -> ReadOutputResult:
            try:
                job = readable_job(caller, output_id)
            except ToolError:
                raise ToolError(f"unknown output_id {output_id!r}") from None
            chunk, shown, problem = read_chunk(job, stream, offset, size)
            if problem:
                raise ToolError(problem)
            return ReadOutputResult(
                output_id=output_id,
                stream=stream,
                chunk=chunk,
                output_warnings=warnings_of(stream, shown),
                redactions=shown.redactions,
            )

        return await serve(work, job_render.read_output, response_format)
