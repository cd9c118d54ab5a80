"""Big outputs: bytes a client receives and wall time, before and after the output budget, and OpenSSH.

For `seq 1 400000` (2.6 MB) and 50 MiB of output, each through a real mcp_serve (stdio,
embedded) on an open session against a loopback sshd, measured as the client sees it: the
bytes of the JSON-RPC response line and the time from sending the request to reading it.
"Before" is another tree (a worktree of the commit before the budget), served from there;
the reference is OpenSSH (`ssh host <cmd>` over a ControlMaster connection, so both sides
reuse an open connection) on the same sshd, which delivers every byte.

    git worktree add /tmp/sshc-before e0d1b30
    .venv/bin/python bench/output.py --before /tmp/sshc-before [--runs 3] [--paging]
    .venv/bin/python bench/output.py --paging [--sdk]    # the paging half only

The paging half reads 50 MiB through ssh_read_output (the output_id of `cat` of a 50 MiB
file) against `ssh host cat` of the same file. Its client (``tests/mcp/rawstdio.py``) reads each
response line whole and parses the whole message, taking each page's text and next offset from
it, as any client must; it parses with jiter (``pydantic_core.from_json``), the JSON parser the
SDK's client runs on, which costs what Node's ``JSON.parse`` does on a page's message (about 1.1
and 1.0 ms per MiB here; stdlib ``json`` 1.7 ms, so until 2026-11-29 this client was slower than
a real one), through a 1 MiB read buffer. ``--sdk`` adds the same pages read through the SDK's own
client (``mcp.Client``: anyio streams, each message validated as a JSON-RPC message and its result
as a CallToolResult), which costs more per page than either.

With ``--peer`` the same two commands also go through the strongest peer that runs here, the
npm package ssh-mcp (its stdio MCP server, quick-start flags for the same sshd and key, tier
dev, approval off, host key trusted on first use), tool ``run-command``, on a connection its
first call opened; measured the same way, with each call cut off after ``PEER_TIMEOUT``
seconds (what happens then is the result). It lives in its own git-ignored directory:

    npm install --prefix .peer-ssh-mcp --no-audit --no-fund ssh-mcp@2.11.0
    .venv/bin/python bench/output.py --peer [--before /tmp/sshc-before] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic_core

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Deployment

from tests.mcp.rawstdio import RawStdioClient
from tests.sshd import SshServer

SEQ = "seq 1 400000"
FIFTY_MIB = 50 << 20
# 101-byte lines (100 digits and a newline), cut at exactly 50 MiB.
BIG = f"yes {'0123456789' * 10} | head -c {FIFTY_MIB}"
COMMANDS = {"seq 1 400000": SEQ, "50 MiB of output": BIG}
BUDGET = 16 << 10
PEER_DIR = REPO / ".peer-ssh-mcp"
PEER_SERVER = PEER_DIR / "node_modules" / "ssh-mcp" / "build" / "index.js"
PEER_INSTALL = f"npm install --prefix {PEER_DIR} --no-audit --no-fund ssh-mcp@2.11.0"
PEER_TIMEOUT = 120.0


def openssh_args(server: SshServer, workdir: Path) -> list[str]:
    known = workdir / "known_hosts"
    key = server.host_key("ed25519")
    known.write_text(f"[{server.address}]:{server.port} {key.get_name()} {key.get_base64()}\n")
    return [
        *("ssh", "-F", "/dev/null", "-o", "ControlMaster=auto", "-o", f"ControlPath={workdir / 'cm-%C'}"),
        *("-o", "ControlPersist=120", "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"),
        *("-o", "BatchMode=yes", "-i", str(server.client_keys["ed25519"]), "-p", str(server.port)),
        f"{server.user}@{server.address}",
    ]


def timed_openssh(args: list[str], command: str) -> tuple[int, float]:
    start = time.perf_counter()
    done = subprocess.run([*args, command], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, check=True)
    return len(done.stdout), time.perf_counter() - start


def timed_call(client: RawStdioClient, session_id: str, command: str) -> tuple[int, float]:
    start = time.perf_counter()
    response = client.call(
        "ssh_execute", session_id=session_id, command=command, timeout=600, response_format="json"
    )
    elapsed = time.perf_counter() - start
    assert not response.result.get("isError"), response.result
    return len(response.raw), elapsed


def deployment_for(server: SshServer, tree: Path) -> Deployment:
    deployment = Deployment(server)
    deployment.env["PYTHONPATH"] = str(tree)
    return deployment.setup()


def measure_tree(server: SshServer, tree: Path, runs: int) -> dict[str, tuple[int, float]]:
    deployment = deployment_for(server, tree)
    client = RawStdioClient(deployment.env)
    try:
        opened = client.call("ssh_connect", host="bench")
        session_id = opened.result["structuredContent"]["session_id"]
        timed_call(client, session_id, "true")
        results = {}
        for name, command in COMMANDS.items():
            samples = [timed_call(client, session_id, command) for _ in range(runs)]
            results[name] = (samples[-1][0], statistics.median(s[1] for s in samples))
        return results
    finally:
        client.close()
        deployment.close()


def read_pages(client: RawStdioClient, output_id: str) -> int:
    """Every page of ``output_id``'s stdout, in 1 MiB pages: the bytes received."""
    offset, received = 0, 0
    while True:
        chunk = client.call(
            "ssh_read_output", output_id=output_id, stream="stdout", offset=offset, max_bytes=1 << 20
        ).result["structuredContent"]["chunk"]
        received += len(chunk["text"].encode())
        offset = chunk["next_offset"]
        if chunk["complete"]:
            return received


def sdk_pages(deployment: Deployment, path: str) -> tuple[int, float]:
    """``cat path`` run, then its output paged through the SDK's own client: bytes, seconds of the pages."""
    from mcp import Client

    async def run() -> tuple[int, float]:
        async with Client(deployment.server_params()) as client:
            opened = await client.call_tool("ssh_connect", {"host": "bench"})
            session_id = opened.structured_content["session_id"]  # type: ignore[index]
            ran = await client.call_tool(
                "ssh_execute", {"session_id": session_id, "command": f"cat {path}", "timeout": 600}
            )
            output_id = ran.structured_content["output_id"]  # type: ignore[index]
            start, offset, received = time.perf_counter(), 0, 0
            while True:
                arguments = {"output_id": output_id, "offset": offset, "max_bytes": 1 << 20}
                page = await client.call_tool("ssh_read_output", arguments)
                chunk = page.structured_content["chunk"]  # type: ignore[index]
                received += len(chunk["text"].encode())
                offset = chunk["next_offset"]
                if chunk["complete"]:
                    return received, time.perf_counter() - start

    return asyncio.run(run())


def paging(server: SshServer, tree: Path, ssh: list[str], runs: int, sdk: bool = False) -> None:
    """50 MiB read through ssh_read_output, page by page (1 MiB, the most a page may be), against
    `ssh host cat` of the same bytes (ControlMaster, so without the connection's set-up).

    Two numbers, best of ``runs`` each: the pages alone (the issue's target: paging at least at
    half the speed of ssh cat), and the ssh_execute that produced the output plus the pages.
    ``sdk``: a third, the pages read through the SDK's own client instead of the raw one.
    """
    deployment = deployment_for(server, tree)
    client = RawStdioClient(deployment.env)
    try:
        tools = {t["name"] for t in client.request("tools/list", {}).result["tools"]}
        if "ssh_read_output" not in tools:
            print("paging: skipped, this tree has no ssh_read_output")
            return
        session_id = client.call("ssh_connect", host="bench").result["structuredContent"]["session_id"]
        path = f"/tmp/sshc-bench-output-{os.getpid()}"
        client.call("ssh_execute", session_id=session_id, command=f"{BIG} > {path}", timeout=600)
        pages_best = whole_best = sdk_best = float("inf")
        cat_seconds = float("inf")
        for _ in range(runs):
            # Interleaved, so that both see the same moment of the machine.
            cat_bytes, seconds = timed_openssh(ssh, f"cat {path}")
            cat_seconds = min(cat_seconds, seconds)
            start = time.perf_counter()
            ran = client.call("ssh_execute", session_id=session_id, command=f"cat {path}", timeout=600)
            output_id = ran.result["structuredContent"]["output_id"]
            paging_start = time.perf_counter()
            received = read_pages(client, output_id)
            end = time.perf_counter()
            pages_best = min(pages_best, end - paging_start)
            whole_best = min(whole_best, end - start)
            assert received == cat_bytes == FIFTY_MIB, (received, cat_bytes)
            if sdk:
                received, seconds = sdk_pages(deployment, path)
                sdk_best = min(sdk_best, seconds)
                assert received == FIFTY_MIB, received
        client.call("ssh_execute", session_id=session_id, command=f"rm -f {path}")

        def speed(seconds: float) -> str:
            return f"{FIFTY_MIB / seconds / 2**20:.0f} MiB/s"

        print(
            f"paging 50 MiB: ssh cat {speed(cat_seconds)}; ssh_read_output pages {speed(pages_best)}, "
            f"ratio {cat_seconds / pages_best:.2f} (target >= 0.50); ssh_execute + pages "
            f"{speed(whole_best)}, ratio {cat_seconds / whole_best:.2f}"
        )
        if sdk:
            print(f"  pages through the SDK's client {speed(sdk_best)}, ratio {cat_seconds / sdk_best:.2f}")
    finally:
        client.close()
        deployment.close()


@dataclass(frozen=True)
class PeerCall:
    size: int  # bytes of the response line the client received (of what arrived, if cut off)
    seconds: float
    outcome: str  # "ok ...", or what went wrong, as the client saw it


def peer_argv(server: SshServer) -> list[str] | None:
    """ssh-mcp's stdio server for ``server``, or None (saying why) when it cannot run here."""
    node = shutil.which("node")
    if node is None:
        print("peer: skipped, node is not installed (ssh-mcp is a Node.js server)")
        return None
    if not PEER_SERVER.is_file():
        print(f"peer: skipped, ssh-mcp is not installed in {PEER_DIR}; install it with\n    {PEER_INSTALL}")
        return None
    return [
        *(node, str(PEER_SERVER), f"--host={server.address}", f"--port={server.port}"),
        *(f"--user={server.user}", f"--key={server.client_keys['ed25519']}"),
        # Approval off and tier dev: this measures output, not its policy gate. The command
        # timeout matches the one sshcontrol gets (600 s); PEER_TIMEOUT cuts first.
        *("--group=dev", "--disableApproval", "--timeout=600000"),
    ]


def timed_peer_call(client: RawStdioClient, command: str) -> PeerCall:
    """``run-command`` through the peer, killed after PEER_TIMEOUT: a hang is a result, not a stall."""
    assert client.proc.stdout is not None
    client.next_id += 1
    request_id = client.next_id
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        client.proc.kill()

    killer = threading.Timer(PEER_TIMEOUT, kill)
    start = time.perf_counter()
    client.send(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": "run-command", "arguments": {"command": command}},
        }
    )
    killer.start()
    try:
        while line := client.proc.stdout.readline():
            if not line.endswith(b"\n"):
                break  # cut off mid-message
            message = pydantic_core.from_json(line)
            if message.get("id") == request_id:
                return PeerCall(len(line) - 1, time.perf_counter() - start, peer_outcome(message))
        seconds = time.perf_counter() - start
    finally:
        killer.cancel()
    why = f"killed after {PEER_TIMEOUT:.0f} s" if killed.is_set() else "it closed its stdout"
    return PeerCall(len(line), seconds, f"no answer ({why}), {len(line):,} bytes of a response read")


def peer_outcome(message: dict[str, Any]) -> str:
    if (error := message.get("error")) is not None:
        return f"JSON-RPC error {error.get('code')}: {str(error.get('message'))[:300]}"
    result = message["result"]
    text = "".join(c.get("text", "") for c in result.get("content", []))
    label = "isError" if result.get("isError") else "ok"
    return f"{label}, text {len(text.encode()):,} bytes, ends {text[-200:]!r}"


def measure_peer(server: SshServer, runs: int) -> dict[str, tuple[int, float]]:
    argv = peer_argv(server)
    if argv is None:
        return {}
    home = Path(tempfile.mkdtemp(prefix="sshcontrol-bench-peer-"))
    # Its audit log and (absent) config go to a throwaway home, never the user's.
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config")}
    env["XDG_DATA_HOME"] = str(home / "data")
    client = RawStdioClient(env, argv)
    results = {}
    try:
        warm = timed_peer_call(client, "true")  # opens its SSH connection, as ssh_connect does
        assert warm.outcome.startswith("ok"), warm
        for name, command in COMMANDS.items():
            samples = []
            for _ in range(runs):
                call = timed_peer_call(client, command)
                samples.append(call)
                print(f"ssh-mcp {name}: {call.size:,} bytes, {call.seconds * 1000:.0f} ms, {call.outcome}")
                if client.proc.poll() is not None:
                    client.close()  # killed or gone: the next run gets a new server and connection
                    client = RawStdioClient(env, argv)
                    timed_peer_call(client, "true")
            results[name] = (samples[-1].size, statistics.median(s.seconds for s in samples))
        return results
    finally:
        client.close()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a tree of the commit before the budget")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--paging", action="store_true", help="also page 50 MiB (needs ssh_read_output)")
    parser.add_argument("--sdk", action="store_true", help="with --paging: also through the SDK's own client")
    parser.add_argument("--peer", action="store_true", help=f"also ssh-mcp (npm), installed in {PEER_DIR}")
    args = parser.parse_args()
    os.chdir("/")  # `python -m sshcontrol` would import the current directory's tree first
    server = SshServer.create().start()
    workdir = Path(tempfile.mkdtemp(prefix="sshcontrol-bench-output-"))
    ssh = openssh_args(server, workdir)
    try:
        timed_openssh(ssh, "true")
        if args.before is not None or args.peer:
            compare(server, args.before.resolve() if args.before else None, ssh, args.runs, args.peer)
        if args.paging:
            paging(server, REPO, ssh, args.runs, args.sdk)
    finally:
        subprocess.run([*ssh[:-1], "-O", "exit", ssh[-1]], capture_output=True, check=False)
        server.remove()


def compare(server: SshServer, before_tree: Path | None, ssh: list[str], runs: int, peer: bool) -> None:
    """One table: before (with --before), after, OpenSSH, and ssh-mcp (with --peer)."""
    measured = {}
    if before_tree is not None:
        measured["before"] = measure_tree(server, before_tree, runs)
    measured["after"] = measure_tree(server, REPO, runs)
    measured["openssh"] = {
        name: statistics.median_low([timed_openssh(ssh, command) for _ in range(runs)])
        for name, command in COMMANDS.items()
    }
    if peer and (peer_results := measure_peer(server, runs)):
        measured["ssh-mcp"] = peer_results
    print(f"budget {BUDGET} bytes per stream; median wall time of {runs} runs; {REPO}")
    print(f"{'':18} {'':8} {'bytes to client':>16} {'wall ms':>9}")
    for name in COMMANDS:
        for label, rows in measured.items():
            size, seconds = rows[name]
            print(f"{name:18} {label:8} {size:16,d} {seconds * 1000:9.0f}")
        after, ssh_ref = measured["after"][name], measured["openssh"][name]
        ratios = [f"after / (2 x budget x 2 streams) {after[0] / (4 * BUDGET):.2f} (target <= 1)"]
        if before := measured.get("before", {}).get(name):
            ratios[:0] = [f"bytes after/before {after[0] / before[0]:.4f}"]
            ratios.append(f"time after/before {after[1] / before[1]:.2f}")
        ratios.append(f"after/openssh {after[1] / ssh_ref[1]:.2f}")
        if other := measured.get("ssh-mcp", {}).get(name):
            ratios.append(f"ssh-mcp/after bytes {other[0] / after[0]:.1f}, time {other[1] / after[1]:.2f}")
        print(f"{'':18} ratios: {', '.join(ratios)}")


if __name__ == "__main__":
    main()
