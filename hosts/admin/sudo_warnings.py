"""Warnings of the sudo password rule on the host, credential and grant pages.

Shown as admin messages (no template of our own): one line per host whose sudo calls the
rule refuses, naming the clients that could capture its password and through which grant,
wherever the page's object takes part (the host, its credential, or a grant that exposes or
uses it). ``hosts.sudo_rule`` explains the rule.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from django.contrib import admin, messages
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from hosts import sudo_rule

Scope = sudo_rule.Scope

_M = TypeVar("_M", bound=Model)


def warn(request: HttpRequest, scope: Scope, object_id: object) -> None:
    """Add a warning message for each exposed sudo password the object takes part in."""
    try:
        pk = int(str(object_id))
    except ValueError:
        return
    for line in sudo_rule.warning_lines(sudo_rule.involving(sudo_rule.load_facts(), scope, pk)):
        messages.warning(request, f"{line} See {sudo_rule.DOC_POINTER}.")


def warn_on_page(request: HttpRequest, scope: Scope, object_id: object) -> None:
    """On the change page itself (GET only: after a POST the next page shows them)."""
    if request.method == "GET":
        warn(request, scope, object_id)


def warn_after_save(request: HttpRequest, response: HttpResponse, scope: Scope, object_id: object) -> None:
    """After a save that leaves the change page (the page shows them itself when it comes back)."""
    if isinstance(response, HttpResponseRedirect) and "_continue" not in request.POST:
        warn(request, scope, object_id)


class SudoWarningsAdmin(admin.ModelAdmin[_M]):
    """Shows the warnings on the change page of an object of ``sudo_scope``.

    The admins that also warn after a save call ``warn_after_save`` from their ``response_*``.
    """

    sudo_scope: ClassVar[Scope]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        warn_on_page(request, self.sudo_scope, object_id)
        return super().change_view(request, object_id, form_url, extra_context)

    def warn_after_save(self, request: HttpRequest, response: HttpResponse, obj: _M) -> None:
        warn_after_save(request, response, self.sudo_scope, obj.pk)
