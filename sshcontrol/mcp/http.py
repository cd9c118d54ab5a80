"""The streamable HTTP transport: bearer-token auth, the MCP endpoint and the admin on one port.

Every request to ``/mcp`` carries ``Authorization: Bearer sshc_...``; the SDK's bearer
middleware hands the token to ``ClientTokenVerifier``, which looks it up in the database on
every request (one indexed query, in a worker thread), so a revoked, disabled or expired
client gets 401 on its very next request. The SDK then checks the Host and Origin headers
(DNS-rebinding protection, from ``MCP_ALLOWED_HOSTS`` / ``MCP_ALLOWED_ORIGINS``) and the
body size (``MCP_MAX_BODY_BYTES``, 413 for a declared or streamed body over the limit).
With ``SSHCONTROL_OAUTH_ISSUER`` set, the verifier also accepts that identity provider's
access tokens and the protected resource metadata is served (``sshcontrol.mcp.oauth``).
A token that cannot be checked because the database stays away past the retry bound gets
503 with a JSON error, not 401 (``sshcontrol.mcp.dbguard``).
Everything else on the port goes to the Django admin when it is served here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from django.conf import settings
from mcp.server import MCPServer
from mcp.server.auth.provider import TokenVerifier
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from hosts.clients import ClientAuthError, authenticate
from sshcontrol.dbretry import DatabaseUnavailable, retrying
from sshcontrol.health import routes as operability_routes
from sshcontrol.mcp import dbguard, oauth
from sshcontrol.mcp.identity import ClientAccessToken
from sshcontrol.mcp.server import build_server
from sshcontrol.mcp.threads import in_thread

log = logging.getLogger("sshcontrol.mcp.http")

MCP_PATH = "/mcp"
TRANSPORT = "streamable-http"


class ClientTokenVerifier:
    """The SDK's ``TokenVerifier``: an sshcontrol client token, resolved to its client."""

    async def verify_token(self, token: str) -> ClientAccessToken | None:
        try:
            # The ORM is synchronous: look the token up in a call thread, never on the loop.
            client = await in_thread(lambda: retrying(lambda: authenticate(token), "checking a client token"))
        except DatabaseUnavailable as exc:
            log.warning("could not check a bearer token: %s", exc)
            dbguard.note(exc)
            return None
        except ClientAuthError as exc:
            # The message names the client at most, never the token.
            log.info("refused a bearer token: %s", exc)
            return None
        return ClientAccessToken(
            # Only the public prefix: this object lives in request context, where a stray
            # repr or log line must not be able to leak the secret.
            token=client.token_prefix,
            client_id=str(client.pk),
            client_name=client.name,
            scopes=[],
            expires_at=int(client.expires_at.timestamp()) if client.expires_at else None,
        )


def transport_security() -> TransportSecuritySettings:
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(settings.MCP_ALLOWED_HOSTS),
        allowed_origins=list(settings.MCP_ALLOWED_ORIGINS),
    )


def build_mcp_server(base_url: str) -> MCPServer:
    """The MCP server requiring a client token (or, with an OAuth issuer, an IdP's token) on every request.

    Without ``SSHCONTROL_OAUTH_ISSUER``, ``base_url`` only fills the SDK's mandatory
    ``issuer_url`` and no OAuth metadata is published (``sshcontrol.mcp.oauth``).
    """
    config = oauth.OAuthConfig.from_settings()
    verifier: TokenVerifier = ClientTokenVerifier()
    if config is not None:
        verifier = oauth.OAuthTokenVerifier(config, verifier)
    return build_server(
        transport=TRANSPORT, token_verifier=verifier, auth=oauth.auth_settings(base_url, config)
    )


def build_app(base_url: str, admin: bool = True) -> Starlette:
    """MCP at ``/mcp``; with ``admin``, the Django admin (and its static files) on every other path."""
    server = build_mcp_server(base_url)
    mcp_app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=transport_security(),
        max_request_body_size=settings.MCP_MAX_BODY_BYTES,
    )
    # A Route (not a Mount) keeps the path as is, so the SDK's own router matches /mcp
    # again and no /mcp -> /mcp/ redirect ever reaches a POST.
    guarded = dbguard.UnavailableAs503(mcp_app)
    routes: list[BaseRoute] = [Route(MCP_PATH, endpoint=guarded), *operability_routes()]
    # The SDK's other routes (the RFC 9728 protected resource metadata, with OAuth on) likewise.
    routes += [
        Route(r.path, endpoint=mcp_app) for r in mcp_app.routes if isinstance(r, Route) and r.path != MCP_PATH
    ]
    if admin:
        from sshcontrol.admin_asgi import build_app as build_admin_app

        routes.append(Mount("/", app=build_admin_app()))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Sub-apps' lifespans do not run when mounted: the session manager is started here.
        async with server.session_manager.run():
            yield

    return Starlette(routes=routes, lifespan=lifespan)
