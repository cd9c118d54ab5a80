"""Running a call's synchronous work (ORM, SSH) off the event loop, cancellably.

The sync ORM cannot run inside ``async def`` tools, and SSH calls block; each tool call
runs in a thread of a dedicated pool so a ``sleep 30`` never delays other calls. When the
client cancels, the call's ``on_cancel`` stops the remote work and the thread is given a
bounded time to complete its audit row before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio
from django.db import close_old_connections, connections
from django.db.backends.base.base import BaseDatabaseWrapper

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None

# How long a cancelled call may take to kill its remote process and complete its audit row.
CANCEL_GRACE_SECONDS = 10.0


def pool(max_workers: int = 64) -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sshcontrol-call")
    return _pool


# Each call thread keeps its database connections between calls (opening one costs more than
# a call). They are remembered here, once per thread, so that whoever stops the pool for good
# (a test run dropping its database) can close them: the thread itself never gets to.
_registered = threading.local()
_thread_connections: list[BaseDatabaseWrapper] = []
_registry_lock = threading.Lock()
# Calls whose thread still runs, including those their client gave up on (they finish their
# audit row after the client has gone): ``wait_idle`` waits for them.
_running = 0
_idle = threading.Condition()


def _with_db(fn: Callable[[], T]) -> Callable[[], T]:
    def run() -> T:
        global _running
        with _idle:
            _running += 1
        try:
            close_old_connections()  # drop connections the database closed while the thread idled
            if not getattr(_registered, "done", False):
                with _registry_lock:
                    _thread_connections.extend(connections[alias] for alias in connections)
                _registered.done = True
            return fn()
        finally:
            with _idle:
                _running -= 1
                _idle.notify_all()

    return run


def wait_idle(timeout: float) -> bool:
    """Wait until no call thread runs (a server stopping, a test's teardown); False on timeout."""
    with _idle:
        return _idle.wait_for(lambda: _running == 0, timeout)


def close_thread_connections() -> int:
    """Close the database connections call threads hold; only when no call runs. Returns how many.

    The fleet threads' too (``sshcontrol/fleet.py``): a batch's hosts run on them.
    """
    from sshcontrol import fleet

    closed = fleet.close_thread_connections()
    with _registry_lock:
        for wrapper in _thread_connections:
            if wrapper.connection is not None:
                wrapper.inc_thread_sharing()  # closing another thread's connection, deliberately
                try:
                    wrapper.close()
                finally:
                    wrapper.dec_thread_sharing()
                closed += 1
    return closed


async def in_thread(fn: Callable[[], T], on_cancel: Callable[[], None] | None = None) -> T:
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(pool(), contextvars.copy_context().run, _with_db(fn))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_GRACE_SECONDS):
            await asyncio.wait({future})
        raise
