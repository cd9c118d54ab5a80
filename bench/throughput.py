"""Calls per second and p95 latency of `ssh_execute true` under concurrency, embedded vs distributed.

16 and 64 concurrent callers share 20 sessions through one mcp_serve (stdio), first
embedded (sessions in mcp_serve), then with Redis and two Celery workers holding them.
Bounded: each configuration runs a fixed number of calls against the loopback sshd.

    .venv/bin/python bench/throughput.py [--calls 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Deployment, percentiles

from tests.sshd import SshServer

SESSIONS = 20


async def measure(deployment: Deployment, concurrency: int, calls: int) -> tuple[float, float, float]:
    from mcp import Client

    async with Client(deployment.server_params()) as client:
        sessions = []
        for _ in range(SESSIONS):
            opened = await client.call_tool("ssh_connect", {"host": "bench"})
            sessions.append(opened.structured_content["session_id"])  # type: ignore[index,union-attr]
        latencies: list[float] = []
        errors = 0
        next_call = 0

        async def caller() -> None:
            nonlocal next_call, errors
            while next_call < calls:
                index = next_call
                next_call += 1
                arguments = {
                    "session_id": sessions[index % SESSIONS],
                    "command": "true",
                    "response_format": "json",
                }
                start = time.perf_counter()
                result = await client.call_tool("ssh_execute", arguments)
                latencies.append((time.perf_counter() - start) * 1000)
                errors += bool(result.is_error)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        if errors:
            raise RuntimeError(f"{errors} calls failed")
        p50, p95 = percentiles(latencies)
        return calls / elapsed, p50, p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    server = SshServer.create().start()
    rows = []
    try:
        for distributed in (False, True):
            deployment = Deployment(server, distributed=distributed).setup()
            try:
                for concurrency in (16, 64):
                    rate, p50, p95 = asyncio.run(measure(deployment, concurrency, args.calls))
                    rows.append(("distributed" if distributed else "embedded", concurrency, rate, p50, p95))
            finally:
                deployment.close()
    finally:
        server.remove()
    print(f"{args.calls} calls of `true` over {SESSIONS} sessions, one mcp_serve (stdio)\n")
    print(f"{'mode':<12} {'callers':>7} {'calls/s':>9} {'p50 ms':>8} {'p95 ms':>8}")
    for mode, concurrency, rate, p50, p95 in rows:
        print(f"{mode:<12} {concurrency:>7} {rate:>9.1f} {p50:>8.1f} {p95:>8.1f}")
    best = max(rate for mode, _, rate, _, _ in rows if mode == "distributed")
    print(f"\nbest distributed rate: {best:.0f} calls/s  (target >= 300 with two workers)")


if __name__ == "__main__":
    main()
