"""Waiting for a condition in tests: poll it under a deadline, never sleep a fixed time.

A fixed sleep is either too short on a loaded machine (the test flakes) or too long on a
quiet one (the suite crawls). Polling returns as soon as the condition holds and fails
with a message that says what did not happen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tests.database import closing_connections

T = TypeVar("T")

INTERVAL = 0.05


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, message: str = "") -> T:
    """Return the first truthy value of ``predicate()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {message or predicate}")
        time.sleep(INTERVAL)


async def eventually(predicate: Callable[[], T], timeout: float = 10.0, message: str = "") -> T:
    """``wait_until`` for async tests: the predicate runs in a thread (it may use the ORM or pgrep).

    That thread's database connection is closed after each check: the event loop's threads end
    with it, and a connection left in one would keep the test database busy (tests/database.py).
    """
    check = closing_connections(predicate)
    return await until(lambda: asyncio.to_thread(check), timeout, message or repr(predicate))


async def until(check: Callable[[], Awaitable[T]], timeout: float = 10.0, message: str = "") -> T:
    """``eventually`` for a check that is itself async (an MCP call): awaited on the event loop.

    Between two checks it waits ``INTERVAL``: the pace of the polling, not a wait for the condition.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g} s: {message or check}")
        await asyncio.sleep(INTERVAL)
