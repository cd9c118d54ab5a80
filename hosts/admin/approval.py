"""Approval requests: read-only records with one thing an admin does, approve or deny.

The decision goes through ``hosts.approvals.decide``, the one place that checks the state,
the expiry and that the deciding admin does not own the requesting client. The stock
change form stays read-only (nobody edits a request's command or state by hand); the
Approve / Deny buttons post to their own URL.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from hosts import approvals
from hosts.access_models import ApprovalRequest
from hosts.admin.base import InventoryAdmin, admin_url, csrf_protect_m, tone_badge
from hosts.visible import one_line, visible_html

SHORT_COMMAND_LENGTH = 80
MAX_COMMENT_LENGTH = 2000

_STATE_TONES = {
    ApprovalRequest.State.PENDING: "waiting",
    ApprovalRequest.State.APPROVED: "good",
    ApprovalRequest.State.DENIED: "bad",
    ApprovalRequest.State.EXPIRED: "muted",
    ApprovalRequest.State.EXECUTED: "over",
}


def short_command(command: str, length: int = SHORT_COMMAND_LENGTH) -> str:
    """One line of at most ``length`` characters: a list cell or a band, not the whole script."""
    line = one_line(command)
    return line if len(line) <= length else line[: length - 1] + "…"


class DecisionForm(forms.Form):
    """The comment that goes with an approval or a denial; which one is the button pressed."""

    comment = forms.CharField(
        required=False,
        max_length=MAX_COMMENT_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 70}),
        help_text="Recorded with the decision; the client sees it with the result.",
    )


def _audit_link(event_id: int | None) -> SafeString | str:
    if event_id is None:
        return "-"
    url = admin_url("admin:audit_auditevent_change", event_id)
    if url is None:
        return f"audit row {event_id}"
    return format_html('<a href="{}">audit row {}</a>', url, event_id)


REQUEST_FIELDS = (
    "state_display",
    "client",
    "client_owner",
    "host",
    "batch_display",
    "command_display",
    "working_directory",
    "sudo",
    "timeout",
    "stdin_display",
    "reason",
    "rule",
    "session_id",
)
DECISION_FIELDS = ("requested_at", "expires_at", "decided_by", "decided_at", "comment", "barred_display")
AUDIT_FIELDS = ("audit_link", "executed_link")


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(InventoryAdmin[ApprovalRequest]):
    # Short enough to fit beside the sidebar at 1280 px (the request's number is in its page's title).
    list_display = (
        "state_display",
        "client",
        "hosts_short",
        "command_short",
        "sudo",
        "requested_at",
        "decided_by",
    )
    list_display_links = ("command_short",)
    list_filter = ("state", "sudo", "client", "host")
    search_fields = ("command", "client__name", "host__name", "reason", "decided_by", "comment")
    list_select_related = ("client", "host")
    date_hierarchy = "requested_at"
    fieldsets = (
        ("Request", {"fields": REQUEST_FIELDS}),
        ("Decision", {"fields": DECISION_FIELDS}),
        ("Audit", {"fields": AUDIT_FIELDS}),
    )
    # Everything is shown read-only; ``stdin`` is in none of these lists and so never rendered.
    readonly_fields = REQUEST_FIELDS + DECISION_FIELDS + AUDIT_FIELDS

    # Requests are made by the MCP front only and kept as a record: nobody adds, edits or
    # deletes one here. Deciding needs the "change" permission, checked in decide_view.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ApprovalRequest | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApprovalRequest | None = None) -> bool:
        return False

    def can_decide(self, request: HttpRequest) -> bool:
        codename = get_permission_codename("change", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # A request past its expiry is shown as expired, not as one still waiting.
        approvals.expire_overdue()
        return super().changelist_view(request, extra_context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if object_id.isdigit():
            approvals.expire_overdue(int(object_id))
        obj = self.get_object(request, object_id)
        context = {**(extra_context or {}), "decision": self._decision_context(request, obj)}
        return super().change_view(request, object_id, form_url, context)

    def _decision_context(self, request: HttpRequest, obj: ApprovalRequest | None) -> dict[str, Any] | None:
        if obj is None or obj.state != ApprovalRequest.State.PENDING or not self.can_decide(request):
            return None
        refusal = approvals.refusal(obj, request.user.get_username())
        return {
            "url": reverse("admin:hosts_approvalrequest_decide", args=[obj.pk]),
            "form": DecisionForm(),
            "own": bool(refusal),
            "refusal": refusal,
            "request": obj,
        }

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<path:object_id>/decide/",
                self.admin_site.admin_view(self.decide_view),
                name="hosts_approvalrequest_decide",
            ),
            *super().get_urls(),
        ]

    @csrf_protect_m
    def decide_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST ``_approve`` or ``_deny`` with a comment; the outcome is a message on the request's page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.can_decide(request):
            raise PermissionDenied
        obj = self.get_object(request, object_id)
        if obj is None:
            raise Http404(f"no approval request with id {object_id!r}")
        back = HttpResponseRedirect(reverse("admin:hosts_approvalrequest_change", args=[obj.pk]))
        approve = "_approve" in request.POST
        if approve == ("_deny" in request.POST):
            self.message_user(request, "Choose Approve or Deny.", messages.ERROR)
            return back
        form = DecisionForm(request.POST)
        if not form.is_valid():
            self.message_user(
                request,
                f"Not decided: the comment is longer than {MAX_COMMENT_LENGTH} characters.",
                messages.ERROR,
            )
            return back
        try:
            decided = approvals.decide(
                obj.pk, request.user.get_username(), approve, form.cleaned_data["comment"]
            )
        except approvals.ApprovalError as exc:
            self.message_user(request, f"Not decided: {exc}.", messages.ERROR)
            return back
        verb = "Approved" if approve else "Denied"
        self.log_change(request, decided, f"{verb}.")
        self.message_user(
            request,
            format_html(
                "{} request #{}: {} on {}.",
                verb,
                decided.pk,
                visible_html(short_command(decided.command)),
                ", ".join(decided.covered_hosts),
            ),
            messages.SUCCESS if approve else messages.WARNING,
        )
        return back

    # -- display ---------------------------------------------------------------------------

    @admin.display(description="State", ordering="state")
    def state_display(self, obj: ApprovalRequest) -> SafeString:
        tone = _STATE_TONES.get(ApprovalRequest.State(obj.state), "muted")
        return tone_badge(tone, obj.get_state_display())

    @admin.display(description="Host", ordering="host__name")
    def hosts_short(self, obj: ApprovalRequest) -> str:
        # A batch's request covers several hosts: the first and how many more (its page lists them).
        if not obj.batch_id:
            return obj.host.name
        hosts = obj.covered_hosts
        return f"{hosts[0]} +{len(hosts) - 1}" if len(hosts) > 1 else hosts[0]

    @admin.display(description="Batch")
    def batch_display(self, obj: ApprovalRequest) -> SafeString | str:
        """For ssh_execute_many: every host the approval covers, and the batch's page."""
        if not obj.batch_id:
            return "-"
        hosts = ", ".join(obj.covered_hosts)
        url = admin_url("admin:audit_auditevent_batch", obj.batch_id)
        if url is None:
            return format_html("{} hosts: {} (batch {})", len(obj.covered_hosts), hosts, obj.batch_id)
        return format_html(
            '{} hosts: {} (<a href="{}">batch {}</a>)', len(obj.covered_hosts), hosts, url, obj.batch_id
        )

    @admin.display(description="Command", ordering="command")
    def command_short(self, obj: ApprovalRequest) -> SafeString:
        return visible_html(short_command(obj.command))

    @admin.display(description="Command")
    def command_display(self, obj: ApprovalRequest) -> SafeString:
        return format_html(
            '<pre style="white-space:pre-wrap;word-break:break-all;font-family:monospace;margin:0">{}</pre>',
            visible_html(obj.command),
        )

    @admin.display(description="Stdin")
    def stdin_display(self, obj: ApprovalRequest) -> str:
        # Whether input comes with the command matters to the decision (``tee`` of what?);
        # its content may be a secret and is never shown.
        # It is wiped when the request is denied, expires or runs, hence nothing to say then.
        if obj.state not in (ApprovalRequest.State.PENDING, ApprovalRequest.State.APPROVED):
            return "not kept after the decision"
        return "given (not shown)" if obj.stdin else "none"

    @admin.display(description="May not decide")
    def barred_display(self, obj: ApprovalRequest) -> str:
        # Besides the owners: admins who changed the client or its grants while it waited.
        return ", ".join(obj.barred) or "-"

    @admin.display(description="Asked in")
    def audit_link(self, obj: ApprovalRequest) -> SafeString | str:
        return _audit_link(obj.audit_event_id)

    @admin.display(description="Ran in")
    def executed_link(self, obj: ApprovalRequest) -> SafeString | str:
        return _audit_link(obj.executed_event_id)
