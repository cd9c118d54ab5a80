"""Runtime state that must outlive one process: the SSH sessions and where they live."""

from __future__ import annotations

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
