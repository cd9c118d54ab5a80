"""The audit log. Rows are written only by ``audit.writer``; nothing else saves them."""

from __future__ import annotations

import uuid

from django.db import models


class AuditEvent(models.Model):
    """One tool call that touched a host: opened as ``running`` before it acts, completed after."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        OK = "ok", "OK"
        ERROR = "error", "Error"
        TIMEOUT = "timeout", "Timed out"
        DENIED = "denied", "Denied"
        INTERRUPTED = "interrupted", "Interrupted"

    request_id = models.UUIDField(default=uuid.uuid4, editable=False, db_index=True)
    started_at = models.DateTimeField(db_index=True, editable=False)
    finished_at = models.DateTimeField(null=True, editable=False)
    duration_ms = models.FloatField(null=True, editable=False)
    status = models.CharField(max_length=12, choices=Status.choices, db_index=True, editable=False)

    actor = models.CharField(
        max_length=200, editable=False, help_text="Who called: MCP client identity / OS user."
    )
    transport = models.CharField(max_length=30, editable=False)
    process = models.CharField(
        max_length=200,
        blank=True,
        editable=False,
        help_text="machine:pid:start of the process that opened the row.",
    )

    host = models.ForeignKey(
        "hosts.Host", null=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    host_name = models.CharField(max_length=100, blank=True, editable=False, db_index=True)
    host_address = models.CharField(max_length=255, blank=True, editable=False)
    session_id = models.CharField(max_length=64, blank=True, editable=False, db_index=True)

    tool = models.CharField(max_length=50, editable=False, db_index=True)
    command = models.TextField(blank=True, editable=False)
    working_directory = models.TextField(blank=True, editable=False)
    exit_status = models.IntegerField(null=True, editable=False)
    signal = models.CharField(max_length=20, blank=True, editable=False)
    stdout = models.TextField(blank=True, editable=False)
    stderr = models.TextField(blank=True, editable=False)
    stdout_bytes = models.BigIntegerField(null=True, editable=False)
    stderr_bytes = models.BigIntegerField(null=True, editable=False)
    stdout_truncated = models.BooleanField(default=False, editable=False)
    stderr_truncated = models.BooleanField(default=False, editable=False)
    remote_path = models.TextField(blank=True, editable=False)
    local_path = models.TextField(blank=True, editable=False)
    file_size = models.BigIntegerField(null=True, editable=False)
    file_sha256 = models.CharField(max_length=64, blank=True, editable=False)
    reconnected = models.BooleanField(
        default=False, editable=False, help_text="The session was re-opened first."
    )
    error = models.TextField(blank=True, editable=False)
    details = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["host_name", "-started_at"]),
            models.Index(fields=["status", "-started_at"]),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.tool} on {self.host_name or '-'} ({self.status})"
