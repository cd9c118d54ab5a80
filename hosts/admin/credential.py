"""The credential admin.

A credential's secret is write-only. It is typed once on the add page or on its own
"Replace secret" page (like a user's password in django.contrib.auth), is never shown
again, and the encrypted columns are kept out of every form, list, search and filter.
A key pair can also be made on the server; only its public half is ever shown. The sudo
password (for ``sudo -S``) is handled the same way: set on the add page or on its own page,
never rendered back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.forms import ModelForm
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from hosts.admin import sudo_warnings
from hosts.admin.base import InventoryAdmin, csrf_protect_m, sensitive_post_parameters_m
from hosts.forms import (
    CredentialAddForm,
    CredentialChangeForm,
    GenerateKeyForm,
    ReplaceSecretForm,
    SudoPasswordForm,
)
from hosts.keyfiles import generate_ed25519
from hosts.models import Credential


@admin.register(Credential)
class CredentialAdmin(sudo_warnings.SudoWarningsAdmin[Credential], InventoryAdmin[Credential]):
    sudo_scope = "credential"
    list_display = (
        "name",
        "kind",
        "has_secret_display",
        "has_sudo_password_display",
        "fingerprint",
        "hosts_using",
    )
    list_filter = ("kind",)
    search_fields = ("name", "fingerprint")
    ordering = ("name",)
    form = CredentialChangeForm
    add_form = CredentialAddForm
    fieldsets = (
        (None, {"fields": ("name", "kind", "secret_status", "sudo_password_status")}),
        ("Key", {"fields": ("fingerprint", "public_key_display")}),
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
        (
            "Sudo",
            {
                "fields": ("sudo_password",),
                "description": "Only if the login user's sudo asks for a password. Also write-only.",
            },
        ),
    )
    change_readonly_fields = (
        "kind",
        "secret_status",
        "sudo_password_status",
        "fingerprint",
        "public_key_display",
        "hosts_using",
        "created_at",
        "updated_at",
    )
    replace_secret_template = "admin/hosts/credential/replace_secret.html"  # noqa: S105 (a template name)
    sudo_password_template = "admin/hosts/credential/sudo_password.html"  # noqa: S105 (a template name)
    generate_key_template = "admin/hosts/credential/generate_key.html"
    change_list_template = "admin/hosts/credential/change_list.html"

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
                "generate/",
                self.admin_site.admin_view(self.generate_key_view),
                name="hosts_credential_generate",
            ),
            path(
                "<path:object_id>/secret/",
                self.admin_site.admin_view(self.replace_secret_view),
                name="hosts_credential_secret",
            ),
            path(
                "<path:object_id>/sudo/",
                self.admin_site.admin_view(self.sudo_password_view),
                name="hosts_credential_sudo",
            ),
            *super().get_urls(),
        ]

    @sensitive_post_parameters_m
    @csrf_protect_m
    def replace_secret_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self.secret_form_page(
            request,
            object_id,
            ReplaceSecretForm,
            "Replace secret",
            self.replace_secret_template,
            lambda form: "Replaced the secret",
        )

    @sensitive_post_parameters_m
    @csrf_protect_m
    def sudo_password_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self.secret_form_page(
            request,
            object_id,
            SudoPasswordForm,
            "Sudo password",
            self.sudo_password_template,
            lambda form: (
                "Cleared the sudo password" if form.cleaned_data["clear"] else "Set the sudo password"
            ),
        )

    def secret_form_page(
        self,
        request: HttpRequest,
        object_id: str,
        form_class: type[ReplaceSecretForm] | type[SudoPasswordForm],
        title: str,
        template: str,
        done: Callable[[Any], str],
    ) -> HttpResponse:
        """A page of its own for one write-only secret: the form, then back to the credential."""
        credential = self.get_object(request, object_id)
        if credential is None:
            raise Http404(f"no credential with id {object_id!r}")
        if not self.has_change_permission(request, credential):
            raise PermissionDenied
        if request.method == "POST":
            form = form_class(credential, request.POST)
            if form.is_valid():
                form.save()
                what = done(form)
                self.log_change(request, credential, f"{what}.")
                self.message_user(request, f"{what} of “{credential}”.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:hosts_credential_change", args=[credential.pk]))
        else:
            form = form_class(credential)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{title}: {credential}",
            "subtitle": None,
            "form": form,
            "opts": self.opts,
            "original": credential,
            "has_view_permission": self.has_view_permission(request, credential),
            "is_popup": False,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, template, context)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {**(extra_context or {}), "can_generate": self.has_add_permission(request)}
        return super().changelist_view(request, context)

    @csrf_protect_m
    def generate_key_view(self, request: HttpRequest) -> HttpResponse:
        """Make an ed25519 key pair here; store the private half encrypted, show only the public half.

        The private key never leaves the server: there is nothing to download or copy but
        the OpenSSH public key line for the target's ``authorized_keys``.
        """
        if not self.has_add_permission(request):
            raise PermissionDenied
        credential: Credential | None = None
        if request.method == "POST":
            form = GenerateKeyForm(request.POST)
            if form.is_valid():
                name = form.cleaned_data["name"]
                private_text, info = generate_ed25519(comment=f"sshcontrol:{name}")
                credential = Credential(name=name)
                credential.store_private_key(private_text)
                # store_private_key derives the line without a comment; keep the commented one
                # so the key is recognisable in authorized_keys.
                credential.public_key = info.public_key
                credential.save()
                self.log_addition(request, credential, [{"added": {}}])
                form = GenerateKeyForm()
        else:
            form = GenerateKeyForm()
        context = {
            **self.admin_site.each_context(request),
            "title": "Generate an ed25519 key pair" if credential is None else f"New key: {credential}",
            "subtitle": None,
            "form": form,
            "credential": credential,
            "opts": self.opts,
            "has_view_permission": self.has_view_permission(request),
            "is_popup": False,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.generate_key_template, context)

    @admin.display(description="Public key")
    def public_key_display(self, obj: Credential) -> SafeString | str:
        if not obj.public_key:
            return "-"
        return format_html(
            '<textarea readonly rows="3" cols="80" class="vLargeTextField" '
            'style="font-family:monospace" onclick="this.select()">{}</textarea>'
            '<div class="help">Add this line to ~/.ssh/authorized_keys on the hosts that use this key.</div>',
            obj.public_key,
        )

    @admin.display(boolean=True, description="Secret")
    def has_secret_display(self, obj: Credential) -> bool:
        return obj.has_secret

    @admin.display(boolean=True, description="Sudo password")
    def has_sudo_password_display(self, obj: Credential) -> bool:
        return obj.has_sudo_password

    @admin.display(description="Sudo password")
    def sudo_password_status(self, obj: Credential) -> SafeString:
        url = reverse("admin:hosts_credential_sudo", args=[obj.pk])
        return format_html(
            '{} &nbsp; <a class="button" href="{}">{}</a>',
            "set" if obj.has_sudo_password else "not set",
            url,
            "Replace or clear" if obj.has_sudo_password else "Set sudo password",
        )

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
