"""Admin for the inventory: credentials, hosts and their host keys.

A credential's secret is write-only. It is typed once on the add page or on its own
"Replace secret" page (like a user's password in django.contrib.auth), is never shown
again, and the encrypted columns are kept out of every form, list, search and filter.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.forms import ModelForm
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from hosts import hostkeys
from hosts.forms import CredentialAddForm, CredentialChangeForm, HostForm, ReplaceSecretForm
from hosts.models import Credential, Host, HostKey

_M = TypeVar("_M", bound=Model)

SECRET_FIELDS = frozenset({"secret_encrypted", "passphrase_encrypted"})

sensitive_post_parameters_m = method_decorator(sensitive_post_parameters())
csrf_protect_m = method_decorator(csrf_protect)

KEY_STATE_COLORS = {
    "trusted": "#2e7d32",
    "pending": "#ef6c00",
    "changed": "#c62828",
    "revoked": "#616161",
    "unknown": "#757575",
}


def state_badge(state: str, label: str | None = None) -> SafeString:
    color = KEY_STATE_COLORS.get(state, "#757575")
    return format_html(
        '<span style="color:#fff;background:{};padding:1px 6px;border-radius:8px;white-space:nowrap">'
        "{}</span>",
        color,
        label or state,
    )


class InventoryAdmin(admin.ModelAdmin[_M]):
    """Refuses URL lookups that touch an encrypted column, from any model (e.g. credential__secret...).

    ``?secret_encrypted__startswith=s`` would otherwise let anyone with view permission
    guess a ciphertext (or a plaintext that slipped in) one character at a time.
    """

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        if SECRET_FIELDS.intersection(lookup.split(LOOKUP_SEP)):
            return False
        return super().lookup_allowed(lookup, value, request)


@admin.register(Credential)
class CredentialAdmin(InventoryAdmin[Credential]):
    list_display = ("name", "kind", "has_secret_display", "fingerprint", "hosts_using")
    list_filter = ("kind",)
    search_fields = ("name", "fingerprint")
    ordering = ("name",)
    form = CredentialChangeForm
    add_form = CredentialAddForm
    fieldsets = (
        (None, {"fields": ("name", "kind", "secret_status")}),
        ("Key", {"fields": ("fingerprint", "public_key")}),
        ("Usage", {"fields": ("hosts_using", "created_at", "updated_at")}),
    )
    add_fieldsets = (
        (None, {"fields": ("name", "kind")}),
        (
            "Secret",
            {
                "fields": ("password", "private_key", "passphrase"),
                "description": "Stored encrypted and never shown again; it can be replaced later.",
            },
        ),
    )
    change_readonly_fields = (
        "kind",
        "secret_status",
        "fingerprint",
        "public_key",
        "hosts_using",
        "created_at",
        "updated_at",
    )
    replace_secret_template = "admin/hosts/credential/replace_secret.html"  # noqa: S105 (a template name)

    def get_fieldsets(self, request: HttpRequest, obj: Credential | None = None) -> Any:
        return self.add_fieldsets if obj is None else super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Credential | None = None) -> Any:
        return () if obj is None else self.change_readonly_fields

    def get_form(
        self, request: HttpRequest, obj: Credential | None = None, change: bool = False, **kwargs: Any
    ) -> type[ModelForm[Credential]]:
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, change=change, **kwargs)

    @sensitive_post_parameters_m
    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().add_view(request, form_url, extra_context)

    @sensitive_post_parameters_m
    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<path:object_id>/secret/",
                self.admin_site.admin_view(self.replace_secret_view),
                name="hosts_credential_secret",
            ),
            *super().get_urls(),
        ]

    @sensitive_post_parameters_m
    @csrf_protect_m
    def replace_secret_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        credential = self.get_object(request, object_id)
        if credential is None:
            raise Http404(f"no credential with id {object_id!r}")
        if not self.has_change_permission(request, credential):
            raise PermissionDenied
        if request.method == "POST":
            form = ReplaceSecretForm(credential, request.POST)
            if form.is_valid():
                form.save()
                self.log_change(request, credential, "Replaced the secret.")
                self.message_user(request, f"The secret of “{credential}” was replaced.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:hosts_credential_change", args=[credential.pk]))
        else:
            form = ReplaceSecretForm(credential)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Replace secret: {credential}",
            "subtitle": None,
            "form": form,
            "opts": self.opts,
            "original": credential,
            "has_view_permission": self.has_view_permission(request, credential),
            "is_popup": False,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.replace_secret_template, context)

    @admin.display(boolean=True, description="Secret")
    def has_secret_display(self, obj: Credential) -> bool:
        return obj.has_secret

    @admin.display(description="Secret")
    def secret_status(self, obj: Credential) -> SafeString:
        url = reverse("admin:hosts_credential_secret", args=[obj.pk])
        return format_html(
            '{} &nbsp; <a class="button" href="{}">Replace secret</a>',
            "set" if obj.has_secret else "not set",
            url,
        )

    @admin.display(description="Hosts using it")
    def hosts_using(self, obj: Credential) -> SafeString | str:
        hosts = list(obj.hosts.order_by("name").values_list("pk", "name")[:20])
        if not hosts:
            return "-"
        links = ((reverse("admin:hosts_host_change", args=[pk]), name) for pk, name in hosts)
        return format_html_join(", ", '<a href="{}">{}</a>', links)


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
        return state_badge(obj.state, obj.get_state_display())


@admin.register(Host)
class HostAdmin(InventoryAdmin[Host]):
    form = HostForm
    list_display = (
        "name",
        "address",
        "port",
        "username",
        "tag_list",
        "enabled",
        "key_state_badge",
        "last_connected_at",
    )
    list_filter = ("enabled", "trust_on_first_use")
    search_fields = ("name", "address", "description")
    ordering = ("name",)
    readonly_fields = ("last_connected_at", "created_at", "updated_at")
    inlines = (HostKeyInline,)
    fieldsets = (
        (None, {"fields": ("name", "address", "port", "username", "credential")}),
        ("Description", {"fields": ("description", "tags")}),
        ("Access", {"fields": ("enabled", "trust_on_first_use")}),
        ("History", {"fields": ("last_connected_at", "created_at", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Host]:
        return super().get_queryset(request).select_related("credential")

    @admin.display(description="Tags")
    def tag_list(self, obj: Host) -> str:
        return ", ".join(str(t) for t in obj.tags) if isinstance(obj.tags, list) else ""

    @admin.display(description="Host key")
    def key_state_badge(self, obj: Host) -> SafeString:
        state = obj.key_state
        labels = {"changed": "changed (new key pending)", "pending": "pending approval"}
        return state_badge(state, labels.get(state, state))


@admin.register(HostKey)
class HostKeyAdmin(InventoryAdmin[HostKey]):
    """Keys arrive from scans and connections; an admin approves or revokes them with the actions."""

    list_display = (
        "host",
        "key_type",
        "fingerprint",
        "state_badge",
        "first_seen_at",
        "approved_at",
        "approved_by",
    )
    list_filter = ("state", "key_type")
    search_fields = ("host__name", "fingerprint")
    list_select_related = ("host",)
    actions = ("approve_keys", "revoke_keys")
    # Every field is read-only: a state change must record who made it, which the actions do.
    fields = (
        "host",
        "key_type",
        "fingerprint",
        "public_key",
        "state",
        "first_seen_at",
        "approved_at",
        "approved_by",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj: HostKey) -> SafeString:
        return state_badge(obj.state, obj.get_state_display())

    @admin.action(description="Approve (trust) selected keys", permissions=["change"])
    def approve_keys(self, request: HttpRequest, queryset: QuerySet[HostKey]) -> None:
        by = request.user.get_username()
        keys = list(queryset.select_related("host"))
        for key in keys:
            hostkeys.trust(key.host, key.fingerprint, by)
        self.message_user(request, f"Trusted {len(keys)} host key(s).", messages.SUCCESS)

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[HostKey]) -> None:
        by = request.user.get_username()
        keys = list(queryset.select_related("host"))
        for key in keys:
            hostkeys.revoke(key.host, key.fingerprint, by)
        self.message_user(request, f"Revoked {len(keys)} host key(s).", messages.SUCCESS)
