"""Who is calling: the MCP client behind a tool call, recorded on every audit row.

Over stdio (and the in-memory transport of tests) the caller is fixed for the life of the
server: the client whose token is in ``SSHCONTROL_CLIENT_TOKEN``, or the local client of
the OS user. Over streamable HTTP it is the client whose bearer token the request carried
(``sshcontrol.mcp.http`` verifies it and hands over a ``ClientAccessToken``; an identity
provider's access token is mapped to its client by ``sshcontrol.mcp.oauth``).
Whether the client may still act (revoked, disabled, expired) is checked again on every
call, in the call's thread, by ``hosts.access.access_for`` (a snapshot at most
``CACHE_SECONDS`` old, dropped whenever a client, group, grant or rule is saved).
A signed-in admin's own actions get a ``Caller`` without a client (``sshcontrol.admin_actions``).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.mcpserver.exceptions import ToolError

from hosts.access_models import McpClient
from hosts.clients import authenticate, local_client
from sshcontrol.caller import Caller
from sshcontrol.dbretry import retrying


class ClientAccessToken(AccessToken):
    """An HTTP bearer token resolved to its client (``client_id`` is the client's primary key)."""

    client_name: str


@dataclass(frozen=True)
class ClientRef:
    id: int
    name: str


@lru_cache(maxsize=1)
def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def app_name(ctx: Any) -> str:
    """The name the MCP client application announced, when the protocol revision carries one."""
    try:
        params = ctx.request_context.session.client_params
        info = getattr(params, "client_info", None)
        name = getattr(info, "name", None)
    except Exception:
        name = None
    return str(name)[:80] if name else "mcp-client"


def process_client() -> ClientRef:
    """The caller of a stdio server: the token's client, else the OS user's local client.

    Raises ``hosts.clients.ClientAuthError`` for a bad token: the server must not start
    as somebody else; ``sshcontrol.dbretry.DatabaseUnavailable`` when the database stays away.
    """

    def lookup() -> McpClient:
        return authenticate(settings.CLIENT_TOKEN) if settings.CLIENT_TOKEN else local_client(os_user())

    client = retrying(lookup, "looking up this server's client")
    return ClientRef(client.pk, client.name)


def caller_for(ctx: Any, transport: str, fixed: ClientRef | None) -> Caller:
    """The caller of this request: the HTTP token's client, else the server's fixed client."""
    token = get_access_token()
    if isinstance(token, ClientAccessToken):
        ref = ClientRef(int(token.client_id), token.client_name)
    elif fixed is not None:
        ref = fixed
    else:  # an HTTP request that got past auth without our token type: refuse, never guess
        raise PermissionError("no authenticated client for this request")
    return Caller(
        actor=f"{ref.name} ({app_name(ctx)})",
        transport=transport,
        client_id=ref.id,
        client_name=ref.name,
        oauth_issuer=getattr(token, "oauth_issuer", None),
        oauth_subject=getattr(token, "oauth_subject", None),
    )


def own_client(caller: Caller) -> int:
    """The caller's client id; every MCP caller has one (only admin actions go without)."""
    if caller.client_id is None:
        raise ToolError("this call needs an MCP client identity")
    return caller.client_id
