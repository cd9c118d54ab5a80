"""The audit log in the admin: browsable and searchable, never editable, by anyone."""

from __future__ import annotations

import json

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from audit.models import AuditEvent

# Readable on the admin's light and dark themes alike.
_STATUS_COLORS: dict[str, str] = {
    AuditEvent.Status.RUNNING: "#1f6fbf",
    AuditEvent.Status.OK: "#2e7d32",
    AuditEvent.Status.ERROR: "#c62828",
    AuditEvent.Status.TIMEOUT: "#d17a00",
    AuditEvent.Status.DENIED: "#8e24aa",
    AuditEvent.Status.INTERRUPTED: "#757575",
}

_PRE_STYLE = "white-space: pre-wrap; word-break: break-all; font-family: monospace; margin: 0"

SHORT_COMMAND_LENGTH = 80


def _pre(text: str) -> SafeString | str:
    return format_html('<pre style="{}">{}</pre>', _PRE_STYLE, text) if text else "-"


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin[AuditEvent]):
    """Read-only for superusers too: an audit trail that an admin can edit proves nothing."""

    list_display = (
        "started_at",
        "actor",
        "host_name",
        "tool",
        "short_command",
        "colored_status",
        "exit_status",
        "duration_ms",
    )
    list_filter = ("status", "tool", "host_name", "actor", "started_at")
    search_fields = ("command", "host_name", "actor", "session_id", "request_id")
    date_hierarchy = "started_at"
    # The table only grows; counting all of it on every page view is what makes big logs slow.
    show_full_result_count = False
    actions = None

    fieldsets = (
        (
            None,
            {"fields": ("tool", "colored_status", "actor", "transport", "request_id", "process")},
        ),
        ("Time", {"fields": ("started_at", "finished_at", "duration_ms")}),
        ("Host", {"fields": ("host", "host_name", "host_address", "session_id", "reconnected")}),
        ("Command", {"fields": ("command_block", "working_directory", "exit_status", "signal")}),
        (
            "Output",
            {
                "fields": (
                    "stdout_block",
                    "stdout_bytes",
                    "stdout_truncated",
                    "stderr_block",
                    "stderr_bytes",
                    "stderr_truncated",
                )
            },
        ),
        ("Files", {"fields": ("remote_path", "local_path", "file_size", "file_sha256")}),
        ("Outcome", {"fields": ("error_block", "details_block")}),
    )
    readonly_fields = (
        *(field.name for field in AuditEvent._meta.fields),
        "colored_status",
        "command_block",
        "stdout_block",
        "stderr_block",
        "error_block",
        "details_block",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        # With view permission left on, Django still renders the detail page, read-only.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    @admin.display(description="Command", ordering="command")
    def short_command(self, obj: AuditEvent) -> str:
        first_line = obj.command.split("\n", 1)[0]
        if len(first_line) > SHORT_COMMAND_LENGTH or first_line != obj.command:
            return first_line[:SHORT_COMMAND_LENGTH] + "…"
        return first_line

    @admin.display(description="Status", ordering="status")
    def colored_status(self, obj: AuditEvent) -> SafeString:
        color = _STATUS_COLORS.get(obj.status, "inherit")
        return format_html('<strong style="color: {}">{}</strong>', color, obj.get_status_display())

    @admin.display(description="Command")
    def command_block(self, obj: AuditEvent) -> SafeString | str:
        return _pre(obj.command)

    @admin.display(description="Stdout")
    def stdout_block(self, obj: AuditEvent) -> SafeString | str:
        return _pre(obj.stdout)

    @admin.display(description="Stderr")
    def stderr_block(self, obj: AuditEvent) -> SafeString | str:
        return _pre(obj.stderr)

    @admin.display(description="Error")
    def error_block(self, obj: AuditEvent) -> SafeString | str:
        return _pre(obj.error)

    @admin.display(description="Details")
    def details_block(self, obj: AuditEvent) -> SafeString | str:
        return _pre(json.dumps(obj.details, indent=2, sort_keys=True)) if obj.details else "-"
