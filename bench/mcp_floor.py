"""The MCP SDK's own floor over stdio, and what sshcontrol's loop-driven stdio saves of it.

Any stdio MCP server written with the official Python SDK pays this round trip (JSON-RPC
framing, pydantic validation, two pipes) before it does any work; it bounds how close
`ssh_execute` can come to raw paramiko. The same no-op server runs twice in one invocation:
on the SDK's stdio transport (every line through an anyio worker thread) and on
`sshcontrol.mcp.stdio` (the pipes on the event loop, as `mcp_serve` runs). Printed: p50/p95
of sequential calls, calls/s with 64 concurrent callers, and the server's CPU per call.

    .venv/bin/python bench/mcp_floor.py [--runs 400]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentiles

REPO = Path(__file__).resolve().parents[1]

NOOP_SERVER = """
import sys
import anyio
from mcp.server import MCPServer
sys.setswitchinterval(0.0005)  # as mcp_serve does
server = MCPServer(name="noop")

@server.tool()
async def noop(text: str) -> str:
    return text

if sys.argv[1:] == ["loop"]:
    from sshcontrol.mcp import stdio
    anyio.run(stdio.serve, server)
else:
    server.run("stdio")
"""

CONCURRENT = 64


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 10 ms


def server_pid(transport: str) -> int:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"-c" in cmdline and transport.encode() in cmdline and b"noop" in b"".join(cmdline):
                return int(proc.name)
    raise RuntimeError(f"no-op server ({transport}) not found")


async def measure(transport: str, runs: int) -> tuple[float, float, float, float]:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable, args=["-c", NOOP_SERVER, transport], env={"PYTHONPATH": str(REPO)}
    )
    async with Client(params) as client:
        for _ in range(50):
            await client.call_tool("noop", {"text": "a"})
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            await client.call_tool("noop", {"text": "a"})
            samples.append((time.perf_counter() - start) * 1000)
        p50, p95 = percentiles(samples)
        pid = server_pid(transport)
        calls = runs * 4
        cpu_before, started = cpu_seconds(pid), time.perf_counter()

        async def caller(count: int) -> None:
            for _ in range(count):
                await client.call_tool("noop", {"text": "a"})

        await asyncio.gather(*(caller(calls // CONCURRENT) for _ in range(CONCURRENT)))
        elapsed = time.perf_counter() - started
        done = calls // CONCURRENT * CONCURRENT
        return p50, p95, done / elapsed, (cpu_seconds(pid) - cpu_before) * 1000 / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    args = parser.parse_args()
    print(f"no-op MCP tool over stdio, {args.runs} sequential calls, then {CONCURRENT} concurrent callers")
    print(f"{'transport':<22}{'p50 ms':>8}{'p95 ms':>8}{'calls/s':>9}{'server CPU ms/call':>20}")
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    for transport in ("sdk", "loop", "sdk", "loop"):  # alternated: the machine's noise hits both
        rows.setdefault(transport, []).append(asyncio.run(measure(transport, args.runs)))
    for transport, runs in rows.items():
        name = "SDK (anyio threads)" if transport == "sdk" else "sshcontrol (loop)"
        best = min(runs, key=lambda r: r[3])
        print(f"{name:<22}{best[0]:>8.2f}{best[1]:>8.2f}{best[2]:>9.0f}{best[3]:>20.2f}")
    sdk, loop = (min(r[3] for r in rows[t]) for t in ("sdk", "loop"))
    print(f"server CPU per call, loop / SDK: {loop / sdk:.2f}")


if __name__ == "__main__":
    main()
