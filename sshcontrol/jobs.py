"""Background jobs: commands that go on after their call returned, where their session is held.

One mechanism serves ``ssh_start_job`` and an ``ssh_execute`` that outlives its foreground
limit. The holder (``sshcontrol.tasks.execute_job``) runs the command in a thread of its own
(:class:`JobRun`) with its output kept on disk (``sshcontrol.outputs``) and waits up to the
foreground limit. A command that ends by then is an ordinary result; one still running
becomes a job: its ``Job`` row is written (bound to the calling client), its audit row is
handed over to this process, and the call gets ``StillRunning``. From then on the job's
thread owns the command: every ``PROGRESS_SECONDS`` it records the byte counts and reads
the row for a cancel request, and when the command ends it completes the job row and the
call's one audit row.

On the embedded default ``ssh_start_job`` runs the job in a detached runner process
(``sshcontrol/jobrunner.py``) so it survives a restart of ``mcp_serve``; a foreground
command that became a job stays in ``mcp_serve`` (a running channel cannot move).

A job whose holder died is marked ``lost`` by whichever process sweeps (``sweep_lost``),
its audit row ``interrupted``; the orphan sweep (``sshcontrol/orphans.py``) kills its remote
process group from the ``RemoteCommand`` row. Finished jobs and their output are removed
``SSHCONTROL_JOB_RETENTION_SECONDS`` after they ended (``prune``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import secrets as pysecrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from audit import writer
from audit.models import AuditEvent
from audit.output_hygiene import is_plain
from audit.process import current_process_key
from audit.redaction import redact
from audit.writer import Completion
from sshcontrol import durable, holders, outputs
from sshcontrol.dbretry import DatabaseUnavailable, retrying
from sshcontrol.models import Job, SshSession
from sshcontrol.taskspec import CommandSpec, JobTicket, OutputPage, ProgressFn, StillRunning
from sshlib.capture import OutputSink, Stream
from sshlib.execute import ExecResult
from sshlib.sessions import CLIENT_CANCEL, CancelEvent, registry

log = logging.getLogger(__name__)

Status = AuditEvent.Status
State = Job.State

JOB_PREFIX = "job_"
# How often a running job records its byte counts and looks for a cancel request.
PROGRESS_SECONDS = 1.0
# The output so far that comes back with StillRunning, per stream.
FIRST_PAGE_BYTES = 16 << 10
# A job whose runner never reported in is lost after this long.
UNCLAIMED_SECONDS = 120.0


def new_job_id() -> str:
    """Unguessable (192 random bits): the handle is a name, but nobody should be able to guess one."""
    return JOB_PREFIX + pysecrets.token_urlsafe(24)


def expiry() -> dt.datetime:
    return timezone.now() + dt.timedelta(seconds=float(settings.JOB_RETENTION_SECONDS))


def cancelled_by(who: str) -> str:
    return f"cancelled by {who}"


def record(
    ticket: JobTicket,
    spec: CommandSpec,
    *,
    host_id: int | None,
    host_name: str,
    audit_event_id: int | None,
    holder: str | None = None,
) -> None:
    """Write the job's row (once: a retried INSERT whose reply was lost must not write it twice)."""
    retrying(
        lambda: Job.objects.get_or_create(
            job_id=ticket.job_id,
            defaults={
                "client_id": ticket.client_id,
                "actor": ticket.actor[:200],
                "host_id": host_id,
                "host_name": host_name[:100],
                "session_id": ticket.session_id[:64],
                "command": spec.command,
                "working_directory": spec.working_directory or "",
                "timeout": spec.timeout,
                "sudo": spec.sudo,
                "audit_event_id": audit_event_id,
                "holder": holders.current_worker() if holder is None else holder,
            },
        ),
        "recording the job",
    )


def claim(job_id: str, audit_event_id: int | None) -> None:
    """This process runs the job from now on: the job row names it, and so does the audit row.

    The audit row was opened by the process that took the call; if that process stops (an
    ``mcp_serve`` restart) its start must not mark a row still being worked on ``interrupted``.
    """
    worker = holders.current_worker()
    retrying(lambda: Job.objects.filter(job_id=job_id).update(holder=worker), "recording the job's holder")
    if audit_event_id is not None:
        event_id = audit_event_id
        retrying(lambda: writer.hand_over(event_id, current_process_key()), "handing the audit row over")


def first_page(job_id: str, stream: Stream, secrets: tuple[str, ...]) -> OutputPage:
    return page(job_id, stream, 0, FIRST_PAGE_BYTES, secrets)


def page(output_id: str, stream: Stream, offset: int, max_bytes: int, secrets: tuple[str, ...]) -> OutputPage:
    """A page of a kept output from this process's store, ending on a whole UTF-8 character.

    Raises ``outputs.OutputNotFound``. The text is redacted of ``secrets`` (a secret split
    across two pages is not: see docs/security.md); a page with nothing to redact or clean
    (most output) is found so in one pass over its bytes, and marked ``plain``.
    """
    got = outputs.read(output_id, stream, offset, max_bytes)
    data = got.data
    if not got.complete and data:
        data = data[: len(data) - _partial_tail(data)]
    plain = is_plain(data, secrets)
    text = data.decode("ascii") if plain else redact(data.decode("utf-8", errors="replace"), secrets)
    end = got.offset + len(data)
    return OutputPage(
        text=text,
        offset=got.offset,
        next_offset=end,
        total=got.total,
        complete=got.complete and end == got.total,
        skipped=got.skipped,
        plain=plain,
    )


def _partial_tail(data: bytes) -> int:
    """How many bytes at the end of ``data`` start a UTF-8 character that is not complete yet."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): does its character fit?
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            return back if need > back else 0
    return 0


# -- running ----------------------------------------------------------------------------------


def keep_for_paging(context: JobContext, result: ExecResult) -> str:
    """A command that ended in the foreground with more output than a result carries: its output id.

    The kept output is bound to the caller's client by a job row in its final state (the
    call completes its own audit row), so ``ssh_read_output`` finds it and nobody else can.
    """
    c = context
    record(c.ticket, c.spec, host_id=c.host_id, host_name=c.host_name, audit_event_id=c.audit_event_id)
    state = State.TIMED_OUT if result.timed_out else State.CANCELLED if result.cancelled else State.EXITED
    job_id = c.ticket.job_id
    retrying(
        lambda: Job.objects.finish(
            job_id,
            state=state,
            exit_status=result.exit_status,
            signal=result.signal or "",
            error="",
            stdout_bytes=result.stdout_bytes,
            stderr_bytes=result.stderr_bytes,
            expires_at=expiry(),
        ),
        "recording the kept output",
    )
    return job_id


@dataclass(frozen=True)
class JobContext:
    """What a job's thread needs to finish it on its own: where it runs and what it may not show."""

    ticket: JobTicket
    spec: CommandSpec
    host_id: int | None
    host_name: str
    session_id: str
    audit_event_id: int | None
    secrets: tuple[str, ...]


class JobRun:
    """One command in a thread of its own, its output kept; finished by the caller or by the job.

    ``run(cancel, sink, progress)`` is the command (``sshlib.execute.run_command`` on the
    session). Until ``become_job`` the waiting call owns the outcome; after it, the job does.
    """

    def __init__(
        self,
        context: JobContext,
        run: Callable[[CancelEvent, OutputSink, ProgressFn], ExecResult],
        progress: ProgressFn | None = None,
    ) -> None:
        self.context = context
        # A job's output goes to disk (other processes read it: a job runner's is read by
        # mcp_serve); a command that may still end in the foreground spills only once it is
        # large or becomes a job (``become_job``), sparing every short command the files.
        spill_after = 0 if context.ticket.foreground <= 0 else outputs.SPILL_AFTER
        self.kept = outputs.KeptOutput(context.ticket.job_id, spill_after=spill_after)
        self._run = run
        self._progress = progress
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._converted = False
        self._finish_here = False
        # Set once the job's row is written: the job must not finish a row not there yet.
        self._recorded = threading.Event()
        self.result: ExecResult | None = None
        self.error: BaseException | None = None
        self.cancel: CancelEvent | None = None
        self.started = time.perf_counter()
        self._thread = threading.Thread(
            target=self._main, name=f"sshcontrol-job-{context.ticket.job_id[:12]}", daemon=True
        )

    def start(self) -> JobRun:
        self._thread.start()
        return self

    def run_as_job(self) -> None:
        """The job's from the start (a detached runner): watch its row, finish it, return when done."""
        self._converted = True
        self._recorded.set()
        self._thread.start()
        self._watch()
        self._thread.join()

    def _tell(self, out_bytes: int, err_bytes: int) -> None:
        # Progress reaches the caller only while it waits; a job reports through its row.
        if self._progress is not None and not self._converted:
            self._progress(out_bytes, err_bytes)

    def _main(self) -> None:
        with registry.running_call(self.context.ticket.job_id) as cancel:
            self.cancel = cancel
            try:
                self.result = self._run(cancel, self.kept, self._tell)
            except BaseException as exc:  # handed to whoever owns the outcome
                self.error = exc
            finally:
                self.kept.close()
        with self._lock:
            self._done.set()
            converted = self._converted
        try:
            if converted:
                self._recorded.wait()
                close_old_connections()
                self.finish()
        finally:
            # The thread ends: its database connections would otherwise stay open until collected
            # (and keep a test database from being dropped).
            connections.close_all()

    def wait(self, seconds: float) -> bool:
        """Wait for the command up to ``seconds``; True if it ended (the caller owns the outcome).

        With ``seconds`` 0 (``ssh_start_job``) it is a job whatever happens: never True.
        """
        if seconds > 0 and self._done.wait(seconds):
            return True
        with self._lock:
            if self._done.is_set() and seconds > 0:
                return True
            self._converted = True
            self._finish_here = self._done.is_set()  # ended before it was a job: nobody else finishes it
        return False

    def outcome(self) -> ExecResult:
        """The ended command's result, or its failure raised (only for a command that ended in time).

        Its kept output is on disk (for paging) only when it was too large for a result.
        """
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    # -- the job's side -------------------------------------------------------------------------

    def become_job(self) -> StillRunning:
        """Record the job (row, holder, audit row) and start watching it; the call's answer."""
        c = self.context
        self.kept.spill()
        try:
            record(
                c.ticket, c.spec, host_id=c.host_id, host_name=c.host_name, audit_event_id=c.audit_event_id
            )
            claim(c.ticket.job_id, c.audit_event_id)
            answer = self.still_running()
        finally:
            self._recorded.set()
        if self._finish_here:
            self.finish()
        else:
            threading.Thread(
                target=self._watch, name=f"sshcontrol-jobwatch-{c.ticket.job_id[:12]}", daemon=True
            ).start()
        return answer

    def still_running(self) -> StillRunning:
        c = self.context
        out = first_page(c.ticket.job_id, "stdout", c.secrets)
        err = first_page(c.ticket.job_id, "stderr", c.secrets)
        out_bytes, err_bytes = self.kept.totals()
        return StillRunning(
            job_id=c.ticket.job_id,
            stdout=out.text,
            stderr=err.text,
            stdout_bytes=out_bytes,
            stderr_bytes=err_bytes,
            stdout_next_offset=out.next_offset,
            stderr_next_offset=err.next_offset,
            duration_ms=(time.perf_counter() - self.started) * 1000.0,
        )

    def _watch(self) -> None:
        """Byte counts into the row, and the row's cancel request into the command, until it ends."""
        job_id = self.context.ticket.job_id
        reported = (-1, -1)
        try:
            while not self._done.wait(PROGRESS_SECONDS):
                counts = self.kept.totals()
                try:
                    if counts != reported:
                        Job.objects.record_progress(job_id, *counts)
                        reported = counts
                    who = (
                        Job.objects.filter(job_id=job_id, cancel_requested_at__isnull=False)
                        .values_list("cancel_requested_by", flat=True)
                        .first()
                    )
                except Exception:  # the database away for a moment: the next round tries again
                    log.warning("job %s: could not update its row", job_id[:12], exc_info=True)
                    close_old_connections()
                    continue
                if who is not None and self.cancel is not None:
                    self.cancel.cancel(cancelled_by(who or "?"))
        finally:
            connections.close_all()

    def finish(self) -> None:
        """Complete the job row and the call's audit row from how the command ended."""
        finish_job(self.context, self.result, self.error, self.cancel.reason if self.cancel else "")


def finish_job(
    context: JobContext, result: ExecResult | None, error: BaseException | None, cancel_reason: str
) -> None:
    c = context
    if result is not None:
        shown = replace(
            result, stdout=redact(result.stdout, c.secrets), stderr=redact(result.stderr, c.secrets)
        )
        if result.timed_out:
            state, status, why = State.TIMED_OUT, Status.TIMEOUT, ""
        elif result.cancelled:
            state, status, why = State.CANCELLED, Status.INTERRUPTED, cancel_reason or CLIENT_CANCEL
        else:
            state, status, why = State.EXITED, Status.OK, ""
        outcome = Completion.of_command(
            shown,
            status=status,
            error=why,
            session_id=c.session_id or None,
            details={"job_id": c.ticket.job_id},
        )
        counts = (result.stdout_bytes, result.stderr_bytes)
        exit_status, signal = result.exit_status, result.signal or ""
    else:
        why = _failure_text(error)
        state, status = State.LOST, Status.ERROR
        outcome = Completion(status, c.session_id or None, error=why, details={"job_id": c.ticket.job_id})
        counts, exit_status, signal = (0, 0), None, ""
    # The audit row first: a job seen ended has its audit row complete.
    if c.audit_event_id is not None:
        event_id = c.audit_event_id
        durable.complete(event_id, lambda: writer.finish(event_id, outcome), outcome=outcome)
    job_id = c.ticket.job_id
    try:
        retrying(
            lambda: Job.objects.finish(
                job_id,
                state=state,
                exit_status=exit_status,
                signal=signal,
                error=why,
                stdout_bytes=counts[0],
                stderr_bytes=counts[1],
                expires_at=expiry(),
            ),
            "recording the job's end",
        )
    except DatabaseUnavailable:
        log.error("job %s ended (%s) but its row could not be updated", job_id[:12], state)
    if c.session_id:
        sid = c.session_id
        # Given up on, only the session's last use is out of date.
        with contextlib.suppress(DatabaseUnavailable):
            retrying(lambda: SshSession.objects.touch(sid, command_ran=True), "recording the session's use")


def _failure_text(error: BaseException | None) -> str:
    from sshcontrol.taskspec import DispatchError
    from sshlib.errors import SshError

    if isinstance(error, DispatchError):
        return error.message
    if isinstance(error, SshError):
        return str(error)
    log.error("job failed unexpectedly", exc_info=error)
    return "internal error; see the server log"


# -- the holder's death, cancelling, and the end of a job's life -------------------------------


def _holder_gone(holder: str) -> bool:
    if not holder:
        return False
    if holder.startswith(holders.EMBEDDED_PREFIX):
        return holders.worker_alive(holder) is False
    if holders.worker_alive(holder) is not False:
        return False
    from sshcontrol.orphans import answers_ping

    return not answers_ping(holder)


def sweep_lost() -> int:
    """Mark ``lost`` the running jobs whose holder is gone, with what is known; return how many.

    The audit row is completed ``interrupted`` (if nothing completed it yet). The remote
    process group is the orphan sweep's (its ``RemoteCommand`` row names the audit row).
    """
    handled = 0
    now = timezone.now()
    unclaimed_before = now - dt.timedelta(seconds=UNCLAIMED_SECONDS)
    for job in Job.objects.running().only("job_id", "holder", "audit_event_id", "started_at"):
        if job.holder == "" and job.started_at > unclaimed_before:
            continue
        if job.holder and not _holder_gone(job.holder):
            continue
        why = f"the process running it ({job.holder or 'a job runner that never started'}) stopped"
        # The audit row first, as a job's own end does (the writer completes a running row once).
        if job.audit_event_id is not None and not durable.finished(job.audit_event_id):
            writer.complete(
                job.audit_event_id, status=Status.INTERRUPTED, error=why, details={"job_id": job.job_id}
            )
        ended = Job.objects.filter(job_id=job.job_id, state=State.RUNNING).update(
            state=State.LOST, error=why, finished_at=now, expires_at=expiry()
        )
        if not ended:
            continue
        handled += 1
        log.warning("job %s is lost: %s", job.job_id[:12], why)
    return handled


def request_cancel(job: Job, who: str) -> bool:
    """Ask the job's holder to cancel it; a holder in this process is told at once."""
    asked = Job.objects.request_cancel(job.job_id, who) > 0
    registry.cancel(job.job_id, cancelled_by(who))
    return asked


def prune() -> int:
    """Remove finished jobs past their lifetime, with their kept output; return how many."""
    expired = list(
        Job.objects.exclude(state=State.RUNNING)
        .filter(expires_at__lt=timezone.now())
        .values_list("job_id", flat=True)
    )
    for job_id in expired:
        outputs.remove(job_id)
    Job.objects.filter(job_id__in=expired).delete()
    return len(expired)


def housekeeping() -> None:
    """One round of the sweepers: lost jobs, then expired ones (each failure logged, not raised)."""
    for step in (sweep_lost, prune):
        try:
            step()
        except Exception:
            log.exception("job housekeeping (%s) failed", step.__name__)
