"""mcp_serve's own cost per `ssh_execute true`: p50/p95 and the server process's CPU per call.

Sequential calls on one open session through a real mcp_serve (stdio, embedded) against a
loopback sshd. To compare two versions in one sitting, run it alternately from two trees,
e.g. a worktree of an older commit:

    git worktree add /tmp/old <commit>
    for t in /tmp/old $PWD; do (cd $t && PYTHONPATH=$t /path/to/.venv/bin/python bench/serve_cost.py); done
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, Deployment, percentiles

from tests.sshd import SshServer


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, 10 ms ticks


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


async def measure(calls: int) -> None:
    from mcp import Client

    server = SshServer.create().start()
    deployment = Deployment(server).setup()
    arguments = {"command": "true", "response_format": "json"}
    try:
        async with Client(deployment.server_params()) as client:
            opened = await client.call_tool("ssh_connect", {"host": "bench"})
            arguments["session_id"] = opened.structured_content["session_id"]  # type: ignore[index]
            for _ in range(50):
                await client.call_tool("ssh_execute", arguments)
            pid = server_pid(deployment.env["SSHCONTROL_DATA_DIR"])
            before = cpu_seconds(pid)
            latencies = []
            for _ in range(calls):
                start = time.perf_counter()
                await client.call_tool("ssh_execute", arguments)
                latencies.append((time.perf_counter() - start) * 1000)
            cpu_ms = (cpu_seconds(pid) - before) * 1000 / calls
    finally:
        deployment.close()
        server.remove()
    p50, p95 = percentiles(latencies)
    print(f"{REPO}: {calls} calls, p50 {p50:.2f} ms, p95 {p95:.2f} ms, mcp_serve CPU {cpu_ms:.2f} ms/call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=600)
    asyncio.run(measure(parser.parse_args().calls))


if __name__ == "__main__":
    main()
