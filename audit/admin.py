"""The audit log in the admin: browsable, searchable and exportable, never editable, by anyone."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Q, QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from audit import batch_page, chain, export, filters
from audit.models import AuditAnchor, AuditEvent
from audit.output_hygiene import clean
from hosts.visible import visible_html

# Readable on the admin's light and dark themes alike.
_STATUS_COLORS: dict[str, str] = {
    AuditEvent.Status.RUNNING: "#1f6fbf",
    AuditEvent.Status.OK: "#2e7d32",
    AuditEvent.Status.ERROR: "#c62828",
    AuditEvent.Status.TIMEOUT: "#d17a00",
    AuditEvent.Status.DENIED: "#8e24aa",
    AuditEvent.Status.INTERRUPTED: "#757575",
    AuditEvent.Status.PENDING: "#ef6c00",
    AuditEvent.Status.SKIPPED: "#757575",
}

_LIST_STYLE = "margin: 0; padding-left: 1.2em; font-family: monospace"
_PRE_STYLE = "white-space: pre-wrap; word-break: break-all; font-family: monospace; margin: 0"

SHORT_COMMAND_LENGTH = 80

# How many of the session's other calls the detail page lists on each side of this one.
TIMELINE_SPAN = 10


def _pre(text: str) -> SafeString | str:
    # Commands and output alike: hidden characters (bidi controls and the like) shown visibly.
    return format_html('<pre style="{}">{}</pre>', _PRE_STYLE, visible_html(text)) if text else "-"


def _output(text: str, truncated: bool, size: int | None) -> SafeString | str:
    """Output in monospace, with a visible note when what is stored is not all there was."""
    if not truncated:
        return _pre(text)
    produced = f"{filesizeformat(size)} ({size} bytes) produced" if size is not None else "Longer output"
    return format_html(
        '<p class="errornote" style="margin: 0 0 .5em">Truncated: {}; only the beginning and the '
        "end are kept.</p>{}",
        produced,
        _pre(text),
    )


_WARNING_LABELS: dict[str, str] = {
    "escape_sequences": "terminal escape sequences removed",
    "control_characters": "control characters removed",
    "bidi_control": "bidirectional control characters",
    "invisible_characters": "invisible characters",
    "role_line": "line posing as a conversation turn",
    "protocol_marker": "line imitating a tool-protocol message",
    "more_warnings": "more warnings, here or further on, not listed",
}


def output_warnings(event: AuditEvent) -> list[SafeString]:
    """What the model was warned of in this row's output, one line each, computed from the stored text.

    The model got the output cleaned (docs/security.md, "Output hygiene"); the row keeps it
    raw, so the same cleaning run here finds the same warnings without a column of its own.
    Line numbers are those of the cleaned text, as the model saw it.
    """
    lines: list[SafeString] = []
    for stream, text in (("stdout", event.stdout), ("stderr", event.stderr)):
        for flag in clean(text).warnings:
            count = f" ({flag.count})" if flag.count > 1 else ""
            excerpt = format_html(": {}", visible_html(flag.excerpt)) if flag.excerpt else ""
            lines.append(
                format_html(
                    "{} line {}: {}{}{}", stream, flag.line, _WARNING_LABELS[flag.kind], count, excerpt
                )
            )
    return lines


def short_command(command: str) -> str:
    """The command's first line, cut to SHORT_COMMAND_LENGTH, with an ellipsis when anything was left out."""
    first_line = command.split("\n", 1)[0]
    if len(first_line) > SHORT_COMMAND_LENGTH or first_line != command:
        return first_line[:SHORT_COMMAND_LENGTH] + "…"
    return first_line


def _duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin[AuditEvent]):
    """Read-only for superusers too: an audit trail that an admin can edit proves nothing."""

    # Short enough to fit beside the sidebar at 1280 px; a row's page shows every field.
    list_display = ("time", "caller", "host_name", "short_command", "colored_status", "duration")
    list_filter = (
        filters.StatusFilter,
        "tool",
        filters.HostNameFilter,
        filters.ClientFilter,
        filters.BatchFilter,
        "started_at",
    )
    search_fields = ("command", "host_name", "client", "oauth_subject", "actor", "session_id", "request_id")
    date_hierarchy = "started_at"
    show_facets = admin.ShowFacets.ALWAYS
    # The table only grows; counting all of it on every page view is what makes big logs slow.
    show_full_result_count = False
    actions = None

    fieldsets = (
        (
            None,
            {
                "fields": (
                    "tool",
                    "colored_status",
                    "client",
                    "oauth_issuer",
                    "oauth_subject",
                    "actor",
                    "transport",
                    "request_id",
                    "process",
                )
            },
        ),
        ("Time", {"fields": ("started_at", "finished_at", "duration")}),
        ("Host", {"fields": ("host", "host_ref", "host_name", "host_address", "session_id", "reconnected")}),
        ("Command", {"fields": ("command_block", "working_directory", "exit_status", "signal")}),
        ("Stdin", {"fields": ("stdin_size", "stdin_digest", "stdin_block")}),
        ("Output", {"fields": ("stdout_block", "stderr_block")}),
        ("Output warnings", {"fields": ("output_warnings_block",)}),
        ("Transferred file", {"fields": ("remote_path", "local_path", "file_size_display", "file_sha256")}),
        ("Outcome", {"fields": ("error_block", "approval_link", "batch_link", "details_block")}),
        ("Hash chain", {"fields": ("chain_seq", "prev_hash", "chain_hash", "chain_version")}),
    )
    readonly_fields = (
        *(field.name for field in AuditEvent._meta.fields),
        "colored_status",
        "duration",
        "command_block",
        "stdout_block",
        "stderr_block",
        "output_warnings_block",
        "stdin_size",
        "stdin_digest",
        "stdin_block",
        "error_block",
        "details_block",
        "approval_link",
        "batch_link",
        "file_size_display",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        return filters.with_approval_state(super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        # With view permission left on, Django still renders the detail page, read-only.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        export_url = path(
            "export/<str:fmt>/",
            self.admin_site.admin_view(self.export_view),
            name="{}_{}_export".format(*info),
        )
        batch_url = path(
            "batch/<str:batch_id>/",
            self.admin_site.admin_view(self.batch_view),
            name="{}_{}_batch".format(*info),
        )
        return [export_url, batch_url, *super().get_urls()]

    def batch_view(self, request: HttpRequest, batch_id: str) -> HttpResponse:
        """One batch (``ssh_execute_many``) as one page: counts by status, the hosts' outputs grouped."""
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        events = list(
            filters.with_approval_state(AuditEvent.objects.filter(batch_id=batch_id)).order_by("id")
        )
        if not events:
            return HttpResponse(f"no audit rows in batch {batch_id}", status=404, content_type="text/plain")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Batch {batch_id}",
            "batch_id": batch_id,
            **batch_page.summary(events, _STATUS_COLORS),
            "list_url": reverse("admin:audit_auditevent_changelist") + f"?batch_id={batch_id}",
        }
        return TemplateResponse(request, "admin/audit/auditevent/batch.html", context)

    def export_view(self, request: HttpRequest, fmt: str) -> HttpResponseBase:
        """The changelist as it is filtered and searched now, every column, as CSV or JSON lines."""
        if not self.has_view_permission(request):
            return HttpResponse(status=403)
        if fmt not in export.FORMATS:
            return HttpResponse(f"unknown export format: {fmt}", status=404, content_type="text/plain")
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            # What the changelist itself does with a stale or hand-edited filter.
            return HttpResponseRedirect(reverse("admin:audit_auditevent_changelist"))
        events: QuerySet[AuditEvent] = changelist.get_queryset(request)
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response = StreamingHttpResponse(export.lines(events, fmt), content_type=export.FORMATS[fmt])
        response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
        return response

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {
            **(extra_context or {}),
            "chain_state": chain.chain_state(),
            "export_formats": list(export.FORMATS),
        }
        return super().changelist_view(request, extra_context=context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        event = self.get_object(request, object_id)
        context = {**(extra_context or {})}
        if event is not None:
            context["timeline"] = self.timeline(event)
        return super().change_view(request, object_id, form_url, extra_context=context)

    @staticmethod
    def timeline(event: AuditEvent) -> list[dict[str, Any]]:
        """The session's calls around this one, in order, this one included (marked ``current``)."""
        if not event.session_id:
            return []
        session = filters.with_approval_state(AuditEvent.objects.filter(session_id=event.session_id))
        earlier = Q(started_at__lt=event.started_at) | Q(started_at=event.started_at, id__lt=event.pk)
        later = Q(started_at__gt=event.started_at) | Q(started_at=event.started_at, id__gt=event.pk)
        before = list(session.filter(earlier).order_by("-started_at", "-id")[:TIMELINE_SPAN])
        after = list(session.filter(later).order_by("started_at", "id")[:TIMELINE_SPAN])
        return [
            {
                "event": item,
                "current": item.pk == event.pk,
                "command": short_command(item.command) or item.tool,
                "url": reverse("admin:audit_auditevent_change", args=[item.pk]),
                "status_color": _STATUS_COLORS.get(filters.shown_status(item)[0], "inherit"),
                "status_label": filters.shown_status(item)[1],
                "duration": _duration(item.duration_ms),
            }
            for item in [*reversed(before), event, *after]
        ]

    @admin.display(description="Time", ordering="started_at")
    def time(self, obj: AuditEvent) -> SafeString:
        # Month, day and time in the list; the year too on hover and on the row's page.
        started = obj.started_at.astimezone(timezone.get_current_timezone())
        return format_html(
            '<span title="{}">{}</span>',
            started.strftime("%Y-%m-%d %H:%M:%S"),
            started.strftime("%m-%d %H:%M:%S"),
        )

    @admin.display(description="Caller", ordering="client")
    def caller(self, obj: AuditEvent) -> str:
        # The client, or the actor where there is none (an admin's Test connection: admin:<user>).
        return obj.client or obj.actor

    @admin.display(description="Command or tool", ordering="command")
    def short_command(self, obj: AuditEvent) -> SafeString:
        if not obj.command:
            return format_html('<span class="quiet">{}</span>', obj.tool)
        return visible_html(short_command(obj.command))

    @admin.display(description="Duration", ordering="duration_ms")
    def duration(self, obj: AuditEvent) -> str:
        return _duration(obj.duration_ms)

    @admin.display(description="Status", ordering="status")
    def colored_status(self, obj: AuditEvent) -> SafeString:
        # The row stays "running" while its call waits for an admin: say what is true now.
        status, label = filters.shown_status(obj)
        color = _STATUS_COLORS.get(status, "inherit")
        badge = format_html('<strong style="color: {}">{}</strong>', color, label)
        if obj.exit_status is None or (obj.exit_status == 0 and status == AuditEvent.Status.OK):
            return badge
        return format_html('{} <span class="quiet">exit {}</span>', badge, obj.exit_status)

    @admin.display(description="Command")
    def command_block(self, obj: AuditEvent) -> SafeString | str:
        return _pre(obj.command)

    @admin.display(description="Stdout")
    def stdout_block(self, obj: AuditEvent) -> SafeString | str:
        return _output(obj.stdout, obj.stdout_truncated, obj.stdout_bytes)

    @admin.display(description="Stderr")
    def stderr_block(self, obj: AuditEvent) -> SafeString | str:
        return _output(obj.stderr, obj.stderr_truncated, obj.stderr_bytes)

    @admin.display(description="Found")
    def output_warnings_block(self, obj: AuditEvent) -> SafeString | str:
        found = output_warnings(obj)
        if not found:
            return "none"
        items = format_html_join("", "<li>{}</li>", ((line,) for line in found))
        return format_html('<ul class="sc-output-warnings" style="{}">{}</ul>', _LIST_STYLE, items)

    @admin.display(description="Size")
    def stdin_size(self, obj: AuditEvent) -> str:
        if obj.stdin_bytes is None:
            return "none (the command's stdin was closed)"
        return f"{filesizeformat(obj.stdin_bytes)} ({obj.stdin_bytes} bytes)"

    @admin.display(description="SHA-256")
    def stdin_digest(self, obj: AuditEvent) -> str:
        if obj.stdin_bytes is None:
            return "-"
        # A digest of text whose only unknown is a hidden secret would let readers test guesses.
        return obj.stdin_sha256 or "not recorded: part of the stdin was redacted"

    @admin.display(description="Content")
    def stdin_block(self, obj: AuditEvent) -> SafeString | str:
        return _output(obj.stdin, obj.stdin_truncated, obj.stdin_bytes)

    @admin.display(description="Error")
    def error_block(self, obj: AuditEvent) -> SafeString | str:
        return _pre(obj.error)

    @admin.display(description="Details")
    def details_block(self, obj: AuditEvent) -> SafeString | str:
        return _pre(json.dumps(obj.details, indent=2, sort_keys=True)) if obj.details else "-"

    @admin.display(description="Approval request")
    def approval_link(self, obj: AuditEvent) -> SafeString | str:
        """The request this call asked for or ran under (``details.approval_request``), linked."""
        request_id = obj.details.get("approval_request") if isinstance(obj.details, dict) else None
        if not isinstance(request_id, int):
            return "-"
        # By URL name: the approvals admin belongs to the hosts app, which audit does not import.
        try:
            url = reverse("admin:hosts_approvalrequest_change", args=[request_id])
        except NoReverseMatch:
            return f"#{request_id}"
        approver = obj.details.get("approved_by")
        suffix = f" (approved by {approver})" if approver else ""
        return format_html('<a href="{}">request #{}</a>{}', url, request_id, suffix)

    @admin.display(description="Batch")
    def batch_link(self, obj: AuditEvent) -> SafeString | str:
        """The batch this row is one host of, as one page."""
        if not obj.batch_id:
            return "-"
        url = reverse("admin:audit_auditevent_batch", args=[obj.batch_id])
        return format_html('<a href="{}">{}</a> (every host of this call)', url, obj.batch_id)

    @admin.display(description="File size")
    def file_size_display(self, obj: AuditEvent) -> str:
        if obj.file_size is None:
            return "-"
        return f"{filesizeformat(obj.file_size)} ({obj.file_size} bytes)"


@admin.register(AuditAnchor)
class AuditAnchorAdmin(admin.ModelAdmin[AuditAnchor]):
    """The record of each prune: read-only like the events, as it is where the chain now starts."""

    list_display = ("created_at", "pruned_by", "pruned_count", "pruned_before", "first_seq")
    readonly_fields = tuple(field.name for field in AuditAnchor._meta.fields)
    actions = None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditAnchor | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditAnchor | None = None) -> bool:
        return False
