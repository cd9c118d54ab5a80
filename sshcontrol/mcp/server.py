"""The MCP server factory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server import MCPServer
from mcp.types import Tool

from sshcontrol.mcp import tools
from sshcontrol.mcp.identity import ClientRef
from sshcontrol.mcp.visibility import Offer, shown

INSTRUCTIONS = """\
sshcontrol runs commands and moves files on SSH hosts that an administrator registered.
Start with ssh_list_hosts. Call ssh_execute with a host name (a session is opened and reused for
you) or with a session_id from ssh_connect. You never handle passwords, keys or host keys: if a
host key is not trusted yet, tell the user to ask their administrator to approve it.
Every call is recorded in an audit log."""


# MCPServer serves prompt and resource requests, and the 2026 ``subscriptions/listen`` stream,
# whether or not it has any; the SDK derives the advertised capabilities from the handlers
# present, so it announced empty prompts and resources (an unknown prompt failing with error
# code 0) and, in ``server/discover`` only, ``resources.subscribe`` and ``listChanged``.
# sshcontrol serves tools, whose list never changes: without these handlers both protocol
# eras advertise exactly that, and the other methods answer "method not found".
_NOT_SERVED = ("prompts/list", "prompts/get", "resources/list", "resources/read", "resources/templates/list")


class SshcontrolServer(MCPServer):
    """``tools/list`` answers each caller with the tools its grants allow (``mcp/visibility.py``)."""

    offer: Callable[[], Awaitable[Offer]] | None = None

    async def list_tools(self) -> list[Tool]:
        listed = await super().list_tools()
        if self.offer is None:
            return listed
        return shown(listed, await self.offer())


def build_server(transport: str = "stdio", client: ClientRef | None = None, **options: Any) -> MCPServer:
    """The server with every tool; ``client`` is the fixed caller of a stdio server.

    ``options`` go to ``MCPServer`` (the HTTP transport passes its token verifier, auth
    and transport-security settings); without ``client`` every request must carry a token.
    """
    server = SshcontrolServer(
        name="sshcontrol", instructions=INSTRUCTIONS, version="0.1.0", subscriptions=False, **options
    )
    handlers = server._lowlevel_server._request_handlers  # no public way to unregister a method
    for method in _NOT_SERVED:
        handlers.pop(method, None)
    server.offer = tools.register(server, transport, client).current_offer
    return server
