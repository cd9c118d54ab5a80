"""A synchronous handle on the MCP server, driven in-process through the SDK's client.

The client and server run on an event loop in a background thread, so test bodies stay
synchronous and can use the ORM directly, while every tool call still goes through the
real MCP client/server protocol path.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest
from mcp import Client
from mcp.types import CallToolResult

from sshcontrol.mcp import threads
from sshcontrol.mcp.identity import ClientRef, process_client
from sshcontrol.mcp.server import build_server
from tests.sshd import SshServer

T = TypeVar("T")


class McpHarness:
    """``client`` is who calls (default: the OS user's local client, as over stdio without a token)."""

    def __init__(self, client: ClientRef | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mcp-test-loop", daemon=True)
        self.thread.start()
        self.client = Client(build_server(transport="memory", client=client or process_client()))
        self._stop = asyncio.Event()
        entered: Future[None] = Future()
        # The client must be entered and exited in one task (anyio cancel scopes demand it).
        self._lifetime = asyncio.run_coroutine_threadsafe(self._hold(entered), self.loop)
        entered.result(30)

    async def _hold(self, entered: Future[None]) -> None:
        async with self.client:
            entered.set_result(None)
            await self._stop.wait()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 300) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, tool: str, **arguments: Any) -> Future[CallToolResult]:
        """Start a call without waiting; cancel the future to cancel the call as a client would."""
        return asyncio.run_coroutine_threadsafe(self.client.call_tool(tool, arguments), self.loop)  # type: ignore[arg-type]

    def call(self, tool: str, **arguments: Any) -> CallToolResult:
        result = self.run(self.client.call_tool(tool, arguments))
        assert isinstance(result, CallToolResult)
        return result

    def ok(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call a tool that must succeed; return its structured content."""
        result = self.call(tool, **arguments)
        assert not result.is_error, result.content
        assert result.structured_content is not None
        return result.structured_content

    def error(self, tool: str, **arguments: Any) -> str:
        """Call a tool that must fail cleanly; return its one-line message."""
        result = self.call(tool, **arguments)
        assert result.is_error, result.structured_content
        text: str = result.content[0].text  # type: ignore[union-attr]
        assert "Traceback" not in text
        return text

    def text(self, tool: str, **arguments: Any) -> str:
        return self.call(tool, **arguments).content[0].text  # type: ignore[union-attr,no-any-return]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._lifetime.result(30)
        # Closing the session cancelled any call still running, and a cancelled call completes
        # its audit row in its thread afterwards: let it finish before the test's database is
        # flushed under it (a TRUNCATE meeting its writes deadlocks on PostgreSQL).
        assert threads.wait_idle(60), "a tool call was still running 60 s after its test ended"
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()  # else its self-pipe sockets leak (a ResourceWarning, an error in pytest)


def close_held() -> None:
    """What the calls left open in this process: sessions, and the batch engine's connections."""
    from sshlib import c_batch
    from sshlib.sessions import registry

    registry.close_all()
    if c_batch.pooled_connections():
        c_batch.engine().close_all()


@pytest.fixture(scope="module")
def other_sshd() -> Iterator[SshServer]:
    """A second OpenSSH server, its own port, host keys and user: another host, another remote account."""
    server = SshServer.create().start()
    yield server
    server.remove()


@pytest.fixture
def mcp(transactional_db: None) -> Iterator[McpHarness]:
    harness = McpHarness()
    yield harness
    harness.close()
    close_held()


@pytest.fixture
def as_client(transactional_db: None) -> Iterator[Callable[..., McpHarness]]:
    """``as_client("agent", hosts=[h], can_write_files=True)``: a harness calling as a new token client.

    With ``grant=False`` the client has no grant at all; otherwise one grant with the given
    fields (``hosts`` and ``rules`` as (action, pattern) pairs are applied after creation).
    """
    from hosts.clients import create_client
    from hosts.models import CommandRule, Grant

    harnesses: list[McpHarness] = []

    def make(name: str, grant: bool = True, hosts: Any = (), rules: Any = (), **fields: Any) -> McpHarness:
        client_fields = {k: fields.pop(k) for k in list(fields) if k.startswith("max_") or k == "owner"}
        issued = create_client(name, owner=client_fields.pop("owner", ""))
        if client_fields:
            for key, value in client_fields.items():
                setattr(issued.client, key, value)
            issued.client.save()
        if grant:
            made = Grant.objects.create(client=issued.client, **fields)
            made.hosts.set(list(hosts))
            for action, pattern in rules:
                CommandRule.objects.create(grant=made, action=action, pattern=pattern)
        harness = McpHarness(ClientRef(issued.client.pk, issued.client.name))
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.close()
    close_held()
