"""Which tools, and which of their arguments, a caller is offered: what its grants allow.

``tools/list`` shows each caller (IdP subject, static token or stdio user) only the tools at
least one of its grants could let it use, and leaves out arguments it can never use: no
write grant anywhere, no ``ssh_upload_file``; no sudo anywhere, no ``sudo`` argument on
``ssh_execute``; ad-hoc connection arguments only where ad-hoc connections are on and
granted. A call to a tool not offered is refused and audited as ``denied`` (``refuse``).

This only narrows what a caller is shown; every call is still authorized in full per host
by ``host_call`` (``sshcontrol.hostcall``), so a list out of date by the access cache's
second can show too much or too little, never let through too much. The list varies by the
authorization on the request, as the MCP specification allows; its results are marked
private to that authorization (the SDK's default cache scope).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from mcp.types import Tool

from hosts.access import ClientAccess

# The permission a tool needs somewhere: "" for none. A tool not named here (one added
# later) needs "execute", the conservative choice for anything that reaches a host.
NEEDS: Mapping[str, str] = {
    "ssh_list_hosts": "",
    "ssh_status": "",
    "ssh_connect": "connect",
    "ssh_disconnect": "connect",
    "ssh_execute": "execute",
    "ssh_execute_many": "execute",
    "ssh_approval_status": "execute",
    "ssh_download_file": "read",
    "ssh_download_many": "read",
    "ssh_list_files": "read",
    "ssh_upload_file": "write",
    "ssh_start_job": "execute",
    "ssh_job_status": "execute",
    "ssh_cancel_job": "execute",
    "ssh_list_jobs": "execute",
    "ssh_read_output": "execute",
    "ssh_copy": "read+write",  # reads on one host, writes on another: both somewhere
    "ssh_copy_many": "read+write",
    "ssh_upload_many": "write",
}
SUDO_ARGUMENT = ("ssh_execute", "sudo")
# Every tool with a ``sudo`` argument.
SUDO_TOOLS = frozenset({"ssh_execute", "ssh_execute_many", "ssh_start_job"})
ADHOC_ARGUMENTS = ("ssh_connect", ("address", "port", "username", "password"))


@dataclass(frozen=True)
class Offer:
    """What one caller may be shown: the permissions it holds on at least one host."""

    permissions: frozenset[str]  # of "connect", "execute", "read", "write"
    sudo: bool
    adhoc: bool
    problem: str = ""  # why the client may not act at all (disabled, revoked, expired)

    def offers(self, tool: str) -> bool:
        need = NEEDS.get(tool, "execute")
        return not need or all(part in self.permissions for part in need.split("+"))


NOTHING = Offer(frozenset(), sudo=False, adhoc=False)


def offer(access: ClientAccess) -> Offer:
    if access.problem:
        return Offer(frozenset(), sudo=False, adhoc=False, problem=access.problem)
    grants = access.grants
    adhoc = bool(settings.ALLOW_ADHOC_CONNECT) and any(g.can_adhoc_connect for g in grants)
    permissions = {
        name
        for name, held in (
            ("execute", any(g.can_execute for g in grants)),
            ("read", any(g.can_read_files for g in grants)),
            ("write", any(ClientAccess.writes(g) for g in grants)),
        )
        if held
    }
    if permissions or adhoc:
        permissions.add("connect")
    return Offer(
        frozenset(permissions),
        sudo=any(g.can_execute and g.can_sudo for g in grants),
        adhoc=adhoc,
    )


def _without(schema: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    trimmed = copy.deepcopy(schema)
    properties = trimmed.get("properties")
    if isinstance(properties, dict):
        for name in names:
            properties.pop(name, None)
    required = trimmed.get("required")
    if isinstance(required, list):
        trimmed["required"] = [r for r in required if r not in names]
    return trimmed


def shown(tools: Iterable[Tool], caller_offer: Offer) -> list[Tool]:
    """The tools this caller is offered, with the arguments it can never use left out."""
    result = []
    for tool in tools:
        if not caller_offer.offers(tool.name):
            continue
        if tool.name in SUDO_TOOLS and not caller_offer.sudo:
            tool = tool.model_copy(update={"input_schema": _without(tool.input_schema, [SUDO_ARGUMENT[1]])})
        if tool.name == ADHOC_ARGUMENTS[0] and not caller_offer.adhoc:
            tool = tool.model_copy(update={"input_schema": _without(tool.input_schema, ADHOC_ARGUMENTS[1])})
        result.append(tool)
    return result


WHAT = {
    "connect": "open sessions",
    "execute": "run commands",
    "read": "read files",
    "write": "write files",
    "read+write": "read and write files",
}


def refusal(tool: str, client_name: str, caller_offer: Offer) -> str:
    """Why this caller may not call ``tool`` at all ("" when it may try: hosts decide the rest)."""
    if caller_offer.offers(tool):
        return ""
    if caller_offer.problem:
        return caller_offer.problem
    what = WHAT[NEEDS.get(tool, "execute")]
    return (
        f"client '{client_name}' may not {what} on any host, so {tool} is not offered to it; "
        "ask an administrator for a grant"
    )
