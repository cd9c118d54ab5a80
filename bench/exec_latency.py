"""Latency of one `true` command: raw paramiko vs OpenSSH ControlMaster vs ssh_execute over MCP stdio.

All three run in one process against one freshly started loopback sshd (the test suite's
SshServer), so the ratios printed at the end compare like with like on this machine.

    sudo .venv/bin/python bench/exec_latency.py [--runs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import paramiko

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.sshd import SshServer  # noqa: E402


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return p50, p95


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
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    key = server.host_key("ed25519")
    client.get_host_keys().add(f"[{server.address}]:{server.port}", key.get_name(), key)
    sock = socket.create_connection((server.address, server.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.connect(
        server.address,
        server.port,
        username=server.user,
        key_filename=str(server.client_keys["ed25519"]),
        sock=sock,
        look_for_keys=False,
        allow_agent=False,
    )

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


def bench_mcp_stdio(server: SshServer, runs: int, workdir: Path) -> list[float]:
    from mcp import Client, StdioServerParameters

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "SSHCONTROL_DATA_DIR": str(workdir / "data"),
        "SSHCONTROL_LOG_LEVEL": "WARNING",
    }

    def cli(*args: str, stdin: str = "") -> str:
        done = subprocess.run(
            [sys.executable, "-m", "sshcontrol", *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    cli(
        "hosts",
        "add",
        "bench",
        "--address",
        server.address,
        "--port",
        str(server.port),
        "--username",
        server.user,
        "--key-file",
        str(server.client_keys["ed25519"]),
    )
    fingerprint = next(w for w in cli("hosts", "scan", "bench").split() if w.startswith("SHA256:"))
    cli("hosts", "trust", "bench", fingerprint)
    params = StdioServerParameters(command=sys.executable, args=["-m", "sshcontrol", "mcp_serve"], env=env)

    async def run() -> list[float]:
        async with Client(params) as client:
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
    args = parser.parse_args()
    server = SshServer.create().start()
    workdir = Path(tempfile.mkdtemp(prefix="sshcontrol-bench-"))
    try:
        results = {
            "raw paramiko (open connection, TCP_NODELAY)": bench_paramiko(server, args.runs),
            "OpenSSH ControlMaster (ssh -o ControlMaster=auto)": bench_openssh(server, args.runs, workdir),
            "ssh_execute via mcp_serve (stdio)": bench_mcp_stdio(server, args.runs, workdir),
        }
    finally:
        server.remove()
    print(f"{args.runs} runs of `true` against one loopback sshd\n")
    print(f"{'path':<52} {'p50 ms':>8} {'p95 ms':>8}")
    stats = {name: percentiles(samples) for name, samples in results.items()}
    for name, (p50, p95) in stats.items():
        print(f"{name:<52} {p50:>8.2f} {p95:>8.2f}")
    raw, openssh, mcp = (stats[k][0] for k in results)
    print()
    print(f"ssh_execute p50 / OpenSSH ControlMaster p50 = {mcp / openssh:.2f}  (target <= 1.00)")
    print(f"ssh_execute p50 - raw paramiko p50         = {mcp - raw:+.2f} ms  (target <= 4 ms)")
    print(f"ssh_execute p50 / raw paramiko p50          = {mcp / raw:.2f}")


if __name__ == "__main__":
    main()
