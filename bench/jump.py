"""Latency of one `true` command direct, through one jump host and through two, against OpenSSH -J.

The hosts are the jump host tests' network namespaces (``tests/netns.py``): j1 is reached
over loopback, t1 only through j1, t2 only through j1 then j2. For each of j1 (direct), t1
(one hop) and t2 (two hops) it times, in this one process and run:

- sshcontrol's runtime: ``sshlib.connect.open_connection`` with the hops, then
  ``run_command`` on that open connection (what a held session does per command);
- ``ssh_execute`` through ``mcp_serve`` (stdio, embedded), hosts registered with ``--jump``;
- OpenSSH ``ssh -J`` with ControlMaster/ControlPersist: after the first run each command is a
  new channel on the master's connection, which already goes through the hops.

It also times opening a session through the hops with a chain of its own, and with the hops
another open session holds (the jump connections a worker shares, ``sshlib.jumps``).

It needs root (network namespaces) and removes the namespaces, links and sshd instances at exit.

    sudo .venv/bin/python bench/jump.py [--runs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Deployment, percentiles

from sshlib.connect import ConnectSpec, fingerprint, open_connection
from sshlib.execute import ExecRequest, run_command
from sshlib.jumps import JumpPool
from tests.netns import JumpNet, NetnsSshServer, netns_unavailable

# The host each case runs on, and the jump hosts in front of it (outermost first).
CASES = {"direct": ("j1", ()), "1 hop": ("t1", ("j1",)), "2 hops": ("t2", ("j1", "j2"))}
# A pause between commands (untimed), about what an MCP round trip leaves between two calls.
IDLE_MS = 5.0


def timed(runs: int, once: Callable[[], None], warmup: int = 10) -> list[float]:
    for _ in range(warmup):
        once()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        once()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def spec_of(server: NetnsSshServer, name: str, hops: tuple[ConnectSpec, ...] = ()) -> ConnectSpec:
    key = server.host_key("ed25519")
    return ConnectSpec(
        address=server.address,
        port=server.port,
        username=server.user,
        password=server.password,
        trusted_keys=((key.get_name(), key.get_base64()),),
        name=name,
        hops=hops,
    )


def bench_sshlib(
    net: JumpNet, target: str, hops: tuple[str, ...], runs: int, idle_ms: float = 0.0
) -> list[float]:
    """Back to back, or with ``idle_ms`` between commands as a client's round trip leaves them."""
    spec = spec_of(net.servers[target], target, tuple(spec_of(net.servers[h], h) for h in hops))
    conn = open_connection(spec)
    request = ExecRequest("true")
    samples: list[float] = []
    try:
        for i in range(runs + 10):  # the first 10 warm up
            time.sleep(idle_ms / 1000)  # outside the timed part
            start = time.perf_counter()
            assert run_command(conn.client, request).exit_status == 0
            if i >= 10:
                samples.append((time.perf_counter() - start) * 1000)
        return samples
    finally:
        conn.close()


def bench_open(
    net: JumpNet, target: str, hops: tuple[str, ...], runs: int
) -> tuple[list[float], list[float]]:
    """Opening (and closing) a session through the hops: its own chain, versus hops another session holds.

    The second is what a worker does since the jump connections are shared (``sshlib.jumps``):
    the new session is one more channel on each held hop, plus its own login on the target.
    """
    spec = spec_of(net.servers[target], target, tuple(spec_of(net.servers[h], h) for h in hops))
    pool = JumpPool()
    holder = open_connection(spec, pool)  # keeps the hops open, as any other open session would

    def once(jumps: JumpPool | None) -> float:
        start = time.perf_counter()
        conn = open_connection(spec, jumps)
        elapsed = (time.perf_counter() - start) * 1000
        conn.close()
        return elapsed

    try:
        own = [once(None) for _ in range(runs)]
        shared = [once(pool) for _ in range(runs)]
    finally:
        holder.close()
    return own, shared


def destination(server: NetnsSshServer) -> str:
    return f"{server.user}@{server.address}:{server.port}"


def openssh_setup(net: JumpNet, workdir: Path) -> tuple[Path, dict[str, str]]:
    """A config file (passed on to the -J jump processes by ssh itself) and an askpass environment."""
    known = workdir / "known_hosts"
    lines = []
    for server in net.servers.values():
        key = server.host_key("ed25519")
        where = server.address if server.port == 22 else f"[{server.address}]:{server.port}"
        lines.append(f"{where} {key.get_name()} {key.get_base64()}")
    known.write_text("\n".join([*lines, ""]))
    config = workdir / "ssh_config"
    config.write_text(
        "Host *\n"
        f"  UserKnownHostsFile {known}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
        "  PubkeyAuthentication no\n"
        "  PreferredAuthentications password\n"
    )
    # The test servers log in by password only: OpenSSH reads it from an askpass program.
    askpass = workdir / "askpass"
    askpass.write_text(f"#!/bin/sh\necho '{net.servers['j1'].password}'\n")
    askpass.chmod(0o700)
    env = {**os.environ, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
    return config, env


def bench_openssh(net: JumpNet, target: str, hops: tuple[str, ...], runs: int, workdir: Path) -> list[float]:
    config, env = openssh_setup(net, workdir)
    server = net.servers[target]
    base = ["ssh", "-F", str(config), "-o", f"ControlPath={workdir / f'cm-{target}'}"]
    jump = ["-J", ",".join(f"ssh://{destination(net.servers[h])}" for h in hops)] if hops else []
    args = [
        *base,
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPersist=60",
        *jump,
        "-p",
        str(server.port),
        f"{server.user}@{server.address}",
        "true",
    ]

    def once() -> None:
        subprocess.run(args, check=True, stdin=subprocess.DEVNULL, env=env)

    try:
        return timed(runs, once)
    finally:
        subprocess.run(
            [*base, "-O", "exit", f"{server.user}@{server.address}"],
            capture_output=True,
            check=False,
            env=env,
        )


def register(deployment: Deployment, net: JumpNet) -> None:
    """The four servers as hosts, each behind its jump host, their keys pinned.

    A host behind a jump host cannot be scanned: its first connection as a target pins its
    key (trust on first use), so it is connected as a target before it is used as a hop.
    """
    jumps = {"j1": None, "t1": "j1", "j2": "j1", "t2": "j2"}
    for name, jump in jumps.items():
        server = net.servers[name]
        args = ["hosts", "add", name, "--address", server.address, "--port", str(server.port)]
        args += ["--username", server.user, "--password-stdin"]
        args += ["--jump", jump] if jump else []
        args += ["--trust-on-first-use"] if jump else []
        subprocess.run(
            [sys.executable, "-m", "sshcontrol", *args],
            input=f"{server.password}\n",
            env=deployment.env,
            capture_output=True,
            text=True,
            check=True,
        )
    # j1 is reached directly: scanned, and its key approved after comparing it with the server's own.
    scanned = deployment.cli("hosts", "scan", "j1").split()
    key = fingerprint(net.servers["j1"].host_key("ed25519"))
    assert key in scanned, scanned
    deployment.cli("hosts", "trust", "j1", key)


def bench_mcp(deployment: Deployment, runs: int) -> dict[str, list[float]]:
    from mcp import Client

    async def run() -> dict[str, list[float]]:
        results: dict[str, list[float]] = {}
        async with Client(deployment.server_params()) as client:
            sessions = {}
            for name in ("j1", "j2", "t1", "t2"):  # j2 pinned as a target before it is a hop
                opened = await client.call_tool("ssh_connect", {"host": name})
                assert not opened.is_error, opened.content
                sessions[name] = opened.structured_content["session_id"]  # type: ignore[index]
            for case, (target, _hops) in CASES.items():
                arguments = {"session_id": sessions[target], "command": "true", "response_format": "json"}
                for _ in range(10):
                    await client.call_tool("ssh_execute", arguments)
                samples = []
                for _ in range(runs):
                    start = time.perf_counter()
                    result = await client.call_tool("ssh_execute", arguments)
                    samples.append((time.perf_counter() - start) * 1000)
                    assert not result.is_error, result.content
                results[case] = samples
        return results

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--opens", type=int, default=30, help="sessions opened per case (own vs shared hops)")
    args = parser.parse_args()
    reason = netns_unavailable()
    if reason:
        sys.exit(f"bench/jump.py needs network namespaces: {reason}")
    net = JumpNet.create()
    workdir = Path(tempfile.mkdtemp(prefix="sshcontrol-bench-jump-"))
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for case, (target, hops) in CASES.items():
            if hops:
                results[case, "open own"], results[case, "open shared"] = bench_open(
                    net, target, hops, args.opens
                )
            results[case, "sshlib"] = bench_sshlib(net, target, hops, args.runs)
            results[case, "sshlib idle"] = bench_sshlib(net, target, hops, args.runs, IDLE_MS)
            results[case, "openssh"] = bench_openssh(net, target, hops, args.runs, workdir)
        deployment = Deployment(net.servers["j1"])
        register(deployment, net)
        for case, samples in bench_mcp(deployment, args.runs).items():
            results[case, "mcp"] = samples
        shutil.rmtree(deployment.workdir, ignore_errors=True)
    finally:
        net.destroy()
        shutil.rmtree(workdir, ignore_errors=True)

    stats = {key: percentiles(samples) for key, samples in results.items()}
    paths = {
        "sshlib": "sshlib run_command on an open connection",
        "sshlib idle": f"the same, {IDLE_MS:g} ms idle between commands",
        "mcp": "ssh_execute via mcp_serve (stdio), embedded",
        "openssh": "OpenSSH ssh -J, ControlMaster",
    }
    print(f"{args.runs} runs of `true` per row; j1 over loopback, t1 behind j1, t2 behind j1 and j2\n")
    print(f"{'path':<46} {'case':<7} {'p50 ms':>8} {'p95 ms':>8}")
    for path, label in paths.items():
        for case in CASES:
            p50, p95 = stats[case, path]
            print(f"{label:<46} {case:<7} {p50:>8.2f} {p95:>8.2f}")
    print()
    for case in CASES:
        openssh = stats[case, "openssh"][0]
        print(
            f"{case:<7} p50 / OpenSSH p50: sshlib {stats[case, 'sshlib'][0] / openssh:.2f}, "
            f"sshlib idle {stats[case, 'sshlib idle'][0] / openssh:.2f}, "
            f"ssh_execute {stats[case, 'mcp'][0] / openssh:.2f}"
        )
    print(f"\nopening a session ({args.opens} each), p50 / p95 ms:")
    for case, (_target, hops) in CASES.items():
        if hops:
            own, shared = stats[case, "open own"], stats[case, "open shared"]
            print(
                f"{case:<7} own chain {own[0]:.1f} / {own[1]:.1f}, hops shared with an open session "
                f"{shared[0]:.1f} / {shared[1]:.1f} (p50 ratio {shared[0] / own[0]:.2f})"
            )
    for path, label in paths.items():
        direct = stats["direct", path][0]
        print(
            f"{label:<46} cost of a hop (p50): 1 hop {stats['1 hop', path][0] - direct:+.2f} ms, "
            f"2 hops {stats['2 hops', path][0] - direct:+.2f} ms"
        )


if __name__ == "__main__":
    main()
