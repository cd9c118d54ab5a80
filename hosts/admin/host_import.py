"""The host admin's import page: an Ansible inventory or an ssh_config file, previewed or applied."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from hosts.admin.base import InventoryAdmin, csrf_protect_m
from hosts.forms import ImportHostsForm
from hosts.importers import MAX_SOURCE_BYTES, InventoryError, decode_source
from hosts.importers.ansible import parse_inventory
from hosts.importers.apply import CREATED, UPDATED, ImportOptions, ImportReport, apply_import
from hosts.importers.ssh_config import parse_ssh_config
from hosts.models import Host


class HostImportAdmin(InventoryAdmin[Host]):
    """The import page and the list's link to it; ``HostAdmin`` builds on it."""

    import_template = "admin/hosts/host/import.html"

    def get_urls(self) -> list[URLPattern]:
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="hosts_host_import"),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        context = {**(extra_context or {}), "can_import": request.user.has_perm("hosts.add_host")}
        return super().changelist_view(request, context)

    @csrf_protect_m
    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("hosts.add_host"):
            raise PermissionDenied
        can_update = request.user.has_perm("hosts.change_host")
        report: ImportReport | None = None
        if request.method == "POST":
            form = ImportHostsForm(request.POST, request.FILES, can_update=can_update)
            if form.is_valid():
                report = self._run_import(request, form)
        else:
            form = ImportHostsForm(can_update=can_update)
        context = {
            **self.admin_site.each_context(request),
            "title": "Import hosts",
            "subtitle": None,
            "form": form,
            "report": report,
            "opts": self.opts,
            "has_view_permission": self.has_view_permission(request),
            "is_popup": False,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.import_template, context)

    def _run_import(self, request: HttpRequest, form: ImportHostsForm) -> ImportReport | None:
        upload = form.cleaned_data["file"]
        fmt = form.cleaned_data["format"]
        name = str(upload.name)
        try:
            text = decode_source(upload.read(MAX_SOURCE_BYTES + 1), name)
            if fmt == "ssh_config":
                # Include lines name files on the uploader's machine: not followed, reported.
                parsed = parse_ssh_config(text, name, base_dir=None)
            else:
                parsed = parse_inventory(text, name, "yaml" if fmt == "ansible_yaml" else "ini")
        except InventoryError as exc:
            form.add_error("file", str(exc))
            return None
        report = apply_import(
            parsed,
            ImportOptions(
                dry_run=form.cleaned_data["dry_run"],
                update=form.cleaned_data["update"],
                credential=form.cleaned_data["credential"],
                default_user=form.cleaned_data["default_user"].strip(),
            ),
        )
        if not report.dry_run:
            self._log_import(request, report, name)
        return report

    def _log_import(self, request: HttpRequest, report: ImportReport, name: str) -> None:
        ids = [row.host_id for row in report.rows if row.host_id and row.outcome in (CREATED, UPDATED)]
        hosts = Host.objects.in_bulk(ids)
        for row in report.rows:
            host = hosts.get(row.host_id or 0)
            if host is None:
                continue
            if row.outcome == CREATED:
                self.log_addition(request, host, [{"added": {}}])
            else:
                self.log_change(request, host, f"Imported from {name}: {row.detail}")
