"""Thousands of idle sessions in one process: memory, threads, idle CPU, and one active session's latency.

Opens ``--sessions`` sessions (default 2,000) through the real registry
(``sshlib.sessions.registry.open``, what ``sshcontrol.tasks.connect`` calls on the embedded
default and in a worker) to ``--servers`` loopback sshd instances from ``tests/sshd.py``
(many sessions per sshd; the process fd limit raised), then measures
in this one process and run:

- RSS and threads per session (``/proc/self/status``, against the process with one session);
- idle CPU in % of one core over ``--idle-seconds`` (``/proc/self/stat``), the transports
  polling the way ``sshlib`` leaves a held connection (``sshlib.quiet``) and, with ``--stock``,
  the same sessions switched in place to paramiko's default 0.1 s poll;
- `true` p50/p95 on one session with the others idle, against the same session alone
  (measured before the others open and again after they closed), and against a reference
  process holding one session, timed in blocks alternating with ours, as ratios;
- how long closing every session takes, and the threads left afterwards.

    sudo .venv/bin/python bench/sessions.py [--sessions 2000] [--servers 4] [--runs 300] [--stock]
    sudo .venv/bin/python bench/sessions.py --embedded [--sessions 2000]

``--embedded`` opens the sessions with ``ssh_connect`` in one ``mcp_serve`` (stdio, embedded
default, one sshd) and measures that process from outside: RSS and threads per session, idle
CPU, and ``ssh_execute true`` on one session alone and with the others idle.

Needs root (the test sshd instances and their throwaway users, as the test suite does).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Deployment, percentiles, process_cpu

from sshlib import quiet
from sshlib.connect import ConnectSpec
from sshlib.execute import ExecRequest, run_command
from sshlib.sessions import Session, registry
from tests.sshd import SshServer

KIB = 1024


def status_field(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def rss_kib() -> int:
    return status_field("VmRSS")


def threads() -> int:
    return status_field("Threads")


def spec_for(server: SshServer) -> ConnectSpec:
    keys = server.host_public_keys()
    return ConnectSpec(
        address=server.address,
        port=server.port,
        username=server.user,
        private_key=server.private_key_text("ed25519"),
        trusted_keys=tuple((k.get_name(), k.get_base64()) for k in keys),
        connect_timeout=30.0,
    )


def start_server() -> SshServer:
    # Sessions are opened --parallel at a time, far below the suite's MaxStartups (100).
    return SshServer.create().start()


def true_latency(session: Session, runs: int, warmup: int = 10) -> list[float]:
    request = ExecRequest("true")
    spec_error = RuntimeError("the benchmark session dropped")

    def respec() -> ConnectSpec:
        raise spec_error

    samples = []
    for i in range(runs + warmup):
        client, _reconnected = session.client(respec)
        start = time.perf_counter()
        assert run_command(client, request).exit_status == 0
        if i >= warmup:
            samples.append((time.perf_counter() - start) * 1000)
    return samples


BLOCK = 20  # runs per block when alternating with the reference process


class Reference:
    """Another process holding one session to the same sshd, timed in blocks alternating with ours.

    The machine is shared: its load drifts over a run. Blocks of ``BLOCK`` runs taken in turn by
    this process (with the idle sessions) and the reference (alone) see the same drift.
    """

    def __init__(self, spec: ConnectSpec) -> None:
        fields = {
            k: v for k, v in spec.__dict__.items() if k in ("address", "port", "username", "private_key")
        }
        fields["trusted_keys"] = [list(pair) for pair in spec.trusted_keys]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--reference"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(fields) + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "ready"

    def run(self, runs: int) -> list[float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{runs}\n")
        self.proc.stdin.flush()
        return [float(x) for x in json.loads(self.proc.stdout.readline())]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


def serve_reference() -> None:
    """The reference process: one session, `true` blocks on request (stdin), timings on stdout."""
    fields = json.loads(sys.stdin.readline())
    fields["trusted_keys"] = tuple(tuple(pair) for pair in fields["trusted_keys"])
    session = registry.open("reference", "bench", ConnectSpec(**fields))
    true_latency(session, 0)  # the warm-up runs
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps(true_latency(session, int(line), warmup=0)), flush=True)
    registry.close_all()


def interleaved(active: Session, reference: Reference, runs: int) -> tuple[list[float], list[float]]:
    ours: list[float] = []
    theirs: list[float] = []
    true_latency(active, 0)
    for _ in range(max(1, runs // BLOCK)):
        theirs += reference.run(BLOCK)
        ours += true_latency(active, BLOCK, warmup=0)
    return ours, theirs


def idle_cpu(seconds: float) -> float:
    """% of one core this process used over ``seconds`` of doing nothing itself."""
    pid = os.getpid()
    cpu0, wall0 = process_cpu(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (process_cpu(pid) - cpu0) / (time.monotonic() - wall0)


def poll_every(seconds: float | None) -> None:
    """Set the socket poll of every held transport (None: what sshlib.quiet chooses)."""
    for session in registry.all():
        for connection in (session.connection, *session.connection.hops):
            transport = connection.client.get_transport()
            if transport is None:
                continue
            if seconds is None:
                quiet.quieten(transport)
            else:
                transport.sock.settimeout(seconds)


def open_many(specs: list[ConnectSpec], count: int, parallel: int) -> float:
    started = time.monotonic()
    done = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal done
        registry.open(f"idle-{i}", "bench", specs[i % len(specs)])
        with lock:
            done += 1
            if done % 250 == 0:
                print(f"  {done} sessions open ({time.monotonic() - started:.0f} s)", file=sys.stderr)

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(count)))
    return time.monotonic() - started


@dataclass
class Measured:
    rss_before: int = 0
    rss_one: int = 0
    rss_all: int = 0
    threads_before: int = 0
    threads_one: int = 0
    threads_all: int = 0
    threads_after: int = 0
    opened_in: float = 0.0
    closed_in: float = 0.0
    threads_gone_in: float = 0.0
    cpu_quiet: float = 0.0
    cpu_stock: float = 0.0
    alone: list[float] = field(default_factory=list)
    alone_after: list[float] = field(default_factory=list)
    with_quiet: list[float] = field(default_factory=list)
    with_stock: list[float] = field(default_factory=list)
    # Alternating blocks: this process with the idle sessions, and the reference alone.
    paired_quiet: list[float] = field(default_factory=list)
    paired_reference: list[float] = field(default_factory=list)


def close_others(m: Measured) -> None:
    started = time.monotonic()
    for session in registry.all():
        if session.session_id != "active":
            registry.close(session.session_id)
    m.closed_in = time.monotonic() - started
    deadline = time.monotonic() + 30
    while threads() > m.threads_one + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    m.threads_gone_in = time.monotonic() - started
    m.threads_after = threads()


def measure(args: argparse.Namespace, specs: list[ConnectSpec]) -> Measured:
    m = Measured(threads_before=threads(), rss_before=rss_kib())
    active = registry.open("active", "bench", specs[0])
    m.alone = true_latency(active, args.runs)
    m.threads_one, m.rss_one = threads(), rss_kib()
    m.opened_in = open_many(specs, args.sessions - 1, args.parallel)
    time.sleep(2)  # let the last handshakes' garbage settle (untimed, not a condition)
    m.rss_all, m.threads_all = rss_kib(), threads()
    m.cpu_quiet = idle_cpu(args.idle_seconds)
    m.with_quiet = true_latency(active, args.runs)
    reference = Reference(specs[0])
    try:
        m.paired_quiet, m.paired_reference = interleaved(active, reference, args.runs)
    finally:
        reference.close()
    if args.stock:
        # The same sessions polling as paramiko has them by default. Few runs: with 2,000 sessions
        # each takes about half a second, and the machine's load average climbs past 1,000.
        poll_every(0.1)
        time.sleep(0.5)
        m.cpu_stock = idle_cpu(args.idle_seconds)
        m.with_stock = true_latency(active, 20, warmup=2)
        poll_every(None)
        time.sleep(0.5)  # the threads finish their current 0.1 s wait
    close_others(m)
    m.alone_after = true_latency(active, args.runs)
    return m


def report(args: argparse.Namespace, m: Measured) -> None:
    n = args.sessions - 1
    alone = percentiles(m.alone + m.alone_after)
    quieted = percentiles(m.with_quiet)
    stock = percentiles(m.with_stock) if m.with_stock else None
    print(f"{args.sessions} sessions to {args.servers} loopback sshd instances; {args.runs} runs of `true`\n")
    print(f"opened {n} idle sessions in {m.opened_in:.1f} s ({args.parallel} at once)")
    print(
        f"memory: {(m.rss_all - m.rss_one) / n:.0f} KiB RSS per idle session ({m.rss_before / KIB:.0f} MiB "
        f"before, {m.rss_one / KIB:.0f} with one, {m.rss_all / KIB:.0f} with all)"
    )
    print(f"threads: {m.threads_before} before, {m.threads_one} with one session, {m.threads_all} with all")
    print(
        f"idle CPU, sshlib.quiet ({quiet.IDLE_POLL_SECONDS:g} s poll): {m.cpu_quiet:.2f}% of a core "
        f"over {args.idle_seconds:g} s"
    )
    if stock is not None:
        print(f"idle CPU, paramiko's 0.1 s socket poll (--stock): {m.cpu_stock:.2f}% of a core")
    print(
        f"closed {n} sessions in {m.closed_in:.2f} s; their threads gone after "
        f"{m.threads_gone_in:.2f} s ({m.threads_after} left)\n"
    )
    print(f"{'`true` on one session':<40} {'p50 ms':>8} {'p95 ms':>8} {'p50 ratio':>10}")
    rows = [
        ("alone (before and after the others)", alone),
        ("  alone, before the others opened", percentiles(m.alone)),
        ("  alone, after they closed", percentiles(m.alone_after)),
        ("others idle, sshlib.quiet", quieted),
    ]
    if stock is not None:
        rows.append(("others idle, 0.1 s poll (--stock)", stock))
    for label, (p50, p95) in rows:
        print(f"{label:<40} {p50:>8.2f} {p95:>8.2f} {p50 / alone[0]:>10.2f}")
    paired, reference = percentiles(m.paired_quiet), percentiles(m.paired_reference)
    print(f"\nalternating blocks of {BLOCK} runs, the same sshd:")
    print(
        f"{'reference process, one session (alone)':<40} {reference[0]:>8.2f} {reference[1]:>8.2f} {1:>10.2f}"
    )
    print(
        f"{'this process, others idle (quiet)':<40} {paired[0]:>8.2f} {paired[1]:>8.2f} "
        f"{paired[0] / reference[0]:>10.2f}"
    )
    if stock is not None:
        print(f"\nidle CPU ratio, 0.1 s poll / quiet: {m.cpu_stock / max(m.cpu_quiet, 0.01):.1f}x")


def proc_status(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def server_pid(data_dir: str) -> int:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ, cmdline = (proc / "environ").read_bytes(), (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"SSHCONTROL_DATA_DIR={data_dir}".encode() in environ and b"mcp_serve" in cmdline:
            return int(proc.name)
    raise RuntimeError("mcp_serve not found")


async def embedded(args: argparse.Namespace, server: SshServer) -> None:
    """The same measures on the embedded default: sessions opened by ssh_connect in one mcp_serve."""
    import asyncio

    from mcp import Client

    deployment = Deployment(server).setup()
    deployment.env["SSHCONTROL_SESSION_IDLE_TIMEOUT"] = "86400"
    execute = {"command": "true", "response_format": "json"}

    async def timed(client: Client, runs: int) -> list[float]:
        samples = []
        for i in range(runs + 10):
            start = time.perf_counter()
            result = await client.call_tool("ssh_execute", execute)
            if i >= 10:
                samples.append((time.perf_counter() - start) * 1000)
            assert not result.is_error, result.content
        return samples

    async with Client(deployment.server_params()) as client:
        opened = await client.call_tool("ssh_connect", {"host": "bench", "response_format": "json"})
        execute["session_id"] = opened.structured_content["session_id"]  # type: ignore[index]
        pid = server_pid(deployment.env["SSHCONTROL_DATA_DIR"])
        alone = await timed(client, args.runs)
        rss_one, threads_one = proc_status(pid, "VmRSS"), proc_status(pid, "Threads")
        gate = asyncio.Semaphore(args.parallel)

        async def connect() -> None:
            async with gate:
                result = await client.call_tool("ssh_connect", {"host": "bench", "response_format": "json"})
                assert not result.is_error, result.content

        started = time.monotonic()
        await asyncio.gather(*(connect() for _ in range(args.sessions - 1)))
        opened_in = time.monotonic() - started
        await asyncio.sleep(2)
        rss_all, threads_all = proc_status(pid, "VmRSS"), proc_status(pid, "Threads")
        cpu0, wall0 = process_cpu(pid), time.monotonic()
        await asyncio.sleep(args.idle_seconds)
        cpu = 100 * (process_cpu(pid) - cpu0) / (time.monotonic() - wall0)
        with_idle = await timed(client, args.runs)
    n = args.sessions - 1
    (a50, a95), (w50, w95) = percentiles(alone), percentiles(with_idle)
    print(
        f"embedded mcp_serve (stdio), {args.sessions} sessions by ssh_connect to one sshd, "
        f"opened in {opened_in:.0f} s"
    )
    print(
        f"memory: {(rss_all - rss_one) / n:.0f} KiB RSS per idle session; "
        f"threads {threads_one} -> {threads_all}"
    )
    print(f"idle CPU of mcp_serve: {cpu:.2f}% of a core over {args.idle_seconds:g} s")
    print(
        f"ssh_execute `true` p50/p95: alone {a50:.2f}/{a95:.2f} ms, others idle {w50:.2f}/{w95:.2f} ms, "
        f"p50 ratio {w50 / a50:.2f}"
    )


def main() -> None:
    if sys.argv[1:] == ["--reference"]:
        serve_reference()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--parallel", type=int, default=8, help="sessions opened at once")
    parser.add_argument(
        "--stock", action="store_true", help="also measure paramiko's own 0.1 s poll (loads the machine)"
    )
    parser.add_argument(
        "--embedded", action="store_true", help="through ssh_connect in one mcp_serve instead"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/sessions.py starts sshd instances with throwaway users: run it as root")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.sessions * 2 + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    if args.embedded:
        import asyncio

        server = start_server()
        try:
            asyncio.run(embedded(args, server))
        finally:
            server.remove()
        return
    servers = [start_server() for _ in range(args.servers)]
    try:
        measured = measure(args, [spec_for(s) for s in servers])
    finally:
        registry.close_all()
        for server in servers:
            server.remove()
    report(args, measured)


if __name__ == "__main__":
    main()
