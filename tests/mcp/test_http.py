"""A real ``mcp_serve --transport streamable-http`` process on a loopback port, sharing the test database.

The server is started once per module, as a user would start it; tests write clients, hosts
and grants through the ORM (``transactional_db``, so the rows are committed and the server
sees them) and talk to it with the SDK's streamable HTTP client or raw HTTP requests.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from django.utils import timezone
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from hosts.clients import IssuedToken, create_client, revoke
from hosts.models import Grant, Host
from tests.database import closing_connections
from tests.server_process import launch, server_env
from tests.sshd import free_port

BODY_LIMIT = 64 * 1024
# Every token the tests issue: none may ever appear in the server's log.
ISSUED: list[str] = []

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "0"},
    },
}
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


@dataclass
class RunningServer:
    url: str  # http://127.0.0.1:PORT
    log: Path

    @property
    def mcp(self) -> str:
        return f"{self.url}/mcp"


def start_server(
    tmp: Path, *extra: str, port: int | None = None, **env_extra: str
) -> tuple[subprocess.Popen[bytes], RunningServer]:
    port = port or free_port()
    # INFO (server_env's) so that the refusals are logged, and the no-token-in-the-log check
    # means something.
    env = server_env(tmp, **{"SSHCONTROL_MCP_MAX_BODY_BYTES": str(BODY_LIMIT), **env_extra})
    log = tmp / "server.log"
    proc = launch(
        [
            *(sys.executable, "-m", "sshcontrol", "mcp_serve", "--transport", "streamable-http"),
            *("--bind", f"127.0.0.1:{port}", "--no-create-admin", *extra),
        ],
        env,
        log,
    )
    server = RunningServer(f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mcp_serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            httpx2.get(server.mcp, timeout=1)
            return proc, server
        except httpx2.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"mcp_serve did not answer within 60 s:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen[bytes], server: RunningServer) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    text = server.log.read_text()
    assert code == 0, text
    assert "Traceback" not in text, text
    leaked = [t for t in ISSUED if t in text or t[len("sshc_") :] in text]
    assert not leaked, "a token was written to the server log"


@pytest.fixture(scope="module")
def server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    proc, running = start_server(tmp_path_factory.mktemp("http"))
    yield running
    stop_server(proc, running)


def issue(name: str, **fields: Any) -> IssuedToken:
    issued = create_client(name, **fields)
    ISSUED.append(issued.token)
    return issued


def grant(issued: IssuedToken, *hosts: Host) -> None:
    made = Grant.objects.create(client=issued.client)
    made.hosts.set(hosts)


def make_host(name: str) -> Host:
    # ssh_list_hosts reads the inventory only: no SSH server or credential is needed.
    return Host.objects.create(name=name, address="127.0.0.1", port=22, username="nobody")


@asynccontextmanager
async def mcp_client(server: RunningServer, token: str, mode: str = "auto") -> AsyncIterator[Client]:
    """``mode="legacy"``: the initialize handshake and a stateful session; ``"auto"``: the newest revision."""
    async with (
        httpx2.AsyncClient(headers=bearer(token), timeout=httpx2.Timeout(30, read=300)) as http,
        Client(streamable_http_client(server.mcp, http_client=http), mode=mode) as client,
    ):
        yield client


async def list_hosts(client: Client) -> list[str]:
    result = await client.call_tool("ssh_list_hosts", {"response_format": "json"})
    assert isinstance(result, CallToolResult) and not result.is_error, result.content
    assert result.structured_content is not None
    return [h["name"] for h in result.structured_content["hosts"]]


def post(server: RunningServer, body: Any = INITIALIZE, **headers: str | bytes) -> httpx2.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    # Raw bytes, so that a test can send a header value that is not ASCII.
    raw = [
        (k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in {**MCP_HEADERS, **headers}.items()
    ]
    return httpx2.post(server.mcp, content=content, headers=raw, timeout=30)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# -- authentication ---------------------------------------------------------------------------


def test_it_refuses_a_request_without_a_token(server: RunningServer) -> None:
    response = post(server)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert response.json()["error"] == "invalid_token"


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer Bearer sshc_x",
        "Basic dXNlcjpwYXNz",
        "Token sshc_abc",
        "Bearer not-an-sshcontrol-token",
        "Bearer sshc_" + "x" * 5000,
        # Not ASCII: sent as raw Latin-1 bytes, as a broken client might.
        "Bearer sshc_\u00e9t\u00e9".encode("latin-1"),
    ],
)
def test_it_refuses_a_malformed_authorization_header(
    server: RunningServer, authorization: str | bytes
) -> None:
    response = post(server, authorization=authorization)
    assert response.status_code == 401
    assert "www-authenticate" in response.headers


def test_it_refuses_a_token_nobody_was_issued(server: RunningServer, transactional_db: None) -> None:
    issue("real")  # a client exists, but this is not its token
    response = post(server, **bearer("sshc_" + "A" * 43))
    assert response.status_code == 401


def test_it_refuses_an_expired_token(server: RunningServer, transactional_db: None) -> None:
    issued = issue("expired", expires_at=timezone.now() - timedelta(seconds=1))
    assert post(server, **bearer(issued.token)).status_code == 401


def test_it_refuses_the_token_of_a_disabled_client(server: RunningServer, transactional_db: None) -> None:
    issued = issue("disabled")
    assert post(server, **bearer(issued.token)).status_code == 200
    issued.client.enabled = False
    issued.client.save(update_fields=["enabled"])
    assert post(server, **bearer(issued.token)).status_code == 401


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_a_revoked_token_is_refused_on_its_next_request(
    server: RunningServer, transactional_db: None, mode: str
) -> None:
    issued = issue("revoked-soon")
    grant(issued, make_host("web1"))
    outcome: dict[str, Any] = {}

    async def scenario() -> None:
        async with mcp_client(server, issued.token, mode) as client:
            outcome["before"] = await list_hosts(client)
            await anyio.to_thread.run_sync(closing_connections(revoke), issued.client)
            # The open session does not outlive its token: the very next request is refused.
            refused = await anyio.to_thread.run_sync(lambda: post(server, **bearer(issued.token)))
            outcome["raw"] = refused.status_code
            # The SDK client turns the 401 into an error response for the pending call.
            with pytest.raises(MCPError), anyio.fail_after(30):
                await client.call_tool("ssh_list_hosts", {})

    anyio.run(scenario)
    assert outcome["before"] == ["web1"]
    assert outcome["raw"] == 401


# -- request checks ----------------------------------------------------------------------------


def test_it_refuses_a_body_over_the_limit(server: RunningServer, transactional_db: None) -> None:
    token = issue("big")
    padded = {**INITIALIZE, "padding": "x" * BODY_LIMIT}
    assert post(server, padded, **bearer(token.token)).status_code == 413


def test_it_refuses_a_streamed_body_over_the_limit(server: RunningServer, transactional_db: None) -> None:
    token = issue("streamer")
    chunk = b" " * 16384

    def chunks() -> Iterator[bytes]:
        # No Content-Length: the limit is enforced while the body arrives.
        yield json.dumps(INITIALIZE).encode()[:-1]
        for _ in range(BODY_LIMIT // len(chunk) + 2):
            yield chunk
        yield b"}"

    response = httpx2.post(
        server.mcp, content=chunks(), headers={**MCP_HEADERS, **bearer(token.token)}, timeout=30
    )
    assert response.status_code == 413


def test_it_accepts_a_body_under_the_limit(server: RunningServer, transactional_db: None) -> None:
    token = issue("medium")
    padded = {**INITIALIZE, "padding": "x" * (BODY_LIMIT // 2)}
    assert post(server, padded, **bearer(token.token)).status_code == 200


# The handshake era (initialize, then a session) and the newest revision (a header on every
# request, no session) are served by different code paths in the SDK: check both.
ERAS = [{}, {"mcp-protocol-version": MODERN_PROTOCOL_VERSIONS[-1]}]


@pytest.mark.parametrize("era", ERAS, ids=["handshake", "modern"])
def test_it_refuses_a_host_header_not_allowed(
    server: RunningServer, transactional_db: None, era: dict[str, str]
) -> None:
    token = issue("rebound")
    response = post(server, host="attacker.example:8000", **era, **bearer(token.token))
    assert response.status_code == 421


@pytest.mark.parametrize("era", ERAS, ids=["handshake", "modern"])
def test_it_refuses_an_origin_not_allowed(
    server: RunningServer, transactional_db: None, era: dict[str, str]
) -> None:
    token = issue("browser")
    assert post(server, origin="http://attacker.example", **era, **bearer(token.token)).status_code == 403


def test_it_accepts_a_local_origin_by_default(server: RunningServer, transactional_db: None) -> None:
    token = issue("inspector")
    # A local tool in a browser, such as the MCP Inspector, is allowed by the default settings.
    assert post(server, origin="http://localhost:6274", **bearer(token.token)).status_code == 200


def test_a_session_cannot_be_used_with_another_clients_token(
    server: RunningServer, transactional_db: None
) -> None:
    owner, other = issue("owner"), issue("other")
    opened = post(server, **bearer(owner.token))
    session = opened.headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    headers = {"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"}
    refused = post(server, listing, **headers, **bearer(other.token))
    assert refused.status_code == 404
    assert "ssh_execute" not in refused.text
    # Control: the same request with the owner's token is served, so the 404 above is the
    # session refusing another client, not a session that no longer answers anybody.
    served = post(server, listing, **headers, **bearer(owner.token))
    assert served.status_code == 200, served.text
    assert "ssh_execute" in served.text


# -- serving -----------------------------------------------------------------------------------


def test_it_serves_the_admin_on_the_same_port(server: RunningServer) -> None:
    login = httpx2.get(f"{server.url}/admin/login/", timeout=30)
    assert login.status_code == 200 and 'name="password"' in login.text
    css = httpx2.get(f"{server.url}/static/admin/css/base.css", timeout=30)
    assert css.status_code == 200


def test_it_serves_mcp_alone_with_no_admin(tmp_path: Path, django_db_setup: None) -> None:
    proc, alone = start_server(tmp_path, "--no-admin")
    try:
        assert httpx2.get(f"{alone.url}/admin/login/", timeout=30).status_code == 404
        assert post(alone).status_code == 401
    finally:
        stop_server(proc, alone)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_it_runs_a_tool_for_a_valid_token(server: RunningServer, transactional_db: None, mode: str) -> None:
    issued = issue("agent")
    grant(issued, make_host("db1"))
    make_host("not-granted")

    async def scenario() -> list[str]:
        async with mcp_client(server, issued.token, mode) as client:
            return await list_hosts(client)

    assert anyio.run(scenario) == ["db1"]


def test_calls_are_audited_as_the_tokens_client(
    server: RunningServer, transactional_db: None, make_host: Callable[..., Host]
) -> None:
    from audit.models import AuditEvent

    issued = issue("auditor")
    grant(issued, make_host("box"))

    async def scenario() -> dict[str, Any]:
        async with mcp_client(server, issued.token) as client:
            result = await client.call_tool("ssh_execute", {"host": "box", "command": "echo over-http"})
            assert isinstance(result, CallToolResult) and not result.is_error, result.content
            assert result.structured_content is not None
            return result.structured_content

    assert anyio.run(scenario)["stdout"] == "over-http\n"
    row = AuditEvent.objects.get(tool="ssh_execute", command="echo over-http")
    assert row.status == "ok" and row.transport == "streamable-http"
    assert row.client == "auditor" and row.actor.startswith("auditor (")


def test_concurrent_clients_each_see_only_their_own_grants(
    server: RunningServer, transactional_db: None
) -> None:
    tokens: dict[str, str] = {}
    for i in range(50):
        issued = issue(f"client-{i}")
        grant(issued, make_host(f"host-{i}"))
        tokens[f"host-{i}"] = issued.token
    seen: dict[str, list[str]] = {}

    async def one(host: str, token: str) -> None:
        async with mcp_client(server, token) as client:
            # Twice, so calls of different clients interleave on the server.
            first = await list_hosts(client)
            second = await list_hosts(client)
            assert first == second
            seen[host] = first

    async def scenario() -> None:
        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for host, token in tokens.items():
                    group.start_soon(one, host, token)

    anyio.run(scenario)
    assert seen == {host: [host] for host in tokens}
