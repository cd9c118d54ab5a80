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
        # The command waits for an admin's decision (details.approval_request); a later call runs it.
        PENDING = "pending", "Awaiting approval"
        # A host of a rolling batch (ssh_execute_many) that never started: the batch stopped first.
        SKIPPED = "skipped", "Skipped"

    request_id = models.UUIDField(default=uuid.uuid4, editable=False, db_index=True)
    started_at = models.DateTimeField(db_index=True, editable=False)
    finished_at = models.DateTimeField(null=True, editable=False)
    duration_ms = models.FloatField(null=True, editable=False)
    # Not indexed alone: the (status, -started_at) index below serves lookups by status too,
    # and every index is one more page written by each row's INSERT on the hot path.
    status = models.CharField(max_length=12, choices=Status.choices, editable=False)

    actor = models.CharField(
        max_length=200, editable=False, help_text="Who called: MCP client identity / OS user."
    )
    # NULL on rows from before clients existed: the hash chain leaves NULL columns out, so
    # adding this column did not change the hash of any row already chained.
    client = models.CharField(
        max_length=100,
        null=True,
        blank=True,
        editable=False,
        help_text="The MCP client (its name) that called.",
    )
    # The identity provider and subject of an OAuth caller (NULL for static tokens and stdio,
    # which the hash chain leaves out like any NULL column).
    oauth_issuer = models.CharField(
        max_length=255, null=True, blank=True, editable=False, help_text="OAuth issuer of the caller."
    )
    oauth_subject = models.CharField(
        max_length=255, null=True, blank=True, editable=False, help_text="OAuth subject of the caller."
    )
    transport = models.CharField(max_length=30, editable=False)
    process = models.CharField(
        max_length=200,
        blank=True,
        editable=False,
        help_text="machine:pid:start of the process that opened the row.",
    )

    # A convenience link for the admin, outside the hash: the database sets it NULL when the
    # host is deleted. What the row proves about its host is host_ref, host_name, host_address.
    host = models.ForeignKey(
        "hosts.Host", null=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    host_ref = models.BigIntegerField(
        null=True,
        editable=False,
        help_text="The host's id when the call was made (kept after it is deleted).",
    )
    # Indexed through (host_name, -started_at) below, like status.
    host_name = models.CharField(max_length=100, blank=True, editable=False)
    host_address = models.CharField(max_length=255, blank=True, editable=False)
    session_id = models.CharField(max_length=64, blank=True, editable=False, db_index=True)

    tool = models.CharField(max_length=50, editable=False, db_index=True)
    # The batch of a command run on many hosts at once (ssh_execute_many): one row per host,
    # all with the same id. NULL for single calls, so the hash chain leaves it out of their rows.
    batch_id = models.CharField(
        max_length=40,
        null=True,
        blank=True,
        editable=False,
        db_index=True,
        help_text="The batch this call belongs to (one command on many hosts).",
    )
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
    # What the caller fed to the command's stdin (never the sudo password the runtime adds):
    # size and digest of the bytes sent, the text redacted and capped like stdout.
    stdin = models.TextField(blank=True, editable=False)
    stdin_bytes = models.BigIntegerField(null=True, editable=False, help_text="Size of the stdin sent.")
    stdin_sha256 = models.CharField(
        max_length=64,
        blank=True,
        editable=False,
        help_text="SHA-256 of the stdin sent; blank when redaction hid part of it (see docs/security.md).",
    )
    stdin_truncated = models.BooleanField(default=False, editable=False)
    remote_path = models.TextField(blank=True, editable=False)
    local_path = models.TextField(blank=True, editable=False)
    file_size = models.BigIntegerField(null=True, editable=False)
    file_sha256 = models.CharField(max_length=64, blank=True, editable=False)
    reconnected = models.BooleanField(
        default=False, editable=False, help_text="The session was re-opened first."
    )
    error = models.TextField(blank=True, editable=False)
    details = models.JSONField(default=dict, blank=True, editable=False)

    # The hash chain (see audit.chain): set when the row is finished, in completion order.
    chain_seq = models.BigIntegerField(
        null=True, unique=True, editable=False, help_text="Position in the hash chain (completion order)."
    )
    prev_hash = models.CharField(
        max_length=64, blank=True, editable=False, help_text="The chain hash of the row before this one."
    )
    chain_hash = models.CharField(
        max_length=64, blank=True, editable=False, help_text="SHA-256 over this row's content and prev_hash."
    )
    # Which formula chain_hash follows (audit.chain.FORMATS): 1 for rows chained before
    # migration 0004 (they keep the formula they were hashed with), 2 since.
    chain_version = models.PositiveSmallIntegerField(
        default=2, editable=False, help_text="The hash format of this row (see audit.chain)."
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["host_name", "-started_at"]),
            models.Index(fields=["status", "-started_at"]),
            # Per-client limits count a client's running and recent calls.
            models.Index(fields=["client", "-started_at"]),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.tool} on {self.host_name or '-'} ({self.status})"


class ChainHead(models.Model):
    """The end of the audit hash chain: the last sequence number given out and that row's hash.

    One row (id 1). Completing an event locks it, so completions are chained one at a time
    in a single order; it is written only by ``audit.writer``.
    """

    seq = models.BigIntegerField(default=0, editable=False)
    hash = models.CharField(max_length=64, editable=False)

    def __str__(self) -> str:
        return f"chain head #{self.seq}"


class AuditAnchor(models.Model):
    """Where the hash chain starts after a prune, and the record of that prune.

    ``audit_verify`` starts at the newest anchor: the row with ``first_seq`` must carry
    ``prev_hash``, the hash of the last row deleted. With no anchor the chain starts at
    sequence 1 after the all-zero hash.
    """

    created_at = models.DateTimeField(editable=False)
    pruned_by = models.CharField(max_length=200, editable=False)
    pruned_before = models.DateTimeField(
        editable=False, help_text="Rows finished before this time were eligible for deletion."
    )
    pruned_count = models.BigIntegerField(editable=False)
    first_seq = models.BigIntegerField(
        editable=False, help_text="Sequence number of the first row kept (or of the next row, if none was)."
    )
    prev_hash = models.CharField(max_length=64, editable=False)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"anchor at #{self.first_seq} ({self.pruned_count} pruned)"
