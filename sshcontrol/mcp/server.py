"""The MCP server factory."""

from __future__ import annotations

from mcp.server import MCPServer

from sshcontrol.mcp import tools

INSTRUCTIONS = """\
sshcontrol runs commands and moves files on SSH hosts that an administrator registered.
Start with ssh_list_hosts. Call ssh_execute with a host name (a session is opened and reused for
you) or with a session_id from ssh_connect. You never handle passwords, keys or host keys: if a
host key is not trusted yet, tell the user to ask their administrator to approve it.
Every call is recorded in an audit log."""


def build_server(transport: str = "stdio") -> MCPServer:
    server: MCPServer = MCPServer(name="sshcontrol", instructions=INSTRUCTIONS, version="0.1.0")
    tools.register(server, transport)
    return server
