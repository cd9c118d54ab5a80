"""The host list and its actions (test connection, scan host keys); the import page is in host_import.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

from django.contrib import admin, messages
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from hosts import hostkeys
from hosts.admin import sudo_warnings
from hosts.admin.base import KEY_STATE_LABELS, admin_url, state_badge
from hosts.admin.host_import import HostImportAdmin
from hosts.forms import HostForm
from hosts.models import Host, HostKey, JumpLoop


class HostKeyInline(admin.TabularInline[HostKey, Host]):
    """Keys are shown, not edited here: approving and revoking go through the host key actions."""

    model = HostKey
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("key_type", "fingerprint", "state_badge", "first_seen_at", "approved_at", "approved_by")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Host | None = None) -> bool:
        return False

    @admin.display(description="State")
    def state_badge(self, obj: HostKey) -> SafeString:
        if hostkeys.also_offered(obj):
            # The host connects with its trusted key; this type may be approved, nothing waits on it.
            return state_badge("offered", KEY_STATE_LABELS["offered"])
        return state_badge(obj.state, obj.get_state_display())


def _chain_text(host: Host) -> str:
    """The jump hosts of ``host``, outermost first (``a -> b``); a loop left in the database is named."""
    try:
        return " -> ".join(hop.name for hop in host.jump_chain())
    except JumpLoop as exc:
        return f"invalid: {exc}"


class TagFilter(admin.SimpleListFilter):
    """Hosts carrying one tag.

    Tags are a JSON list, matched in Python: the same result on SQLite and PostgreSQL
    (JSON containment lookups do not exist on SQLite), and the inventory is small.
    """

    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        tags: set[str] = set()
        for host in Host.objects.only("tags"):
            tags.update(host.tag_list)
        return [(t, t) for t in sorted(tags, key=str.casefold)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        tag = self.value()
        if not tag:
            return queryset
        ids = [host.pk for host in Host.objects.only("tags") if tag in host.tag_list]
        return queryset.filter(pk__in=ids)


class KeyStateFilter(admin.SimpleListFilter):
    """Hosts by the state of their host keys; "changed" and "pending" are the ones needing an admin."""

    title = "host key state"
    parameter_name = "key_state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("refused", "refused (changed or pending)"),
            *((state, KEY_STATE_LABELS[state]) for state in ("changed", "pending", "trusted", "unknown")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        wanted = self.value()
        if not wanted:
            return queryset
        states = hostkeys.host_key_states()
        if wanted == "refused":
            # What the index's host key card counts: hosts whose connections are refused.
            return queryset.filter(
                pk__in=[pk for pk, state in states.items() if state in ("changed", "pending")]
            )
        if wanted == "unknown":
            return queryset.exclude(pk__in=[pk for pk, state in states.items() if state != "unknown"])
        return queryset.filter(pk__in=[pk for pk, state in states.items() if state == wanted])


# Admin actions that reach hosts run at most this many at once, and on at most this many
# hosts per click: a request must end within a browser's patience.
ACTION_THREADS = 8
ACTION_MAX_HOSTS = 20

_R = TypeVar("_R")


def for_each_host(hosts: Sequence[Host], work: Callable[[Host], _R]) -> list[_R]:
    """``work`` on every host, in threads when there are several; results in the hosts' order."""
    if len(hosts) <= 1:
        return [work(h) for h in hosts]

    def in_thread(host: Host) -> _R:
        try:
            return work(host)
        finally:
            # Each thread opened its own database connection; do not leak it.
            connections.close_all()

    with ThreadPoolExecutor(max_workers=min(ACTION_THREADS, len(hosts))) as pool:
        return list(pool.map(in_thread, hosts))


class ConnectionTest(Protocol):
    """What the Test connection action reports for one host."""

    @property
    def ok(self) -> bool: ...

    @property
    def audit_id(self) -> int: ...

    def summary(self) -> str: ...


ConnectionTester = Callable[[Host, str], ConnectionTest]  # (host, admin username) -> outcome


@dataclass(frozen=True)
class HostListColumn:
    """A column of the host list that another app's admin provides.

    ``display`` is an ``@admin.display`` function of a host; ``annotations`` are added to the
    list's queryset for it to read (its ordering may name one of them).
    """

    display: Callable[[Host], Any]  # what a list cell shows: text, a number, safe HTML
    annotations: Mapping[str, Any] = field(default_factory=dict)


@admin.register(Host)
class HostAdmin(sudo_warnings.SudoWarningsAdmin[Host], HostImportAdmin):
    form = HostForm
    sudo_scope = "host"
    list_display = (
        "name",
        "address_display",
        "tag_list",
        "key_state_badge",
        "last_connected_at",
    )
    list_filter = (TagFilter, KeyStateFilter, "enabled")
    search_fields = ("name", "address", "username", "description")
    ordering = ("name",)
    readonly_fields = ("jump_chain_display", "last_connected_at", "created_at", "updated_at")
    inlines = (HostKeyInline,)
    actions = ("test_connection_action", "scan_host_keys_action")
    # Installed by the SSH runtime's admin (sshcontrol/admin.py), so that the inventory does not
    # import the runtime: a host is tested where sessions are made, through the audited path.
    connection_tester: ClassVar[ConnectionTester | None] = None
    # Appended to the list's columns; installed the same way (the open sessions, from
    # sshcontrol/admin.py), so that the inventory does not import the runtime's models.
    extra_columns: ClassVar[tuple[HostListColumn, ...]] = ()
    change_list_template = "admin/hosts/host/change_list.html"
    fieldsets = (
        (None, {"fields": ("name", "address", "port", "username", "credential")}),
        ("Description", {"fields": ("description", "tags")}),
        (
            "Access",
            {"fields": ("enabled", "trust_on_first_use", "jump_host", "jump_chain_display", "proxy_jump")},
        ),
        ("History", {"fields": ("last_connected_at", "created_at", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Host]:
        # Two levels of jump hosts come with the row; a deeper chain costs a query per extra hop.
        queryset = (
            super()
            .get_queryset(request)
            .select_related("credential", "jump_host__jump_host")
            .prefetch_related("host_keys")
        )
        for column in self.extra_columns:
            queryset = queryset.annotate(**column.annotations)
        return queryset

    def get_list_display(self, request: HttpRequest) -> tuple[str | Callable[[Host], Any], ...]:
        return (*super().get_list_display(request), *(column.display for column in self.extra_columns))

    def response_add(
        self, request: HttpRequest, obj: Host, post_url_continue: str | None = None
    ) -> HttpResponse:
        response = super().response_add(request, obj, post_url_continue)
        self.warn_after_save(request, response, obj)
        return response

    def response_change(self, request: HttpRequest, obj: Host) -> HttpResponse:
        response = super().response_change(request, obj)
        self.warn_after_save(request, response, obj)
        return response

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Host], search_term: str
    ) -> tuple[QuerySet[Host], bool]:
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        needle = search_term.strip().casefold()
        if needle:
            # Tags are searched too, in Python for the same reason as TagFilter.
            tagged = [
                host.pk
                for host in Host.objects.only("tags")
                if any(needle in t.casefold() for t in host.tag_list)
            ]
            if tagged:
                results = results | queryset.filter(pk__in=tagged)
        return results, may_have_duplicates

    @admin.display(description="Address", ordering="address")
    def address_display(self, obj: Host) -> str:
        text = f"{obj.username}@{obj.address}" + (f":{obj.port}" if obj.port != 22 else "")
        chain = _chain_text(obj)
        return text + (f" via {chain}" if chain else "")

    @admin.display(description="Chain")
    def jump_chain_display(self, obj: Host) -> str:
        if obj.pk is None:
            return "-"
        chain = _chain_text(obj)
        return f"{chain} -> {obj.name}" if chain else "direct (no jump host)"

    @admin.display(description="Tags")
    def tag_list(self, obj: Host) -> str:
        return ", ".join(obj.tag_list)

    @admin.display(description="Host key")
    def key_state_badge(self, obj: Host) -> SafeString:
        state = obj.key_state
        badge = state_badge(state, KEY_STATE_LABELS[state])
        if not obj.enabled:
            # The list has no column of its own for it (it must fit at 1280 px); the filter has.
            badge = format_html("{} {}", state_badge("revoked", "disabled"), badge)
        if state in ("changed", "pending"):
            url = admin_url(
                "admin:hosts_hostkey_changelist", query=f"host__id__exact={obj.pk}&state__exact=pending"
            )
            return format_html('<a href="{}" title="Review the pending keys">{}</a>', url, badge)
        return badge

    # -- actions -----------------------------------------------------------------------

    def _too_many(self, request: HttpRequest, hosts: list[Host]) -> bool:
        if len(hosts) > ACTION_MAX_HOSTS:
            self.message_user(
                request, f"Select at most {ACTION_MAX_HOSTS} hosts for this action.", messages.ERROR
            )
            return True
        return False

    @admin.action(
        description="Test connection (runs 'true', audited)",
        permissions=["change"],
    )
    def test_connection_action(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        tester = type(self).connection_tester
        if tester is None:
            self.message_user(request, "No connection tester is installed.", messages.ERROR)
            return
        hosts = list(queryset.order_by("name"))
        if self._too_many(request, hosts):
            return
        username = request.user.get_username()
        for result in for_each_host(hosts, lambda h: tester(h, username)):
            audit_url = (
                admin_url("admin:audit_auditevent_change", result.audit_id) if result.audit_id else None
            )
            text = result.summary()
            message: str | SafeString = (
                format_html('{} (<a href="{}">audit row {}</a>)', text, audit_url, result.audit_id)
                if audit_url
                else text
            )
            self.message_user(request, message, messages.SUCCESS if result.ok else messages.ERROR)

    @admin.action(
        description="Scan host keys (new keys stored as pending)",
        permissions=["change"],
    )
    def scan_host_keys_action(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        hosts = list(queryset.order_by("name"))
        if self._too_many(request, hosts):
            return
        # A host behind jump hosts is scanned through them (hostkeys.scan), each hop verified.
        for outcome in for_each_host(hosts, hostkeys.scan):
            if outcome.error:
                self.message_user(request, f"{outcome.host.name}: {outcome.error}", messages.ERROR)
                continue
            listing = format_html_join(
                "; ",
                "{} <code>{}</code> ({})",
                (
                    (k.key_type, k.fingerprint, "also offered" if hostkeys.also_offered(k) else k.state)
                    for k in outcome.keys
                ),
            )
            pending = sum(
                1 for k in outcome.keys if k.state == HostKey.State.PENDING and not hostkeys.also_offered(k)
            )
            if pending:
                url = admin_url(
                    "admin:hosts_hostkey_changelist",
                    query=f"host__id__exact={outcome.host.pk}&state__exact=pending",
                )
                message = format_html(
                    '{}: {}. <a href="{}">Review and approve the {} pending key(s)</a> after comparing '
                    "them with <code>ssh-keygen -lf</code> on the server.",
                    outcome.host.name,
                    listing,
                    url,
                    pending,
                )
                self.message_user(request, message, messages.WARNING)
            else:
                self.message_user(
                    request, format_html("{}: {}", outcome.host.name, listing), messages.SUCCESS
                )
