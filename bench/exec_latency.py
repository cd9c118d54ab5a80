"""Latency of one `true` command: raw paramiko, OpenSSH ControlMaster, ssh_execute embedded and distributed.

All run in one process against one freshly started loopback sshd (the test suite's
SshServer), so the ratios printed at the end compare like with like on this machine. The
distributed path needs Redis on 127.0.0.1:6379 and starts two Celery workers.

    sudo .venv/bin/python bench/exec_latency.py [--runs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Deployment, percentiles, raw_client

from tests.sshd import SshServer


def timed(runs: int, once: Callable[[], None], warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        once()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        once()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def bench_paramiko(server: SshServer, runs: int) -> list[float]:
    client = raw_client(server)

    def once() -> None:
        _, stdout, _ = client.exec_command("true")
        stdout.channel.recv_exit_status()

    try:
        return timed(runs, once)
    finally:
        client.close()


def bench_openssh(server: SshServer, runs: int, workdir: Path) -> list[float]:
    known = workdir / "known_hosts"
    known.write_text(
        f"[{server.address}]:{server.port} {server.host_key('ed25519').get_name()} "
        f"{server.host_key('ed25519').get_base64()}\n"
    )
    control = workdir / "cm-%C"
    args = [
        "ssh",
        "-F",
        "/dev/null",
        "-o",
        "ControlMaster=auto",
        "-o",
        f"ControlPath={control}",
        "-o",
        "ControlPersist=60",
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-i",
        str(server.client_keys["ed25519"]),
        "-p",
        str(server.port),
        f"{server.user}@{server.address}",
        "true",
    ]

    def once() -> None:
        subprocess.run(args, check=True, stdin=subprocess.DEVNULL)

    try:
        return timed(runs, once)
    finally:
        subprocess.run(
            [*args[:-2], "-O", "exit", f"{server.user}@{server.address}"], capture_output=True, check=False
        )


def bench_mcp_stdio(deployment: Deployment, runs: int) -> list[float]:
    from mcp import Client

    async def run() -> list[float]:
        async with Client(deployment.server_params()) as client:
            opened = await client.call_tool("ssh_connect", {"host": "bench"})
            session_id = opened.structured_content["session_id"]  # type: ignore[union-attr,index]
            arguments = {"session_id": session_id, "command": "true", "response_format": "json"}
            for _ in range(10):
                await client.call_tool("ssh_execute", arguments)
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                result = await client.call_tool("ssh_execute", arguments)
                samples.append((time.perf_counter() - start) * 1000)
                assert not result.is_error, result.content  # type: ignore[union-attr]
            return samples

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--no-distributed", action="store_true", help="skip the Redis + Celery workers path")
    args = parser.parse_args()
    server = SshServer.create().start()
    workdir = Path(tempfile.mkdtemp(prefix="sshcontrol-bench-"))
    deployments = [Deployment(server).setup()]
    try:
        results = {
            "raw paramiko (open connection, TCP_NODELAY)": bench_paramiko(server, args.runs),
            "OpenSSH ControlMaster (ssh -o ControlMaster=auto)": bench_openssh(server, args.runs, workdir),
            "ssh_execute via mcp_serve (stdio), embedded": bench_mcp_stdio(deployments[0], args.runs),
        }
        if not args.no_distributed:
            deployments.append(Deployment(server, distributed=True).setup())
            results["ssh_execute via mcp_serve -> Redis -> worker"] = bench_mcp_stdio(
                deployments[1], args.runs
            )
    finally:
        for deployment in deployments:
            deployment.close()
        server.remove()
    print(f"{args.runs} runs of `true` against one loopback sshd\n")
    print(f"{'path':<52} {'p50 ms':>8} {'p95 ms':>8}")
    stats = {name: percentiles(samples) for name, samples in results.items()}
    for name, (p50, p95) in stats.items():
        print(f"{name:<52} {p50:>8.2f} {p95:>8.2f}")
    raw, openssh, mcp = (stats[k][0] for k in list(results)[:3])
    print()
    print(f"ssh_execute p50 / OpenSSH ControlMaster p50 = {mcp / openssh:.2f}  (target <= 1.00)")
    print(f"ssh_execute p50 - raw paramiko p50         = {mcp - raw:+.2f} ms  (target <= 4 ms)")
    print(f"ssh_execute p50 / raw paramiko p50          = {mcp / raw:.2f}")
    if len(stats) > 3:
        distributed = stats["ssh_execute via mcp_serve -> Redis -> worker"][0]
        print(f"distributed p50 - embedded p50              = {distributed - mcp:+.2f} ms  (target <= 4 ms)")


if __name__ == "__main__":
    main()
