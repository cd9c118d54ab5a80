"""Live SSH sessions in the admin: who holds what, and a way to end it.

A session row is bookkeeping for a connection that lives in one process's memory. The
admin never edits rows; its one write is "Terminate", which closes the connection where
it lives (through the same dispatch path as a client's ``ssh_disconnect``) and writes an
audit row like any other call that touches a host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from hosts.access import Permission
from hosts.admin.base import admin_url
from hosts.admin.host import HostAdmin, HostListColumn
from hosts.models import Host
from sshcontrol import job_admin  # noqa: F401  (registers the jobs' admin)
from sshcontrol.admin_actions import test_connection
from sshcontrol.caller import Caller
from sshcontrol.dispatch import get_dispatcher
from sshcontrol.holders import current_worker, worker_alive
from sshcontrol.hostcall import CallRefused, host_call
from sshcontrol.models import SshSession
from sshcontrol.targets import Target

DISCONNECT_TOOL = "ssh_disconnect"

_STATE_COLORS: dict[str, str] = {
    SshSession.State.CONNECTED: "#2e7d32",
    SshSession.State.LOST: "#d17a00",
    SshSession.State.CLOSED: "#757575",
}


@dataclass
class TerminateReport:
    """What ``terminate_sessions`` did, grouped the way the admin message tells it."""

    closed: list[str] = field(default_factory=list)  # closed here, through dispatch
    marked: list[str] = field(default_factory=list)  # held by another process: row marked closed
    already_closed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _holder_is_reachable(row: SshSession) -> bool:
    """Whether a disconnect dispatched from this process reaches the process holding ``row``.

    In distributed mode the dispatcher routes to the worker that holds the session. On the
    embedded default, only sessions this very process opened can be closed from here.
    """
    return not get_dispatcher().embedded or row.worker == current_worker()


def terminate_session(row: SshSession, username: str, report: TerminateReport) -> None:
    """End one session on behalf of admin ``username``, audited as ``ssh_disconnect``."""
    if row.state == SshSession.State.CLOSED:
        report.already_closed.append(row.session_id)
        return
    reason = f"terminated by admin {username}"
    try:
        with host_call(
            DISCONNECT_TOOL,
            Caller.admin(username),
            session_id=row.session_id,
            permission=Permission.DISCONNECT,
            details={"reason": reason, "worker": row.worker},
            target=Target(row.host, row.session_id),
        ) as call:
            if _holder_is_reachable(row):
                call.details["was_open"] = call.disconnect(reason).was_open
                call.complete()
                report.closed.append(row.session_id)
                return
            # The connection is in another process's memory, out of reach from here. A closed row
            # is refused by every later call (sshcontrol.targets.resolve), so the session is
            # unusable from now on; the holding process drops the connection itself when it exits.
            SshSession.objects.filter(pk=row.pk).close(reason)
            alive = worker_alive(row.worker)
            call.details.update(
                was_open=None, marked_closed=True, holder="stopped" if alive is False else "another process"
            )
            call.complete()
            report.marked.append(row.session_id)
    except CallRefused as exc:
        report.failed.append((row.session_id, exc.message))


def terminate_sessions(rows: QuerySet[SshSession], username: str) -> TerminateReport:
    report = TerminateReport()
    for row in rows.select_related("host").order_by("opened_at"):
        terminate_session(row, username, report)
    return report


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:10])
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


@admin.register(SshSession)
class SshSessionAdmin(admin.ModelAdmin[SshSession]):
    """Read-only bookkeeping with one action; rows are written by the processes that hold sessions."""

    # Short enough to fit beside the sidebar at 1280 px; a session's page shows every field (the
    # worker holding it too).
    list_display = (
        "session_id",
        "state_badge",
        "host_link",
        "opened_by",
        "last_used_at",
        "commands",
    )
    list_filter = ("state", "host_name")
    search_fields = ("session_id", "host_name", "opened_by", "worker")
    date_hierarchy = "opened_at"
    actions = ["terminate_selected"]
    fieldsets = (
        (None, {"fields": ("session_id", "state_badge", "host_link", "host_key_fingerprint")}),
        ("Held by", {"fields": ("worker_display", "opened_by")}),
        ("Use", {"fields": ("opened_at", "last_used_at", "commands_run", "closed_at", "close_reason")}),
    )
    readonly_fields = (
        "session_id",
        "state_badge",
        "host_link",
        "host_key_fingerprint",
        "worker_display",
        "opened_by",
        "opened_at",
        "last_used_at",
        "commands_run",
        "closed_at",
        "close_reason",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[SshSession]:
        return super().get_queryset(request).select_related("host")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SshSession | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SshSession | None = None) -> bool:
        # A deleted row would orphan a live connection and hide it from every front end.
        return False

    def has_terminate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("sshcontrol.change_sshsession")

    @admin.action(description="Terminate selected sessions", permissions=["terminate"])
    def terminate_selected(self, request: HttpRequest, queryset: QuerySet[SshSession]) -> None:
        report = terminate_sessions(queryset, request.user.get_username())
        if report.closed:
            self.message_user(
                request,
                f"Terminated {len(report.closed)} session(s): {_ids(report.closed)}.",
                messages.SUCCESS,
            )
        if report.marked:
            self.message_user(
                request,
                f"Marked {len(report.marked)} session(s) closed: {_ids(report.marked)}. They are held by "
                "another sshcontrol process (the MCP server), which now refuses any further use of them; "
                "the SSH connection itself is closed by that process when it exits.",
                messages.WARNING,
            )
        if report.already_closed:
            self.message_user(
                request,
                f"Already closed, left alone: {_ids(report.already_closed)}.",
                messages.INFO,
            )
        for session_id, message in report.failed:
            self.message_user(request, f"Could not terminate {session_id}: {message}", messages.ERROR)

    @admin.display(description="Commands", ordering="commands_run")
    def commands(self, obj: SshSession) -> int:
        return obj.commands_run

    @admin.display(description="Host", ordering="host_name")
    def host_link(self, obj: SshSession) -> SafeString | str:
        if obj.host_id is None:
            return f"{obj.host_name} (removed)"
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:hosts_host_change", args=[obj.host_id]), obj.host_name
        )

    @admin.display(description="Worker", ordering="worker")
    def worker_display(self, obj: SshSession) -> SafeString:
        if obj.state != SshSession.State.CONNECTED:
            return format_html("<code>{}</code>", obj.worker)
        if obj.worker == current_worker():
            note = "this process"
        else:
            note = {True: "running", False: "stopped", None: ""}[worker_alive(obj.worker)]
        if not note:
            return format_html("<code>{}</code>", obj.worker)
        return format_html('<code>{}</code> <span class="quiet">({})</span>', obj.worker, note)

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj: SshSession) -> SafeString:
        color = _STATE_COLORS.get(obj.state, "inherit")
        title = obj.close_reason or obj.get_state_display()
        return format_html(
            '<strong style="color: {}" title="{}">{}</strong>', color, title, obj.get_state_display()
        )


# The host list's "Test connection" runs through the audited runtime path; installed from here so
# that the inventory's admin does not import the runtime.
HostAdmin.connection_tester = test_connection


@admin.display(description="Sessions", ordering="open_sessions")
def open_sessions_display(obj: Host) -> SafeString | int:
    count: int = getattr(obj, "open_sessions", 0)
    url = admin_url(
        "admin:sshcontrol_sshsession_changelist", query=f"host__id__exact={obj.pk}&state__exact=connected"
    )
    if not count or url is None:
        return count
    return format_html('<a href="{}">{}</a>', url, count)


# The host list's open sessions are the runtime's rows; attached from here for the same reason.
HostAdmin.extra_columns = (
    HostListColumn(
        open_sessions_display,
        {"open_sessions": Count("sessions", filter=Q(sessions__state=SshSession.State.CONNECTED))},
    ),
)
