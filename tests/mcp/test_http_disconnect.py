"""Over streamable HTTP (2026-07-28), a client that drops its connection has cancelled its call.

A real ``mcp_serve --transport streamable-http`` and the suite's sshd: a raw client posts an
ssh_execute of ``sleep 600``, waits until it runs on the host, and closes its socket. The
remote process group must be gone and the audit row ``interrupted``, as for a cancelled call.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from audit.models import AuditEvent
from hosts.models import Host
from tests.mcp.test_http import RunningServer, grant, issue, server  # noqa: F401  (fixture)
from tests.polling import wait_until
from tests.sshd import SshServer

MODERN = "2026-07-28"


def post_call(url: str, token: str, tool: str, arguments: dict[str, object]) -> socket.socket:
    """Send one tools/call as a 2026-07-28 request on a fresh socket; the response is never read."""
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {
                "name": tool,
                "arguments": arguments,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": MODERN,
                    "io.modelcontextprotocol/clientInfo": {"name": "dropper", "version": "0"},
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            },
        }
    ).encode()
    parts = urlsplit(url)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        f"MCP-Protocol-Version: {MODERN}\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=30)
    sock.sendall(head.encode() + body)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        chunk = sock.recv(4096)
        assert chunk, f"the server closed the connection; it sent: {received!r}"
        received += chunk
    return received


@pytest.mark.parametrize("when", ["before the response starts", "once the event stream is open"])
def test_a_dropped_connection_cancels_the_call_and_kills_the_command(
    server: RunningServer,  # noqa: F811
    transactional_db: None,
    make_host: Callable[..., Host],
    sshd: SshServer,
    when: str,
) -> None:
    issued = issue("dropper")
    grant(issued, make_host("box"))
    sock = post_call(server.mcp, issued.token, "ssh_execute", {"host": "box", "command": "sleep 600"})
    try:
        wait_until(lambda: sshd.user_processes("sleep 600"), 60, "the command is running on the host")
        if when == "once the event stream is open":
            # The SDK commits to text/event-stream after 15 s of silence, then pings.
            assert b" 200 " in read_until(sock, b"text/event-stream")
    finally:
        sock.close()
    wait_until(lambda: not sshd.user_processes("sleep 600"), 30, "the remote command is killed")

    def finished() -> AuditEvent | None:
        found = AuditEvent.objects.filter(command="sleep 600", client="dropper").first()
        return found if found is not None and found.status != "running" else None

    row = wait_until(finished, 30, "the audit row is completed")
    assert row is not None
    assert row.status == "interrupted" and row.transport == "streamable-http"
