"""Revoking a client from another process stops its running stdio server within a second.

docs/security.md ("Callers and tokens"): a running stdio server re-reads the client's state
once its copy is a second old, so ``sshcontrol clients revoke`` run beside it (another process,
the one an administrator would type) is seen by its calls from a second after the server last
read it. The second is pinned on the product's own clock (``hosts.access``, time stepped by the
test, the revocation written as another process writes it: no signal reaches this one); then a
real ``mcp_serve`` subprocess over stdio with the client's token, a real sshd, is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from mcp import Client
from mcp.types import CallToolResult

from hosts import access
from hosts.clients import create_client
from hosts.models import McpClient
from tests.mcp.test_stdio import anyio_backend, cli, env, ok, registered, server_params
from tests.polling import INTERVAL, eventually, until

__all__ = ["anyio_backend", "env", "registered"]  # fixtures, used by name

PROMISED_SECONDS = 1.0  # docs/security.md: "within a second"
# The subprocess's refusal is waited for its re-read interval and what calls take on a loaded
# machine; the second itself is pinned on the product's clock by the first test.
DEADLINE = access.CACHE_SECONDS + 10.0


class SteppedClock:
    """``time`` for hosts.access alone: stands still until the test steps it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_a_running_server_sees_a_revocation_from_another_process_a_second_after_its_last_read(
    db: None, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    client = create_client("ci-bot").client
    clock = SteppedClock()
    monkeypatch.setattr(access, "time", clock)
    access.forget()
    request.addfinalizer(access.forget)  # no copy stamped on this clock outlives the test
    assert access.access_for(client.pk).problem == ""  # the server's read: its copy starts now
    # Another process revokes: an UPDATE of the row, no save signal in this process to drop the copy.
    McpClient.objects.filter(pk=client.pk).update(revoked_at=timezone.now(), enabled=False)
    # The server still answers from its copy (so what ends it below is the copy's age, nothing else).
    assert access.access_for(client.pk).problem == ""
    clock.now += PROMISED_SECONDS
    assert "was revoked" in access.access_for(client.pk).problem
    assert access.cached(client.pk) is not None, "the refusal is the server's fresh copy"


@pytest.mark.anyio
async def test_a_client_revoked_by_another_process_is_refused_by_its_running_server(
    registered: dict[str, str],
) -> None:
    added = cli(registered, "clients", "add", "ci-bot")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    granted = cli(registered, "clients", "grant", "ci-bot", "--host", "box")
    assert granted.returncode == 0, granted.stderr
    async with Client(server_params({**registered, "SSHCONTROL_CLIENT_TOKEN": token})) as client:
        assert (await ok(client, "ssh_execute", host="box", command="echo before"))["stdout"] == "before\n"
        # The administrator revokes from another process while the client keeps calling (so the
        # server's snapshot of the client is as fresh as it gets when the revocation commits).
        revoking = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sshcontrol", "clients", "revoke", "ci-bot", env=registered, cwd="/"
        )
        stop = asyncio.Event()
        calling = asyncio.create_task(keep_calling(client, stop))
        await eventually(lambda: revoked_in_database(registered), 120, "the revocation committed")
        stop.set()
        await calling
        assert await revoking.wait() == 0
        refusals: list[str] = []

        async def refused() -> bool:
            result = await client.call_tool("ssh_execute", {"host": "box", "command": "echo after"})
            assert isinstance(result, CallToolResult)
            if result.is_error:
                refusals.append(result.content[0].text)  # type: ignore[union-attr]
            return result.is_error

        await until(refused, DEADLINE, "the running server to refuse the revoked client")
        assert "client 'ci-bot' was revoked" in refusals[0]
        # It stays refused, and sees no host any more.
        again = await client.call_tool("ssh_execute", {"host": "box", "command": "true"})
        assert again.is_error and "was revoked" in again.content[0].text  # type: ignore[union-attr]
        listed = await ok(client, "ssh_list_hosts")
        assert listed["hosts"] == [] and "was revoked" in listed["note"]
    rows = exported(registered)
    after = [r for r in rows if r["command"] == "echo after"]
    assert after and all(r["status"] == "ok" for r in after[:-1]), "only calls before it saw it ran"
    assert after[-1]["client"] == "ci-bot" and after[-1]["status"] == "denied"
    assert "revoked" in after[-1]["error"]
    assert token not in json.dumps(rows)


async def keep_calling(client: Client, stop: asyncio.Event) -> None:
    """Call (cheaply) again and again: each call may refresh the server's snapshot of the client."""
    while not stop.is_set():
        await client.call_tool("ssh_list_hosts", {})
        # Paced, and ended as soon as stop is set: a wait for the stop, not a fixed sleep.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), INTERVAL)


def revoked_in_database(env: dict[str, str]) -> bool:
    """Whether the revocation is committed (read-only: the server and the command write the file)."""
    path = Path(env["SSHCONTROL_DATA_DIR"]) / "sshcontrol.sqlite3"
    table = McpClient._meta.db_table
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
        row = db.execute(f"SELECT revoked_at FROM {table} WHERE name = 'ci-bot'").fetchone()  # noqa: S608
    return row is not None and row[0] is not None


def exported(env: dict[str, str]) -> list[dict[str, Any]]:
    out = cli(env, "audit_export", "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]
