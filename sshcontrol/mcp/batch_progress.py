"""Progress of a batch (ssh_execute_many, the fleet transfers, ssh_copy_many) for its MCP call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mcp.server.mcpserver import Context


def hosts_done_reporter(ctx: Context) -> Callable[[int, int], None]:
    """A ``report(done, total)`` that the batch's threads may call: "N of M hosts done" to the client.

    Call it on the event loop (it remembers the loop the notifications go out on).
    """
    loop = asyncio.get_running_loop()

    def report(done: int, total: int) -> None:
        message = f"{done} of {total} hosts done"
        asyncio.run_coroutine_threadsafe(ctx.report_progress(done, total, message), loop)

    return report
