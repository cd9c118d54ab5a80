"""Calls per second and p95 latency of `ssh_execute true` under concurrency, embedded vs distributed.

16 and 64 concurrent callers share 20 sessions. First embedded (sessions held by one
mcp_serve), then distributed (Redis and two Celery workers holding the sessions) through
1, 2 and 4 mcp_serve replicas side by side: each replica is its own stdio MCP client and
server process, as real clients launch them, and the callers are spread over them.

For every configuration it also prints where the CPU went, per call: each process group's
user + system time from /proc/<pid>/stat around the measured calls (mcp_serve replicas,
workers, redis-server, sshd with the shells it forked, this client process), the whole
machine's busy time, whose excess over ours is other work on the machine, and the Redis
commands per call. Two floors from the same run bound what any design could reach here: a
no-op tool on the same MCP SDK over stdio, and `true` over an open paramiko connection.

Bounded: each configuration runs a fixed number of calls against the loopback sshd, and a
configuration that takes longer than --max-seconds is aborted.

    .venv/bin/python bench/throughput.py [--calls 600] [--replicas 1,2,4] [--callers 16,64]

By default the broker is a private redis-server on a free loopback port, started and
stopped here (--broker URL to use another, e.g. redis://127.0.0.1:6379/8).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO,
    Deployment,
    RedisServer,
    children_named,
    machine_busy,
    percentiles,
    process_cpu,
    raw_client,
    tree_cpu,
)

from tests.sshd import SshServer

SESSIONS = 20

# calls/s, p50 ms, p95 ms, CPU ms per call by process group, Redis commands per call
Measured = tuple[float, float, float, dict[str, float], dict[str, float]]


@dataclass
class Row:
    mode: str
    replicas: int
    callers: int
    rate: float
    p50: float
    p95: float
    cpu_ms: dict[str, float] = field(default_factory=dict)  # process group -> CPU ms per call
    redis_calls: dict[str, float] = field(default_factory=dict)  # Redis command -> count per call


class CpuProbe:
    """CPU seconds per process group, read before and after the measured calls."""

    def __init__(self, deployment: Deployment, server: SshServer, redis: RedisServer | None) -> None:
        self.deployment = deployment
        self.server = server
        self.redis = redis

    def read(self) -> dict[str, float]:
        groups: dict[str, float] = {
            "mcp_serve": sum(process_cpu(pid) for pid in children_named("mcp_serve")),
        }
        for i, proc in enumerate(self.deployment.workers, 1):
            groups[f"worker {i}"] = process_cpu(proc.pid)
        if self.redis is not None and self.redis.proc is not None:
            groups["redis-server"] = process_cpu(self.redis.proc.pid)
        assert self.server.proc is not None
        groups["sshd + shells"] = tree_cpu(self.server.proc.pid)
        groups["bench client"] = process_cpu(os.getpid())
        groups["machine (all)"] = machine_busy()
        return groups

    def redis_commands(self) -> dict[str, int]:
        """How many times each command ran on the private redis-server (INFO commandstats)."""
        if self.redis is None:
            return {}
        import redis

        stats = redis.Redis.from_url(self.redis.url).info("commandstats")
        return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def replica(
    deployment: Deployment,
    index: int,
    replicas: int,
    callers: int,
    state: dict[str, Any],
    gates: dict[str, asyncio.Event],
) -> None:
    """One MCP client with its own mcp_serve: opens its share of the sessions, then calls."""
    from mcp import Client

    async with Client(deployment.server_params()) as client:
        sessions = []
        for _ in range(index, SESSIONS, replicas):
            opened = await client.call_tool("ssh_connect", {"host": "bench"})
            if opened.is_error:
                raise RuntimeError(f"ssh_connect failed: {opened.content}")
            sessions.append(opened.structured_content["session_id"])  # type: ignore[index]
        # Warm this replica's path (imports, connections, thread pool) before the clock starts.
        await asyncio.gather(
            *(client.call_tool("ssh_execute", {"session_id": s, "command": "true"}) for s in sessions)
        )
        state["ready"] += 1
        if state["ready"] == replicas:
            gates["ready"].set()
        await gates["go"].wait()

        async def caller() -> None:
            while state["next"] < state["calls"]:
                call = state["next"]
                state["next"] += 1
                arguments = {
                    "session_id": sessions[call % len(sessions)],
                    "command": "true",
                    "response_format": "json",
                }
                start = time.perf_counter()
                result = await client.call_tool("ssh_execute", arguments)
                state["latencies"].append((time.perf_counter() - start) * 1000)
                state["errors"] += bool(result.is_error)

        await asyncio.gather(*(caller() for _ in range(callers)))
        state["done"] += 1
        if state["done"] == replicas:
            state["finished"] = time.perf_counter()
            gates["done"].set()
        # Stay up until the CPU of every process has been read.
        await gates["close"].wait()


async def measure(
    deployment: Deployment, probe: CpuProbe, replicas: int, concurrency: int, calls: int
) -> Measured:
    state: dict[str, Any] = {"ready": 0, "done": 0, "next": 0, "calls": calls, "latencies": [], "errors": 0}
    gates = {name: asyncio.Event() for name in ("ready", "go", "done", "close")}
    shares = [concurrency // replicas + (i < concurrency % replicas) for i in range(replicas)]
    tasks = [
        asyncio.create_task(replica(deployment, i, replicas, share, state, gates))
        for i, share in enumerate(shares)
    ]

    async def gate(name: str) -> None:
        """Wait for a gate; a replica that fails meanwhile raises its error here instead."""
        waiting = asyncio.create_task(gates[name].wait())
        await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if not gates[name].is_set():
            waiting.cancel()
            gates["go"].set()
            gates["close"].set()
            await asyncio.gather(*tasks)
            raise RuntimeError(f"a replica stopped before '{name}'")

    try:
        await gate("ready")
        before, commands_before = probe.read(), probe.redis_commands()
        started = time.perf_counter()
        gates["go"].set()
        await gate("done")
        after, commands_after = probe.read(), probe.redis_commands()
    finally:
        gates["go"].set()
        gates["close"].set()
        await asyncio.gather(*tasks, return_exceptions=True)
    if state["errors"]:
        raise RuntimeError(f"{state['errors']} calls failed")
    p50, p95 = percentiles(state["latencies"])
    cpu = {name: (after[name] - before[name]) * 1000 / calls for name in before}
    commands = {
        name: (count - commands_before.get(name, 0)) / calls
        for name, count in commands_after.items()
        if count > commands_before.get(name, 0)
    }
    return calls / (state["finished"] - started), p50, p95, cpu, commands


def run_configuration(
    deployment: Deployment,
    server: SshServer,
    redis: RedisServer | None,
    replicas: int,
    concurrency: int,
    calls: int,
    max_seconds: float,
) -> Measured:
    probe = CpuProbe(deployment, server, redis)
    work = measure(deployment, probe, replicas, concurrency, calls)
    return asyncio.run(asyncio.wait_for(work, max_seconds))


async def mcp_noop_floor(concurrency: int, calls: int) -> tuple[float, float, float]:
    """A no-op tool on the same SDK, same callers: calls/s, server and client CPU ms per call."""
    from mcp import Client, StdioServerParameters
    from mcp_floor import NOOP_SERVER

    # On the stdio transport mcp_serve uses (sshcontrol.mcp.stdio), so the floor is like for like.
    params = StdioServerParameters(
        command=sys.executable, args=["-c", NOOP_SERVER, "loop"], env={"PYTHONPATH": str(REPO)}
    )
    async with Client(params) as client:
        for _ in range(50):
            await client.call_tool("noop", {"text": "a"})
        (server_pid,) = children_named('name="noop"')
        remaining = calls

        async def caller() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await client.call_tool("noop", {"text": "a"})

        server_before, client_before = process_cpu(server_pid), process_cpu(os.getpid())
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        server_ms = (process_cpu(server_pid) - server_before) * 1000 / calls
        client_ms = (process_cpu(os.getpid()) - client_before) * 1000 / calls
    return calls / elapsed, server_ms, client_ms


def ssh_floor(server: SshServer, calls: int) -> tuple[float, float]:
    """`true` over one open paramiko connection: sshd (+ shell) and client CPU ms per command."""
    client = raw_client(server)
    try:

        def once() -> None:
            _, stdout, _ = client.exec_command("true")
            stdout.channel.recv_exit_status()

        for _ in range(20):
            once()
        assert server.proc is not None
        sshd_before, client_before = tree_cpu(server.proc.pid), process_cpu(os.getpid())
        for _ in range(calls):
            once()
        sshd_ms = (tree_cpu(server.proc.pid) - sshd_before) * 1000 / calls
        client_ms = (process_cpu(os.getpid()) - client_before) * 1000 / calls
    finally:
        client.close()
    return sshd_ms, client_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=600, help="calls per configuration")
    parser.add_argument("--replicas", default="1,2,4", help="mcp_serve replicas to try, distributed")
    parser.add_argument("--callers", default="16,64", help="concurrent callers to try")
    parser.add_argument("--broker", default="", help="broker URL (default: a private redis-server)")
    parser.add_argument("--max-seconds", type=float, default=120, help="abort a configuration after this")
    parser.add_argument("--no-embedded", action="store_true", help="skip the embedded reference run")
    parser.add_argument("--no-floors", action="store_true", help="skip the no-op MCP and raw SSH floors")
    args = parser.parse_args()
    replica_counts = [int(n) for n in args.replicas.split(",") if n]
    caller_counts = [int(n) for n in args.callers.split(",") if n]
    server = SshServer.create().start()
    redis = None if args.broker else RedisServer().start()
    broker = args.broker or (redis.url if redis is not None else "")
    rows: list[Row] = []
    floors: dict[str, float] = {}
    try:
        if not args.no_floors:
            rate, server_ms, client_ms = asyncio.run(mcp_noop_floor(max(caller_counts), args.calls))
            floors.update(
                noop_callers=max(caller_counts), noop_rate=rate, noop_server=server_ms, noop_client=client_ms
            )
            floors["sshd"], floors["paramiko"] = ssh_floor(server, min(args.calls, 300))
        plans: list[tuple[bool, list[int]]] = []
        if not args.no_embedded:
            plans.append((False, [1]))
        if replica_counts:
            plans.append((True, replica_counts))
        for distributed, counts in plans:
            deployment = Deployment(server, distributed=distributed, broker_url=broker).setup()
            try:
                for replicas in counts:
                    for concurrency in caller_counts:
                        rate, p50, p95, cpu, commands = run_configuration(
                            deployment,
                            server,
                            redis if distributed else None,
                            replicas,
                            concurrency,
                            args.calls,
                            args.max_seconds,
                        )
                        mode = "distributed" if distributed else "embedded"
                        rows.append(Row(mode, replicas, concurrency, rate, p50, p95, cpu, commands))
                        print(f"  {mode} x{replicas}, {concurrency} callers: {rate:.0f} calls/s", flush=True)
            finally:
                deployment.close()
    finally:
        if redis is not None:
            redis.stop()
        server.remove()
    report(rows, args.calls, broker, floors)


def report(rows: list[Row], calls: int, broker: str, floors: dict[str, float]) -> None:
    embedded = {row.callers: row.rate for row in rows if row.mode == "embedded"}
    print(f"\n{calls} calls of `true` over {SESSIONS} sessions per configuration; broker {broker}\n")
    columns = f"{'calls/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'x embedded':>10}"
    print(f"{'mode':<12} {'mcp_serve':>9} {'callers':>7} {columns}")
    for row in rows:
        ratio = f"{row.rate / embedded[row.callers]:.2f}" if row.callers in embedded else "-"
        print(
            f"{row.mode:<12} {row.replicas:>9} {row.callers:>7} {row.rate:>9.1f} "
            f"{row.p50:>8.1f} {row.p95:>8.1f} {ratio:>10}"
        )
    print("\nCPU ms per call, by process (user + system, from /proc/<pid>/stat):\n")
    groups: list[str] = []
    for row in rows:
        groups.extend(name for name in row.cpu_ms if name not in groups)
    ours = [name for name in groups if name != "machine (all)"]
    header = f"{'mode':<12} {'mcp':>3} {'callers':>7} " + " ".join(f"{name:>13}" for name in ours)
    print(header + f" {'sum':>7} {'machine':>8}")
    for row in rows:
        values = [row.cpu_ms.get(name) for name in ours]
        cells = " ".join(f"{v:>13.2f}" if v is not None else f"{'-':>13}" for v in values)
        total = sum(v for v in values if v is not None)
        print(
            f"{row.mode:<12} {row.replicas:>3} {row.callers:>7} {cells} {total:>7.2f} "
            f"{row.cpu_ms.get('machine (all)', 0.0):>8.2f}"
        )
    print("\n('machine' is the whole machine's busy CPU per call: above 'sum' is other work on it.)")
    with_commands = [row for row in rows if row.redis_calls]
    if with_commands:
        print("\nRedis commands per call (INFO commandstats of the private redis-server):\n")
        for row in with_commands:
            busiest = sorted(row.redis_calls.items(), key=lambda kv: -kv[1])
            listed = ", ".join(f"{name} {count:.2f}" for name, count in busiest if count >= 0.01)
            print(f"  {row.mode} x{row.replicas}, {row.callers} callers: {listed}")
    if floors:
        floor = floors["noop_server"] + floors["noop_client"] + floors["sshd"] + floors["paramiko"]
        print(
            f"\nFloors, same machine and run (CPU ms per call):\n"
            f"  no-op MCP tool over stdio ({floors['noop_callers']:.0f} callers, "
            f"{floors['noop_rate']:.0f} calls/s): server {floors['noop_server']:.2f}, "
            f"client {floors['noop_client']:.2f}\n"
            f"  `true` on an open paramiko connection: sshd + shell {floors['sshd']:.2f}, "
            f"paramiko client {floors['paramiko']:.2f}\n"
            f"  sum {floor:.2f} ms: at most {2000 / floor:.0f} calls/s on 2 fully busy cores "
            "with no sshcontrol, Celery or audit work at all"
        )
    distributed = [row.rate for row in rows if row.mode == "distributed"]
    if distributed:
        print(f"best distributed rate: {max(distributed):.0f} calls/s  (target >= 300 with two workers)")


if __name__ == "__main__":
    main()
