"""Host key review: approve, replace (a changed key) and revoke, each recording who and when."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from hosts import hostkeys
from hosts.admin.base import KEY_STATE_LABELS, InventoryAdmin, short_fingerprint, state_badge
from hosts.models import HostKey


@admin.register(HostKey)
class HostKeyAdmin(InventoryAdmin[HostKey]):
    """Keys arrive from scans and connections; an admin approves or revokes them with the actions.

    A pending key of a type that already has a trusted key means the server's key
    *changed*. "Approve" refuses it; only the separate "Accept a changed key" action
    accepts it, and that revokes the old key in the same transaction, so a host never
    has two trusted keys of one type (the old one may be the stolen one). Both actions
    act on pending keys only: select-all cannot bring a revoked key back.
    """

    CHANGED_NOTE = (
        "A key marked CHANGED would replace a trusted key: the server now presents another key. "
        "Check with the server's administrator; “Approve” refuses such keys, and “Accept a changed key” "
        "trusts one and revokes the old key of its type."
    )

    # Short enough to fit beside the sidebar at 1280 px; the key's page shows every field.
    list_display = ("host", "key_type", "fingerprint_short", "state_review", "first_seen_at", "approved")
    list_filter = ("state", "key_type")
    search_fields = ("host__name", "fingerprint")
    list_select_related = ("host",)
    actions = ("approve_keys", "replace_trusted_keys", "revoke_keys")
    # Every field is read-only: a state change must record who made it, which the actions do.
    fields = (
        "host",
        "key_type",
        "fingerprint",
        "public_key",
        "state",
        "review",
        "first_seen_at",
        "approved_at",
        "approved_by",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # A help paragraph above the list (as "subtitle" it became a bold heading and the tab's title).
        return super().changelist_view(request, {"key_note": self.CHANGED_NOTE, **(extra_context or {})})

    def _pending_only(self, request: HttpRequest, queryset: QuerySet[HostKey]) -> list[HostKey]:
        keys = list(queryset.select_related("host").order_by("host__name", "key_type", "id"))
        others = [k for k in keys if k.state != HostKey.State.PENDING]
        if others:
            self.message_user(
                request,
                f"Skipped {len(others)} key(s) that are not pending (already trusted, or revoked: a revoked "
                "key is trusted again only with 'sshcontrol hosts trust HOST FINGERPRINT').",
                messages.INFO,
            )
        return [k for k in keys if k.state == HostKey.State.PENDING]

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj: HostKey) -> SafeString:
        if hostkeys.also_offered(obj):
            return state_badge("offered", KEY_STATE_LABELS["offered"])
        return state_badge(obj.state, obj.get_state_display())

    @admin.display(description="Fingerprint", ordering="fingerprint")
    def fingerprint_short(self, obj: HostKey) -> SafeString:
        return short_fingerprint(obj.fingerprint)

    @admin.display(description="State", ordering="state")
    def state_review(self, obj: HostKey) -> SafeString:
        return format_html('{}<br><span class="quiet">{}</span>', self.state_badge(obj), self.review(obj))

    @admin.display(description="Approved", ordering="approved_at")
    def approved(self, obj: HostKey) -> str:
        if obj.approved_at is None:
            return "-"
        when = obj.approved_at.astimezone(timezone.get_current_timezone()).strftime("%Y-%m-%d %H:%M")
        return f"{when} by {obj.approved_by}" if obj.approved_by else when

    @admin.display(description="Review")
    def review(self, obj: HostKey) -> SafeString | str:
        old = hostkeys.replaced_by(obj)
        if old is None:
            if hostkeys.also_offered(obj):
                return "optional: the host connects with its trusted key"
            return "no trusted key yet: connections wait" if obj.state == HostKey.State.PENDING else "-"
        return format_html(
            "{} replaces trusted {}",
            state_badge("changed", "CHANGED"),
            short_fingerprint(old.fingerprint),
        )

    @admin.action(
        description="Approve selected keys (new key types only)",
        permissions=["change"],
    )
    def approve_keys(self, request: HttpRequest, queryset: QuerySet[HostKey]) -> None:
        by = request.user.get_username()
        trusted: list[HostKey] = []
        refused: list[str] = []
        for key in self._pending_only(request, queryset):
            try:
                trusted.append(hostkeys.approve(key.host, key.fingerprint, by).key)
            except hostkeys.KeyChangeNotConfirmed:
                refused.append(f"{key.host.name} {key.key_type} {key.fingerprint}")
        if trusted:
            self.message_user(request, f"Trusted {len(trusted)} host key(s).", messages.SUCCESS)
        if refused:
            self.message_user(
                request,
                "Not approved, because each would replace a trusted key of the same type (the server's key "
                "changed): " + "; ".join(refused) + ". Check with the server's administrator; if the change "
                "is expected, select the key and use 'Accept a changed key'.",
                messages.WARNING,
            )

    @admin.action(
        description="Accept a changed key (revokes the old key of its type)",
        permissions=["change"],
    )
    def replace_trusted_keys(self, request: HttpRequest, queryset: QuerySet[HostKey]) -> None:
        by = request.user.get_username()
        keys = self._pending_only(request, queryset)
        slots = Counter((k.host_id, k.key_type) for k in keys)
        doubled = [k for k in keys if slots[(k.host_id, k.key_type)] > 1]
        if doubled:
            self.message_user(
                request,
                "Select one key per host and key type: only one can replace the trusted key. "
                "Nothing changed.",
                messages.ERROR,
            )
            return
        for key in keys:
            approval = hostkeys.approve(key.host, key.fingerprint, by, replace=True)
            replaced = ", ".join(old.fingerprint for old in approval.replaced) or "no trusted key"
            self.message_user(
                request,
                f"{key.host.name}: trusted {key.key_type} {key.fingerprint}; revoked {replaced}.",
                messages.SUCCESS,
            )

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[HostKey]) -> None:
        by = request.user.get_username()
        keys = list(queryset.select_related("host"))
        for key in keys:
            hostkeys.revoke(key.host, key.fingerprint, by)
        self.message_user(request, f"Revoked {len(keys)} host key(s).", messages.SUCCESS)
