"""Runtime state that must outlive one process: the SSH sessions and where they live."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


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
