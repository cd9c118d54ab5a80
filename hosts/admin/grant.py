"""Grants (which hosts a client or group may use, and how) and command rules (what it may run).

Both models validate themselves in ``clean()`` (a grant is for one client or one group; a
rule belongs to one grant, host or tag and its pattern must compile); the admin's
``full_clean`` shows those errors on the form.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, Field, QuerySet
from django.forms import Field as FormField
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from hosts import approvals
from hosts.access_models import CommandRule, Grant
from hosts.admin import sudo_warnings
from hosts.admin.base import GrantColumns, InventoryAdmin
from hosts.admin.client import without_add_popup
from hosts.forms import TagListField

_MONOSPACE = {"style": "font-family:monospace", "spellcheck": "false", "autocomplete": "off"}


class GrantForm(forms.ModelForm[Grant]):
    """Tags as comma-separated text, as on the host form."""

    tags = TagListField(required=False, help_text="Hosts carrying any of these tags, e.g. web, staging.")

    class Meta:
        model = Grant
        fields = "__all__"


class CommandRuleForm(forms.ModelForm[CommandRule]):
    """The pattern on one monospace line: it is a regular expression, not prose."""

    class Meta:
        model = CommandRule
        fields = "__all__"
        widgets = {"pattern": forms.TextInput(attrs={"size": 60, **_MONOSPACE})}


class CommandRuleInline(admin.TabularInline[CommandRule, Grant]):
    model = CommandRule
    form = CommandRuleForm
    fields = ("action", "pattern", "description", "enabled")
    extra = 1


@admin.register(Grant)
class GrantAdmin(GrantColumns, sudo_warnings.SudoWarningsAdmin[Grant], InventoryAdmin[Grant]):
    form = GrantForm
    sudo_scope = "grant"
    # The grant's name says whose it is (client or group): no columns of their own, to fit at 1280 px.
    list_display = ("__str__", "scope", "permissions", "rule_count", "enabled")
    list_filter = ("enabled", "all_hosts", "can_execute", "can_sudo", "can_write_files", "read_only", "group")
    search_fields = ("description", "client__name", "group__name")
    list_select_related = ("client", "group")
    filter_horizontal = ("hosts",)
    inlines = (CommandRuleInline,)
    readonly_fields = ("created_at",)
    fieldsets = (
        (None, {"fields": ("client", "group", "description", "enabled")}),
        ("Hosts", {"fields": ("all_hosts", "hosts", "tags")}),
        (
            "Permissions",
            {
                "fields": (
                    "can_list",
                    "can_execute",
                    "can_read_files",
                    "can_write_files",
                    "can_sudo",
                    "read_only",
                )
            },
        ),
        ("Ad hoc hosts", {"fields": ("can_adhoc_connect", "adhoc_trust_on_first_use")}),
        ("History", {"fields": ("created_at",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Grant]:
        return super().get_queryset(request).prefetch_related("hosts").annotate(rule_total=Count("rules"))

    def get_fieldsets(self, request: HttpRequest, obj: Grant | None = None) -> Any:
        if obj is not None:
            return super().get_fieldsets(request, obj)
        (name, options), *rest = self.fieldsets
        note = "Command rules are added on the grant's page, which opens when it is saved."
        return ((name, {**options, "description": note}), *rest)

    def get_inlines(self, request: HttpRequest, obj: Grant | None) -> Any:
        # CommandRule.clean() needs the grant's id, which a grant being added has not got
        # yet; rules are added once the grant exists (response_add opens its page).
        return self.inlines if obj is not None else ()

    def formfield_for_dbfield(
        self, db_field: Field[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> FormField | None:
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        return without_add_popup(formfield) if db_field.name == "client" else formfield

    def response_add(
        self, request: HttpRequest, obj: Grant, post_url_continue: str | None = None
    ) -> HttpResponse:
        response = super().response_add(request, obj, post_url_continue)
        # Plain "Save" goes on to the new grant's page, where its command rules are added.
        if isinstance(response, HttpResponseRedirect) and not {"_addanother", "_popup"} & set(request.POST):
            return HttpResponseRedirect(reverse("admin:hosts_grant_change", args=[obj.pk]))
        return response

    # A grant decides what an approved command may do: adding, changing or deleting one while
    # its clients have requests pending is audited, and its author may not decide those.
    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if change and not (form.has_changed() or any(formset.has_changed() for formset in formsets)):
            return
        grant = form.instance
        before = Grant(client_id=form.initial.get("client"), group_id=form.initial.get("group"))
        verb = "changed" if change else "added"
        approvals.record_change(
            author=request.user.get_username(),
            change=f"grant {grant.pk} ({grant}) {verb}",
            client_ids=approvals.clients_of_grant(before) | approvals.clients_of_grant(grant),
        )

    def delete_model(self, request: HttpRequest, obj: Grant) -> None:
        clients, name = approvals.clients_of_grant(obj), f"grant {obj.pk} ({obj}) deleted"
        super().delete_model(request, obj)
        approvals.record_change(author=request.user.get_username(), change=name, client_ids=clients)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Grant]) -> None:
        for grant in queryset:
            self.delete_model(request, grant)

    def response_change(self, request: HttpRequest, obj: Grant) -> HttpResponse:
        response = super().response_change(request, obj)
        self.warn_after_save(request, response, obj)
        return response

    @admin.display(description="Rules", ordering="rule_total")
    def rule_count(self, obj: Grant) -> int:
        return int(getattr(obj, "rule_total", 0))


@admin.register(CommandRule)
class CommandRuleAdmin(InventoryAdmin[CommandRule]):
    """All rules; those of a host or a tag are made here, those of a grant usually on the grant's page."""

    form = CommandRuleForm
    list_display = ("pattern_display", "action", "applies_to", "description", "enabled")
    list_filter = ("action", "enabled")
    search_fields = (
        "pattern",
        "description",
        "tag",
        "host__name",
        "grant__client__name",
        "grant__group__name",
    )
    list_select_related = ("grant__client", "grant__group", "host")
    fieldsets = (
        (None, {"fields": ("action", "pattern", "description", "enabled")}),
        (
            "Applies to",
            {
                "fields": ("grant", "host", "tag"),
                "description": "Exactly one: a grant, a host, or every host carrying a tag.",
            },
        ),
    )

    def save_model(self, request: HttpRequest, obj: CommandRule, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        grant_ids = {obj.grant_id, form.initial.get("grant")} - {None}
        self._record(request, f"rule {obj.pk} /{obj.pattern}/ {'changed' if change else 'added'}", grant_ids)

    def delete_model(self, request: HttpRequest, obj: CommandRule) -> None:
        grant_ids, name = {obj.grant_id} - {None}, f"rule {obj.pk} /{obj.pattern}/ deleted"
        super().delete_model(request, obj)
        self._record(request, name, grant_ids)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CommandRule]) -> None:
        for rule in queryset:
            self.delete_model(request, rule)

    @staticmethod
    def _record(request: HttpRequest, change: str, grant_ids: set[Any]) -> None:
        """A rule of a grant is part of the grant (see GrantAdmin.save_related)."""
        clients: set[int] = set()
        for grant in Grant.objects.filter(pk__in=grant_ids):
            clients |= approvals.clients_of_grant(grant)
        approvals.record_change(author=request.user.get_username(), change=change, client_ids=clients)

    @admin.display(description="Pattern", ordering="pattern")
    def pattern_display(self, obj: CommandRule) -> str:
        return obj.pattern

    @admin.display(description="Applies to")
    def applies_to(self, obj: CommandRule) -> str:
        if obj.grant_id is not None and obj.grant is not None:
            return f"grant {obj.grant}"
        if obj.host_id is not None and obj.host is not None:
            return f"host {obj.host.name}"
        return f"tag {obj.tag}" if obj.tag else "-"
