"""Background jobs in the admin: running and recent jobs, their live output, and Cancel.

Rows are written by the processes that run the jobs; the admin never edits them. A job's
page shows the tail of its output as kept where it runs (read through the dispatcher, so a
worker's job is read on that worker) and reloads itself every few seconds while the job
runs. "Cancel selected jobs" asks each job's holder to kill it and writes an audit row as
that admin (``ssh_cancel_job`` by ``admin:<name>``); the job's own audit row then says it
was cancelled by that admin.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from hosts.access import Permission
from sshcontrol import jobs
from sshcontrol.caller import Caller
from sshcontrol.dispatch import get_dispatcher
from sshcontrol.hostcall import CallRefused, host_call
from sshcontrol.models import Job
from sshcontrol.targets import Target
from sshcontrol.taskspec import DispatchError, ReadSpec
from sshlib.capture import Stream

CANCEL_TOOL = "ssh_cancel_job"
# How much of the end of each stream a job's page shows.
TAIL_BYTES = 16 << 10
# While a job runs its page reloads this often (templates/admin/sshcontrol/job/change_form.html).
REFRESH_SECONDS = 3

_STATE_COLORS: dict[str, str] = {
    Job.State.RUNNING: "#1565c0",
    Job.State.EXITED: "#2e7d32",
    Job.State.TIMED_OUT: "#d17a00",
    Job.State.CANCELLED: "#757575",
    Job.State.LOST: "#c62828",
}


def cancel_job(job: Job, username: str) -> str:
    """Cancel one job on behalf of admin ``username``; "" when asked, else why not."""
    if job.state != Job.State.RUNNING:
        return f"already ended ({job.state})"
    who = f"admin:{username}"
    try:
        with host_call(
            CANCEL_TOOL,
            Caller.admin(username),
            session_id=job.session_id or None,
            permission=Permission.EXECUTE,
            details={"job_id": job.job_id, "job_audit_event": job.audit_event_id},
            target=Target(job.host, job.session_id or None),
        ) as call:
            call.details["cancel_requested"] = jobs.request_cancel(job, who)
            call.complete()
    except CallRefused as exc:
        return exc.message
    return ""


def tail(job: Job, stream: Stream) -> tuple[str, int, str]:
    """The last ``TAIL_BYTES`` of a stream: (text, bytes seen, why it cannot be shown)."""
    dispatcher = get_dispatcher()
    try:
        total = dispatcher.read_output(job.holder, ReadSpec(job.job_id, stream, 0, 0, job.host_id)).total
        start = max(0, total - TAIL_BYTES)
        page = dispatcher.read_output(
            job.holder, ReadSpec(job.job_id, stream, start, TAIL_BYTES, job.host_id)
        )
    except DispatchError as exc:
        return "", 0, exc.message
    return page.text, page.total, ""


@admin.register(Job)
class JobAdmin(admin.ModelAdmin[Job]):
    """Read-only rows with one action; the processes that run the jobs write them."""

    list_display = ("short_id", "state_badge", "host_name", "actor", "started_at", "duration", "audit_link")
    list_filter = ("state", "host_name")
    search_fields = ("job_id", "command", "host_name", "actor")
    date_hierarchy = "started_at"
    actions = ["cancel_selected"]
    fieldsets = (
        (None, {"fields": ("job_id", "state_badge", "host_name", "command", "working_directory", "sudo")}),
        ("Outcome", {"fields": ("exit_status", "signal", "error", "audit_link", "cancel_requested_by")}),
        ("Output", {"fields": ("stdout_tail", "stderr_tail")}),
        (
            "Where and when",
            {
                "fields": (
                    "actor",
                    "session_id",
                    "holder",
                    "started_at",
                    "finished_at",
                    "duration",
                    "expires_at",
                )
            },
        ),
    )
    readonly_fields = (
        "job_id",
        "state_badge",
        "host_name",
        "command",
        "working_directory",
        "sudo",
        "exit_status",
        "signal",
        "error",
        "audit_link",
        "cancel_requested_by",
        "stdout_tail",
        "stderr_tail",
        "actor",
        "session_id",
        "holder",
        "started_at",
        "finished_at",
        "duration",
        "expires_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        return False  # removed with their output when they expire (sshcontrol.jobs.prune)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("sshcontrol.change_job")

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Job | None = None,
    ) -> HttpResponse:
        running = obj is not None and obj.state == Job.State.RUNNING
        context["refresh_seconds"] = REFRESH_SECONDS if running else 0
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.action(description="Cancel selected jobs", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        username = request.user.get_username()
        asked = []
        for job in queryset.select_related("host"):
            problem = cancel_job(job, username)
            if problem:
                self.message_user(request, f"Job {job.job_id[:16]}…: {problem}", messages.WARNING)
            else:
                asked.append(job.job_id[:16] + "…")
        if asked:
            self.message_user(
                request,
                f"Asked {len(asked)} job(s) to stop: {', '.join(asked)}. Their processes are killed "
                "within seconds; each job's audit row records the cancellation by you.",
                messages.SUCCESS,
            )

    @admin.display(description="Job", ordering="job_id")
    def short_id(self, obj: Job) -> str:
        return obj.job_id[:16] + "…"

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj: Job) -> SafeString:
        color = _STATE_COLORS.get(obj.state, "inherit")
        return format_html(
            '<strong style="color: {}" title="{}">{}</strong>', color, obj.error, obj.get_state_display()
        )

    @admin.display(description="Duration")
    def duration(self, obj: Job) -> str:
        end = obj.finished_at or timezone.now()
        return f"{(end - obj.started_at).total_seconds():.1f} s"

    @admin.display(description="Audit row")
    def audit_link(self, obj: Job) -> SafeString | str:
        if obj.audit_event_id is None:
            return "-"
        url = reverse("admin:audit_auditevent_change", args=[obj.audit_event_id])
        return format_html('<a href="{}">#{}</a>', url, obj.audit_event_id)

    def _tail(self, obj: Job, stream: Stream) -> SafeString:
        text, total, problem = tail(obj, stream)
        if problem:
            return format_html('<span class="quiet">{}</span>', problem)
        shown = f"last {TAIL_BYTES} bytes of {total}" if total > TAIL_BYTES else f"{total} bytes"
        return format_html(
            '<div class="quiet">{}</div><pre class="sshcontrol-job-output" data-stream="{}">{}</pre>',
            shown,
            stream,
            text,
        )

    @admin.display(description="stdout")
    def stdout_tail(self, obj: Job) -> SafeString:
        return self._tail(obj, "stdout")

    @admin.display(description="stderr")
    def stderr_tail(self, obj: Job) -> SafeString:
        return self._tail(obj, "stderr")
