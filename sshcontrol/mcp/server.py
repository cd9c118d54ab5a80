"""The MCP server factory."""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer

from sshcontrol.mcp import tools
from sshcontrol.mcp.identity import ClientRef

INSTRUCTIONS = """\
sshcontrol runs commands and moves files on SSH hosts that an administrator registered.
Start with ssh_list_hosts. Call ssh_execute with a host name (a session is opened and reused for
you) or with a session_id from ssh_connect. You never handle passwords, keys or host keys: if a
host key is not trusted yet, tell the user to ask their administrator to approve it.
Every call is recorded in an audit log."""


def build_server(transport: str = "stdio", client: ClientRef | None = None, **options: Any) -> MCPServer:
    """The server with every tool; ``client`` is the fixed caller of a stdio server.

    ``options`` go to ``MCPServer`` (the HTTP transport passes its token verifier, auth
    and transport-security settings); without ``client`` every request must carry a token.
    """
    server: MCPServer = MCPServer(name="sshcontrol", instructions=INSTRUCTIONS, version="0.1.0", **options)
    tools.register(server, transport, client)
    return server
