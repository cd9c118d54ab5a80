"""Runtime state that must outlive one process: the SSH sessions and where they live."""

from __future__ import annotations

from typing import Any

from django.db import connection, models
from django.utils import timezone


class SshSessionQuerySet(models.QuerySet["SshSession"]):
    """Every change of a session's state goes through here, so none forgets a column."""

    def connected(self) -> SshSessionQuerySet:
        return self.filter(state=SshSession.State.CONNECTED)

    def record_opened(
        self,
        session_id: str,
        *,
        host_id: int,
        host_name: str,
        worker: str,
        actor: str,
        client_id: int | None,
        fingerprint: str,
    ) -> None:
        """A new session. A retried INSERT whose first reply was lost must not insert it twice."""
        self.get_or_create(
            session_id=session_id,
            defaults={
                "host_id": host_id,
                "host_name": host_name,
                "worker": worker,
                "opened_by": actor,
                "client_id": client_id,
                "host_key_fingerprint": fingerprint,
            },
        )

    def record_reopened(self, session_id: str, *, worker: str, fingerprint: str) -> int:
        """A known session re-created by ``worker`` after the process that held it died."""
        return self.filter(session_id=session_id).update(
            worker=worker,
            state=SshSession.State.CONNECTED,
            closed_at=None,
            close_reason="",
            last_used_at=timezone.now(),
            host_key_fingerprint=fingerprint,
        )

    def record_reused(self, session_id: str) -> int:
        return self.filter(session_id=session_id).update(
            last_used_at=timezone.now(), state=SshSession.State.CONNECTED
        )

    def mark_lost(self, reason: str) -> int:
        """These sessions' connections are gone (their holder stopped, or the link is dead)."""
        return self.connected().update(
            state=SshSession.State.LOST, closed_at=timezone.now(), close_reason=reason
        )

    def close(self, reason: str) -> int:
        return self.exclude(state=SshSession.State.CLOSED).update(
            state=SshSession.State.CLOSED, closed_at=timezone.now(), close_reason=reason
        )

    def touch(self, session_id: str, *, command_ran: bool) -> None:
        """Record a session's use: one UPDATE on every call, so written as plain SQL.

        The ORM would spend ten times the statement's cost compiling it (measured ~0.3 ms of
        a call's budget); the SQL is one table's columns, quoted by the backend.
        """
        ops = connection.ops
        table = ops.quote_name(SshSession._meta.db_table)
        last_used, state, count, sid = (
            ops.quote_name(c) for c in ("last_used_at", "state", "commands_run", "session_id")
        )
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET {last_used} = %s, {state} = %s, {count} = {count} + %s "  # noqa: S608
                f"WHERE {sid} = %s AND {state} <> %s",
                [
                    ops.adapt_datetimefield_value(timezone.now()),
                    SshSession.State.CONNECTED,
                    int(command_ran),
                    session_id,
                    SshSession.State.CLOSED,
                ],
            )

    def touch_many(self, session_ids: list[str]) -> None:
        """``touch`` for several sessions that each ran one command (a batch's hosts), in one UPDATE."""
        if not session_ids:
            return
        ops = connection.ops
        table = ops.quote_name(SshSession._meta.db_table)
        last_used, state, count, sid = (
            ops.quote_name(c) for c in ("last_used_at", "state", "commands_run", "session_id")
        )
        marks = ", ".join(["%s"] * len(session_ids))
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET {last_used} = %s, {state} = %s, {count} = {count} + 1 "  # noqa: S608
                f"WHERE {sid} IN ({marks}) AND {state} <> %s",
                [
                    ops.adapt_datetimefield_value(timezone.now()),
                    SshSession.State.CONNECTED,
                    *session_ids,
                    SshSession.State.CLOSED,
                ],
            )


class SshSession(models.Model):
    """An SSH session as the control plane sees it.

    The live connection sits in the memory of one process (``worker``): the MCP
    server itself on the embedded default, a Celery worker in distributed mode.
    This row lets any front-end process find it and lets the admin see it.
    """

    class State(models.TextChoices):
        CONNECTED = "connected", "Connected"
        LOST = "lost", "Lost"
        CLOSED = "closed", "Closed"

    session_id = models.CharField(max_length=64, unique=True)
    host = models.ForeignKey("hosts.Host", null=True, on_delete=models.SET_NULL, related_name="sessions")
    host_name = models.CharField(max_length=100)
    worker = models.CharField(max_length=200, help_text="Process holding the connection.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.CONNECTED, db_index=True)
    opened_by = models.CharField(max_length=200, blank=True, default="")
    # The client that owns the session: only it may address the session by id.
    client = models.ForeignKey(
        "hosts.McpClient", null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions"
    )
    opened_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    close_reason = models.CharField(max_length=200, blank=True, default="")
    commands_run = models.PositiveIntegerField(default=0)
    host_key_fingerprint = models.CharField(max_length=100, blank=True, default="")

    objects = SshSessionQuerySet.as_manager()

    class Meta:
        ordering = ["-opened_at"]
        verbose_name = "SSH session"

    def __str__(self) -> str:
        return f"{self.session_id} on {self.host_name} ({self.state})"


class WorkerHeartbeat(models.Model):
    """A Celery worker's sign of life, written every few seconds by the worker itself.

    The dispatcher routes a session's calls to the worker that holds it; when that
    worker's heartbeat goes stale (kill -9, lost machine) its sessions are lost and are
    re-opened on a live worker by the next call.
    """

    node = models.CharField(max_length=200, unique=True, help_text="Celery node name, e.g. w1@host.")
    hostname = models.CharField(max_length=200)
    pid = models.IntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now, db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    open_sessions = models.PositiveIntegerField(default=0)
    running_calls = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["node"]

    def __str__(self) -> str:
        return self.node


class RemoteCommand(models.Model):
    """A command a worker is running on a host, with the remote process group that runs it.

    Written when the remote shell reports its process group and deleted when the command
    ends. A row left behind belongs to a worker that died (kill -9, lost machine) while the
    command ran; closing a non-pty channel does not stop a remote command, so a surviving
    worker kills the group (``sshcontrol.orphans``) and audits it.
    """

    worker = models.CharField(max_length=200, db_index=True, help_text="Node running the command.")
    worker_process = models.CharField(max_length=200, help_text="machine:pid:start of that node's process.")
    session_id = models.CharField(max_length=64)
    host = models.ForeignKey("hosts.Host", null=True, on_delete=models.SET_NULL, related_name="+")
    pgid = models.IntegerField(help_text="Remote process group (the command's session leader).")
    audit_event_id = models.BigIntegerField(null=True, blank=True, help_text="The call's audit row.")
    started_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["started_at"]

    def __str__(self) -> str:
        return f"pgid {self.pgid} on {self.session_id} ({self.worker})"


class JobQuerySet(models.QuerySet["Job"]):
    """Every change of a job's state goes through here; a finished job is never rewritten."""

    def running(self) -> JobQuerySet:
        return self.filter(state=Job.State.RUNNING)

    def of_client(self, client_id: int) -> JobQuerySet:
        """The jobs a client may see: its own, never another's (to it those do not exist)."""
        return self.filter(client_id=client_id)

    def record_progress(self, job_id: str, stdout_bytes: int, stderr_bytes: int) -> int:
        return self.filter(job_id=job_id, state=Job.State.RUNNING).update(
            stdout_bytes=stdout_bytes, stderr_bytes=stderr_bytes
        )

    def finish(
        self,
        job_id: str,
        *,
        state: str,
        exit_status: int | None,
        signal: str,
        error: str,
        stdout_bytes: int,
        stderr_bytes: int,
        expires_at: Any,
    ) -> int:
        """The job ended (exited, timed out, cancelled, or found lost); 0 if it had already ended."""
        return self.filter(job_id=job_id, state=Job.State.RUNNING).update(
            state=state,
            exit_status=exit_status,
            signal=signal[:32],
            error=error[:500],
            stdout_bytes=stdout_bytes,
            stderr_bytes=stderr_bytes,
            finished_at=timezone.now(),
            expires_at=expires_at,
        )

    def request_cancel(self, job_id: str, by: str) -> int:
        """Ask the job's holder to cancel it (it polls the row); 0 if it is not running."""
        return self.filter(job_id=job_id, state=Job.State.RUNNING, cancel_requested_at__isnull=True).update(
            cancel_requested_by=by[:200], cancel_requested_at=timezone.now()
        )


class Job(models.Model):
    """A command that runs in the background, and its handle (``job_id``, also its ``output_id``).

    Started with ``ssh_start_job``, or an ``ssh_execute`` still running at its foreground
    limit. It runs where its session is held (``holder``: a worker, ``mcp_serve``, or the
    detached job runner of the embedded default) with its output kept on that process's
    disk (``sshcontrol.outputs``); this row is what every other process knows of it. It is
    bound to its client: to any other client it does not exist. One audit row per job
    (``audit_event_id``), completed when the job ends.
    """

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        EXITED = "exited", "Exited"
        TIMED_OUT = "timed_out", "Timed out"
        CANCELLED = "cancelled", "Cancelled"
        LOST = "lost", "Lost"

    job_id = models.CharField(max_length=64, primary_key=True)
    client = models.ForeignKey(
        "hosts.McpClient", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.CharField(max_length=200)
    host = models.ForeignKey("hosts.Host", null=True, on_delete=models.SET_NULL, related_name="+")
    host_name = models.CharField(max_length=100)
    session_id = models.CharField(max_length=64, blank=True, default="")
    command = models.TextField()
    working_directory = models.TextField(blank=True, default="")
    timeout = models.FloatField()
    sudo = models.BooleanField(default=False)
    # The command's stdin is not kept here: its size and digest are on the audit row.
    audit_event_id = models.BigIntegerField(null=True, blank=True, help_text="The job's audit row.")
    state = models.CharField(max_length=12, choices=State.choices, default=State.RUNNING, db_index=True)
    exit_status = models.IntegerField(null=True, blank=True)
    signal = models.CharField(max_length=32, blank=True, default="")
    error = models.CharField(max_length=500, blank=True, default="")
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    stdout_bytes = models.BigIntegerField(default=0)
    stderr_bytes = models.BigIntegerField(default=0)
    holder = models.CharField(max_length=200, blank=True, default="", help_text="Process running the job.")
    cancel_requested_by = models.CharField(max_length=200, blank=True, default="")
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="When the finished job and its output are removed."
    )

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.job_id[:12]}… on {self.host_name} ({self.state})"
