"""Warnings of the sudo password rule on the host, credential and grant pages.

Shown as admin messages (no template of our own): one line per host whose sudo calls the
rule refuses, naming the clients that could capture its password and through which grant,
wherever the page's object takes part (the host, its credential, or a grant that exposes or
uses it). ``hosts.sudo_rule`` explains the rule.
"""

from __future__ import annotations

from typing import Literal

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from hosts import sudo_rule

Scope = Literal["host", "credential", "grant"]


def _involves(facts: sudo_rule.Facts, entry: sudo_rule.ExposedHost, scope: Scope, object_id: int) -> bool:
    host, _users, exposures = entry
    if scope == "host":
        page_host = facts.host(object_id)
        return page_host is not None and page_host.name in {host.name} | {e.via_host for e in exposures}
    if scope == "credential":
        return host.credential_id == object_id
    exposing = {g for e in exposures for g in e.grant_ids}
    grant = next((g for g in facts.grants if g.id == object_id), None)
    return object_id in exposing or (grant is not None and grant.sudo and grant.covers(host))


def warn(request: HttpRequest, scope: Scope, object_id: object) -> None:
    """Add a warning message for each exposed sudo password the object takes part in."""
    try:
        pk = int(str(object_id))
    except ValueError:
        return
    facts = sudo_rule.load_facts()
    entries = [e for e in sudo_rule.exposed_sudo_hosts(facts) if _involves(facts, e, scope, pk)]
    for line in sudo_rule.warning_lines(entries):
        messages.warning(request, f"{line} See {sudo_rule.DOC_POINTER}.")


def warn_on_page(request: HttpRequest, scope: Scope, object_id: object) -> None:
    """On the change page itself (GET only: after a POST the next page shows them)."""
    if request.method == "GET":
        warn(request, scope, object_id)


def warn_after_save(request: HttpRequest, response: HttpResponse, scope: Scope, object_id: object) -> None:
    """After a save that leaves the change page (the page shows them itself when it comes back)."""
    if isinstance(response, HttpResponseRedirect) and "_continue" not in request.POST:
        warn(request, scope, object_id)
