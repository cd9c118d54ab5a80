"""Calls through killed database connections in distributed mode: mcp_serve, the broker and
two real workers all lose their PostgreSQL backends, repeatedly, while calls run."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from mcp import Client
from mcp.types import CallToolResult

from tests.dbfaults import BackendKiller, assert_rows_match_the_host, ran, traced
from tests.distributed.conftest import WorkerPool
from tests.distributed.test_workers import run
from tests.sshd import SshServer

CALLS = 24


@pytest.fixture
def traces(sshd: SshServer) -> Iterator[str]:
    tag = secrets.token_hex(4)
    yield tag
    for path in Path("/tmp").glob(f"sshc-trace-{tag}-*"):
        path.unlink()


@pytest.fixture
def postgres(django_db_setup: None) -> None:
    """Skip before the workers start: this fault needs PostgreSQL."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL fault test (DATABASE_URL=postgres://...)")


def test_it_loses_no_call_while_postgres_backends_are_killed(
    postgres: None, workers: WorkerPool, make_host: Any, sshd: SshServer, traces: str
) -> None:
    make_host("h")

    async def body(client: Client) -> dict[int, CallToolResult]:
        await client.call_tool("ssh_execute", {"host": "h", "command": "true"})
        with BackendKiller(interval=0.25) as killer:
            calls = [
                client.call_tool("ssh_execute", {"host": "h", "command": traced(traces, n, "sleep 0.3; ")})
                for n in range(CALLS)
            ]
            results = await asyncio.gather(*calls)
        assert killer.killed > 0, "the fault was never injected"
        return dict(enumerate(results))

    results = run(body, workers.broker_url)
    connection.close()  # killed with the others
    for n, result in results.items():
        assert not result.is_error, result.content
        assert result.structured_content is not None
        assert result.structured_content["stdout"] == f"done-{n}\n"
        assert ran(traces, n)
    assert_rows_match_the_host(traces, results)
