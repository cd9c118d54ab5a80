"""MCP clients and their groups: who may call the tools, with which token.

A client's token is shown exactly once: on the page that answers the POST which made it
(adding the client, or "Issue new token"). Only its SHA-256 digest is stored, and the
digest is kept out of every form, list, search and filter like the credentials' secrets.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.widgets import RelatedFieldWidgetWrapper
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Field, Q, QuerySet
from django.forms import Field as FormField
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from hosts import approvals
from hosts.access_models import ClientGroup, Grant, McpClient
from hosts.admin.base import GrantColumns, InventoryAdmin, csrf_protect_m, tone_badge
from hosts.clients import IssuedToken, issue_token, revoke

_STATE_TONES = {"active": "good", "expired": "bad", "disabled": "muted", "revoked": "over"}


def without_add_popup(formfield: FormField | None) -> FormField | None:
    """Drop the "+" next to a client select.

    A client added in that popup would show its one-time token in a window that the admin
    closes to go back, and the select would not learn of the new client anyway (the token
    page replaces the popup's usual answer).
    """
    if formfield is not None and isinstance(formfield.widget, RelatedFieldWidgetWrapper):
        formfield.widget.can_add_related = False
    return formfield


class ClientStateFilter(admin.SimpleListFilter):
    """Clients by the state ``McpClient.state`` computes, as a database filter."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(s, s) for s in ("active", "expired", "disabled", "revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        live = Q(revoked_at__isnull=True)
        not_expired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        wanted = {
            "active": live & Q(enabled=True) & not_expired,
            "expired": live & Q(enabled=True, expires_at__lte=now),
            "disabled": live & Q(enabled=False),
            "revoked": ~live,
        }.get(self.value() or "")
        return queryset if wanted is None else queryset.filter(wanted)


class GrantInline(GrantColumns, admin.TabularInline[Grant, McpClient]):
    """The client's grants at a glance; each is edited on its own page (hosts, rules)."""

    model = Grant
    fk_name = "client"
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("description", "enabled", "scope", "permissions")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: McpClient | None = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Grant]:
        return super().get_queryset(request).prefetch_related("hosts")


@admin.register(McpClient)
class McpClientAdmin(InventoryAdmin[McpClient]):
    list_display = (
        "name",
        "owner",
        "state_display",
        "expires_at",
        "last_used_at",
        "token_prefix",
        "grant_count",
    )
    list_filter = (ClientStateFilter, "groups")
    # token_prefix is searchable on purpose: it is what a leaked token is recognised by.
    search_fields = ("name", "owner", "description", "token_prefix", "oauth_subject")
    ordering = ("name",)
    filter_horizontal = ("groups",)
    inlines = (GrantInline,)
    actions = ("revoke_clients",)
    add_fieldsets = (
        (None, {"fields": ("name", "owner", "description", "groups", "expires_at")}),
        (
            "Limits",
            {"fields": ("max_concurrent_calls", "max_calls_per_minute", "max_open_sessions")},
        ),
    )
    fieldsets = (
        (None, {"fields": ("name", "owner", "description", "groups")}),
        ("Token", {"fields": ("state_display", "token_status", "enabled", "expires_at", "local_user")}),
        # Set for a person the OAuth identity provider vouches for; groups then follow the token.
        ("Identity provider", {"fields": ("oauth_issuer", "oauth_subject")}),
        (
            "Limits",
            {"fields": ("max_concurrent_calls", "max_calls_per_minute", "max_open_sessions")},
        ),
        ("Access", {"fields": ("grant_links",)}),
        ("History", {"fields": ("created_at", "last_used_at", "revoked_at")}),
    )
    readonly_fields = (
        "state_display",
        "token_status",
        "local_user",
        "oauth_issuer",
        "oauth_subject",
        "grant_links",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    token_template = "admin/hosts/mcpclient/token.html"  # noqa: S105 (a template name)

    def get_queryset(self, request: HttpRequest) -> QuerySet[McpClient]:
        return super().get_queryset(request).annotate(grant_total=Count("grants", distinct=True))

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # Who owns a client decides who may approve its requests: such a change while some
        # wait is audited, and its author may not decide them (hosts.approvals.record_change).
        changed = [name for name in ("owner", "groups") if name in form.changed_data]
        if change and changed:
            client = form.instance
            what = (
                f"owner '{form.initial.get('owner', '')}' -> '{client.owner}'" if "owner" in changed else ""
            )
            what = "; ".join(filter(None, [what, "groups" if "groups" in changed else ""]))
            approvals.record_change(
                author=request.user.get_username(),
                change=f"client '{client.name}' changed: {what}",
                client_ids={client.pk},
            )

    def get_fieldsets(self, request: HttpRequest, obj: McpClient | None = None) -> Any:
        return self.add_fieldsets if obj is None else super().get_fieldsets(request, obj)

    def get_inlines(self, request: HttpRequest, obj: McpClient | None) -> Any:
        # A client being added has no grants yet; they are added once it exists.
        return self.inlines if obj is not None else ()

    def response_add(
        self, request: HttpRequest, obj: McpClient, post_url_continue: str | None = None
    ) -> HttpResponse:
        """Make the new client's token here and answer with the page that shows it, once.

        Not a redirect with a ``messages`` entry, which is how the admin usually confirms:
        a message is stored until the next page reads it, in a cookie (signed, not
        encrypted: readable by anything that sees the browser's cookies or a proxy's
        logs) or in the session table. The token must exist only in this response's body,
        which ``admin_view`` already marks ``Cache-Control: no-store``. The cost, as on any
        page that answers a POST directly: reloading it re-submits the form, and the
        duplicate name is refused, so no second client is made by accident.

        This still runs inside the add view's transaction: a failure leaves neither a
        client without a token nor a token without its client. The client was saved by the
        stock ``save_model`` (with its groups and limits), so ``issue_token`` does here what
        ``hosts.clients.create_client`` does for the command line.
        """
        issued = issue_token(obj)
        return self._token_page(request, issued, created=True)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<path:object_id>/token/",
                self.admin_site.admin_view(self.token_view),
                name="hosts_mcpclient_token",
            ),
            path(
                "<path:object_id>/revoke/",
                self.admin_site.admin_view(self.revoke_view),
                name="hosts_mcpclient_revoke",
            ),
            *super().get_urls(),
        ]

    def _client_or_404(self, request: HttpRequest, object_id: str) -> McpClient:
        client = self.get_object(request, object_id)
        if client is None:
            raise Http404(f"no MCP client with id {object_id!r}")
        if not self.has_change_permission(request, client):
            raise PermissionDenied
        return client

    @csrf_protect_m
    def token_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET asks for confirmation (the old token stops working); POST issues and shows the new one."""
        client = self._client_or_404(request, object_id)
        refusal = client.token_refusal()
        if refusal:
            self.message_user(request, refusal, messages.ERROR)
            return HttpResponseRedirect(reverse("admin:hosts_mcpclient_change", args=[client.pk]))
        if request.method == "POST":
            issued = issue_token(client)
            self.log_change(request, client, "Issued a new token.")
            return self._token_page(request, issued, created=False)
        return self._render_token_template(request, client, token="", created=False)

    @csrf_protect_m
    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        # POST only: a link (or a prefetching browser) must not be able to revoke.
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        client = self._client_or_404(request, object_id)
        self._revoke_one(request, client)
        return HttpResponseRedirect(reverse("admin:hosts_mcpclient_change", args=[client.pk]))

    def _revoke_one(self, request: HttpRequest, client: McpClient) -> bool:
        if client.revoked_at is not None:
            self.message_user(request, f"'{client.name}' was already revoked.", messages.INFO)
            return False
        revoke(client)
        self.log_change(request, client, "Revoked the client.")
        self.message_user(request, f"Revoked '{client.name}': its token no longer works.", messages.SUCCESS)
        return True

    @admin.action(description="Revoke selected clients (their tokens stop working)", permissions=["change"])
    def revoke_clients(self, request: HttpRequest, queryset: QuerySet[McpClient]) -> None:
        for client in queryset.order_by("name"):
            self._revoke_one(request, client)

    def _token_page(self, request: HttpRequest, issued: IssuedToken, created: bool) -> HttpResponse:
        return self._render_token_template(request, issued.client, token=issued.token, created=created)

    def _render_token_template(
        self, request: HttpRequest, client: McpClient, token: str, created: bool
    ) -> HttpResponse:
        if token:
            title = f"Client “{client}” created" if created else f"New token for “{client}”"
        else:
            title = f"Issue a new token for “{client}”"
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": None,
            "client": client,
            "token": token,
            "created": created,
            "opts": self.opts,
            "original": client,
            "has_view_permission": self.has_view_permission(request, client),
            "is_popup": False,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.token_template, context)

    # -- display ---------------------------------------------------------------------------

    @admin.display(description="State")
    def state_display(self, obj: McpClient) -> SafeString:
        state = obj.state()
        return tone_badge(_STATE_TONES[state], state)

    @admin.display(description="Grants", ordering="grant_total")
    def grant_count(self, obj: McpClient) -> int:
        return int(getattr(obj, "grant_total", 0))

    @admin.display(description="Token")
    def token_status(self, obj: McpClient) -> SafeString | str:
        if obj.local_user:
            return "none: the local client of an OS user, over stdio"
        if not obj.token_prefix:
            return "none issued"
        return format_html("<code>{}…</code> (only the beginning is kept to recognise it)", obj.token_prefix)

    @admin.display(description="Grants")
    def grant_links(self, obj: McpClient) -> SafeString:
        add = format_html(
            '<a class="addlink" href="{}?client={}">Add a grant</a>', reverse("admin:hosts_grant_add"), obj.pk
        )
        groups = list(obj.groups.order_by("name").values_list("pk", "name"))
        if not groups:
            return add
        links = format_html_join(
            ", ",
            '<a href="{}?group__id__exact={}">{}</a>',
            ((reverse("admin:hosts_grant_changelist"), pk, name) for pk, name in groups),
        )
        return format_html("{} &nbsp; Also the grants of its groups: {}", add, links)


class MembershipInline(admin.TabularInline[Any, ClientGroup]):
    """The clients of a group, added and removed on the group's page."""

    model = McpClient.groups.through
    extra = 0
    verbose_name = "client"
    verbose_name_plural = "clients"

    def formfield_for_dbfield(
        self, db_field: Field[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> FormField | None:
        return without_add_popup(super().formfield_for_dbfield(db_field, request, **kwargs))


@admin.register(ClientGroup)
class ClientGroupAdmin(InventoryAdmin[ClientGroup]):
    list_display = ("name", "description", "client_count", "grant_count")
    search_fields = ("name", "description")
    ordering = ("name",)
    inlines = (MembershipInline,)
    fields = ("name", "description", "grant_links")
    readonly_fields = ("grant_links",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ClientGroup]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                client_total=Count("clients", distinct=True), grant_total=Count("grants", distinct=True)
            )
        )

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if any(formset.has_changed() for formset in formsets):
            group = form.instance
            removed = {link.mcpclient_id for formset in formsets for link in formset.deleted_objects}
            approvals.record_change(
                author=request.user.get_username(),
                change=f"members of group '{group.name}' changed (its grants apply to them)",
                client_ids=removed | set(group.clients.values_list("pk", flat=True)),
            )

    # Deleting a group deletes its grants (and memberships) with it: a grant change like any other.
    def delete_model(self, request: HttpRequest, obj: ClientGroup) -> None:
        clients, name = set(obj.clients.values_list("pk", flat=True)), obj.name
        super().delete_model(request, obj)
        approvals.record_change(
            author=request.user.get_username(),
            change=f"group '{name}' deleted, with its grants and members",
            client_ids=clients,
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ClientGroup]) -> None:
        for group in queryset:
            self.delete_model(request, group)

    @admin.display(description="Clients", ordering="client_total")
    def client_count(self, obj: ClientGroup) -> int:
        return int(getattr(obj, "client_total", 0))

    @admin.display(description="Grants", ordering="grant_total")
    def grant_count(self, obj: ClientGroup) -> int:
        return int(getattr(obj, "grant_total", 0))

    @admin.display(description="Grants")
    def grant_links(self, obj: ClientGroup) -> SafeString | str:
        if obj.pk is None:
            return "Save the group, then give it grants."
        return format_html(
            '<a href="{}?group__id__exact={}">Its grants</a> &nbsp; <a class="addlink" href="{}?group={}">'
            "Add a grant</a>",
            reverse("admin:hosts_grant_changelist"),
            obj.pk,
            reverse("admin:hosts_grant_add"),
            obj.pk,
        )
