"""Stdio for ``mcp_serve`` read and written on the event loop, without a thread hop per line.

The SDK's stdio transport wraps stdin and stdout in anyio file objects: every line read,
every write and every flush goes through a worker thread and back. Profiled under load that
was about a sixth of ``mcp_serve``'s CPU per call. Here the protocol's pipes are asyncio
pipe transports on the loop itself, handed to the SDK's ``stdio_server`` as its streams, so
the JSON-RPC framing and everything after it is still the SDK's.

Like the SDK, the wire is moved off fd 0 and 1 while serving (stdin reads /dev/null, stdout
goes to stderr), so a stray ``print`` or child process cannot corrupt the protocol.
When stdin or stdout is not a pipe, socket or terminal (a regular file, in some tests and
tools), the SDK's own transport is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server import MCPServer
from mcp.server.stdio import stdio_server

# A JSON-RPC message is one line, and an upload's content rides in it; the SDK's own reader
# has no line limit either. This only bounds the buffer of one message.
MAX_LINE_BYTES = 1 << 30


class _Lines:
    """Async iteration over decoded lines, as ``stdio_server`` reads its stdin."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        line = await self.reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class _Writer:
    """``write`` and ``flush``, as ``stdio_server`` writes its stdout."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer

    async def write(self, text: str) -> None:
        self.writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self.writer.drain()


def _pipe_like(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


# A pipe holds 64 KiB by default: a page of output (up to 1 MiB, ssh_read_output) then takes
# sixteen writes, each waiting for the client to drain the pipe. Linux lets an unprivileged
# process grow its pipes up to /proc/sys/fs/pipe-max-size (1 MiB by default).
PIPE_BYTES = 1 << 20


def _widen(fd: int) -> None:
    if stat.S_ISFIFO(os.fstat(fd).st_mode):
        with contextlib.suppress(OSError):  # above the system's maximum, or over the user's quota
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


@asynccontextmanager
async def _loop_pipes() -> AsyncIterator[tuple[_Lines, _Writer]]:
    """The wire's pipes as loop transports; fd 0 and 1 point elsewhere until the block ends."""
    loop = asyncio.get_running_loop()
    saved = {fd: os.dup(fd) for fd in (0, 1)}  # put back on exit
    wire_in, wire_out = os.dup(0), os.dup(1)  # owned, and closed, by the transports
    for fd in (wire_in, wire_out):
        _widen(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    transports: list[asyncio.BaseTransport] = []
    try:
        reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
        read_transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(wire_in, "rb", buffering=0)
        )
        transports.append(read_transport)
        write_transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(wire_out, "wb", buffering=0)
        )
        transports.append(write_transport)
        yield _Lines(reader), _Writer(asyncio.StreamWriter(write_transport, protocol, None, loop))
    finally:
        for transport in transports:
            transport.close()
        for fd, duplicate in saved.items():
            os.dup2(duplicate, fd)
            os.close(duplicate)


async def serve(server: MCPServer) -> None:
    """Run ``server`` over this process's stdin and stdout until the client closes stdin."""
    if not (_pipe_like(0) and _pipe_like(1)):
        await server.run_stdio_async()
        return
    # What the SDK's run_stdio_async runs, with our streams instead of its threaded files.
    lowlevel: Any = server._lowlevel_server
    async with (
        _loop_pipes() as (stdin, stdout),
        stdio_server(stdin=stdin, stdout=stdout) as (read_stream, write_stream),  # type: ignore[arg-type]
    ):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
