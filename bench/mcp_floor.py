"""The MCP SDK's own floor: p50 of a no-op tool over stdio, beside ssh_execute's.

Any stdio MCP server written with the official Python SDK pays this round trip (JSON-RPC
framing, pydantic validation, two pipes) before it does any work; it bounds how close
`ssh_execute` can come to raw paramiko.

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

NOOP_SERVER = """
import sys
from mcp.server import MCPServer
sys.setswitchinterval(0.0005)  # as mcp_serve does
server = MCPServer(name="noop")

@server.tool()
async def noop(text: str) -> str:
    return text

server.run("stdio")
"""


async def measure(runs: int) -> list[float]:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=["-c", NOOP_SERVER])
    async with Client(params) as client:
        for _ in range(50):
            await client.call_tool("noop", {"text": "a"})
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            await client.call_tool("noop", {"text": "a"})
            samples.append((time.perf_counter() - start) * 1000)
        return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    args = parser.parse_args()
    p50, p95 = percentiles(asyncio.run(measure(args.runs)))
    print(f"no-op MCP tool over stdio: p50 {p50:.2f} ms, p95 {p95:.2f} ms ({args.runs} calls)")


if __name__ == "__main__":
    main()
