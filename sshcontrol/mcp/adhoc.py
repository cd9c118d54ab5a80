"""Opt-in ad-hoc connections: a client names a new host with its address, user and password.

Off unless ``SSHCONTROL_ALLOW_ADHOC_CONNECT=true`` and the client holds a grant with
``can_adhoc_connect``. The host is registered like one an admin added (password encrypted,
host key pending unless that grant trusts on first use) and added to the grant, so the
admin sees it, can remove it, and every later call goes through the usual checks.
"""

from __future__ import annotations

import re
from typing import NoReturn

from django.conf import settings
from django.db import transaction
from mcp.server.mcpserver.exceptions import ToolError

from hosts.access import access_for
from hosts.models import Credential, Grant, Host
from sshcontrol import hostcall
from sshcontrol.caller import Caller

_NAME = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.:\[\]_-]{1,255}$")

REFUSED = (
    "ad-hoc connections are off: sshcontrol connects only to hosts an administrator registered, "
    "so never pass addresses or passwords. Ask your administrator to register '{host}' "
    "(admin > Hosts > Add, or `sshcontrol hosts add`), then call ssh_connect with the host name only."
)


def refuse(caller: Caller, tool: str, host: str, message: str) -> NoReturn:
    """Audit the refused attempt (status denied) and stop the call."""
    hostcall.refuse(tool, caller, message, details={"host_requested": host[:100], "adhoc": True})


def register(caller: Caller, name: str, address: str, port: int, username: str, password: str) -> None:
    """Register ``name`` for the caller, or refuse (audited) with the reason."""
    if not settings.ALLOW_ADHOC_CONNECT:
        refuse(caller, "ssh_connect", name, REFUSED.format(host=name))
    assert caller.client_id is not None
    access = access_for(caller.client_id)
    grant_id = next((g.id for g in access.grants if g.can_adhoc_connect), None)
    if access.problem or grant_id is None:
        refuse(
            caller,
            "ssh_connect",
            name,
            access.problem or f"client '{access.name}' may not register hosts; " + REFUSED.format(host=name),
        )
    problems = [
        text
        for bad, text in (
            (not _NAME.match(name), "host must be a name of letters, digits, '-' and '_'"),
            (not _ADDRESS.match(address), "address must be a DNS name or an IP address"),
            (not 1 <= port <= 65535, "port must be between 1 and 65535"),
            (not 1 <= len(username) <= 100 or any(c.isspace() for c in username), "username is not valid"),
            (not 1 <= len(password) <= 1024, "password must be 1 to 1024 characters"),
        )
        if bad
    ]
    if problems:
        raise ToolError("; ".join(problems))
    grant = Grant.objects.get(pk=grant_id)
    with transaction.atomic():
        if (
            Host.objects.filter(name=name).exists()
            or Credential.objects.filter(name=f"adhoc-{name}").exists()
        ):
            raise ToolError(f"host '{name}' is already registered; call ssh_connect with host='{name}' only")
        credential = Credential(name=f"adhoc-{name}", kind=Credential.Kind.PASSWORD)
        credential.store_password(password)
        credential.save()
        host = Host.objects.create(
            name=name,
            address=address,
            port=port,
            username=username,
            credential=credential,
            tags=["adhoc"],
            trust_on_first_use=grant.adhoc_trust_on_first_use,
            description=f"Registered ad hoc by client '{access.name}'.",
        )
        if not grant.all_hosts:
            grant.hosts.add(host)
